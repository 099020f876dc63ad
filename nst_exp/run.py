"""One style transfer from a composed config: load, optimise, write the run's files."""

from __future__ import annotations

import functools
import logging
import math
import platform
import time
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from nst_exp import images
from nst_exp.callbacks import ProgressBar, Snapshots, TensorBoardLogger
from nst_exp.color import ColorControl
from nst_exp.config import validate
from nst_exp.errors import NstError
from nst_exp.features import FeatureExtractor, Network, load_network, summary
from nst_exp.losses import GatysLoss, equal_style_weights
from nst_exp.optimize import INTERRUPTED, Outcome
from nst_exp.results import METRICS_FILE, RESULT_FILE, write_json
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
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if not str(key).startswith("_"):
                    walk(value, f"{prefix}{key}.")
        else:
            key = prefix[:-1]
            flat[key] = node if isinstance(node, (bool, int, float, str)) else str(node)

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    if cfg.beta > 0:
        flat["alpha/beta"] = cfg.alpha / cfg.beta
    return flat


def output_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


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


def run(cfg: DictConfig, out_dir: Path | None = None) -> float:
    """Run one style transfer; return its final total loss (what a sweeper minimises)."""
    started = time.perf_counter()
    out_dir = Path(out_dir) if out_dir is not None else output_dir()
    validate(cfg)
    equal_style_weights(cfg.style_layers, cfg.style_weights)  # refuse a bad length before loading anything
    specs = style_specs(cfg)
    device = pick_device(cfg.device)
    threads = configure_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    # Find the images before building the network, so a sweep job with a bad path fails in
    # milliseconds instead of after seconds of loading weights.
    find_images(cfg, specs)

    network = load_network(
        cfg.model.arch,
        cfg.model.weights,
        cfg.model.pooling,
        cfg.model.key_map,
        seed=cfg.seed,
        mean=cfg.model.mean,
        std=cfg.model.std,
    )
    about = summary(cfg.model.name, cfg.model.description, network)
    log.info("Network: %s", about)
    if not network.trained:
        log.warning("RANDOM WEIGHTS: %s is untrained (%s). Use it for tests only.", cfg.model.name, network.weights)
    elif not network.paper_network:
        log.warning("%s is not the paper's network; see README, 'Networks and weights'.", cfg.model.name)
    network.check_layers(cfg.content_layers, "content layer", cfg.model.name)
    network.check_layers(cfg.style_layers, "style layer", cfg.model.name)
    layers = list(dict.fromkeys([*cfg.content_layers, *cfg.style_layers]))
    extractor = network.extractor(layers).to(device)
    color = ColorControl(cfg.color)
    stages = plan(cfg.image_size, cfg.iterations, cfg.coarse_to_fine.sizes, cfg.coarse_to_fine.iterations)

    prepare = functools.partial(prepare_stage, cfg, extractor, specs, color, device, out_dir)
    first = prepare(stages[0], None)  # the smallest stage: a size error stops the run before any file is written
    log.info("Running %s on %s (%d CPU threads)", cfg.model.name, device, threads)
    make_optimizer = hydra.utils.instantiate(cfg.optimizer)
    callbacks = [
        TensorBoardLogger(
            out_dir, hparams_of(cfg), cfg.log.scalars_every, cfg.log.image_every, texts={"network": about}
        ),
        Snapshots(out_dir, cfg.log.image_every),
        ProgressBar(sum(stage.iterations for stage in stages), cfg.log.progress),
    ]
    outcome, records = synthesise(stages, prepare, make_optimizer, callbacks, first)

    images.save(outcome.image, out_dir / RESULT_FILE)
    run_metrics = metrics(cfg, outcome, network, device, threads, started)
    run_metrics.update(styles={spec.name: spec.weight for spec in specs}, color=color.describe())
    if len(stages) > 1:
        run_metrics["stages"] = records
    write_json(out_dir / METRICS_FILE, run_metrics)
    if outcome.message:
        log.warning("%s", outcome.message)
    log.info("Wrote %s (%s) to %s", RESULT_FILE, outcome.status, out_dir)
    if outcome.status == INTERRUPTED:
        raise KeyboardInterrupt(outcome.message)
    return outcome.values["loss/total"]


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
        "network": cfg.model.name,
        "network_description": cfg.model.description,
        "weights": network.weights,
        "trained_weights": network.trained,
        "paper_network": network.paper_network,
        "network_layers": network.layer_range,
        "torch": torch.__version__,
    }


def record_failure(out_dir: Path, error: BaseException) -> None:
    """metrics.json for a run that could not start or finish, so a sweep's report lists it."""
    write_json(out_dir / METRICS_FILE, {"status": "failed", "message": str(error)})
