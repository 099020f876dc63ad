"""``build_report(sweep_dir)``: read a sweep and write its tables, figures and gallery page into one folder.

The report replaces only files it wrote: ``<out>/.nst_exp_report.json`` lists them (paths
relative to ``out``), and a later report removes only listed files it does not write again,
never following a path out of ``out``. A file of the report's name that the report did not
write (a user's ``index.html`` in ``--out ~/notes``) is not replaced: the report is refused.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from nst_exp.atomic import write_json
from nst_exp.errors import NstError
from nst_exp.report.figures import GridLayout, plot_grid, plot_losses
from nst_exp.report.gallery import CURVES_DIR, GALLERY_FILE, JOBS_DIR, published_files, write_gallery
from nst_exp.report.sweep import Sweep, damaged, read_sweep
from nst_exp.report.tables import write_tables
from nst_exp.report.tradeoff import CONTENT_SSIM, STYLE_SWD, plot_tradeoff
from nst_exp.results import REPORT_MANIFEST as MANIFEST

log = logging.getLogger(__name__)

TOP_FILES = ("results.csv", "results.md", "scalars.csv", "figure.png", "losses.png", "tradeoff.png", GALLERY_FILE)
TOP_DIRS = (CURVES_DIR, JOBS_DIR)
DIR_MARKS = tuple(f"{name}/" for name in TOP_DIRS)  # in a manifest: the folder is the report's


@dataclass
class Report:
    """What ``report`` read and wrote."""

    sweep: Sweep
    layout: GridLayout  # where each job sits in figure.png
    written: dict[str, Path]  # file name -> path
    loss_tags: list[str]  # the tags losses.png shows (empty: no scalars, no file)
    tradeoff_jobs: list[int]  # the jobs tradeoff.png shows (empty: no picture metrics, no file)

    @property
    def damaged(self) -> list[int]:
        """The jobs whose row says what is wrong with them (``problem``)."""
        return sorted(int(job) for job in damaged(self.sweep.jobs)["job"])


def build_report(root: Path | str, out: Path | str | None = None, *, self_contained: bool = False,
           scalars: bool = True) -> Report:
    """Read the sweep at ``root`` and write the tables and figures into ``out`` (default <root>/report).

    ``self_contained``: also copy what the gallery shows of each job (``published_files``) into
    ``<out>/jobs/<job>/`` and link the gallery to them, so ``out`` can be moved or published alone.
    ``scalars=False``: no scalars.csv (every logged value per step; large for long sweeps).
    Only files an earlier report listed in ``<out>/.nst_exp_report.json`` are replaced or removed.
    """
    sweep = read_sweep(root)
    out = Path(out) if out is not None else sweep.root / "report"
    owned = claim(out)
    out.mkdir(parents=True, exist_ok=True)
    # listed before they are written, so a report stopped halfway is not refused as someone else's files next time
    write_manifest(out, owned | {*TOP_FILES, *DIR_MARKS})
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
    now = {path.relative_to(out).as_posix() for path in written.values() if path.is_file()}
    now |= {path.relative_to(out).as_posix() for path in curves.values()}
    if self_contained:
        now |= {f"{JOBS_DIR}/{job}/{name}"
                for job in sweep.jobs["job"] for name in published_files(sweep.job_dir(int(job)))}
    stale = [entry for entry in sorted(owned - now) if remove_owned(out, entry)]  # an earlier report's, now untrue
    if stale:
        log.info(f"Removed {len(stale)} file(s) an earlier report wrote in {out} that this sweep gives none of: "
                 + ", ".join(stale[:8]) + (", ..." if len(stale) > 8 else ""))
    write_manifest(out, now | {mark for mark in DIR_MARKS if (out / mark).is_dir()})
    return Report(sweep, layout, written, loss_tags, tradeoff_jobs)


def write_manifest(out: Path, files: set[str]) -> None:
    """``out/.nst_exp_report.json``: the files (paths relative to ``out``) a later report may replace or remove."""
    write_json(out / MANIFEST, {"written_by": "nst_exp.report", "files": sorted(files)})


def owned_files(out: Path) -> set[str]:
    """The files ``out``'s manifest says an earlier report wrote; only safe relative paths (no ``..``)."""
    try:
        listed = json.loads((out / MANIFEST).read_text(encoding="utf-8")).get("files", [])
    except FileNotFoundError:
        return set()
    except (OSError, ValueError, AttributeError) as error:
        log.warning("Ignoring %s: it cannot be read (%s); no file of an earlier report is removed.",
                    out / MANIFEST, error)
        return set()
    if not isinstance(listed, list):
        return set()
    return {entry for entry in listed if isinstance(entry, str) and safe_relative(entry)}


