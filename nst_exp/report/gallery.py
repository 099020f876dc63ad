"""index.html: every job of a sweep on one page that opens from disk in any browser.

One row per job: its result (a thumbnail linking to the full-size result.png), its swept
settings as the paper labels them, status, final losses, picture metrics, a small loss
curve, and links to its snapshots, metrics.json and resolved config. Every column sorts
by clicking its header (a few lines of inline JavaScript); nothing is fetched from a
server or the network, and every link is relative, so the sweep's folder can be moved or
copied whole. With ``self_contained`` the page links to copies of each job's result,
metrics.json and config under ``jobs/`` beside it instead, so the report folder stands alone.
"""

from __future__ import annotations

import html
import os
import shutil
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import quote

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from nst_exp.report.figures import inputs_that_vary
from nst_exp.report.labels import value_label
from nst_exp.report.sweep import HEADLINE_LOSSES, Sweep, eval_columns, networks
from nst_exp.report.tables import status_counts
from nst_exp.results import INPUTS_DIR, METRICS_FILE, RECORD_DIR, RESULT_FILE, SNAPSHOTS_DIR, Status

GALLERY_FILE = "index.html"
CURVES_DIR = "curves"  # one small loss-curve PNG per job, beside index.html
JOBS_DIR = "jobs"  # self-contained reports: each job's published files, jobs/<job>/..., beside index.html
PUBLISHED_FILES = (RESULT_FILE, METRICS_FILE, f"{RECORD_DIR}/config.yaml", f"{RECORD_DIR}/overrides.yaml")
CURVE_COLOURS = {"loss/total": "black", "loss/content": "tab:blue", "loss/style": "tab:orange"}

