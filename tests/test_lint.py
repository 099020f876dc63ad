"""The linter's settings (pyproject.toml, [tool.ruff]: pyflakes, isort, pyupgrade, line length) hold everywhere.

``ruff check --fix FOLDER`` mends most of what it finds; the rest it names with the line.
"""

from __future__ import annotations

import pytest
from conftest import ROOT, run_python


@pytest.mark.subprocess
@pytest.mark.parametrize("folder", ["nst_exp", "tests", "benchmarks", "hydra_plugins"])
def test_ruff_finds_nothing(folder):
    done = run_python("-m", "ruff", "check", "--no-cache", "--output-format=concise", folder, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
