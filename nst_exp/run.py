"""One style transfer from a composed config: load, optimise, write the run's files."""

from __future__ import annotations

import functools
import logging
import math
import platform
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from nst_exp import checkpoint, images, memory
from nst_exp.callbacks import Checkpointer, ProgressBar, Snapshots, TensorBoardLogger
from nst_exp.checkpoint import Checkpoint
from nst_exp.color import ColorControl
from nst_exp.config import validate
from nst_exp.errors import NstError, RunFailed
from nst_exp.features import FeatureExtractor, Network, load_model, summary
from nst_exp.losses import GatysLoss, equal_style_weights
from nst_exp.optimize import COMPLETED, DIVERGED, INTERRUPTED, OUT_OF_MEMORY, Interrupted, Outcome
from nst_exp.results import METRICS_FILE, RESULT_FILE, flatten, read_metrics, write_json
from nst_exp.stages import Stage, StageSetup, plan, synthesise, upsample
from nst_exp.styles import StageInputs, StyleSpec, find_images, load_inputs, style_specs

log = logging.getLogger(__name__)


def pick_device(name: str) -> torch.device:
    """``auto`` -> cuda, then mps, then cpu; an unavailable explicit choice is an error."""
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "mps": torch.backends.mps.is_available(),
    }
    if name == "auto":
        name = next(d for d in ("cuda", "mps", "cpu") if available[d])
    if not available.get(name, False):
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


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def check_image_size(
    extractor: FeatureExtractor, image: Tensor, what: str, image_size: int, setting: str = "image_size"
) -> None:
    """Every requested layer must see at least one pixel of ``image``; ``setting`` names the size's key.

    The deepest layer is checked first (``requested`` is a set, whose order changes from
    process to process), so the error names the size that suffices for every layer.
    """
    height, width = image.shape[-2:]
    for layer in sorted(extractor.requested, key=lambda name: (-extractor.downsampling(name), name)):
        factor = extractor.downsampling(layer)
        if min(height, width) < factor:
            needed = math.ceil(factor * image_size / min(height, width))
            raise NstError(
                f"{setting}={image_size} is too small for layer '{layer}': the {what} image becomes "
                f"{width} x {height} pixels and '{layer}' sees it {factor} times smaller. "
                f"Use {setting}={needed} or more, or shallower layers."
            )


def initial_image(cfg: DictConfig, content: Tensor, style_path: Path) -> Tensor:
    """The image optimisation starts from, on the CPU, the content's size."""
    kind = cfg.init.kind
    if kind == "noise":
        generator = torch.Generator().manual_seed(cfg.seed)
        return torch.rand(content.shape, generator=generator)
    if kind == "content":
        return content.clone()
    size = tuple(content.shape[-2:])
    if kind == "style":
        return images.load_sized(style_path, size, cfg.max_image_pixels)
    path = images.resolve(cfg.init.path, cfg.images_dir, what="init")
    return images.load_sized(path, size, cfg.max_image_pixels)


def hparams_of(cfg: DictConfig) -> dict[str, Any]:
    """The run's settings flattened to scalars for TensorBoard's HParams view."""
    flat = {
        key: value if isinstance(value, (bool, int, float, str)) else str(value)
        for key, value in flatten(OmegaConf.to_container(cfg, resolve=True), private=False).items()
    }
    if cfg.beta > 0:
        flat["alpha/beta"] = cfg.alpha / cfg.beta
    return flat


