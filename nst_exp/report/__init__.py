"""A sweep's output directory -> one table of every job, a figure grid, loss curves and a gallery page.

``python -m nst_exp.report outputs/multirun/<date>/<time> [--out DIR]`` reads every job
Hydra wrote there (``.hydra/`` settings, ``metrics.json``, TensorBoard scalars through
tbparse) into one pandas DataFrame and writes, into ``<sweep>/report/`` unless ``--out``:

- ``results.csv``: one row per job, every column; ``results.md``: the headline columns;
- ``scalars.csv``: every logged loss scalar per job and step (not with ``--no-scalars``);
- ``figure.png``: the result images in a grid laid out by the swept keys;
- ``losses.png``: the loss curves of all jobs, coloured by the swept keys;
- ``tradeoff.png``: content SSIM against style SWD per job, when metrics.json has them;
- ``index.html``: every job in one sortable, filterable table with its picture (click: full
  size; tick two: side by side or blinking), numbers, loss curve (``curves/``), snapshot strip
  and links to its files; it opens from disk, and its links are relative.
  ``--self-contained`` copies each job's result, metrics.json, config, content and style
  images and the strip's snapshots into ``jobs/`` beside it and links to those, so the
  report folder can be published on its own.

The swept keys are read from the sweep itself: the override keys whose values differ
between jobs, in the order Hydra swept them. Jobs that failed or were cut short are
listed with their status; the report is built from the others.

Modules, each importing only those above it (none imports torch):

- ``sweep``: finding the jobs and reading them (``Sweep``, ``read_sweep``, ``read_scalars``);
- ``labels``: swept values labelled as the paper labels them;
- ``tables``: results.csv, results.md, scalars.csv;
- ``figures``: the image grid and the loss curves; ``tradeoff``: tradeoff.png;
- ``gallery``: index.html and its per-job loss curves;
- ``build``: ``build_report()``, which writes all of the above; ``cli``: the command line.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nst_exp.report.build import Report, build_report
    from nst_exp.report.cli import main
    from nst_exp.report.sweep import Sweep, networks, read_scalars, read_sweep, swept_keys

# name -> the module defining it, imported on first use: `python -m nst_exp.report --help`
# answers before pandas and matplotlib load.
EXPORTS = {"Report": "build", "build_report": "build", "main": "cli", "Sweep": "sweep", "networks": "sweep",
           "read_scalars": "sweep", "read_sweep": "sweep", "swept_keys": "sweep"}

__all__ = sorted(EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{EXPORTS[name]}"), name)
    globals()[name] = value  # once found, an ordinary attribute
    return value

