"""One style transfer from a composed config: set up, synthesise, write the results.

    where = continuation(...)          # resume=, a run dir holding this run, or a fresh start
    settings, inputs = ...             # the config read once, every input file found once
    network, extractor = ...           # the network and the layers the objective reads
    problem.check_sizes(stages)        # every layer sees the images at every stage (file headers)
    guard.check(...)                   # the run fits in memory
    outcome = synthesise(...)          # the coarse-to-fine stages (one for a plain run)
    write result.png and metrics.json
"""

from __future__ import annotations

import logging
import platform
import time
from pathlib import Path
from typing import Any, Sequence

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from nst_exp import memory
from nst_exp.callbacks import Checkpointer, ProgressBar, Snapshots, TensorBoardLogger
from nst_exp.checkpoint import fingerprint
from nst_exp.color import ColorControl
from nst_exp.config import validate
from nst_exp.errors import NstError, RunFailed
from nst_exp.features import Network, load_model, summary
from nst_exp.images import save
from nst_exp.inputs import Inputs, user_path_keys
from nst_exp.losses import LossSettings
from nst_exp.optimize import Interrupted, Outcome
from nst_exp.problem import Problem
from nst_exp.results import METRICS_FILE, RESULT_FILE, Status, flatten, write_json
from nst_exp.resume import Continuation, continuation
from nst_exp.stages import plan, synthesise

log = logging.getLogger(__name__)


def run(
    cfg: DictConfig, out_dir: Path | str | None = None, overrides: Sequence[str] = (), multirun: bool = False
) -> float:
    """Run one style transfer into ``out_dir``; return its final total loss (what a sweeper minimises).

    With ``resume=DIR`` in ``cfg`` the run continues in DIR and ``out_dir`` is
    not needed. ``overrides`` are the command line's (``resume=`` may change
    only checkpoint.RESUMABLE_KEYS; a path typed there is never fetched);
    ``multirun`` says whether this is one job of a sweep.
    """
    started = time.perf_counter()
    if out_dir is None and not cfg.resume:
        raise NstError("run() needs out_dir, the directory to write the run into (or resume=DIR in the config).")
    where = continuation(cfg, Path(out_dir or cfg.resume), overrides, multirun)
    cfg, out_dir = where.cfg, where.out_dir
    if where.finished is not None:
        log.info("%s already holds this run, %s: skipped (delete it to run again).", out_dir, where.saved.status)
        return where.finished
    validate(cfg)
    settings = LossSettings.from_config(cfg)
    inputs = Inputs.from_config(cfg, user_path_keys(overrides))  # fails in milliseconds on a bad path
    device = pick_device(cfg.device)
    threads = configure_threads(cfg.threads)
    torch.manual_seed(cfg.seed)

    network = load_network(cfg, settings)
    extractor = network.extractor(settings.layers)
    color = ColorControl(cfg.color)
    problem = Problem(inputs, settings, extractor, color, init=cfg.init.kind, seed=cfg.seed)
    stages = plan(cfg.image_size, cfg.iterations, cfg.coarse_to_fine.sizes, cfg.coarse_to_fine.iterations)
    problem.check_sizes(stages)  # before any file is written
    if where.saved is not None and len(stages) > 1:
        raise NstError(
            f"{out_dir} holds a coarse-to-fine run; resuming one is not supported yet (its checkpoints "
            "hold one stage's image). Start it again in a new output dir."
        )
    guard = memory.Guard(extractor, inputs.shape(cfg.image_size), cfg.image_size, cfg, device)
    guard.check(cfg.memory_guard)
    extractor.to(device).speed(cfg.precision, cfg.channels_last, cfg.compile)
    log.info(
        "Running %s on %s (%d CPU threads), precision %s%s%s", cfg.model.name, device, threads, cfg.precision,
        ", channels_last" if cfg.channels_last else "", ", torch.compile" if cfg.compile else "",
    )

    problem.stage_inputs(stages[-1].size).save(out_dir)
    checkpointer = None
    if len(stages) == 1:  # a checkpoint holds one image size: coarse-to-fine runs are not checkpointed
        objective_print = fingerprint(problem.objective(stages[0].size))
        start = where.start(objective_print, device)
        resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
        checkpointer = Checkpointer(out_dir, cfg.checkpoint.every, resolved, objective_print, where.seconds, where.resumed)
    else:
        start = None
    callbacks = [
        TensorBoardLogger(
            out_dir, hparams_of(cfg), cfg.log.scalars_every, cfg.log.image_every,
            {"network": summary(cfg.model.name, cfg.model.description, network)}, where.iteration,
        ),
        Snapshots(out_dir, cfg.log.image_every),
        ProgressBar(sum(stage.iterations for stage in stages), cfg.log.progress, where.iteration),
        *([checkpointer] if checkpointer else []),
    ]
    outcome, records = synthesise(stages, problem, hydra.utils.instantiate(cfg.optimizer), callbacks, start)
    outcome.seconds += where.seconds

    save(outcome.image, out_dir / RESULT_FILE)
    record = {
        **metrics(cfg, outcome, network, device, threads, started),
        **guard.measured(),
        "resumed_from": where.resumed,
        "styles": {source.spec.name: source.spec.weight for source in inputs.styles},
        "color": color.describe(),
    }
    if len(stages) > 1:
        record["stages"] = records
    write_json(out_dir / METRICS_FILE, record)
    return finish(outcome, record, out_dir, guard, checkpointer, where)


