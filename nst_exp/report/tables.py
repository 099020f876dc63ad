"""A sweep's tables: results.csv (every column), results.md (the headline columns), scalars.csv (per step)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from nst_exp.report.sweep import HEADLINE_LOSSES, Sweep, eval_columns, networks

HEADLINE_METRICS = ("metrics.iterations", "metrics.seconds", "metrics.network", "metrics.trained_weights")


def headline(sweep: Sweep) -> pd.DataFrame:
    """The columns results.md shows; results.csv has them all."""
    losses = [tag for tag in HEADLINE_LOSSES if tag in sweep.jobs]
    columns = ["job", *sweep.swept, "status", "alpha/beta", *losses, *eval_columns(sweep.jobs),
               *[column for column in HEADLINE_METRICS if column in sweep.jobs], "metrics.message"]
    table = sweep.jobs[[column for column in columns if column in sweep.jobs]].astype(object)
    table = table.where(table.notna(), None)  # blank cells, not "nan", in Markdown
    if "metrics.message" in table:
        table["metrics.message"] = table["metrics.message"].map(lambda text: short(str(text or ""), 80))
    return table


def short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def status_counts(sweep: Sweep) -> str:
    """"3 completed, 1 failed"."""
    return ", ".join(f"{n} {status}" for status, n in sweep.jobs["status"].value_counts().items())


def grids(sweep: Sweep) -> list[tuple[str, pd.DataFrame]]:
    """For a sweep of two keys (Fig. 3's layer sets x ratios): each picture score as a table, rows x columns.

    Returns (title, table) pairs, one per ``eval/*`` column; empty unless exactly two keys were swept.
    Rows and columns keep the sweep's order; a cell is the mean over jobs that share it (seeds).
    """
    if len(sweep.swept) != 2:
        return []
    rows, columns = sweep.swept
    jobs = sweep.jobs.assign(**{key: sweep.jobs[key].astype(str) for key in sweep.swept})
    tables = []
    for metric in eval_columns(sweep.jobs):
        table = jobs.pivot_table(index=rows, columns=columns, values=metric, aggfunc="mean", sort=False)
        table.columns = [f"{columns}={value}" for value in table.columns]
        tables.append((f"{metric}: {rows} (rows) by {columns} (columns)", table))
    return tables


def write_tables(sweep: Sweep, out: Path, per_step: bool = True) -> tuple[Path, Path, Path | None]:
    """results.csv (every column), results.md (headline), scalars.csv (per step; None without ``per_step``)."""
    out.mkdir(parents=True, exist_ok=True)
    csv, markdown, scalars = out / "results.csv", out / "results.md", out / "scalars.csv"
    sweep.jobs.to_csv(csv, index=False)
    if per_step:
        steps = sweep.scalars.merge(sweep.jobs[["job", *sweep.swept]], on="job", how="left")
        steps[["job", *sweep.swept, "tag", "step", "value"]].to_csv(scalars, index=False)
    where = "scalars.csv" if per_step else f"the TensorBoard event files in {sweep.root}"
    lines = [
        f"# Sweep {sweep.root}",
        "",
        f"- Jobs: {len(sweep.jobs)} ({status_counts(sweep)})",
        f"- Swept: {', '.join(sweep.swept) or 'nothing (all jobs alike)'}",
        f"- Network: {networks(sweep)}",
        f"- All columns: results.csv; every logged loss per step: {where}",
        "",
        headline(sweep).to_markdown(index=False, floatfmt=".4g", missingval=""),
        "",
    ]
    for title, table in grids(sweep):
        lines += [f"## {title}", "", table.to_markdown(floatfmt=".4g", missingval=""), ""]
    markdown.write_text("\n".join(lines))
    return csv, markdown, scalars if per_step else None
