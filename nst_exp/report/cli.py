"""``python -m nst_exp.report SWEEP_DIR [--out DIR]``: the report from the command line."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from nst_exp.cli_args import program
from nst_exp.errors import NstError
from nst_exp.results import REPORT_MANIFEST as MANIFEST

DAMAGED_EXIT = 1  # the report is written, and some jobs' rows say their files are damaged or missing


def printable(text: object) -> str:
    """Text from a run for a terminal: control characters (escape sequences, newlines) shown as escapes."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in str(text))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=program("nst_exp.report"),  # nst-exp-report when run as the console script
        description="Turn a sweep's output directory into results.csv/.md, a figure grid, loss curves, "
                    "a content/style trade-off plot and a sortable gallery page (index.html).",
        epilog=f"Exit status: 0 when every job could be read; {DAMAGED_EXIT} when the report was written but some "
               "jobs' files are damaged or missing (a truncated metrics.json, a damaged .hydra/overrides.yaml, "
               "a deleted result.png...): each is a row whose 'problem' column says what is wrong; 2 when no "
               "report could be written (no jobs there, --out a file or holding files the report did not write). "
               f"The report replaces only the files it wrote, listed in <out>/{MANIFEST}.",
    )
    parser.add_argument("sweep_dir", type=Path, help="the multirun directory, e.g. outputs/multirun/<date>/<time>, "
                        "or one run's directory (a one-row report)")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: <sweep_dir>/report)")
    parser.add_argument("--self-contained", action="store_true",
                        help="copy each job's result.png, metrics.json, config, content and style images and the "
                             "snapshots its strip shows into <out>/jobs/ (replacing it) and link the gallery to the "
                             "copies, so the report folder can be moved or published on its own; checkpoints, event "
                             "files and the other snapshots stay in the sweep")
    parser.add_argument("--no-scalars", action="store_true",
                        help="do not write scalars.csv (every logged loss per job and step; megabytes for a long "
                             "sweep, and TensorBoard reads the same values from the sweep)")
    args = parser.parse_args(argv)
    from nst_exp.report.build import build_report  # pandas and matplotlib: only once there is a report to write
    from nst_exp.report.gallery import GALLERY_FILE
    from nst_exp.report.tables import status_counts

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        result = build_report(args.sweep_dir, args.out, self_contained=args.self_contained, scalars=not args.no_scalars)
    except NstError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    rows, cols = result.layout.shape
    print(f"{len(result.sweep.jobs)} jobs ({status_counts(result.sweep)}); "
          f"swept: {', '.join(result.sweep.swept) or 'nothing'}; figure {rows} x {cols}")
    for path in result.written.values():
        print(f"wrote {path}" + (f"/ ({len(list(path.iterdir()))} files)" if path.is_dir() else ""))
    if GALLERY_FILE in result.written:
        print(f"open {result.written[GALLERY_FILE].resolve().as_uri()}")
    damaged = result.damaged
    if damaged:
        print(f"{len(damaged)} of {len(result.sweep.jobs)} jobs are damaged (their rows say so in the "
              "'problem' column; the others are reported):", file=sys.stderr)
        for job in damaged:
            where, problem = (printable(result.sweep.jobs.at[job, key]) for key in ("dir", "problem"))
            print(f"  job {job} ({where}): {problem}", file=sys.stderr)
        return DAMAGED_EXIT
    return 0