def safe_relative(entry: str) -> bool:
    path = PurePosixPath(entry)
    return bool(path.parts) and not path.is_absolute() and ".." not in path.parts and "\\" not in entry \
        and path.parts[0] != MANIFEST


def inside(out: Path, entry: str) -> Path | None:
    """``out/entry`` if no folder on the way is a symbolic link (which could lead out of ``out``), else None."""
    path = out
    for part in PurePosixPath(entry).parts[:-1]:
        path = path / part
        if path.is_symlink() or not path.is_dir():
            return None
    return path / PurePosixPath(entry).name


def remove_owned(out: Path, entry: str) -> bool:
    """Remove ``out/entry``, a file an earlier report wrote, and the folders it leaves empty; never outside ``out``.

    False if there is nothing to remove there, or the way to it passes a symbolic link.
    """
    path = inside(out, entry)
    if path is None or not (path.is_file() or path.is_symlink()):
        return False
    path.unlink()  # a link itself, never its target
    folder = path.parent
    while folder != out:
        try:
            folder.rmdir()  # only when empty: a user's file keeps its folder
        except OSError:
            break
        folder = folder.parent
    return True


def claim(out: Path) -> set[str]:
    """Check that the report may write into ``out``; the files an earlier report wrote there.

    Refused: ``out`` an existing file; a file of a report file's name the report did not write;
    a non-empty ``curves/`` or ``jobs/`` holding none of its files; a symbolic link by one of
    those names, through which it would write elsewhere. In the report's own ``curves/`` and
    ``jobs/``, other files are left alone.
    """
    if out.exists() and not out.is_dir():
        raise NstError(f"--out {out} is a file, not a folder. Give a folder for the report (it is created if "
                       f"missing), e.g. --out {out.with_suffix('')}_report.")
    if not out.exists():
        return set()
    owned = owned_files(out)
    theirs = []
    for name in (*TOP_FILES, *TOP_DIRS):
        path = out / name
        if path.is_symlink():
            theirs.append(f"{name} (a symbolic link)")
        elif name in TOP_DIRS and path.exists():  # a folder the report made keeps a user's files beside its own
            if not path.is_dir():
                theirs.append(name)
                continue
            links = [item.relative_to(out).as_posix() for item in path.rglob("*") if item.is_symlink()]
            theirs += [f"{link} (a symbolic link)" for link in sorted(links)]
            ours = any(entry.startswith(f"{name}/") for entry in owned)
            if not links and not ours and any(not item.is_dir() for item in path.rglob("*")):
                theirs.append(f"{name}/ (not the report's)")
        elif path.exists() and name not in owned:
            theirs.append(name)
    if theirs:
        shown = ", ".join(theirs[:6]) + (", ..." if len(theirs) > 6 else "")
        older = "" if (out / MANIFEST).exists() else (
            f" A report written before nst_exp listed its files in {MANIFEST} is refused too: delete that folder "
            "and build the report again.")
        raise NstError(
            f"{out} holds files the report did not write ({shown}; its own are listed in {MANIFEST}), and the "
            f"report would replace or remove them. Give --out a new or empty folder, or move those files away.{older}"
        )
    return owned