def output_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def command_line() -> tuple[list[str], bool]:
    """The command line's overrides and whether this is a multirun, when Hydra runs us."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return [], False
    hydra_cfg = HydraConfig.get()
    return list(hydra_cfg.overrides.task), hydra_cfg.mode == RunMode.MULTIRUN


@dataclass
class Continuation:
    """Where a run picks up: its config and directory, and what an earlier session left there."""

    cfg: DictConfig
    out_dir: Path
    saved: Checkpoint | None = None  # the checkpoint to continue from
    finished: float | None = None  # the final loss, if the run there is finished: nothing to do


def continuation(cfg: DictConfig, out_dir: Path | None, overrides: Sequence[str] | None) -> Continuation:
    """``resume=DIR``: DIR's checkpoint and saved config. Else a run dir holding this same run."""
    command, multirun = command_line()
    if cfg.resume:
        if multirun:
            raise NstError(
                "resume= continues one run. To finish a sweep, run the same sweep again with "
                "hydra.sweep.dir=<its dir>: finished jobs are skipped, unfinished ones continue."
            )
        out_dir = Path(cfg.resume)  # under Hydra, conf/config.yaml makes it the output dir too
        saved = checkpoint.load(out_dir)
        changes = [o for o in (command if overrides is None else overrides) if not o.startswith("resume=")]
        log.info(
            "Resuming %s from its checkpoint at iteration %d (%s) with the config saved there, "
            "not one composed now; changes from the command line: %s.",
            out_dir,
            saved.state.iteration,
            saved.path,
            ", ".join(changes) or "none",
        )
        return Continuation(checkpoint.resumed_config(saved.config, changes), out_dir, saved)
    out_dir = Path(out_dir) if out_dir is not None else output_dir()
    if not (cfg.checkpoint.auto_resume and checkpoint.exists(out_dir)):
        return Continuation(cfg, out_dir)
    saved = checkpoint.load(out_dir)
    mismatch = checkpoint.difference(saved.config, OmegaConf.to_container(cfg, resolve=True))
    if mismatch:
        raise NstError(
            f"{out_dir} already holds a different run ({mismatch}). Use another output dir "
            "(hydra.run.dir=... or hydra.sweep.dir=...), or delete that one to start over."
        )
    finished = finished_loss(saved, out_dir, cfg.iterations)
    if finished is None:
        log.info("Continuing the run in %s from its checkpoint at iteration %d.", out_dir, saved.state.iteration)
    return Continuation(cfg, out_dir, saved, finished)


def synthesis_layers(cfg: DictConfig) -> list[str]:
    """The layers a run reads: its content layers, then its style layers, each once."""
    return list(dict.fromkeys([*cfg.content_layers, *cfg.style_layers]))


def build_objective(
    cfg: DictConfig, extractor: FeatureExtractor, inputs: StageInputs, color: ColorControl
) -> torch.nn.Module:
    """The objective for one stage's inputs (on the extractor's device), colour control applied."""
    objective = GatysLoss(
        extractor,
        inputs.network_content,
        inputs.styles,
        cfg.content_layers,
        cfg.style_layers,
        equal_style_weights(cfg.style_layers, cfg.style_weights),
        cfg.alpha,
        cfg.beta,
        cfg.loss,
        cfg.spatial.propagation,
        cfg.tv_weight,
    )
    return color.objective(objective)


def save_inputs(inputs: StageInputs, out_dir: Path) -> None:
    """inputs/content.png, style.png (style_<name>.png for several) and mask_<name>.png, as the network sees them."""
    images.save(inputs.content, out_dir / "inputs" / "content.png")
    several = len(inputs.styles) > 1
    for target in inputs.styles:
        images.save(target.image, out_dir / "inputs" / (f"style_{target.name}.png" if several else "style.png"))
        if target.guide is not None:
            images.save(target.guide.expand(1, 3, -1, -1), out_dir / "inputs" / f"mask_{target.name}.png")


