"""index.html: every job of a sweep on one page that opens from disk in any browser.

One row per job: its result (a thumbnail; click it to see it full size, tick two to compare
them side by side or blinking in one place), its swept settings (alpha and beta as typed, the
others as the paper labels them), status, final losses (a term 0 for every job left out),
picture metrics, a small loss curve, a strip of its snapshots, and links to its metrics.json
and resolved config. Columns sort by their header, a filter box keeps the rows holding every
word typed (gallery_page holds the page's script and style). Nothing is fetched from a server
or the network and every link is relative, so the sweep's folder can be moved or copied whole.
With ``self_contained`` the page links to copies of what it shows of each job (result,
metrics.json, config, content and style images, the strip's snapshots) under ``jobs/`` beside
it, so the report folder stands alone.

Every string from a run (a metric key, a config value, a message) is untrusted: escaped with
``html.escape`` in text and attributes, and embedded in the page's JSON with ``</`` escaped.
"""

from __future__ import annotations

import html
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from nst_exp.report.figures import inputs_that_vary
from nst_exp.report.gallery_page import CSS, script, script_json
from nst_exp.report.labels import setting, value_label
from nst_exp.report.sweep import Sweep, eval_columns, networks
from nst_exp.report.tables import status_counts
from nst_exp.results import CONTENT, LOSSES, STYLE, TOTAL, RunDir, Status
from nst_exp.tensorboard_run import sweep_task, typed_values

GALLERY_FILE = "index.html"
CURVES_DIR = "curves"  # one small loss-curve PNG per job, beside index.html
JOBS_DIR = "jobs"  # self-contained reports: each job's published files, jobs/<job>/..., beside index.html
PUBLISHED_FILES = (RunDir.RESULT, RunDir.METRICS, f"{RunDir.RECORD}/{RunDir.CONFIG}", f"{RunDir.RECORD}/{RunDir.OVERRIDES}")
# Hex, which both matplotlib and a browser read (a browser ignores matplotlib's "tab:blue")
CURVE_COLOURS = {TOTAL: "#000000", CONTENT: "#1f77b4", STYLE: "#ff7f0e"}
SNAPSHOT_NAME = re.compile(r"iter_(\d+)\.png")  # nst_exp.callbacks.Snapshots' names
NOWRAP_LIMIT = 32  # characters of a swept value's label kept on one line
STRIP_SNAPSHOTS = 8  # at most this many of a job's snapshots in its strip (evenly spaced, the last included)

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


def plot_job_curves(sweep: Sweep, folder: Path, tags: tuple[str, ...] = LOSSES) -> dict[int, Path]:
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


def snapshot_strip(folder: Path) -> list[Path]:
    """Up to ``STRIP_SNAPSHOTS`` of the PNGs in ``folder`` in iteration order, evenly spaced, the last included."""
    def order(path: Path) -> tuple[int, str]:
        match = SNAPSHOT_NAME.fullmatch(path.name)
        return (int(match.group(1)) if match else -1), path.name

    found = sorted((path for path in folder.glob("*.png") if path.is_file() and not path.is_symlink()),
                   key=order) if folder.is_dir() else []
    if len(found) > STRIP_SNAPSHOTS:
        last = len(found) - 1
        found = [found[round(i * last / (STRIP_SNAPSHOTS - 1))] for i in range(STRIP_SNAPSHOTS)]
    return found


def published_files(job_dir: Path) -> list[str]:
    """The files of a job a self-contained report copies, relative to ``job_dir``.

    Its result.png, metrics.json and config, the content and style images it was made
    with (``inputs/``), and the snapshots its strip shows: what a reader needs to judge a
    job and run it again. Checkpoints, event files and the other snapshots stay with the
    sweep. A link in the sweep is not followed (nothing from outside it is published).
    """
    inputs = sorted(RunDir(job_dir).inputs.glob("*.png")) if RunDir(job_dir).inputs.is_dir() else []
    names = [*PUBLISHED_FILES, *(path.relative_to(job_dir).as_posix() for path in inputs),
             *(path.relative_to(job_dir).as_posix() for path in snapshot_strip(RunDir(job_dir).snapshots))]
    return [name for name in names if (job_dir / name).is_file() and not (job_dir / name).is_symlink()]


