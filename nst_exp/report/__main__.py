"""``python -m nst_exp.report SWEEP_DIR [--out DIR]``."""

import sys

from nst_exp.report.cli import main

sys.exit(main())