def prepare_stage(
    cfg: DictConfig,
    extractor: FeatureExtractor,
    specs: list[StyleSpec],
    color: ColorControl,
    device: torch.device,
    out_dir: Path,
    stage: Stage,
    previous: Tensor | None,
) -> StageSetup:
    """Load one stage's inputs at its size, build its objective and its start (see nst_exp.stages)."""
    inputs = load_inputs(cfg, specs, color, stage.size)
    setting = "image_size" if stage.index == stage.count else f"coarse_to_fine.sizes[{stage.index - 1}]"
    check_image_size(extractor, inputs.content, "content", stage.size, setting)
    for target in inputs.styles:
        check_image_size(extractor, target.image, f"style '{target.name}'", stage.size, setting)
    if stage.index == stage.count:
        save_inputs(inputs, out_dir)
    if previous is None:
        init = initial_image(cfg, inputs.content, inputs.style_paths[0])
        init = color.initial(init, cfg.init.kind, inputs.content)
    else:
        init = upsample(previous.clamp(0, 1), tuple(inputs.content.shape[-2:]))  # the result as saved
    inputs = inputs.to(device)
    objective = build_objective(cfg, extractor, inputs, color)
    if stage.index == 1:
        log.info("Objective: %s; colour: %s", objective.extra_repr(), color.describe())
    log.info("Stage %d of %d: %d px, %d iterations", stage.index, stage.count, stage.size, stage.iterations)
    return StageSetup(objective, init.to(device), functools.partial(color.finish, content=inputs.content))


def run(cfg: DictConfig, out_dir: Path | None = None, overrides: Sequence[str] | None = None) -> float:
    """Run one style transfer; return its final total loss (what a sweeper minimises).

    ``resume=DIR`` continues the run in DIR from its last checkpoint, with the
    config saved there; ``overrides`` (the command line's, by default) may
    change only checkpoint.RESUMABLE_KEYS. Without it, an output dir that
    already holds this same run continues it, or skips it if it finished
    (``checkpoint.auto_resume``): a preempted sweep re-run in its sweep dir
    finishes what was left.
    """
    started = time.perf_counter()
    where = continuation(cfg, out_dir, overrides)
    cfg, out_dir, saved = where.cfg, where.out_dir, where.saved
    if where.finished is not None:
        log.info("%s already holds this run, %s: skipped (delete it to run again).", out_dir, saved.status)
        return where.finished
    validate(cfg)
    equal_style_weights(cfg.style_layers, cfg.style_weights)  # refuse a bad length before loading anything
    specs = style_specs(cfg)
    device = pick_device(cfg.device)
    threads = configure_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    # Find the images before building the network, so a sweep job with a bad path fails in
    # milliseconds instead of after seconds of loading weights.
    find_images(cfg, specs)

    network = load_model(cfg.model, cfg.seed)
    about = summary(cfg.model.name, cfg.model.description, network)
    log.info("Network: %s", about)
    if not network.trained:
        log.warning("RANDOM WEIGHTS: %s is untrained (%s). Use it for tests only.", cfg.model.name, network.weights)
    elif not network.paper_network:
        log.warning("%s is not the paper's network; see README, 'Networks and weights'.", cfg.model.name)
    network.check_layers(cfg.content_layers, "content layer", cfg.model.name)
    network.check_layers(cfg.style_layers, "style layer", cfg.model.name)
    extractor = network.extractor(synthesis_layers(cfg))
    color = ColorControl(cfg.color)
    stages = plan(cfg.image_size, cfg.iterations, cfg.coarse_to_fine.sizes, cfg.coarse_to_fine.iterations)
    if saved is not None and len(stages) > 1:
        raise NstError(
            f"{out_dir} holds a coarse-to-fine run; resuming one is not supported yet (its checkpoints "
            "hold one stage's image). Start it again in a new output dir."
        )
    content_path = images.resolve(cfg.content.path, cfg.images_dir, cfg.content.url, "content")
    final_shape = tuple(images.load(content_path, cfg.image_size, cfg.max_image_pixels).shape[-2:])
    guard = memory.Guard(extractor, final_shape, cfg.image_size, cfg, device)
    guard.check(cfg.memory_guard)
    extractor = extractor.to(device).speed(cfg.precision, cfg.channels_last, cfg.compile)

    prepare = functools.partial(prepare_stage, cfg, extractor, specs, color, device, out_dir)
    first = prepare(stages[0], None)  # the smallest stage: a size error stops the run before any file is written
    log.info(
        "Running %s on %s (%d CPU threads), precision %s%s%s", cfg.model.name, device, threads, cfg.precision,
        ", channels_last" if cfg.channels_last else "", ", torch.compile" if cfg.compile else "",
    )
    fingerprint = checkpoint.fingerprint(first.objective)
    iteration, seconds_before, resumed = 0, 0.0, []
    if saved is not None:
        checkpoint.check_fingerprint(saved.fingerprint, fingerprint, out_dir)
        checkpoint.restore_rng(saved.rng)
        first = first._replace(init=replace(saved.state, image=saved.state.image.to(device)))
        iteration, seconds_before = saved.state.iteration, saved.seconds
        resumed = [*saved.resumed, iteration]
        if saved.state.optimizer is None and iteration < cfg.iterations:
            log.warning(
                "The checkpoint (%s at iteration %d) has no optimizer state: the optimizer starts afresh from its "
                "image, so the result differs from a run that went through without stopping.",
                saved.status, iteration,
            )
    make_optimizer = hydra.utils.instantiate(cfg.optimizer)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    checkpointer = Checkpointer(out_dir, cfg.checkpoint.every, resolved, fingerprint, seconds_before, resumed)
    callbacks = [
        TensorBoardLogger(
            out_dir, hparams_of(cfg), cfg.log.scalars_every, cfg.log.image_every, {"network": about}, iteration
        ),
        Snapshots(out_dir, cfg.log.image_every),
        ProgressBar(sum(stage.iterations for stage in stages), cfg.log.progress, iteration),
    ]
    if len(stages) == 1:  # a checkpoint holds one image size: coarse-to-fine runs are not checkpointed
        callbacks.append(checkpointer)
    outcome, records = synthesise(stages, prepare, make_optimizer, callbacks, first)
    outcome.seconds += seconds_before

    images.save(outcome.image, out_dir / RESULT_FILE)
    record = {
        **metrics(cfg, outcome, network, device, threads, started),
        **guard.measured(),
        "resumed_from": resumed,
        "styles": {spec.name: spec.weight for spec in specs},
        "color": color.describe(),
    }
    if len(stages) > 1:
        record["stages"] = records
    write_json(out_dir / METRICS_FILE, record)
    if outcome.status == OUT_OF_MEMORY:
        kept = checkpointer.last if checkpointer.last is not None else saved.state.iteration if saved else None
        raise RunFailed(guard.out_of_memory(outcome.message, out_dir, kept), record)
    if outcome.message:
        log.warning("%s", outcome.message)
    log.info("Wrote %s (%s) to %s", RESULT_FILE, outcome.status, out_dir)
    if outcome.status == INTERRUPTED:
        raise Interrupted(outcome.message, outcome.signal)
    return outcome.values["loss/total"]


