"""What a sweep left: one line when ``python -m nst_exp -m ...`` ends, and a non-zero exit if a job failed.

A failed job (a refused setting, out of memory, killed) returns NaN so the other jobs go on;
without this the sweep ended with exit 0 and no word about it. :class:`SweepSummary` is a
Hydra callback, registered in conf/config.yaml under ``hydra.callbacks``; it reads every
job's ``metrics.json`` in the sweep directory:

    Sweep finished: 1 completed, 1 failed (job 1: see outputs/multirun/.../1/metrics.json);
    report: python -m nst_exp.report outputs/multirun/...

Hydra 1.3 calls ``on_multirun_end`` in the launching process after every job has returned
(also with the joblib and submitit launchers) and turns an exception raised there into a
warning, so the exit status is set with ``SystemExit``, which its callback runner lets through.

:class:`FailedTrials`, registered by the Optuna searches in conf/hparams_search/, turns a job's
NaN into a failed trial there, so that one failed run does not end the search.
"""

from __future__ import annotations

import math
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from nst_exp.errors import NstError
from nst_exp.results import FINISHED, RunDir, Status, job_dirs
from nst_exp.trust import RECORD_ERRORS, read_config

FAILED_EXIT = 1  # the sweep ran, and at least one job did not finish (the CLI's own refusals exit 2)


@dataclass
class Job:
    """One job of a sweep, as its run directory tells it."""

    name: str  # the job's folder under the sweep dir (its number, with Hydra's default subdir)
    dir: Path
    status: str  # a Status value, or "missing" / "unreadable" when metrics.json says nothing
    message: str = ""
    overrides: list[str] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


def read_jobs(sweep_dir: Path) -> list[Job]:
    """Every job under ``sweep_dir``, in job order."""
    jobs = []
    for folder in job_dirs(sweep_dir):
        try:
            metrics = RunDir(folder).read_metrics()
            status, message = str(metrics.get("status", "unreadable")), str(metrics.get("message") or "")
        except FileNotFoundError:
            status, message = "missing", f"no {RunDir.METRICS}: the job was killed, or is still running"
        except (OSError, ValueError) as error:
            status, message = "unreadable", f"{RunDir.METRICS} could not be read: {error}"
        overrides = RunDir(folder).record(RunDir.OVERRIDES)
        try:
            loaded = read_config(overrides) if overrides.is_file() else []
        except RECORD_ERRORS:
            loaded = []  # a damaged record: the job is still counted, by its folder
        listed = [str(item) for item in loaded] if isinstance(loaded, list) else []
        name = folder.relative_to(sweep_dir).as_posix() if folder != sweep_dir else "."
        jobs.append(Job(name, folder, status, message, listed))
    return sorted(jobs, key=lambda job: (not job.name.isdigit(), int(job.name) if job.name.isdigit() else 0, job.name))


def summary(sweep_dir: Path, jobs: list[Job]) -> str:
    """``Sweep finished: N completed, M failed (jobs 3, 5: see ...); report: ...``, then one line per unfinished job."""
    if not jobs:
        return (
            f"Sweep finished without a job folder under {sweep_dir} (none holds .hydra/config.yaml): "
            "no job ran. Check the sweep's overrides and its log."
        )
    parts = [f"{sum(job.status == Status.COMPLETED for job in jobs)} completed"]
    diverged = [job for job in jobs if job.status == Status.DIVERGED]
    if diverged:
        parts.append(f"{len(diverged)} diverged ({_jobs(diverged)}: the last finite image is kept)")
    unfinished = [job for job in jobs if not job.finished]
    if unfinished:
        see = ", ".join(str(RunDir(job.dir).metrics) for job in unfinished[:3]) + (", ..." if len(unfinished) > 3 else "")
        kinds = {job.status: sum(other.status == job.status for other in unfinished) for job in unfinished}
        how = "" if set(kinds) == {str(Status.FAILED)} else ", ".join(f"{n} {status}" for status, n in kinds.items()) + "; "
        parts.append(f"{len(unfinished)} failed ({_jobs(unfinished)}: {how}see {see})")
    lines = [f"Sweep finished: {', '.join(parts)}; report: python -m nst_exp.report {sweep_dir}"]
    swept = swept_overrides(jobs)
    for job in unfinished:
        said = textwrap.shorten(job.message, 300) if job.message else "no message"
        lines.append(f"  job {job.name} ({' '.join(swept[job.name]) or 'as the others'}): {job.status}: {said}")
    return "\n".join(lines)


def swept_overrides(jobs: list[Job]) -> dict[str, list[str]]:
    """Each job's overrides of the keys whose value differs between jobs (``beta=-1``), by job name."""
    parsed = {job.name: dict(item.partition("=")[::2] for item in job.overrides) for job in jobs}
    keys = {key for values in parsed.values() for key in values}
    differ = {key for key in keys if len({values.get(key) for values in parsed.values()}) > 1}
    return {job.name: [item for item in job.overrides if item.partition("=")[0] in differ] for job in jobs}


def _jobs(jobs: list[Job]) -> str:
    return ("job " if len(jobs) == 1 else "jobs ") + ", ".join(job.name for job in jobs)


class SweepEnded(SystemExit):
    """The sweep's exit status, FAILED_EXIT: not Hydra's exit 1 for a config that does not compose
    (nst_exp.__main__ turns that one into 2). Under the joblib launcher no job runs in the launching
    process, so this is how that process knows the sweep ran."""


class SweepSummary(Callback):
    """After a multirun: print the summary to stderr; exit with FAILED_EXIT if a job did not finish."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = read_jobs(sweep_dir)
        # stderr, not logging: after the basic launcher's jobs, the root logger still writes to the last job's log
        print(summary(sweep_dir, jobs), file=sys.stderr, flush=True)
        if not jobs or not all(job.finished for job in jobs):
            raise SweepEnded(FAILED_EXIT)


class TrialFailed(NstError):
    """A job whose objective is NaN (it failed, or finished without the scores asked for), as a search sees it."""


class FailedTrials(Callback):
    """A job that returns NaN is marked failed, so an Optuna search records a failed trial and goes on.

    hydra-optuna-sweeper 1.3.0 with optuna 2.10 (the newest optuna it allows) crashes the whole search
    on a NaN: ``study.tell`` refuses the value, and the sweeper's fallback tells the failure with the
    same values, which optuna refuses again. A job that raised is told as a failed trial instead, and
    the search stops only if more than ``hydra.sweeper.max_failure_rate`` of a batch failed. Hydra calls
    ``on_job_end`` in the job's own process with its ``JobReturn`` (also under the joblib and submitit
    launchers), before the launcher hands it to the sweeper. Registered by conf/hparams_search/;
    Hydra's basic sweeper would stop the sweep at such a job, so plain sweeps keep their NaN.
    """

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if job_return.status != JobStatus.COMPLETED:
            return
        returned = job_return.return_value
        if not _has_nan(returned):
            return
        run_dir = Path(config.hydra.runtime.output_dir)
        try:
            said = str(RunDir(run_dir).read_metrics().get("message") or "no message")
        except (OSError, ValueError):
            said = f"no readable {RunDir.METRICS}"
        job_return.status = JobStatus.FAILED
        job_return.return_value = TrialFailed(
            f"job {run_dir.name} returned {returned} for objective={list(config.objective)}: {said}"
        )


def _has_nan(value: Any) -> bool:
    values = value if isinstance(value, (list, tuple)) else [value]
    return any(isinstance(item, float) and math.isnan(item) for item in values)