def copy_job_files(sweep: Sweep, folder: Path) -> dict[int, Path]:
    """Copy each job's ``published_files`` into ``folder/<job>/``; job -> its copy.

    A job of an earlier report that is gone is removed by ``build.report``, which
    replaces only the files a report wrote.
    """
    copies: dict[int, Path] = {}
    for job in sweep.jobs["job"]:
        copies[int(job)] = copy = folder / str(job)
        source_dir = sweep.job_dir(int(job))
        for name in published_files(source_dir):
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source_dir / name, copy / name)
    return copies


def swept_cell(sweep: Sweep, key: str, job: int, typed_as: Mapping[str, Mapping[str, str]]) -> tuple[str, str]:
    """(``<td>``, filter text) of a swept key: alpha and beta as typed, other values as the paper labels them."""
    row = sweep.jobs.loc[job]
    typed = typed_as.get(key, {}).get(str(row[key]), str(row[key]))
    if key in ("alpha", "beta"):
        value = typed if typed else f"{setting(sweep.settings.get(job, {}), key)} (not set)"
        try:
            sort = repr(float(typed))  # numbers sort as numbers: 1e3 before 1e4
        except ValueError:
            sort = ""
        lines = [value]
    else:
        sort = str(list(dict.fromkeys(sweep.jobs[key])).index(row[key]))  # the order the sweep listed its values
        lines = value_label(sweep, key, job).split("\n")
    # "alpha/beta = 1e-7" and other short values stay on one line (a browser breaks "1e-" / "7"); long text wraps
    label = "<br>".join(f'<span class="nowrap">{html.escape(line)}</span>' if len(line) <= NOWRAP_LIMIT
                        else html.escape(line) for line in lines)
    title = html.escape(f"{key}={typed}")
    return f'<td data-sort="{html.escape(sort)}" title="{title}">{label}</td>', f"{key}={typed} {' '.join(lines)}"


def job_caption(sweep: Sweep, job: int, typed_as: Mapping[str, Mapping[str, str]]) -> str:
    """"job 3: beta=1e3, style=the_scream": how the viewer names a job."""
    values = ", ".join(f"{key}={typed_as.get(key, {}).get(str(value), value)}"
                       for key, value in sweep.jobs.loc[job, sweep.swept].items())
    return f"job {job}: {values}" if values else f"job {job}"


def job_row(sweep: Sweep, job: int, job_dir: Path, out: Path, curves: Mapping[int, Path], numbers: list[str],
            typed_as: Mapping[str, Mapping[str, str]]) -> tuple[str, dict[str, Any]]:
    """(one ``<tr>``, the job for the page's script): result, job, swept settings, status, numbers, loss curve,
    snapshots, links to the files in ``job_dir``. Every string from the run is escaped."""
    row = sweep.jobs.loc[job]
    caption = job_caption(sweep, job, typed_as)
    result = RunDir(job_dir).result
    data: dict[str, Any] = {"label": caption, "result": None}
    if result.is_file():
        data["result"] = href = link(result, out)
        picture = (f'<a class="zoom" href="{href}" data-caption="{html.escape(caption)}">'
                   f'<img src="{href}" alt="result of job {job}" loading="lazy"></a>'
                   f'<label><input type="checkbox" class="pick" data-job="{job}"> compare</label>')
    else:
        picture = '<span class="none">no result.png</span>'
    cells = [cell(picture, job, "result"), cell(str(job), job, "num")]
    search = [f"job {job}"]
    for key in sweep.swept:
        swept, text = swept_cell(sweep, key, job, typed_as)
        cells.append(swept)
        search.append(text)
    status = str(row["status"])
    message = row.get("metrics.message")
    message = message if isinstance(message, str) else ""  # NaN where metrics.json had none
    css = "status-completed" if status == Status.COMPLETED else "status-other"
    shown = f'<span class="{css}">{html.escape(status)}</span>'
    if message and status != Status.COMPLETED:
        shown += f'<span class="message">{html.escape(message[:200])}</span>'
        search.append(message[:200])
    problem = row.get("problem")
    if isinstance(problem, str) and problem:  # damaged files (nst_exp.report.sweep): flagged, whatever the status
        shown += f'<span class="message damaged">damaged: {html.escape(problem[:300])}</span>'
        search.append(f"damaged {problem[:300]}")
    search.append(status)
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
    strip = snapshot_strip(RunDir(job_dir).snapshots)
    pictures = []
    for path in strip:
        match = SNAPSHOT_NAME.fullmatch(path.name)
        name = str(int(match.group(1))) if match else path.stem
        what = html.escape(f"{caption}, iteration {name}" if match else f"{caption}, {name}")
        pictures.append(f'<a class="zoom" href="{link(path, out)}" data-caption="{what}" title="{what}">'
                        f'<img src="{link(path, out)}" alt="{what}" loading="lazy">{html.escape(name)}</a>')
    cells.append(cell(f'<div class="strip">{"".join(pictures)}</div>' if pictures else "", len(strip), "snapshots"))
    files = [(name, job_dir / path) for name, path in
             (("snapshots", RunDir.SNAPSHOTS), ("metrics.json", RunDir.METRICS), ("config", f"{RunDir.RECORD}/{RunDir.CONFIG}"))]
    links = [f'<a href="{link(path, out)}{"/" if path.is_dir() else ""}">{name}</a>' for name, path in files
             if path.exists()]
    cells.append(cell("<br>".join(links), str(row["dir"])))
    attributes = f'data-job="{job}" data-search="{html.escape(" ".join(search))}"'
    return f"<tr {attributes}>" + "".join(cells) + "</tr>", data


