"""Hydra's joblib launcher, ending a sweep as the basic launcher does: one summary, exit 1 if a job failed.

``hydra/launcher=joblib`` (conf/hydra/launcher/joblib.yaml) selects
``hydra_plugins.nst_exp_launcher.JoblibLauncher`` (Hydra takes launchers only from the
``hydra_plugins`` package), hydra-joblib-launcher's launcher whose launch is :class:`Launch`,
with three changes:

- A worker the OS kills (the out-of-memory killer, ``kill -9``) makes loky end the whole
  pool with a ``TerminatedWorkerError`` traceback and no summary. Here the jobs that had
  started and not finished are failed jobs (their ``metrics.json`` says the worker was
  killed), the jobs that had not started run in a new pool, and the sweep ends with
  :class:`~nst_exp.sweep_summary.SweepSummary`'s summary and exit 1. Finished jobs are kept.
- SIGTERM to the sweep is passed on to the workers, so each running job saves a checkpoint
  as it does alone; the jobs not started do not start, and no worker outlives the sweep:
  run the same sweep again with ``hydra.sweep.dir=<its dir>`` to finish it.
- Each job's result is taken as it arrives, so one killed worker loses no other job's return.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides, setup_globals
from hydra_plugins.hydra_joblib_launcher import _core
from joblib import Parallel, delayed
from omegaconf import DictConfig, OmegaConf, open_dict

from nst_exp.results import RunDir

log = logging.getLogger(__name__)

KILLED = (
    "its joblib worker was killed (by the OS, e.g. its out-of-memory killer, or kill -9), or stopped by loky "
    "because another worker of the sweep was. Run the same sweep again with hydra.sweep.dir={sweep}: finished "
    "jobs are skipped, this one continues from its last checkpoint"
)


# conf/hydra/launcher/joblib.yaml replaces hydra-joblib-launcher's config of the same name; Hydra warns of the match
SCHEMA_MATCH = r"\s*'hydra/launcher/joblib' is validated against ConfigStore schema"


SAVE_GRACE_SECONDS = 20.0  # after SIGTERM, how long running jobs get to save before their workers are ended


class SweepTerminated(KeyboardInterrupt):
    """SIGTERM reached the process that launched the sweep."""

    signal = signal.SIGTERM


def numbered_job(idx: int, *args: Any) -> tuple[int, JobReturn]:
    """hydra-joblib-launcher's job, returning its number with its result (results arrive in any order)."""
    warnings.filterwarnings("ignore", SCHEMA_MATCH, UserWarning)  # as nst_exp.__main__ does in the sweep's process
    return idx, _core.execute_job(idx, *args)


