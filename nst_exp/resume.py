"""Where a run picks up: ``resume=DIR``, a run dir that already holds this run, or a fresh start.

- ``resume=DIR`` continues the run in DIR from its last checkpoint with the
  config saved there; the command line may change only
  ``RESUMABLE_KEYS`` (how long it goes on, where and how it reports).
- Otherwise an output dir that already holds this same run continues it, or
  skips it if it finished (``checkpoint.auto_resume``): a preempted sweep re-run
  in its sweep dir finishes what was left. A different run there is refused.

checkpoint.py holds the file format; this module holds the policy.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from nst_exp import checkpoint
from nst_exp.checkpoint import Checkpoint
from nst_exp.config import Config, default
from nst_exp.errors import NstError
from nst_exp.results import RunDir, Status, flatten
from nst_exp.validation import validate

if TYPE_CHECKING:  # check_run_dir runs before torch loads (python -m nst_exp resume=DIR)
    import torch

    from nst_exp.optimize import State

log = logging.getLogger(__name__)

# Keys that may differ between a checkpoint and the run continuing it: they change how long the
# run goes on, where and how it reports, never the maths of the iterations already done.
RESUMABLE_KEYS = (
    "iterations",
    "device",
    "threads",
    "memory_guard",
    "log.progress",
    "log.scalars_every",
    "log.image_every",
    "checkpoint.every",
    "checkpoint.auto_resume",
    "objective",  # what the job returns to a sweeper, read from metrics.json after the run
    "objective_weights",
)


@dataclass
class Continuation:
    """Where a run picks up: its config and directory, and what an earlier session left there."""

    cfg: DictConfig
    out_dir: Path | None  # None: a run kept in memory
    saved: Checkpoint | None = None  # the checkpoint to continue from
    finished: bool = False  # the run there is finished: nothing to do

    @property
    def iteration(self) -> int:
        return self.saved.state.iteration if self.saved is not None else 0

    @property
    def seconds(self) -> float:
        return self.saved.seconds if self.saved is not None else 0.0

    @property
    def resumed(self) -> list[int]:
        """Iterations at which earlier sessions of this run stopped, this one included."""
        return [*self.saved.resumed, self.saved.state.iteration] if self.saved is not None else []

    def resume_state(self, device: torch.device) -> State | None:
        """Where the optimisation picks up: the saved state (image and optimizer) on ``device``; None: a fresh start.

        The caller has checked the saved objective against this run's (``checkpoint.check_fingerprint``)
        and restored the saved random state (``checkpoint.restore_rng``).
        """
        if self.saved is None:
            return None
        state = self.saved.state
        if state.optimizer is None and state.iteration < self.cfg.iterations:
            log.warning(
                "The checkpoint (%s at iteration %d) has no optimizer state: the optimizer starts afresh from its "
                "image, so the result differs from a run that went through without stopping.",
                self.saved.status, state.iteration,
            )
        return replace(state, image=state.image.to(device))


def continuation(
    cfg: DictConfig,
    out_dir: Path,
    overrides: Sequence[str] = (),
    dir_setting: str = "hydra.run.dir=... or hydra.sweep.dir=...",
) -> Continuation:
    """``resume=DIR``: DIR's checkpoint and saved config. Else a run dir holding this same run, or a fresh one.

    ``dir_setting``: how the caller picks another directory (the API's ``out_dir=...``), for the message.
    """
    if cfg.resume:
        return _resume(Path(cfg.resume), overrides)
    out_dir = Path(out_dir)
    if not (cfg.checkpoint.auto_resume and checkpoint.exists(out_dir)):
        return Continuation(cfg, out_dir)
    saved = checkpoint.load(out_dir)
    mismatch = difference(saved.config, OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
    if mismatch:
        raise NstError(
            f"{out_dir} already holds a different run ({mismatch}). Use another output dir "
            f"({dir_setting}), or delete that one to start over."
        )
    finished = is_finished(saved, out_dir, cfg.iterations)
    if not finished:
        log.info("Continuing the run in %s from its checkpoint at iteration %d.", out_dir, saved.state.iteration)
    return Continuation(cfg, out_dir, saved, finished)


def _resume(run_dir: Path, overrides: Sequence[str]) -> Continuation:
    saved = checkpoint.load(run_dir)  # the caller has checked run_dir (check_run_dir) before locking it
    changes = [o for o in overrides if not o.lstrip("+~").startswith("resume=")]
    cfg = resumed_config(saved.config, changes)
    validate(cfg)  # a resumed run's one validation: the saved config with the command line's changes
    if cfg.iterations < saved.state.iteration:
        raise NstError(
            f"resume={run_dir} with iterations={cfg.iterations}: that run has done {saved.state.iteration} "
            f"iterations already. Give iterations={saved.state.iteration} or more to continue it; "
            "its checkpoint is left as it was."
        )
    log.info(
        "Resuming %s from its checkpoint at iteration %d (%s) with the config saved there, "
        "not one composed now; changes from the command line: %s.",
        run_dir, saved.state.iteration, saved.path, ", ".join(changes) or "none",
    )
    return Continuation(cfg, run_dir, saved)


def check_run_dir(run_dir: Path, multirun: bool = False) -> None:
    """``resume=`` must name one run's directory, in a single run: say what it names instead, and what to do."""
    if multirun:
        raise NstError(
            "resume= continues one run. To finish a sweep, run the same sweep again with "
            "hydra.sweep.dir=<its dir>: finished jobs are skipped, unfinished ones continue."
        )
    if not run_dir.exists():
        raise NstError(
            f"resume={run_dir}: there is no such directory. Give the directory of the run to continue "
            "(outputs/runs/<date>/<time>, or a sweep's job folder such as outputs/multirun/<date>/<time>/3)."
        )
    if not run_dir.is_dir():
        raise NstError(f"resume={run_dir} is a file, not a run directory. Give the directory that holds its checkpoints/.")
    if checkpoint.exists(run_dir):
        return
    jobs = sorted(p.parent.parent.name for p in run_dir.glob(f"*/{RunDir.CHECKPOINTS}/*.pt"))
    if jobs:
        raise NstError(
            f"resume={run_dir} is a sweep's folder (its jobs {', '.join(dict.fromkeys(jobs))} hold checkpoints). "
            f"Continue one job with resume={run_dir / jobs[0]}, or the whole sweep by running it again "
            f"with hydra.sweep.dir={run_dir}."
        )
    raise NstError(
        f"resume={run_dir} holds no checkpoint ({RunDir.CHECKPOINTS}/last.pt or previous.pt), so there "
        "is nothing to continue. Start a new run instead."
    )


def is_finished(saved: Checkpoint, out_dir: Path, iterations: int) -> bool:
    """The run in ``out_dir`` finished (its metrics.json says so) and is asked for no more iterations."""
    run = RunDir(out_dir)
    if not Status(saved.status).finished or not run.metrics.is_file() or run.read_metrics().get("status") != saved.status:
        return False
    if saved.status == Status.COMPLETED and saved.state.iteration < iterations:
        return False  # asked for more: continue it
    if saved.status == Status.COMPLETED and saved.state.iteration > iterations:
        raise NstError(
            f"{out_dir} holds this run finished after {saved.state.iteration} iterations, more than "
            f"iterations={iterations}. Use another output dir to run {iterations} iterations."
        )
    return True


def resumed_config(saved: Mapping[str, Any], overrides: Sequence[str]) -> DictConfig:
    """The checkpoint's config with the command line's changes to ``RESUMABLE_KEYS`` applied.

    Any other override is refused: the run goes on with the config it started with.
    """
    changes = []
    for override in overrides:
        key = override.split("=", 1)[0]
        if key == "resume":
            continue
        if key.lstrip("+~") not in RESUMABLE_KEYS or "=" not in override:
            raise NstError(
                f"'{override}' cannot be used with resume=: a resumed run keeps the config it "
                f"started with. Only these may change: {', '.join(k + '=...' for k in RESUMABLE_KEYS)}. "
                "To change anything else, start a new run."
            )
        changes.append(override.lstrip("+"))
    try:
        merged = OmegaConf.merge(OmegaConf.structured(Config), saved, OmegaConf.from_dotlist(changes))
    except Exception as error:  # omegaconf's ValidationError, ConfigKeyError...
        raise NstError(
            f"The checkpoint's config does not fit this version of nst_exp ({error}). "
            "Resume it with the version that started it, or start a new run."
        ) from error
    for key in OmegaConf.missing_keys(merged):  # a setting added since the checkpoint was written
        if "." not in key:
            merged[key] = default(key)  # a top-level one takes conf/config.yaml's default
    missing = sorted(OmegaConf.missing_keys(merged))
    if missing:
        raise NstError(
            f"The checkpoint's config lacks {', '.join(missing)}, which this version of nst_exp needs. "
            "Resume it with the version that started it, or start a new run."
        )
    merged.resume = None
    return merged


def difference(saved: Mapping[str, Any], current: Mapping[str, Any]) -> str | None:
    """The first key (dotted) whose value differs, outside ``RESUMABLE_KEYS`` and ``resume``."""
    ignored = set(RESUMABLE_KEYS) | {"resume"}
    old, new = flatten(saved), flatten(current)
    for key in list(old) + [k for k in new if k not in old]:
        if key not in ignored and old.get(key) != new.get(key):
            return f"{key} is {old.get(key)!r} there and {new.get(key)!r} now"
    return None
