"""``report(sweep_dir)``: read a sweep and write its tables, figures and gallery page into one folder."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from nst_exp.report.figures import GridLayout, plot_grid, plot_losses
from nst_exp.report.gallery import CURVES_DIR, GALLERY_FILE, JOBS_DIR, write_gallery
from nst_exp.report.sweep import Sweep, read_sweep
from nst_exp.report.tables import write_tables
from nst_exp.report.tradeoff import CONTENT_SSIM, STYLE_SWD, plot_tradeoff

log = logging.getLogger(__name__)


@dataclass
class Report:
    """What ``report`` read and wrote."""

    sweep: Sweep
    layout: GridLayout  # where each job sits in figure.png
    written: dict[str, Path]  # file name -> path
    loss_tags: list[str]  # the tags losses.png shows (empty: no scalars, no file)
    tradeoff_jobs: list[int]  # the jobs tradeoff.png shows (empty: no picture metrics, no file)


def report(root: Path | str, out: Path | str | None = None, *, self_contained: bool = False,
           scalars: bool = True) -> Report:
    """Read the sweep at ``root`` and write the tables and figures into ``out`` (default <root>/report).

    ``self_contained``: also copy each job's result.png, metrics.json and config into
    ``<out>/jobs/<job>/`` and link the gallery to them, so ``out`` can be moved or published alone.
    ``scalars=False``: no scalars.csv (every logged value per step; large for long sweeps).
    """
    sweep = read_sweep(root)
    out = Path(out) if out is not None else sweep.root / "report"
    csv, markdown, per_step = write_tables(sweep, out, scalars)
    written = {"results.csv": csv, "results.md": markdown}
    if per_step is not None:
        written["scalars.csv"] = per_step
    layout = plot_grid(sweep, out / "figure.png")
    written["figure.png"] = out / "figure.png"
    loss_tags = plot_losses(sweep, out / "losses.png")
    if loss_tags:
        written["losses.png"] = out / "losses.png"
    else:
        log.warning("No job logged a positive loss scalar: losses.png not written.")
    tradeoff_jobs = plot_tradeoff(sweep, out / "tradeoff.png")
    if tradeoff_jobs:
        written["tradeoff.png"] = out / "tradeoff.png"
    else:
        log.info(f"No job made with both the photo and the painting has {CONTENT_SSIM} and {STYLE_SWD} in its "
                 "metrics.json: tradeoff.png not written.")
    page, curves = write_gallery(sweep, out, written, self_contained)
    if curves:
        written[CURVES_DIR] = out / CURVES_DIR
    if self_contained:
        written[JOBS_DIR] = out / JOBS_DIR
    written[GALLERY_FILE] = page
    for name in ("scalars.csv", "losses.png", "tradeoff.png", CURVES_DIR, JOBS_DIR):  # an earlier report's, now untrue
        stale = out / name
        if name not in written and stale.exists():
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
            log.info(f"Removed {stale}, left by an earlier report: this sweep gives none.")
    return Report(sweep, layout, written, loss_tags, tradeoff_jobs)
