"""``python -m nst_exp [overrides]``: one style transfer; ``-m`` for a sweep.

The entry point checks what it can before Hydra creates anything (a ``resume=``
directory), writes Hydra's record of the run (``.hydra/``) only once the run
directory is known to be this run's, and turns every failure a user can fix,
including a config that does not compose and a disk that cannot be written,
into one message and exit status 2.

torch loads only once a run starts: ``--help``, ``--cfg``, ``--info``, shell
completion and a run refused by validation answer without it.
"""

from __future__ import annotations

import copy
import errno
import logging
import os
import signal
import sys
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from nst_exp import checkpoint, cli_args, objective
from nst_exp.config import conf_dir, register
from nst_exp.errors import Interrupted, NstError, RunFailed
from nst_exp.help import app_help, print_page, register_help
from nst_exp.lock import RunDirInUse
from nst_exp.results import RunDir, nearest_existing
from nst_exp.resume import check_run_dir
from nst_exp.startup import process_start
from nst_exp.sweep_summary import SweepEnded
from nst_exp.tensorboard_run import sweep_task, swept_values
from nst_exp.trust import check_command_line
from nst_exp.validation import validate

log = logging.getLogger("nst_exp")
register()
register_help()  # the resolver conf/hydra/help/nst_exp.yaml calls for --help
# conf/hydra/launcher/joblib.yaml replaces hydra-joblib-launcher's config of that name (its _target_: nst_exp's
# launcher), keeping its keys; Hydra warns of that match here, and in each worker (nst_exp.launcher filters it there).
warnings.filterwarnings("ignore", r"\s*'hydra/launcher/joblib' is validated against ConfigStore schema", UserWarning)
USER_ERROR = 2
_job_started = False  # set once Hydra has composed the config and calls the job
_run_dir: Path | None = None  # the job's output dir, for -o


class HydraRecord:
    """Hydra's files of a run (.hydra/config.yaml, hydra.yaml, overrides.yaml), written when the run is accepted.

    conf/config.yaml sets ``hydra.output_subdir: null``, so Hydra writes none of
    them itself: a run refused because its directory holds another run must not
    relabel that run with the refused settings.
    """

    def __init__(self, cfg: DictConfig, out_dir: Path) -> None:
        self.cfg, self.out_dir, self.written = copy.deepcopy(cfg), out_dir, False
        stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
        self.session = f"resume_{stamp}" if cfg.resume else ""

    def write(self, _: Path | None = None) -> None:
        if not self.written:
            RunDir(self.out_dir).write_record(
                self.cfg, HydraConfig.instance().cfg, HydraConfig.get().overrides.task, self.session
            )
            self.written = True

    def holds_another_run(self) -> bool:
        return checkpoint.exists(self.out_dir) or RunDir(self.out_dir).metrics.exists()


@hydra.main(config_path=conf_dir(), config_name="config", version_base="1.3")
def job(cfg: DictConfig) -> objective.Value:
    """Run one job; return its ``objective`` to a sweeper. A user error is one message; a sweep's other jobs go on."""
    global _job_started, _run_dir
    waiting_since = None if _job_started else process_start()  # the first job's wait began with the process
    _job_started = True
    hydra_cfg = HydraConfig.get()
    out_dir = _run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    record = HydraRecord(cfg, out_dir)
    try:
        if multirun and not cfg.resume:  # a single run was validated before Hydra ran; a resume is, once loaded
            validate(cfg)  # a refused job answers before torch loads
        import torch

        from nst_exp.hardware import sweep_device
        from nst_exp.runner import run

        if multirun:  # on a machine with several GPUs, job n of a sweep takes GPU n % count
            cfg.device = sweep_device(cfg.device, hydra_cfg.job.get("num"), torch.cuda.device_count())
        task = list(hydra_cfg.overrides.task)
        swept = swept_values(task, sweep_task(hydra_cfg.sweep.dir) if multirun else None)  # they name its run
        result = run(
            cfg, out_dir, task, multirun, on_accept=record.write, waiting_since=waiting_since, swept=swept, checked=True
        )
        return objective.select(result.metrics, cfg.objective, cfg.objective_weights)
    except NstError as error:
        log.error("%s", error)
        # A refused resume, a directory another process holds, or one that holds another run keeps its record.
        ours = not isinstance(error, RunDirInUse) and not cfg.resume and not record.holds_another_run()
        if record.written or ours or isinstance(error, RunFailed):
            record.write()
            RunDir(out_dir).record_failure(str(error), error.metrics if isinstance(error, RunFailed) else None)
        return _user_error(multirun, cfg)
    except OSError as error:  # a full disk, a read-only folder: nothing half-written is left (atomic writes)
        log.error("%s", disk_message(error, out_dir))
        return _user_error(multirun, cfg)
    except KeyboardInterrupt as stop:
        log.error("%s", stop_message(stop, out_dir, str(hydra_cfg.sweep.dir) if multirun else None))
        sys.exit(128 + stop_signal(stop))


