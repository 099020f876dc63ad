"""A sweep's results as the paper shows them: an image grid by the swept keys, and loss curves.

The layout comes from the sweep, not from the figure's name: no swept key (or one) gives one
row; two give rows by the first and columns by the second (Fig. 3: style layers by
alpha/beta); more give rows by the first and columns by the combinations of the others.
Cells are labelled as the paper labels them ("relu1_1 ... relu3_1", "alpha/beta = 1e-4").
The content and style images sit beside the grid, or in each cell's corner where they
change from job to job (Fig. 2's paintings).
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from PIL import Image

from nst_exp.report.labels import axis_title, setting, value_label
from nst_exp.report.sweep import Sweep, networks
from nst_exp.results import LOSSES, RunDir, Status, inputs_used

LINE_STYLES = ("-", "--", ":", "-.")


@dataclass
class GridLayout:
    """Where each job sits in the figure; ``cells[r][c]`` is a job number, or None for a gap."""

    row_title: str  # what the rows vary ("" for a single row)
    col_title: str  # what the columns vary
    rows: list[str]  # row labels
    cols: list[str]  # column labels
    cells: list[list[int | None]]
    beside: list[str]  # inputs shown once beside the grid: "content", "style"
    inset: list[str]  # inputs that differ between jobs, shown in each cell's corner

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.rows), len(self.cols)


def inputs_that_vary(sweep: Sweep) -> tuple[list[str], list[str]]:
    """(inputs the same for all jobs, inputs that differ), by their resolved paths; an input
    no job used is in neither."""
    beside, inset = [], []
    for name in ("content", "style"):
        if not any(name in inputs_used(settings) for settings in sweep.settings.values()):
            continue
        paths = {
            (setting(s, "images_dir"), setting(s, f"{name}.path")) for s in sweep.settings.values()
        }
        (beside if len(paths) <= 1 else inset).append(name)
    return beside, inset


def grid_layout(sweep: Sweep) -> GridLayout:
    """Rows by the first swept key, columns by the rest; one row when fewer than two are swept."""
    jobs, swept = sweep.jobs, sweep.swept  # jobs are sorted by the swept keys
    beside, inset = inputs_that_vary(sweep)
    order = list(jobs["job"])
    if len(swept) < 2:
        labels = [value_label(sweep, swept[0], job) if swept else f"job {job}" for job in order]
        return GridLayout("", axis_title(swept), [""], labels, [order], beside, inset)
    row_values = list(dict.fromkeys(jobs[swept[0]]))
    col_values = list(dict.fromkeys(tuple(values) for values in jobs[swept[1:]].itertuples(index=False)))
    cells: list[list[int | None]] = [[None] * len(col_values) for _ in row_values]
    for job, row_value, *col_value in jobs[["job", *swept]].itertuples(index=False):
        cell = (row_values.index(row_value), col_values.index(tuple(col_value)))
        if cells[cell[0]][cell[1]] is None:  # a repeated combination keeps its first job
            cells[cell[0]][cell[1]] = job
    first_in_row = [next(job for job in row if job is not None) for row in cells]
    first_in_col = [next(row[c] for row in cells if row[c] is not None) for c in range(len(col_values))]
    rows = [value_label(sweep, swept[0], job) for job in first_in_row]
    cols = ["\n".join(value_label(sweep, key, job) for key in swept[1:]) for job in first_in_col]
    return GridLayout(axis_title(swept[:1]), axis_title(swept[1:]), rows, cols, cells, beside, inset)


def load_rgb(path: Path) -> np.ndarray | None:
    if not path.is_file():
        return None
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def input_image(sweep: Sweep, name: str, job: int | None = None) -> np.ndarray | None:
    """``inputs/<name>.png`` of ``job``, or of the first job that saved one."""
    jobs = [job] if job is not None else list(sweep.jobs["job"])
    for candidate in jobs:
        image = load_rgb(RunDir(sweep.job_dir(candidate)).input_image(name))
        if image is not None:
            return image
    return None


def cell_aspect(sweep: Sweep) -> float:
    """Height / width of the results (1 when none was written)."""
    for job in sweep.jobs["job"]:
        image = load_rgb(RunDir(sweep.job_dir(job)).result)
        if image is not None:
            return image.shape[0] / image.shape[1]
    content = input_image(sweep, "content")
    return content.shape[0] / content.shape[1] if content is not None else 1.0


def show(ax: Any, image: np.ndarray | None, text: str = "") -> None:
    """An image without ticks, or a grey box with ``text`` where there is none."""
    ax.set_xticks([])
    ax.set_yticks([])
    if image is not None:
        ax.imshow(image)
    else:
        ax.set_facecolor("0.88")
        ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=7, wrap=True, transform=ax.transAxes)


def draw_job(ax: Any, sweep: Sweep, job: int, inset: Sequence[str]) -> None:
    status = sweep.jobs.at[job, "status"]
    message = str(sweep.jobs.at[job, "metrics.message"] or "") if "metrics.message" in sweep.jobs else ""
    image = load_rgb(RunDir(sweep.job_dir(job)).result)
    note = f"job {job}: {status}" + (f"\n{textwrap.shorten(message, 90)}" if message else "")
    show(ax, image, "\n".join(line for part in note.splitlines() for line in textwrap.wrap(part, 28)))
    if image is not None and status != Status.COMPLETED:
        ax.text(0.02, 0.98, status, color="white", backgroundcolor="crimson", fontsize=7,
                ha="left", va="top", transform=ax.transAxes)
    for position, name in enumerate(inset):
        picture = input_image(sweep, name, job)
        if picture is not None:
            corner = ax.inset_axes([0.7 - 0.32 * position, 0.0, 0.3, 0.3])
            show(corner, picture)
            for spine in corner.spines.values():
                spine.set_edgecolor("white")


def plot_grid(sweep: Sweep, path: Path, cell_inches: float = 2.0, dpi: int = 100) -> GridLayout:
    """The result images in the grid ``grid_layout`` gives, inputs beside; saved as PNG."""
    layout = grid_layout(sweep)
    n_rows, n_cols = layout.shape
    aspect = cell_aspect(sweep)
    stacked = n_rows >= len(layout.beside)  # inputs stacked in one column, else side by side
    n_side = (1 if stacked else len(layout.beside)) if layout.beside else 0
    widths = [1.0] * n_side + ([0.12] if n_side else []) + [1.0] * n_cols
    label_lines = max(label.count("\n") + 1 for label in layout.cols)
    row_label_inches = 1.5 if any(layout.rows) else 0.0
    figure = Figure(
        figsize=(sum(widths) * cell_inches + row_label_inches, n_rows * cell_inches * aspect + 0.8 + 0.2 * label_lines),
        layout="constrained",
    )
    grid = figure.add_gridspec(n_rows, len(widths), width_ratios=widths)
    for index, name in enumerate(layout.beside):
        if stacked:
            span = max(1, n_rows // len(layout.beside))
            ax = figure.add_subplot(grid[index * span : (index + 1) * span, 0])
        else:
            ax = figure.add_subplot(grid[0, index])
        show(ax, input_image(sweep, name), f"no {name} image")
        ax.set_title(name, fontsize=9)
    for r, row in enumerate(layout.cells):
        for c, job in enumerate(row):
            ax = figure.add_subplot(grid[r, len(widths) - n_cols + c])
            if job is None:
                ax.set_axis_off()
            else:
                draw_job(ax, sweep, job, layout.inset)
            if r == 0:
                ax.set_title(layout.cols[c], fontsize=9)
            if c == 0 and layout.rows[r]:
                ax.set_ylabel(layout.rows[r], rotation=0, ha="right", va="center", fontsize=9)
    axes = ", ".join(f"{what}: {title}" for what, title in (("rows", layout.row_title), ("columns", layout.col_title)) if title)
    figure.suptitle(f"{sweep.name}  ({axes or 'no swept key'})\n{fit(f'network: {networks(sweep)}', figure)}", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi)
    return layout


def plot_losses(sweep: Sweep, path: Path, tags: Sequence[str] = LOSSES) -> list[str]:
    """Each job's curve per loss tag, coloured by the first swept key, dashed by the others.

    Returns the tags plotted (those some job logged above 0); writes nothing if none.
    """
    scalars = sweep.scalars
    tags = [tag for tag in tags if (scalars.loc[scalars["tag"] == tag, "value"] > 0).any()]
    if not tags:
        return []
    swept = sweep.swept
    jobs = sweep.jobs[sweep.jobs["job"].isin(scalars["job"])]  # those that logged something
    colour_of = {value: i for i, value in enumerate(dict.fromkeys(jobs[swept[0]]))} if swept else {}
    style_of = {value: i for i, value in enumerate(dict.fromkeys(map(tuple, jobs[swept[1:]].values)))}
    palette = palette_for(len(colour_of))
    figure = Figure(figsize=(4.5 * len(tags) + 2.5, 3.8), layout="constrained")
    axes = figure.subplots(1, len(tags), squeeze=False)[0]
    for ax, tag in zip(axes, tags):
        for job in jobs["job"]:
            curve = scalars[(scalars["job"] == job) & (scalars["tag"] == tag)]
            if curve.empty:
                continue
            colour = palette(colour_of[jobs.at[job, swept[0]]]) if swept else None
            style = LINE_STYLES[style_of[tuple(jobs.loc[job, swept[1:]])] % len(LINE_STYLES)]
            ax.plot(curve["step"], curve["value"], color=colour, linestyle=style, linewidth=1.2)
        values = scalars.loc[scalars["tag"] == tag, "value"]
        if (values > 0).all():
            ax.set_yscale("log")
        ax.set_title(tag, fontsize=10)
        ax.set_xlabel("iteration")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles = legend_handles(sweep, jobs, colour_of, style_of, palette)
    if handles:
        figure.legend(handles=handles, loc="outside right upper", fontsize=8)
    figure.suptitle(fit(f"{sweep.name}: losses per iteration (network: {networks(sweep)})", figure, 0.75), fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return tags


def palette_for(count: int) -> Callable[[int], Any]:
    """Distinct qualitative colours for up to 10 values, a sequential map beyond."""
    if count <= 10:
        return lambda index: colormaps["tab10"].colors[index]
    sequential = colormaps["viridis"].resampled(count)
    return lambda index: sequential(index)


def legend_handles(
    sweep: Sweep,
    jobs: pd.DataFrame,
    colour_of: dict,
    style_of: dict,
    palette: Callable[[int], Any],
    style_keys: list[str] | None = None,
    marker: str | None = None,
) -> list[Line2D]:
    """One entry per colour (the first swept key) and one per line style (``style_keys``, default the others).

    None when nothing was swept (one job, a single run, or jobs alike): the title says which run it is.
    """
    if not sweep.swept:
        return []
    colour_key = sweep.swept[0]
    style_keys = sweep.swept[1:] if style_keys is None else style_keys
    handles = []
    for value, index in colour_of.items():
        job = jobs.loc[jobs[colour_key] == value, "job"].iloc[0]
        handles.append(Line2D([], [], color=palette(index), marker=marker, label=value_label(sweep, colour_key, job)))
    if len(style_of) > 1:
        for values, index in style_of.items():
            job = jobs.loc[(jobs[style_keys] == list(values)).all(axis=1), "job"].iloc[0]
            label = ", ".join(value_label(sweep, key, job) for key in style_keys)
            handles.append(Line2D([], [], color="black", linestyle=LINE_STYLES[index % len(LINE_STYLES)], label=label))
    return handles


def fit(title: str, figure: Figure, share: float = 0.95) -> str:
    """``title`` wrapped to ``share`` of the figure's width (9 pt text: about 14 characters an inch)."""
    return textwrap.fill(title, max(40, int(figure.get_figwidth() * 14 * share)))