class Launch:
    """One launch of hydra-joblib-launcher's jobs; a killed worker is a failed job, SIGTERM stops every worker.

    ``launcher``: the ``hydra_plugins.nst_exp_launcher.JoblibLauncher`` Hydra set up (config, task, context).
    """

    def __init__(self, launcher: Any) -> None:
        self.config, self.task_function = launcher.config, launcher.task_function
        self.hydra_context, self.joblib = launcher.hydra_context, launcher.joblib

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        assert self.config is not None and self.task_function is not None and self.hydra_context is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        joblib_cfg = dict(self.joblib, backend="loky")
        _core.process_joblib_cfg(joblib_cfg)
        pending = {initial_job_idx + i: list(overrides) for i, overrides in enumerate(job_overrides)}
        log.info("Joblib.Parallel(%s) is launching %d jobs; sweep output dir: %s",
                 ",".join(f"{k}={v}" for k, v in joblib_cfg.items()), len(pending), sweep_dir)
        for idx, overrides in pending.items():
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
        returns: dict[int, JobReturn] = {}
        try:
            with sigterm_stops_workers(sweep_dir):
                self.run_all(pending, joblib_cfg, returns, sweep_dir)
        except SweepTerminated:
            from nst_exp.sweep_summary import read_jobs, summary

            print(summary(sweep_dir, read_jobs(sweep_dir)), file=sys.stderr, flush=True)
            print(f"Stopped by SIGTERM: every worker is stopped and no other job started. Run the same sweep again "
                  f"with hydra.sweep.dir={sweep_dir} to finish it (finished jobs are skipped).", file=sys.stderr)
            sys.exit(128 + signal.SIGTERM)
        return [returns[idx] for idx in sorted(returns)]

    def run_all(self, pending: dict[int, list[str]], joblib_cfg: dict, returns: dict[int, JobReturn],
                sweep_dir: Path) -> None:
        """Run every job; after a worker died, the jobs that had not started run in a new pool."""
        while pending:
            before = len(pending)
            try:
                self.run_pool(pending, joblib_cfg, returns)
            except BrokenProcessPool as error:  # loky's TerminatedWorkerError: a worker died
                log.error("A joblib worker died (%s); its jobs count as failed, the others go on.",
                          " ".join(str(error).split())[:300])
                configs = {idx: self.job_config(idx, overrides) for idx, overrides in pending.items()}
                started = [idx for idx, config in configs.items() if (job_dir(config) / RunDir.RECORD).is_dir()]
                progress = len(pending) < before or started
                for idx in started if progress else list(pending):  # no progress: a worker dies at start-up
                    returns[idx] = killed(configs[idx], sweep_dir, self.failed_status())
                    del pending[idx]

    def run_pool(self, pending: dict[int, list[str]], joblib_cfg: dict, returns: dict[int, JobReturn]) -> None:
        """Run the ``pending`` jobs in one pool, moving each into ``returns`` as it finishes."""
        state = Singleton.get_state()
        results = Parallel(**joblib_cfg, return_as="generator_unordered")(
            delayed(numbered_job)(idx, overrides, self.hydra_context, self.config, self.task_function, state)
            for idx, overrides in list(pending.items())
        )
        for idx, job_return in results:
            returns[idx] = job_return
            del pending[idx]

    def job_config(self, idx: int, overrides: Sequence[str]) -> DictConfig:
        """The job's config as its worker composed it (for its directory and objective)."""
        config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(config):
            config.hydra.job.id = f"{config.hydra.job.name}_{idx}"
            config.hydra.job.num = idx
        return config

    def failed_status(self) -> JobStatus:
        """How a job that returned nothing is handed to the sweeper, as ``nst_exp.__main__.job`` hands a failed one.

        Hydra's basic sweeper stops at a FAILED job, so there a failed job returns NaN; a search that
        registers FailedTrials gets FAILED, a failed trial it goes on after.
        """
        callbacks = OmegaConf.select(self.config, "hydra.callbacks", default={}) or {}
        failing = any(str(OmegaConf.select(c, "_target_", default="")).endswith("FailedTrials")
                      for c in callbacks.values())
        return JobStatus.FAILED if failing else JobStatus.COMPLETED


def job_dir(config: DictConfig) -> Path:
    return Path(str(config.hydra.sweep.dir)) / str(config.hydra.sweep.subdir)


def killed(config: DictConfig, sweep_dir: Path, status: JobStatus) -> JobReturn:
    """The failed job's return, and its metrics.json saying the worker was killed (a finished one is kept)."""
    folder = job_dir(config)
    message = KILLED.format(sweep=sweep_dir)
    RunDir(folder).record_failure(message)  # leaves a finished job's metrics.json as it is
    names = list(OmegaConf.select(config, "objective", default=[]) or [])
    value: Any = [math.nan] * len(names) if len(names) > 1 else math.nan
    job_return = JobReturn(overrides=list(config.hydra.overrides.task), cfg=config, hydra_cfg=config,
                           working_dir=str(folder), task_name=str(config.hydra.job.name), status=status)
    job_return.return_value = RuntimeError(message) if status == JobStatus.FAILED else value
    log.error("Job %s (%s): %s; see %s.", config.hydra.job.num, " ".join(filter_overrides(job_return.overrides)),
              "killed with its worker", RunDir(folder).metrics)
    return job_return


@contextmanager
def sigterm_stops_workers(sweep_dir: Path, grace: float = SAVE_GRACE_SECONDS) -> Iterator[None]:
    """While the pool runs: SIGTERM is passed on to every worker, and once each running job has saved
    its image, metrics and checkpoint (or after ``grace`` seconds) the launch stops, so that joblib
    ends the pool and no job starts after it."""

    def stop(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM while stopping changes nothing
        running = [folder for folder in job_folders(sweep_dir) if not RunDir(folder).metrics.is_file()]
        for child in children():
            try:
                os.kill(child, signal.SIGTERM)
            except OSError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and not all(RunDir(folder).metrics.is_file() for folder in running):
            time.sleep(0.1)
        raise SweepTerminated()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def job_folders(sweep_dir: Path) -> list[Path]:
    return [record.parent for record in sweep_dir.glob(f"*/{RunDir.RECORD}")]


def children() -> list[int]:
    """The pids of this process's children and their children (loky's workers and resource tracker)."""
    import psutil

    return [child.pid for child in psutil.Process().children(recursive=True)]
