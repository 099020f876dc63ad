"""Reading a sweep: every job Hydra wrote under a folder, as one DataFrame sorted by the swept keys.

Each job's ``.hydra/`` settings, its ``metrics.json`` (final losses ``loss/*``, picture
metrics ``eval/*``, the other keys as ``metrics.*``) and its TensorBoard scalars (through
tbparse). The swept keys are read from the sweep itself: the override keys whose values
differ between jobs, in the order Hydra swept them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePath, PurePosixPath
from typing import Any

import pandas as pd
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from tbparse import SummaryReader

from nst_exp.errors import NstError, one_line
from nst_exp.results import EVAL_PREFIX, FINISHED, LOSS_PREFIX, TOTAL, RunDir, flatten, job_dirs
from nst_exp.trust import RECORD_ERRORS, read_config

MISSING = "missing"  # status of a job that left no metrics.json (killed, or still running)
UNREADABLE = "unreadable"  # status of a job whose metrics.json is damaged (truncated, not a JSON object)


@dataclass
class Sweep:
    """Every job of a sweep. ``jobs`` is sorted by the swept keys; its index is the job number."""

    root: Path
    jobs: pd.DataFrame  # one row per job: swept keys, status, losses, metrics.*, cfg.*, overrides
    scalars: pd.DataFrame  # long form: job, tag, step, value (every logged TensorBoard scalar)
    swept: list[str]  # override keys whose values differ between jobs, in sweep order
    settings: dict[int, dict[str, Any]] = field(default_factory=dict)  # job -> resolved config
    choices: dict[int, dict[str, Any]] = field(default_factory=dict)  # job -> config group choices

    def job_dir(self, job: int) -> Path:
        return self.root / self.jobs.at[job, "dir"]

    @property
    def name(self) -> str:
        """The sweep's folder as figures title it: outputs/multirun/<date>/<time> -> <date>/<time>."""
        return f"{self.root.resolve().parent.name}/{self.root.resolve().name}"


def find_jobs(root: Path) -> list[Path]:
    """The job directories under ``root`` (those Hydra gave a ``.hydra/config.yaml``), or ``root`` itself."""
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "does not exist"
        raise NstError(f"Sweep directory '{root}' {what}. Pass the folder a multirun wrote, "
                       "e.g. outputs/multirun/<date>/<time>, or one run's directory.")
    found = job_dirs(root)  # not a self-contained report's copies of its jobs
    if not found:
        raise NstError(
            f"No Hydra jobs under '{root}': expected sub-folders holding .hydra/config.yaml, as "
            "'python -m nst_exp -m ...' writes them (outputs/multirun/<date>/<time>/<job>/). "
            "Pass the sweep's directory."
        )
    return found


def parse_overrides(lines: list[str]) -> dict[str, str]:
    """``["beta=1e3", "style=the_scream"]`` -> {key: value as a string}, with Hydra's own parser."""
    parsed = OverridesParser.create().parse_overrides(lines)
    return {override.get_key_element(): override.get_value_element_as_str() for override in parsed}


def resolved(path: Path) -> dict[str, Any]:
    """A saved config as plain Python, its interpolations (``${oc.env:SECRET}``) kept as text: never resolved here."""
    return read_config(path)


DAMAGED = (*RECORD_ERRORS, HydraException)  # reading a job's record; Hydra's parser reads its overrides


def read_record(job_dir: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, str], Any, list[str]]:
    """(resolved config, group choices, overrides, job number or None, problems) from a job's ``.hydra/``.

    A missing or damaged file gives empty values and a problem that names it, never an exception.
    """
    run, problems = RunDir(job_dir), []
    settings: dict[str, Any] = {}
    choices: dict[str, Any] = {}
    overrides: dict[str, str] = {}
    number = None
    try:
        settings = resolved(run.record(RunDir.CONFIG))
        if not isinstance(settings, dict):
            raise TypeError(f"it holds a {type(settings).__name__}, not a mapping of settings")
    except DAMAGED as error:
        settings = {}
        problems.append(f"{RunDir.RECORD}/{RunDir.CONFIG} is damaged ({one_line(error)})")
    try:
        hydra = read_config(run.record(RunDir.HYDRA))["hydra"]  # as data: a shared ${oc.env:...} stays text
        number = (hydra.get("job") or {}).get("num")
        choices = (hydra.get("runtime") or {}).get("choices") or {}
        if not isinstance(choices, dict):
            raise TypeError("its hydra.runtime.choices is not a mapping")
    except FileNotFoundError:
        choices = {}
        problems.append(f"{RunDir.RECORD}/{RunDir.HYDRA} is missing")
    except DAMAGED as error:
        choices = {}
        problems.append(f"{RunDir.RECORD}/{RunDir.HYDRA} is damaged ({one_line(error)})")
    try:
        listed = read_config(run.record(RunDir.OVERRIDES))
        if not isinstance(listed, list) or not all(isinstance(item, str) for item in listed):
            raise TypeError("it is not a list of key=value lines")
        overrides = parse_overrides(listed)
    except FileNotFoundError:
        problems.append(f"{RunDir.RECORD}/{RunDir.OVERRIDES} is missing")
    except DAMAGED as error:
        problems.append(f"{RunDir.RECORD}/{RunDir.OVERRIDES} is damaged ({one_line(error)})")
    return settings, choices, overrides, number, problems


