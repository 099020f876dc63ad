"""tradeoff.png: how much of the photo each job kept against how close it came to the style.

Content SSIM (``eval/content_ssim``, higher = more of the photo's structure kept) on y,
style SWD (``eval/style_swd``, lower = closer to the painting's textures) on x, one point
per job, coloured by the first swept key. Where two keys are swept (Fig. 3: layer sets by
alpha/beta) each value of the first is one line across the second, so the paper's grid
of pictures becomes a measured curve per layer set; with more keys each combination of
all but the last is a line across the last. A job made without the photo or without the
painting (Fig. 1's reconstructions) trades nothing and is left out.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from nst_exp.report.figures import LINE_STYLES, fit, legend_handles, palette_for
from nst_exp.report.labels import axis_title, value_label
from nst_exp.report.sweep import Sweep, networks
from nst_exp.results import CONTENT_SSIM, STYLE_SWD, Status, inputs_used


def measured(sweep: Sweep) -> pd.DataFrame:
    """The jobs made with both images that have both a content SSIM and a style SWD, in sweep order."""
    jobs = sweep.jobs
    if CONTENT_SSIM not in jobs or STYLE_SWD not in jobs:
        return jobs.iloc[:0]
    values = jobs[[CONTENT_SSIM, STYLE_SWD]].apply(pd.to_numeric, errors="coerce")
    both = jobs["job"].map(lambda job: inputs_used(sweep.settings.get(job, {})) == {"content", "style"})
    return jobs[values.notna().all(axis=1) & both]


def point_labels(sweep: Sweep, jobs: pd.DataFrame, keys: list[str]) -> tuple[dict[int, str], str]:
    """(job -> the swept values the legend does not already give, on one line; what they are).

    A "name = " every label starts with is said once, in the second item, so the labels
    stay short enough not to run into each other: "1e-3" rather than "alpha/beta = 1e-3".
    """
    if not sweep.swept:
        return {int(job): f"job {job}" for job in jobs["job"]}, ""
    labels = {int(job): ", ".join(value_label(sweep, key, job).replace("\n", ", ") for key in keys)
              for job in jobs["job"]}
    names = {label.split(" = ", 1)[0] for label in labels.values()}
    if len(names) == 1 and all(" = " in label and ", " not in label for label in labels.values()):
        return {job: label.split(" = ", 1)[1] for job, label in labels.items()}, names.pop()
    return labels, ""


def plot_tradeoff(sweep: Sweep, path: Path) -> list[int]:
    """Content SSIM against style SWD per job, saved as PNG; returns the jobs plotted (none: no file)."""
    jobs = measured(sweep)
    if jobs.empty:
        return []
    swept = sweep.swept
    colour_key = swept[0] if swept else None
    colour_of = {value: i for i, value in enumerate(dict.fromkeys(jobs[colour_key]))} if colour_key else {}
    palette = palette_for(max(1, len(colour_of)))
    # the legend names the colours; each point names the rest (all of it when one key is swept)
    annotated = swept[1:] if len(swept) > 1 else swept
    line_keys = swept[:-1] if len(swept) > 1 else []
    style_of = {value: i for i, value in enumerate(dict.fromkeys(map(tuple, jobs[line_keys[1:]].values)))}

    figure = Figure(figsize=(8.0, 5.5), layout="constrained")
    ax = figure.subplots()
    labels, labelled_by = point_labels(sweep, jobs, annotated)
    groups = jobs.groupby(line_keys, sort=False) if line_keys else [((), jobs)]
    for _, group in groups:
        first = group.iloc[0]
        colour = palette(colour_of[first[colour_key]]) if colour_key else "tab:blue"
        style = LINE_STYLES[style_of[tuple(first[line_keys[1:]])] % len(LINE_STYLES)] if line_keys else ""
        x, y = group[STYLE_SWD].astype(float), group[CONTENT_SSIM].astype(float)
        completed = group["status"] == Status.COMPLETED  # a diverged job is marked, not joined to the curve
        if line_keys and completed.sum() > 1:
            ax.plot(x[completed], y[completed], color=colour, linestyle=style, linewidth=1.2, zorder=1)
        for job, swd, ssim in zip(group["job"], x, y):
            finished = group.at[job, "status"] == Status.COMPLETED
            own = palette(colour_of[group.at[job, colour_key]]) if colour_key else colour  # one key: per point
            ax.scatter([swd], [ssim], color=own, marker="o" if finished else "X", s=30, zorder=2)
            label = labels[int(job)] + ("" if finished else f" ({group.at[job, 'status']})")
            ax.annotate(label, (swd, ssim), xytext=(4, 4), textcoords="offset points", fontsize=7)
    swd = jobs[STYLE_SWD].astype(float)
    if (swd > 0).all() and swd.max() / swd.min() > 20:
        ax.set_xscale("log")
    ax.set_xlabel("style SWD (eval/style_swd): lower = closer to the style's textures")
    ax.set_ylabel("content SSIM (eval/content_ssim): higher = more structure kept")
    ax.text(0.01, 0.99, "better: up (content) and left (style)", transform=ax.transAxes,
            ha="left", va="top", fontsize=8, color="0.35")
    ax.grid(True, linewidth=0.4, color="0.85")
    ax.margins(0.12)  # room for the labels beside the outermost points
    handles = legend(sweep, jobs, colour_key, colour_of, line_keys, style_of, palette)
    if handles:
        figure.legend(handles=handles, loc="outside right upper", fontsize=8, title=axis_title(swept[:1]),
                      title_fontsize=8)
    lines = f"; one line per {axis_title(line_keys)} across {axis_title(swept[-1:])}" if line_keys else ""
    lines += f"; points labelled by {labelled_by}" if labelled_by else ""
    # a title over the axes only, so it never runs under the legend beside them
    ax.set_title(fit(f"{sweep.name}: content kept against style matched{lines} (network: {networks(sweep)})",
                     figure, 0.7), fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return [int(job) for job in jobs["job"]]


def legend(
    sweep: Sweep, jobs: pd.DataFrame, colour_key: str | None, colour_of: dict, line_keys: list[str],
    style_of: dict, palette: Callable[[int], Any],
) -> list[Line2D]:
    """One entry per colour (the first swept key) and, with three or more keys, one per line style."""
    if colour_key is None or (len(sweep.swept) == 1 and len(colour_of) == len(jobs)):
        return []  # no key, or one key whose every value is already written beside its point
    return legend_handles(sweep, jobs, colour_of, style_of, palette, style_keys=line_keys[1:], marker="o")

