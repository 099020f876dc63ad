"""Score finished run directories with the picture scores (nst_exp.picture_scores), network-free.

``python -m nst_exp.evaluate DIR [DIR ...]`` (``nst-exp-evaluate``) reads each run's
result.png and the inputs it saved (RunDir), scores them, and writes ``eval/*`` into the
``metrics.json`` of every run directory at or below each DIR; a damaged run is named and
the others are still scored.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from torch import Tensor

from nst_exp.errors import NstError, one_line
from nst_exp.images import open_rgb, to_tensor
from nst_exp.picture_scores import score
from nst_exp.results import SCORES, RunDir, inputs_used, outside_reports
from nst_exp.trust import RECORD_ERRORS

DAMAGED_EXIT = 1  # python -m nst_exp.evaluate: some runs could not be scored (each named), the others were


def evaluate_run(run_dir: Path) -> dict[str, float]:
    """The eval/* scores of a finished run directory, from its result.png and inputs/.

    Reads ``result.png``, ``inputs/content.png`` and ``inputs/style.png``, or
    for several styles ``inputs/style_<name>.png`` with the weights of
    metrics.json's ``"styles"`` ({name: weight}). The saved inputs are the
    images as the network saw them (after any colour preservation). As in the
    run itself, an image the run was not made with (its ``.hydra/config.yaml``
    says, ``results.inputs_used``) is not scored against.
    """
    run = RunDir(run_dir)
    result_path = run.result
    if not result_path.is_file():
        raise NstError(
            f"Cannot evaluate '{run_dir}': it has no {RunDir.RESULT} ({result_path} is missing). Only a run that "
            f"wrote its result can be scored; see the 'status' in its {RunDir.METRICS}, or pass a finished run."
        )
    config = run.record()
    try:
        settings = run.read_settings()  # as data: no interpolation resolved
        if settings is not None and not isinstance(settings, dict):
            raise TypeError(f"it holds a {type(settings).__name__}, not a mapping of settings")
        used = inputs_used(settings) if settings is not None else frozenset({"content", "style"})
    except RECORD_ERRORS as error:
        raise NstError(
            f"Cannot evaluate '{run_dir}': {config} is damaged ({one_line(error)}), so which "
            "images the run was made with is unknown. Restore that file, or run the job again."
        ) from error
    result = _read(result_path, run_dir)
    content = _read(run.input_image("content"), run_dir) if "content" in used else None
    style_paths, weights = _style_files(run) if "style" in used else ([], [])
    styles = [_read(path, run_dir) for path in style_paths]
    return score(result, content, styles, weights)


def find_runs(path: Path) -> list[Path]:
    """``path`` itself if it holds metrics.json, else every folder below it holding metrics.json and result.png."""
    path = Path(path)
    if not path.is_dir():
        raise NstError(f"'{path}' is not a directory. Pass a run directory or a sweep directory that holds runs.")
    if RunDir(path).metrics.is_file():
        return [path]
    runs = outside_reports(path, {found.parent for found in path.rglob(RunDir.METRICS)  # a report's copies are not runs
                                  if RunDir(found.parent).result.is_file()})
    if not runs:
        raise NstError(
            f"No finished runs under '{path}': a run directory holds {RunDir.METRICS} and {RunDir.RESULT}. "
            "Pass a run's output directory or the multirun directory that holds its jobs."
        )
    return runs


def run_metrics(run_dir: Path) -> dict:
    """A run's metrics.json as a dict; a truncated file or one that is not a JSON object is one message."""
    try:
        return RunDir(run_dir).read_metrics()
    except (OSError, ValueError) as error:  # truncated, not JSON, not an object, not UTF-8, unreadable
        raise damaged_metrics(run_dir, error) from error


def damaged_metrics(run_dir: Path, error: Exception) -> NstError:
    return NstError(
        f"Cannot evaluate '{run_dir}': {RunDir(run_dir).metrics} is damaged ({one_line(error)}). Its "
        "scores would be written into it: restore that file, or run the job again."
    )


def rescore(paths: Sequence[Path], damaged: dict[Path, str] | None = None) -> dict[Path, dict[str, float]]:
    """Score every run at or below ``paths`` and write the eval/* keys into its metrics.json, keeping the rest.

    ``damaged``: where a run that cannot be scored (a damaged metrics.json, config or image) is recorded
    (run -> why), the others still scored; without it the first such run raises its NstError.
    """
    scored: dict[Path, dict[str, float]] = {}
    for run_dir in dict.fromkeys(run for path in paths for run in find_runs(path)):
        try:
            metrics = run_metrics(run_dir)
            scores = evaluate_run(run_dir)
        except NstError as error:
            if damaged is None:
                raise
            damaged[run_dir] = str(error)
            continue
        kept = {key: value for key, value in metrics.items() if key not in SCORES}  # no stale score
        RunDir(run_dir).write_metrics({**kept, **scores})
        scored[run_dir] = scores
    return scored


def main(argv: Sequence[str] | None = None) -> int:
    from nst_exp.cli_args import program

    parser = argparse.ArgumentParser(
        prog=program("nst_exp.evaluate"),  # nst-exp-evaluate when run as the console script
        description="Score finished runs without a network (content SSIM, style SWD, colour distance) and "
        f"add the scores to each run's {RunDir.METRICS} as {', '.join(SCORES)}.",
    )
    parser.add_argument("dirs", type=Path, nargs="+", metavar="DIR", help="a run directory or a sweep directory")
    parser.epilog = (f"Exit status: 0 when every run was scored; {DAMAGED_EXIT} when some runs could not be (a "
                     f"damaged {RunDir.METRICS}, config or image: each is named, the others are scored); 2 when no "
                     "run was found.")
    args = parser.parse_args(argv)
    damaged: dict[Path, str] = {}
    try:
        scored = rescore(args.dirs, damaged)
    except NstError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if scored:
        print_scores(scored)
    for why in damaged.values():
        print(f"error: {why}", file=sys.stderr)
    if damaged:
        print(f"{len(damaged)} of {len(damaged) + len(scored)} runs could not be scored (above)"
              + ("; the others were." if scored else "."), file=sys.stderr)
        return DAMAGED_EXIT
    return 0


def print_scores(scored: dict[Path, dict[str, float]]) -> None:
    names = [str(run_dir) for run_dir in scored]
    width = max(len("run"), *map(len, names))
    print(f"{'run':<{width}}  {'content_ssim':>12}  {'style_swd':>10}  {'color_distance':>14}")
    for name, scores in zip(names, scored.values()):
        ssim, swd, colour = (scores.get(key, math.nan) for key in SCORES)  # NaN: an image the run did not use
        print(f"{name:<{width}}  {ssim:>12.4f}  {swd:>10.2f}  {colour:>14.4f}")
    skipped = any(len(scores) < len(SCORES) for scores in scored.values())
    print(f"wrote the scores into {len(scored)} {RunDir.METRICS} file(s)"
          + ("; nan: an image that run was not made with, not scored (none written)" if skipped else ""))


def _read(path: Path, run_dir: Path) -> Tensor:
    if not path.is_file():
        raise NstError(
            f"Cannot evaluate '{run_dir}': {path} is missing. A run saves the images it used under "
            f"{RunDir.INPUTS}/ (content.png, style.png or style_<name>.png); runs older than that cannot be scored."
        )
    return to_tensor(open_rgb(path))


def _style_files(run: RunDir) -> tuple[list[Path], list[float]]:
    """The style images a run saved and their weights (RunDir.style_inputs); a damaged record is one message."""
    try:
        return run.style_inputs()  # reads metrics.json only for several styles' weights
    except LookupError as error:
        raise NstError(f"Cannot evaluate '{run}': {error}.") from error
    except (OSError, ValueError) as error:
        raise damaged_metrics(run.path, error) from error


if __name__ == "__main__":
    sys.exit(main())