def read_job_metrics(job_dir: Path) -> tuple[dict[str, Any], str]:
    """(metrics.json as a dict with a ``status``, problem or ""): a missing, truncated or non-object file is said so."""
    path = RunDir(job_dir).metrics
    if not path.is_file():
        return {"status": MISSING, "message": f"no {RunDir.METRICS}: the job was killed or is still running"}, ""
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:  # truncated, not JSON, not UTF-8
        problem = f"{RunDir.METRICS} is damaged ({one_line(error)})"
        return {"status": UNREADABLE, "message": problem}, problem
    if not isinstance(metrics, dict):
        problem = f"{RunDir.METRICS} holds a JSON {type(metrics).__name__}, not an object"
        return {"status": UNREADABLE, "message": problem}, problem
    status = metrics.get("status", MISSING)
    metrics["status"] = status if isinstance(status, str) else str(status)
    return metrics, ""


def read_job(root: Path, job_dir: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, str] | None]:
    """(row without swept keys, resolved config, group choices, overrides or None when unknown) of one job.

    The row's ``problem`` says what is wrong with the job's files ("" when nothing is).
    """
    settings, choices, overrides, num, problems = read_record(job_dir)
    metrics, metrics_problem = read_job_metrics(job_dir)
    problems += [metrics_problem] if metrics_problem else []
    where = job_dir.relative_to(root).as_posix() or "."
    if metrics["status"] in FINISHED and not RunDir(job_dir).result.is_file():
        again = (f"delete the run's folder {job_dir} and run the same command again" if where == "." else
                 f"delete the job's folder {job_dir} and run the sweep again with hydra.sweep.dir={root} "
                 "(its finished jobs are skipped)")
        problems.append(f"{RunDir.RESULT} is missing (deleted?); to make it again, {again}")
    if not isinstance(num, int) and job_dir.name.isdigit():
        num = int(job_dir.name)  # hydra.yaml missing or damaged: Hydra names a job's folder by its number
    row: dict[str, Any] = {
        "job": int(num) if isinstance(num, int) else None,
        "dir": where,
        "status": metrics.pop("status"),
        "problem": "; ".join(problems),
        "alpha/beta": ratio(settings.get("alpha"), settings.get("beta")),
    }
    row.update({key: value for key, value in metrics.items() if key.startswith(LOSS_PREFIX)})
    row.update({key: value for key, value in metrics.items() if key.startswith(EVAL_PREFIX)})
    row.update({f"metrics.{key}": value for key, value in metrics.items()
                if not key.startswith((LOSS_PREFIX, EVAL_PREFIX))})
    row["overrides"] = " ".join(f"{key}={value}" for key, value in overrides.items())
    row.update(flatten(settings, "cfg", lists_as_text=True))
    known = overrides if not any(RunDir.OVERRIDES in problem for problem in problems) else None
    return row, settings, choices, known


def ratio(alpha: Any, beta: Any) -> float | None:
    """alpha/beta, or None where it is undefined (beta = 0, or a value is not a number)."""
    if isinstance(alpha, (int, float)) and isinstance(beta, (int, float)) and beta != 0:
        return alpha / beta
    return None


def swept_keys(overrides: list[dict[str, str] | None]) -> list[str]:
    """Keys whose value differs between jobs (absent counts as a value), in first-seen order.

    A job whose overrides are unknown (None: a damaged overrides.yaml) counts for nothing.
    """
    overrides = [job for job in overrides if job is not None]
    keys = list(dict.fromkeys(key for job in overrides for key in job))
    return [key for key in keys if len({job.get(key) for job in overrides}) > 1]


def read_scalars(root: Path, dirs: dict[str, int]) -> pd.DataFrame:
    """Every TensorBoard scalar under ``root`` as (job, tag, step, value, wall_time), read by tbparse.

    A job resumed from a checkpoint logs again the steps its stopped session had logged
    after that checkpoint; TensorBoard drops the older ones (purge_step), tbparse does
    not, so the newest value of each step is kept here too.
    """
    columns = ["job", "tag", "step", "value", "wall_time"]
    frame = SummaryReader(str(root), pivot=False, extra_columns={"dir_name", "wall_time"}).scalars
    if frame.empty:
        return pd.DataFrame(columns=columns)
    frame = frame.assign(dir_name=frame["dir_name"].replace("", "."))
    # A job's events are in its folder, or (a sweep's job) in a sub-folder named by its swept values
    # (nst_exp.tensorboard_run); deeper ones (the one-point scores' "final" sub-run) are not curves.
    owner = {name: dirs.get(name, dirs.get(PurePosixPath(name).parent.as_posix())) for name in frame["dir_name"].unique()}
    frame = frame.assign(job=frame["dir_name"].map(owner)).dropna(subset=["job"])
    frame = frame.assign(job=frame["job"].astype(int))
    frame = frame.sort_values("wall_time", kind="stable").drop_duplicates(["job", "tag", "step"], keep="last")
    return frame[columns].sort_values(["job", "tag", "step"]).reset_index(drop=True)