def _user_error(multirun: bool, cfg: DictConfig) -> objective.Value:
    if multirun:
        return objective.failed(cfg.objective, cfg.objective_weights)
    sys.exit(USER_ERROR)


def kept_checkpoint(out_dir: Path) -> str:
    """Which whole checkpoint a stopped run left, in words."""
    path = newest_checkpoint(out_dir)
    if path is not None:
        return f"this session's image and metrics were not saved; the last whole checkpoint is {path}"
    return f"nothing of this session was saved and {out_dir} holds no checkpoint"


def newest_checkpoint(out_dir: Path) -> Path | None:
    """The checkpoint file a resume would continue from (last.pt, else previous.pt), if one is on disk."""
    for name in (checkpoint.LAST, checkpoint.PREVIOUS):
        path = checkpoint.directory(out_dir) / name
        if path.is_file():
            return path
    return None


def stop_signal(stop: BaseException) -> int:
    """The signal behind an interrupt: the one Interrupted names, else SIGINT (Python's KeyboardInterrupt)."""
    return int(getattr(stop, "signal", signal.SIGINT))


def stop_message(stop: BaseException, out_dir: Path | None, sweep_dir: str | None = None) -> str:
    """One line for every interrupt: what stopped it, what is kept on disk, and how to go on (only what works).

    Ctrl-C, SIGTERM, a second Ctrl-C mid-iteration, or either during start-up: the
    checkpoint advice is given only when a checkpoint file really is on disk.
    """
    name = signal.Signals(stop_signal(stop)).name
    what = str(stop) if isinstance(stop, Interrupted) and str(stop) else f"Stopped by {name}."
    if sweep_dir is not None:
        return (f"{what} Finished jobs are kept; continue the sweep by running it again with "
                f"hydra.sweep.dir={sweep_dir} (finished jobs are skipped, checkpointed ones continue).")
    if out_dir is None:
        return f"{what} Interrupted before the run started: nothing was written."
    saved = isinstance(stop, Interrupted) and stop.saved
    path = newest_checkpoint(out_dir)
    go_on = f"Continue: python -m nst_exp resume={out_dir}"
    if saved and path is not None:
        return f"{what} Saved in {out_dir}: result.png, metrics.json and the checkpoint {path}. {go_on}"
    if saved:
        return (f"{what} Saved in {out_dir}: result.png and metrics.json, but no checkpoint (it stopped before the "
                "first one, or the run is coarse-to-fine), so it cannot be continued: run it again to start over.")
    if path is not None:
        return f"{what} Nothing of this session was saved; {out_dir} holds the checkpoint {path}. {go_on}"
    return f"{what} Nothing was saved and {out_dir} holds no checkpoint: run it again to start over."


def disk_message(error: OSError, out_dir: Path) -> str:
    """One message for a write that failed: the path, why, the last whole checkpoint, and the fix."""
    path = error.filename or out_dir
    fixes = {
        errno.ENOSPC: "free space on that disk",
        errno.EDQUOT: "free space within your disk quota",
        errno.EROFS: "write to a writable folder (hydra.run.dir=... or hydra.sweep.dir=...)",
        errno.EACCES: "write to a folder you may write (hydra.run.dir=... or hydra.sweep.dir=...)",
        errno.ENOTDIR: "remove the file that stands where a folder is needed, or choose another hydra.run.dir",
        errno.EEXIST: "remove the file that stands where a folder is needed, or choose another hydra.run.dir",
    }
    fix = fixes.get(error.errno, "check the disk and the folder's permissions")
    return (
        f"Could not write {path}: {error.strerror or error}. {kept_checkpoint(out_dir).capitalize()}. "
        f"Fix: {fix}, then continue with python -m nst_exp resume={out_dir} (or run again)."
    )


