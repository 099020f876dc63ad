"""A sweep's tables: results.csv (every column), results.md (the headline columns), scalars.csv (per step)."""

from __future__ import annotations

import html
import numbers
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nst_exp.report.sweep import Sweep, damaged, eval_columns, networks
from nst_exp.results import LOSSES

HEADLINE_METRICS = ("metrics.iterations", "metrics.seconds", "metrics.network", "metrics.trained_weights")


def headline(sweep: Sweep) -> pd.DataFrame:
    """The columns results.md shows; results.csv has them all."""
    losses = [tag for tag in LOSSES if tag in sweep.jobs]
    problem = ["problem"] if not damaged(sweep.jobs).empty else []
    columns = ["job", *sweep.swept, "status", *problem, "alpha/beta", *losses, *eval_columns(sweep.jobs),
               *[column for column in HEADLINE_METRICS if column in sweep.jobs], "metrics.message"]
    table = sweep.jobs[[column for column in columns if column in sweep.jobs]].astype(object)
    table = table.where(table.notna(), None)  # blank cells, not "nan", in Markdown
    for column, limit in (("metrics.message", 80), ("problem", 200)):
        if column in table:
            table[column] = table[column].map(lambda text, limit=limit: short(str(text or ""), limit))
    return escaped(table)


MARKDOWN_SPECIAL = re.compile(r"([\\`*|]|\](?=[(\[:]))")  # a backslash, code, emphasis, a cell's end, a link's "]("


def md(value: Any) -> str:
    """Text from a run as literal Markdown, on one line: ``|``, backticks, ``*`` and a link's ``](`` backslash-escaped,
    ``<``, ``>``, ``&`` as entities, so raw HTML in a config value or metric key is shown, not rendered.
    A layer list such as ``[relu1_1]`` is left as it reads."""
    return html.escape(MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(str(value).splitlines())), quote=False)


def escaped(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with every string cell, column name and index label from a run escaped by ``md``; numbers kept."""
    def cell(value: Any) -> Any:
        return value if value is None or isinstance(value, (numbers.Number, np.bool_)) else md(value)

    table = table.map(cell) if hasattr(table, "map") else table.applymap(cell)
    table.columns = [md(column) for column in table.columns]
    table.index = table.index.map(cell)
    table = table.astype(object)
    return table.where(table.notna(), None)  # blank cells, not "nan"


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
        f"# Sweep {md(sweep.root)}",
        "",
        f"- Jobs: {len(sweep.jobs)} ({md(status_counts(sweep))})",
        f"- Swept: {md(', '.join(sweep.swept)) or 'nothing (all jobs alike)'}",
        f"- Network: {md(networks(sweep))}",
        f"- All columns: results.csv; every logged loss per step: {md(where)}",
        "",
        headline(sweep).to_markdown(index=False, floatfmt=".4g", missingval=""),
        "",
    ]
    for title, table in grids(sweep):
        lines += [f"## {md(title)}", "", escaped(table).to_markdown(floatfmt=".4g", missingval=""), ""]
    flagged = damaged(sweep.jobs)
    if not flagged.empty:
        lines[5:5] = [f"- Damaged: {len(flagged)} job(s) ({md(', '.join(map(str, sorted(flagged['job']))))}); "
                      "the problem column says what is wrong with each"]
    markdown.write_text("\n".join(lines), encoding="utf-8")
    return csv, markdown, scalars if per_step else None