def read_sweep(root: Path | str) -> Sweep:
    """Read every job under ``root`` into one DataFrame, sorted by the swept keys."""
    root = Path(root)
    rows, settings, choices, overrides = zip(*(read_job(root, job_dir) for job_dir in find_jobs(root)))
    numbers = [row["job"] for row in rows]
    if None in numbers or len(set(numbers)) < len(numbers):
        numbers = list(range(len(rows)))  # single runs, or several sweeps: number them by folder
    swept = swept_keys(list(overrides))
    for row, number, job_overrides in zip(rows, numbers, overrides):
        row["job"] = number
        row.update({key: (job_overrides or {}).get(key, "") for key in swept})
    jobs = pd.DataFrame(list(rows)).set_index("job", drop=False).rename_axis(None)
    scalars = read_scalars(root, dict(zip(jobs["dir"], jobs["job"])))
    jobs["logged_steps"] = jobs["job"].map(
        scalars[scalars["tag"] == TOTAL].groupby("job")["step"].max()
    )
    fill_final_losses(jobs, scalars)
    first = ["job", *swept, "status", "problem", "alpha/beta"]
    jobs = jobs[first + [column for column in jobs.columns if column not in first]]
    return Sweep(
        root, sort_by_sweep(jobs, swept), scalars, swept, dict(zip(numbers, settings)), dict(zip(numbers, choices))
    )


def fill_final_losses(jobs: pd.DataFrame, scalars: pd.DataFrame) -> None:
    """Jobs without final losses in metrics.json (killed) get the last ones TensorBoard logged.

    Losses only: a score is the finished run's, and one metrics.json lacks (a run not made
    with that image, or rescored since) must not come back from an older event file.
    """
    if scalars.empty:
        return
    last = scalars.sort_values("step").groupby(["job", "tag"])["value"].last().unstack()
    for tag in (tag for tag in last.columns if tag.startswith(LOSS_PREFIX)):
        known = jobs[tag] if tag in jobs else pd.Series(float("nan"), index=jobs.index)
        jobs[tag] = known.fillna(jobs["job"].map(last[tag]))


def sort_by_sweep(jobs: pd.DataFrame, swept: list[str]) -> pd.DataFrame:
    """Sort by each swept key in the order its values were swept (first seen by job number)."""
    jobs = jobs.sort_values("job")
    order = {key: {value: rank for rank, value in enumerate(dict.fromkeys(jobs[key]))} for key in swept}
    return jobs.sort_values([*swept, "job"], key=lambda column: column.map(order.get(column.name, {}))
                            if column.name in order else column, kind="stable")


def networks(sweep: Sweep) -> str:
    """Which network made the results, in words: its description if trained, else its (random) weights."""
    pairs = sweep.jobs.get("metrics.network"), sweep.jobs.get("metrics.weights")
    if pairs[0] is None or pairs[1] is None:
        return "unknown (no job finished)"
    columns = ["metrics.network", "metrics.weights", "metrics.trained_weights", "metrics.network_description"]
    distinct = sweep.jobs.reindex(columns=columns).dropna(subset=columns[:2]).drop_duplicates()
    labels = []
    for net, weights, trained, description in distinct.itertuples(index=False):
        weights = re.sub(r" \(/[^()]*\)$", "", weights)  # drop the absolute path a package: file resolved to
        weights = PurePath(weights).name if PurePath(weights).is_absolute() else weights  # a file: its name
        trained = pd.notna(trained) and bool(trained)
        known = trained and pd.notna(description)
        labels.append(f"{net} ({description}; weights {weights})" if known else f"{net} with {weights}")
    return "; ".join(labels) or "unknown"


def damaged(jobs: pd.DataFrame) -> pd.DataFrame:
    """The jobs whose ``problem`` says what is wrong with their files (none in a Sweep built without one)."""
    if "problem" not in jobs:
        return jobs.iloc[:0]
    return jobs[jobs["problem"].fillna("").astype(str) != ""]


def eval_columns(jobs: pd.DataFrame) -> list[str]:
    """The ``eval/*`` columns some job has a value in, in the order metrics.json wrote them."""
    return [column for column in jobs.columns if column.startswith(EVAL_PREFIX) and jobs[column].notna().any()]