def preflight(argv: list[str]) -> None:
    """Checks made before Hydra creates anything: a ``resume=`` target, what the config may instantiate, where it writes.

    The config is composed as Hydra will compose it (the same search path, ``--config-dir``
    included, and mode), because Hydra makes its callbacks before the job starts: every
    ``_target_`` in ``hydra.*`` is checked here (nst_exp.trust), and a YAML file that does
    not parse is one message.
    """
    multirun = any(argument in cli_args.MULTIRUN_FLAGS for argument in argv)
    resumes = [argument for argument in argv if argument.startswith("resume=") and argument != "resume=null"]
    for argument in resumes:
        check_run_dir(Path(argument.split("=", 1)[1]).expanduser(), multirun)
    if cli_args.asks_for_information(argv):
        return
    cfg = check_command_line(argv, "config")
    if cfg is None:
        return
    if any(argument in ("--cfg", "-c") or argument.startswith("--cfg=") for argument in argv):
        return  # prints the config; writes nothing
    # A single run is validated here, as composed, and a refused one answers before Hydra composes the config twice
    # more; a sweep's jobs (their own values) and a resume (the saved config) are validated by the job.
    if not multirun and not resumes and cfg.hydra.mode != RunMode.MULTIRUN:
        validate(OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"]))
    try:
        folder = Path(cfg.hydra.sweep.dir if multirun else cfg.hydra.run.dir)
    except Exception:  # noqa: BLE001 - an interpolation that does not resolve is Hydra's to report
        return
    check_writable(folder, "hydra.sweep.dir" if multirun else "hydra.run.dir")


def check_writable(folder: Path, key: str) -> None:
    """``folder`` can be created and written: no file stands in its way, and its nearest existing parent is writable."""
    folder, existing = folder.expanduser().absolute(), nearest_existing(folder)
    if not existing.is_dir():
        raise NstError(
            f"Cannot write the run to {folder}: {existing} is a file, not a folder. "
            f"Remove or rename that file, or choose another {key}=..."
        )
    if not os.access(existing, os.W_OK):
        raise NstError(
            f"Cannot write the run to {folder}: {existing} is not writable (a read-only disk or a folder you may "
            f"not write). Choose a writable {key}=..."
        )


def main() -> None:
    """The ``nst-exp`` command: ``job`` under Hydra, with exit status 2 for a config that does not compose.

    Image files and ``-o OUT`` on the command line (nst_exp.cli_args) become
    overrides before Hydra reads ``sys.argv``; OUT is written once the run is done.
    """
    sys.unraisablehook = quiet_unraisable
    if not any(argument in cli_args.MULTIRUN_FLAGS for argument in sys.argv[1:]):
        signal.signal(signal.SIGTERM, _stop_on_sigterm)  # a sweep's launcher handles its own signals
    try:
        command = cli_args.parse(sys.argv[1:])
        sys.argv[1:] = command.hydra_args
        text = app_help(sys.argv[1:])  # --help without Hydra's listing of its own config groups
        if text is not None:
            print_page(text)
            return
        preflight(sys.argv[1:])
    except NstError as error:
        print(f"Error: {error}", file=sys.stderr)
        sys.exit(USER_ERROR)
    except KeyboardInterrupt as stop:  # Ctrl-C while the command line is checked: nothing exists yet
        print(f"Error: {stop_message(stop, None)}", file=sys.stderr)
        sys.exit(128 + stop_signal(stop))
    try:
        job()
    except KeyboardInterrupt as stop:  # before the job started (Hydra composing, creating the run dir)
        print(f"Error: {stop_message(stop, _run_dir)}", file=sys.stderr)
        sys.exit(128 + stop_signal(stop))
    except SystemExit as stop:
        if stop.code == 1 and not _job_started and not isinstance(stop, SweepEnded):  # Hydra: it does not compose
            sys.exit(USER_ERROR)
        if command.output is not None and _job_started and stop.code:
            log.error("Nothing written to %s: the run did not finish.", command.output)
        raise
    if command.output is not None and _run_dir is not None:
        write_output(_run_dir, command.output)


def quiet_unraisable(unraisable: Any) -> None:
    """``sys.unraisablehook``: a Ctrl-C that lands in a destructor is one line, not Python's traceback.

    Python cannot raise from ``__del__`` (a second Ctrl-C 50 ms after the first can land in
    tqdm's, as the progress bar is dropped), so it prints "Exception ignored in ..." with a
    traceback and goes on. The interrupt's own line already says what is on disk.
    """
    if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
        print("Note: a Ctrl-C arrived while Python was cleaning up an object, where it cannot stop anything; "
              "press Ctrl-C again if the run goes on.", file=sys.stderr)
        return
    sys.__unraisablehook__(unraisable)


def _stop_on_sigterm(number: int, frame: object) -> None:
    """SIGTERM outside the optimisation loop (whose own handler stops it after an iteration): stop as Ctrl-C does."""
    raise Interrupted("Stopped by SIGTERM.", signal.SIGTERM, saved=False)


def write_output(run_dir: Path, output: Path) -> None:
    """``-o OUT``: the run's result.png copied to OUT; a failed copy is one message and exit status 2."""
    try:
        cli_args.copy_result(run_dir, output)
    except OSError as error:
        print(f"Error: could not write -o {output}: {error.strerror or error}. The result stays in {run_dir}.", file=sys.stderr)
        sys.exit(USER_ERROR)


if __name__ == "__main__":
    main()
