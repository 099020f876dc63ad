"""``report(sweep_dir)``: read a sweep and write its tables and figures into one folder."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from nst_exp.report.figures import GridLayout, plot_grid, plot_losses
from nst_exp.report.sweep import Sweep, read_sweep
from nst_exp.report.tables import write_tables

log = logging.getLogger(__name__)


@dataclass
class Report:
    """What ``report`` read and wrote."""

    sweep: Sweep
    layout: GridLayout  # where each job sits in figure.png
    written: dict[str, Path]  # file name -> path
    loss_tags: list[str]  # the tags losses.png shows (empty: no scalars, no file)


def report(root: Path | str, out: Path | str | None = None) -> Report:
    """Read the sweep at ``root`` and write the tables and figures into ``out`` (default <root>/report)."""
    sweep = read_sweep(root)
    out = Path(out) if out is not None else sweep.root / "report"
    csv, markdown, scalars = write_tables(sweep, out)
    written = {"results.csv": csv, "results.md": markdown, "scalars.csv": scalars}
    layout = plot_grid(sweep, out / "figure.png")
    written["figure.png"] = out / "figure.png"
    loss_tags = plot_losses(sweep, out / "losses.png")
    if loss_tags:
        written["losses.png"] = out / "losses.png"
    else:
        log.warning("No job logged a positive loss scalar: losses.png not written.")
    return Report(sweep, layout, written, loss_tags)