def shown_losses(sweep: Sweep) -> list[str]:
    """The final-loss columns to show: a term that is 0 for every job (beta = 0 throughout) is left out."""
    shown = []
    for tag in LOSSES:
        if tag not in sweep.jobs:
            continue
        values = pd.to_numeric(sweep.jobs[tag], errors="coerce").dropna()
        if tag == TOTAL or values.empty or (values != 0).any():
            shown.append(tag)
    return shown


def curve_key(sweep: Sweep) -> str:
    """The loss curves' colour key: the terms some job's curve draws (a term 0 throughout is not drawn)."""
    scalars = sweep.scalars
    drawn = [tag for tag in CURVE_COLOURS if not scalars.empty
             and (scalars.loc[scalars["tag"] == tag, "value"] != 0).any()]
    return " ".join(f'<span style="color: {CURVE_COLOURS[tag]}; font-weight: 600">{tag.split("/")[-1]}</span>'
                    for tag in drawn)


def header(sweep: Sweep, numbers: list[str]) -> str:
    """The ``<th>``s; every name escaped (a metric key is text from a run). Long names may break after their "/"."""
    def name(text: str) -> str:
        return html.escape(text).replace("/", "/<wbr>")

    key = curve_key(sweep)
    cells = [name(text) for text in ("result", "job", *sweep.swept, "status", *numbers)]
    cells += [f'loss curve <span class="key">({key})</span>' if key else "loss curve", "snapshots", "files"]
    return "".join(f'<th scope="col">{text}</th>' for text in cells)


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
                          if (path := RunDir(job_dir).input_image(name)).is_file()), None)
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
    numbers = shown_losses(sweep) + eval_columns(sweep.jobs)
    rows, jobs = [], {}
    task = sweep_task(sweep.root)  # the sweep as typed: beta=1e3, not the 1000.0 each job records
    typed_as = typed_values(task)[0] if task is not None else {}
    for job, job_dir in job_dirs.items():
        row, data = job_row(sweep, job, job_dir, out, curves, numbers, typed_as)
        rows.append(row)
        jobs[str(job)] = data
    title = html.escape(f"Sweep {sweep.name}")
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>{CSS}</style>
</head>
<body>
<h1>{title}</h1>
<div class="about">
{about(sweep, job_dirs, out, files or {})}
<p>Click a column's header to sort by it; click again to reverse. Click a result or a snapshot to see it full
size; tick "compare" under two results to see them side by side or blinking in one place.</p>
</div>
<div class="controls">
<input type="search" id="filter" placeholder="Filter: words a job's row must hold, e.g. beta=1e3 completed"
 aria-label="Filter the jobs">
<span id="shown">{len(rows)} jobs</span>
<button type="button" id="compare" disabled>Compare: pick 2 more results</button>
</div>
<table class="sortable">
<thead><tr>{header(sweep, numbers)}</tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody>
</table>
{figures(out, files or {})}
<div id="viewer" hidden role="dialog" aria-label="Full-size view">
<div class="bar"><span class="caption"></span><button type="button" id="mode" hidden>blink</button>
<button type="button" id="close">close (Esc)</button></div>
<div class="pictures"></div>
</div>
<script type="application/json" id="gallery-data">{script_json({"jobs": jobs})}</script>
<script>{script()}</script>
</body>
</html>
"""
    path = out / GALLERY_FILE
    path.write_text(page, encoding="utf-8")
    return path, curves