def finish(
    outcome: Outcome,
    record: dict[str, Any],
    out_dir: Path,
    guard: memory.Guard,
    checkpointer: Checkpointer | None,
    where: Continuation,
) -> float:
    """The run's final loss, or the exception that says how it stopped (its files are written already)."""
    if outcome.status == Status.OUT_OF_MEMORY:
        kept = checkpointer.last if checkpointer is not None and checkpointer.last is not None else None
        kept = kept if kept is not None else (where.iteration or None)
        raise RunFailed(guard.out_of_memory(outcome.message, out_dir, kept), record)
    if outcome.message:
        log.warning("%s", outcome.message)
    log.info("Wrote %s (%s) to %s", RESULT_FILE, outcome.status, out_dir)
    if outcome.status == Status.INTERRUPTED:
        raise Interrupted(outcome.message, outcome.signal)
    return outcome.values["loss/total"]


def pick_device(name: str) -> torch.device:
    """``auto`` -> cuda, then mps, then cpu; an unavailable explicit choice is an error."""
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "mps": torch.backends.mps.is_available(),
    }
    if name == "auto":
        name = next(d for d in ("cuda", "mps", "cpu") if available[d])
    if not available.get(name.split(":")[0], False):
        raise NstError(f"device={name} was asked for but is not available here. Use device=auto or device=cpu.")
    return torch.device(name)


def configure_threads(threads: int | None) -> int:
    """Set torch's CPU threads for this job and return the number in use.

    ``None`` keeps torch's default: all cores in a plain run; in a worker of
    Hydra's joblib launcher, joblib's loky backend has already set
    OMP_NUM_THREADS to cores // workers, so parallel jobs do not oversubscribe.
    """
    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def load_network(cfg: DictConfig, settings: LossSettings) -> Network:
    """The configured network with its weights, its layers checked against the objective's."""
    network = load_model(cfg.model, cfg.seed)
    log.info("Network: %s", summary(cfg.model.name, cfg.model.description, network))
    if not network.trained:
        log.warning("RANDOM WEIGHTS: %s is untrained (%s). Use it for tests only.", cfg.model.name, network.weights)
    elif not network.paper_network:
        log.warning("%s is not the paper's network; see docs/networks.md.", cfg.model.name)
    network.check_layers(settings.content_layers, "content layer", cfg.model.name)
    network.check_layers(settings.style_layers, "style layer", cfg.model.name)
    return network


def hparams_of(cfg: DictConfig) -> dict[str, Any]:
    """The run's settings flattened to scalars for TensorBoard's HParams view."""
    flat = {
        key: value if isinstance(value, (bool, int, float, str)) else str(value)
        for key, value in flatten(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True), private=False).items()
    }
    if cfg.beta > 0:
        flat["alpha/beta"] = cfg.alpha / cfg.beta
    return flat


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def metrics(
    cfg: DictConfig, outcome: Outcome, network: Network, device: torch.device, threads: int, started: float
) -> dict[str, Any]:
    """The run's metrics.json: final losses by TensorBoard tag, counts, timings, what ran where."""
    return {
        "status": outcome.status,
        "message": outcome.message,
        **outcome.values,
        "iterations": outcome.iterations,
        "evaluations": outcome.evaluations,
        "seconds": outcome.seconds,
        "wall_seconds": time.perf_counter() - started,
        "seconds_per_iteration": outcome.seconds / outcome.iterations if outcome.iterations else None,
        "seconds_per_evaluation": outcome.seconds / outcome.evaluations if outcome.evaluations else None,
        "image_height": int(outcome.image.shape[-2]),
        "image_width": int(outcome.image.shape[-1]),
        "device": str(device),
        "device_name": device_name(device),
        "threads": threads,
        "precision": str(cfg.precision),
        "channels_last": cfg.channels_last,
        "compile": cfg.compile,
        "network": cfg.model.name,
        "network_description": cfg.model.description,
        "weights": network.weights,
        "trained_weights": network.trained,
        "paper_network": network.paper_network,
        "network_layers": network.layer_range,
        "torch": torch.__version__,
    }