SORT_SCRIPT = """
for (const table of document.querySelectorAll("table.sortable")) {
  table.querySelectorAll("thead th").forEach((th, column) => th.addEventListener("click", () => {
    const descending = th.getAttribute("aria-sort") === "ascending";
    table.querySelectorAll("thead th").forEach((other) => other.removeAttribute("aria-sort"));
    th.setAttribute("aria-sort", descending ? "descending" : "ascending");
    const key = (row) => row.cells[column].dataset.sort ?? row.cells[column].textContent.trim();
    const rows = Array.from(table.tBodies[0].rows).sort((a, b) => {
      const x = key(a), y = key(b);
      if (x === "" || y === "") return (x === "") - (y === "");  // blanks last, either way
      const numbers = x.trim() !== "" && !isNaN(x) && !isNaN(y);
      const order = numbers ? Number(x) - Number(y) : x.localeCompare(y, undefined, {numeric: true});
      return descending ? -order : order;
    });
    table.tBodies[0].append(...rows);
  }));
}
"""

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1em; color: #222; }
h1 { font-size: 1.3em; margin: 0 0 0.3em; } h2 { font-size: 1.1em; margin: 1.5em 0 0; }
.about { margin: 0 0 1em; } .about p { margin: 0.15em 0; }
.inputs img { height: 96px; margin-right: 0.5em; vertical-align: top; border: 1px solid #ccc; }
table { border-collapse: collapse; }
th, td { border: 1px solid #ddd; padding: 4px 6px; vertical-align: middle; }
thead th { position: sticky; top: 0; background: #f3f3f3; cursor: pointer; user-select: none; }
thead th:hover { background: #e6e6e6; }
thead th[aria-sort="ascending"]::after { content: " \\25B2"; }
thead th[aria-sort="descending"]::after { content: " \\25BC"; }
tbody tr:nth-child(even) { background: #fafafa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.result img { display: block; width: 112px; height: auto; max-height: 160px; object-fit: contain; }
td.curve img { display: block; width: 176px; }
.figures img { display: block; max-width: 100%; margin: 0.5em 0 1.5em; border: 1px solid #ddd; }
.none { display: inline-block; width: 112px; padding: 40px 0; text-align: center; background: #e0e0e0;
        color: #555; font-size: 12px; }
.status-completed { color: #1a7f37; } .status-other { color: #b42318; font-weight: 600; }
.message { display: block; min-width: 140px; max-width: 220px; color: #555; font-size: 12px; }
.key { font-size: 12px; font-weight: normal; }
"""


def link(target: Path, base: Path) -> str:
    """``target`` relative to the folder ``base`` as a URL path, so the page works after a move."""
    return quote(Path(os.path.relpath(target, base)).as_posix())


def number(value: Any) -> tuple[str, str]:
    """(shown, sort key) of a table number; blanks for a missing one."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "", ""
    try:
        return f"{float(value):.4g}", repr(float(value))
    except (TypeError, ValueError):
        return html.escape(str(value)), html.escape(str(value))


def cell(content: str, sort: str | int | None = None, css: str = "") -> str:
    attributes = (f' data-sort="{html.escape(str(sort))}"' if sort is not None else "") + (
        f' class="{css}"' if css else "")
    return f"<td{attributes}>{content}</td>"


def plot_job_curves(sweep: Sweep, folder: Path, tags: tuple[str, ...] = HEADLINE_LOSSES) -> dict[int, Path]:
    """A 360 x 210 px PNG of each job's logged losses (log scale where positive); job -> file."""
    written: dict[int, Path] = {}
    scalars = sweep.scalars
    for job in sweep.jobs["job"]:
        curves = scalars[(scalars["job"] == job) & scalars["tag"].isin(tags)]
        zero = curves.groupby("tag")["value"].transform(lambda values: (values == 0).all())
        curves = curves[~zero.astype(bool)]  # a term the run did not have (beta = 0): a flat line that hides the log scale
        if curves.empty:
            continue
        figure = Figure(figsize=(2.4, 1.4), layout="constrained")
        ax = figure.subplots()
        for tag in tags:
            curve = curves[curves["tag"] == tag]
            if not curve.empty:
                ax.plot(curve["step"], curve["value"], color=CURVE_COLOURS.get(tag), linewidth=1.1)
        if (curves["value"] > 0).all():
            ax.set_yscale("log")
        ax.tick_params(labelsize=6, length=2, pad=1)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=4))
        ax.set_xlabel("iteration", fontsize=6, labelpad=1)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"job_{job}.png"
        figure.savefig(path, dpi=150)  # shown 176 px wide: sharp on high-density screens too
        written[int(job)] = path
    return written


def copy_job_files(sweep: Sweep, folder: Path) -> dict[int, Path]:
    """Copy each job's result.png, metrics.json and config into ``folder/<job>/``; job -> its copy.

    What a reader needs to judge a job and run it again; snapshots, checkpoints, event files
    and the input images stay with the sweep. A job of an earlier report that is gone is removed
    by ``build.report``, which replaces only the files a report wrote.
    """
    copies: dict[int, Path] = {}
    for job in sweep.jobs["job"]:
        copies[int(job)] = copy = folder / str(job)
        for name in PUBLISHED_FILES:
            source = sweep.job_dir(int(job)) / name
            if source.is_file() and not source.is_symlink():  # a shared sweep's link could name any file here
                (copy / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, copy / name)
    return copies


def job_row(sweep: Sweep, job: int, job_dir: Path, out: Path, curves: Mapping[int, Path], numbers: list[str]) -> str:
    """One ``<tr>``: result, job, swept settings, status, numbers, loss curve, links to the files in ``job_dir``."""
    row = sweep.jobs.loc[job]
    result = job_dir / RESULT_FILE
    if result.is_file():
        href = link(result, out)
        picture = f'<a href="{href}"><img src="{href}" alt="result of job {job}" loading="lazy"></a>'
    else:
        picture = '<span class="none">no result.png</span>'
    cells = [cell(picture, job, "result"), cell(str(job), job, "num")]
    for key in sweep.swept:
        rank = list(dict.fromkeys(sweep.jobs[key])).index(row[key])  # the order the sweep listed its values
        label = html.escape(value_label(sweep, key, job)).replace("\n", "<br>")
        cells.append(f'<td data-sort="{rank}" title="{html.escape(f"{key}={row[key]}")}">{label}</td>')
    status = str(row["status"])
    message = row.get("metrics.message")
    message = message if isinstance(message, str) else ""  # NaN where metrics.json had none
    css = "status-completed" if status == Status.COMPLETED else "status-other"
    shown = f'<span class="{css}">{html.escape(status)}</span>'
    if message and status != Status.COMPLETED:
        shown += f'<span class="message">{html.escape(message[:200])}</span>'
    cells.append(cell(shown, status))
    for column in numbers:
        text, sort = number(row.get(column))
        cells.append(cell(text, sort, "num"))
    if job in curves:
        href = link(curves[job], out)
        cells.append(cell(f'<a href="{href}"><img src="{href}" alt="losses of job {job}" loading="lazy"></a>',
                          number(row.get("logged_steps"))[1], "curve"))
    else:
        cells.append(cell("no logged losses", "", "curve"))
    files = [(name, job_dir / path) for name, path in
             (("snapshots", SNAPSHOTS_DIR), ("metrics.json", METRICS_FILE), ("config", ".hydra/config.yaml"))]
    links = [f'<a href="{link(path, out)}{"/" if path.is_dir() else ""}">{name}</a>' for name, path in files
             if path.exists()]
    cells.append(cell("<br>".join(links), str(row["dir"])))
    return "<tr>" + "".join(cells) + "</tr>"


def header(sweep: Sweep, numbers: list[str]) -> str:
    keys = "".join(f'<span style="color:{colour}; font-weight: 600">{tag.split("/")[-1]}</span> '
                   for tag, colour in CURVE_COLOURS.items())
    names = ["result", "job", *sweep.swept, "status", *numbers,
             f'loss curve <span class="key">({keys.strip()})</span>', "files"]
    # long names may break after their "/" ("eval/<wbr>content_ssim"), so the table fits a screen
    return "".join(f'<th scope="col">{name if "<" in name else html.escape(name).replace("/", "/<wbr>")}</th>'
                   for name in names)


def about(sweep: Sweep, job_dirs: Mapping[int, Path], out: Path, files: Mapping[str, Path]) -> str:
    """The sweep in a few lines, links to the other report files, and the inputs when all jobs share them."""
    lines = [
        f"<p>{len(sweep.jobs)} jobs ({html.escape(status_counts(sweep))}); swept: "
        f"{html.escape(', '.join(sweep.swept) or 'nothing')}</p>",
        f"<p>Network: {html.escape(networks(sweep))}</p>",
    ]
    others = [f'<a href="{link(path, out)}">{html.escape(name)}</a>' for name, path in files.items()
              if Path(path).is_file() and name != GALLERY_FILE]
    if others:
        lines.append(f"<p>Report files: {' &middot; '.join(others)}</p>")
    beside, _ = inputs_that_vary(sweep)  # the inputs every job shares, as figure.png shows them
    shared = {name: next((path for job_dir in job_dirs.values()
                          if (path := job_dir / INPUTS_DIR / f"{name}.png").is_file()), None)
              for name in beside}
    shared = {name: path for name, path in shared.items() if path is not None}
    if shared:
        pictures = "".join(f'<a href="{link(path, out)}"><img src="{link(path, out)}" alt="{name} image" '
                           f'title="{name}"></a>' for name, path in shared.items())
        lines.append(f'<p class="inputs">{" and ".join(shared)}: {pictures}</p>')
    return "\n".join(lines)


def figures(out: Path, files: Mapping[str, Path]) -> str:
    """The sweep's figures under the table, each linking to itself at full size."""
    shown = [(name, Path(files[name])) for name in ("tradeoff.png", "figure.png", "losses.png")
             if name in files and Path(files[name]).is_file()]
    if not shown:
        return ""
    pictures = "".join(f'<h2>{html.escape(name)}</h2><a href="{link(path, out)}"><img src="{link(path, out)}" '
                       f'alt="{html.escape(name)}"></a>' for name, path in shown)
    return f'<div class="figures">{pictures}</div>'


def write_gallery(sweep: Sweep, out: Path, files: Mapping[str, Path] | None = None,
                  self_contained: bool = False) -> tuple[Path, dict[int, Path]]:
    """Write ``out/index.html`` and the per-job loss curves under ``out/curves/``; (page, job -> curve).

    ``self_contained``: copy the jobs' files under ``out/jobs/`` and link to those (``copy_job_files``).
    """
    out.mkdir(parents=True, exist_ok=True)
    curves = plot_job_curves(sweep, out / CURVES_DIR)
    if self_contained:
        job_dirs = copy_job_files(sweep, out / JOBS_DIR)
    else:
        job_dirs = {int(job): sweep.job_dir(int(job)) for job in sweep.jobs["job"]}
    numbers = [tag for tag in HEADLINE_LOSSES if tag in sweep.jobs] + eval_columns(sweep.jobs)
    rows = "\n".join(job_row(sweep, job, job_dir, out, curves, numbers) for job, job_dir in job_dirs.items())
    title = html.escape(f"Sweep {sweep.name}")
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>{STYLE}</style>
</head>
<body>
<h1>{title}</h1>
<div class="about">
{about(sweep, job_dirs, out, files or {})}
<p>Click a column's header to sort by it; click again to reverse.</p>
</div>
<table class="sortable">
<thead><tr>{header(sweep, numbers)}</tr></thead>
<tbody>
{rows}
</tbody>
</table>
{figures(out, files or {})}
<script>{SORT_SCRIPT}</script>
</body>
</html>
"""
    path = out / GALLERY_FILE
    path.write_text(page, encoding="utf-8")
    return path, curves