def finished_loss(saved: Checkpoint, out_dir: Path, iterations: int) -> float | None:
    """The final loss of the run in ``out_dir`` if it finished (and asked no more iterations), else None."""
    if saved.status not in (COMPLETED, DIVERGED) or not (out_dir / METRICS_FILE).is_file():
        return None
    done = read_metrics(out_dir)
    if done.get("status") != saved.status:
        return None
    if saved.status == COMPLETED and saved.state.iteration < iterations:
        return None  # asked for more: continue it
    if saved.status == COMPLETED and saved.state.iteration > iterations:
        raise NstError(
            f"{out_dir} holds this run finished after {saved.state.iteration} iterations, more than "
            f"iterations={iterations}. Use another output dir to run {iterations} iterations."
        )
    loss = done.get("loss/total")
    return float("nan") if loss is None else float(loss)


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
        "precision": cfg.precision,
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


def record_failure(out_dir: Path, error: BaseException) -> None:
    """metrics.json for a run that could not start or finish, so a sweep's report lists it.

    A finished run's metrics.json is never replaced by a later attempt's failure.
    """
    path = out_dir / METRICS_FILE
    try:
        finished = read_metrics(out_dir).get("status") in (COMPLETED, DIVERGED)
    except (OSError, ValueError):  # none yet, or unreadable
        finished = False
    if finished and not isinstance(error, RunFailed):
        log.warning("%s keeps the metrics of the run that finished there.", path)
        return
    so_far = error.metrics if isinstance(error, RunFailed) else {}
    write_json(path, {**so_far, "status": so_far.get("status", "failed"), "message": str(error)})
