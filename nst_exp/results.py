"""The contract of a run directory, free of torch: its files (:class:`RunDir`), its metric names, its statuses.

The runner writes a run directory through :class:`RunDir`; resume, the evaluation
command, the sweep summary and the report read it through the same object, so
every file name and every metric key below is spelled once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar

from nst_exp.atomic import atomic_write, write_json

REPORT_MANIFEST = ".nst_exp_report.json"  # in a report folder: the files nst_exp.report wrote there

# Metric names, as metrics.json and TensorBoard spell them.
LOSS_PREFIX = "loss/"
# L_total = alpha L_content + beta L_style (+ the total variation term)
TOTAL, CONTENT, STYLE, TV = "loss/total", "loss/content", "loss/style", "loss/tv"
LOSSES = (TOTAL, CONTENT, STYLE)  # every run's final losses
EVAL_PREFIX = "eval/"  # the picture scores (nst_exp.evaluate): one value per finished run, network-free
CONTENT_SSIM, STYLE_SWD, COLOR_DISTANCE = "eval/content_ssim", "eval/style_swd", "eval/color_distance"
SCORES = (CONTENT_SSIM, STYLE_SWD, COLOR_DISTANCE)
# The final values every finished run records: what a sweep may optimise (``objective``), what TensorBoard's
# HParams view compares.
FINAL_VALUES = (*LOSSES, *SCORES)


def style_layer_key(layer: str) -> str:
    """``loss/style/relu1_1``: the weighted E_l of one style layer."""
    return f"{STYLE}/{layer}"


def style_image_key(name: str) -> str:
    """``loss/style_image/starry_night``: one style image's share of the style loss (several styles)."""
    return f"{LOSS_PREFIX}style_image/{name}"


class Status(str, Enum):
    """How a run ended; the value is what metrics.json and checkpoints store."""

    RUNNING = "running"  # a checkpoint written mid-run
    COMPLETED = "completed"
    DIVERGED = "diverged"  # the loss turned NaN or infinite; the last finite image is kept
    INTERRUPTED = "interrupted"  # Ctrl-C or SIGTERM; continue with resume=
    OUT_OF_MEMORY = "out_of_memory"
    FAILED = "failed"  # refused or broken before it could finish

    def __str__(self) -> str:
        return self.value

    @property
    def finished(self) -> bool:
        """A run that will not continue by itself: completed or diverged."""
        return self in FINISHED


# A finished run's statuses: its result stands (a diverged run kept its last finite image) and it wrote result.png.
FINISHED = (Status.COMPLETED, Status.DIVERGED)


@dataclass(frozen=True)
class RunDir:
    """One run directory: the one place its files are named, written and read.

        result.png                       the final image (a diverged run: its last finite image)
        metrics.json                     status, message, final losses and scores, timings, what ran where
        inputs/content.png, style.png    the images as the network saw them (style_<name>.png for several
                                         styles, mask_<name>.png for a guided one); only those the run used
        snapshots/iter_000050.png        every log.image_every iterations
        stages/<stage>.png               coarse-to-fine: each stage's result
        checkpoints/last.pt, previous.pt nst_exp.checkpoint's files
        .hydra/config.yaml, hydra.yaml, overrides.yaml   how the run was made (resume_<time>/ for each resume)
        events.out.tfevents.*            TensorBoard (nst_exp.tensorboard_run names a sweep job's subfolder)
    """

    path: Path

    RESULT: ClassVar[str] = "result.png"
    METRICS: ClassVar[str] = "metrics.json"
    INPUTS: ClassVar[str] = "inputs"
    SNAPSHOTS: ClassVar[str] = "snapshots"
    STAGES: ClassVar[str] = "stages"
    CHECKPOINTS: ClassVar[str] = "checkpoints"
    RECORD: ClassVar[str] = ".hydra"  # the run's config as Hydra records it; nst_exp.report finds runs by it
    CONFIG: ClassVar[str] = "config.yaml"  # the record's files
    HYDRA: ClassVar[str] = "hydra.yaml"
    OVERRIDES: ClassVar[str] = "overrides.yaml"

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    def __str__(self) -> str:
        return str(self.path)

    @property
    def result(self) -> Path:
        return self.path / self.RESULT

    @property
    def metrics(self) -> Path:
        return self.path / self.METRICS

    @property
    def inputs(self) -> Path:
        return self.path / self.INPUTS

    @property
    def snapshots(self) -> Path:
        return self.path / self.SNAPSHOTS

    @property
    def checkpoints(self) -> Path:
        return self.path / self.CHECKPOINTS

    def record(self, name: str = CONFIG, session: str = "") -> Path:
        """A file of the run's record (``config.yaml``, ``hydra.yaml``, ``overrides.yaml``); ``session``: a resume's."""
        return self.path / self.RECORD / session / name

    def input_image(self, name: str) -> Path:
        """``inputs/<name>.png``: ``content``, ``style``, ``style_<name>`` or ``mask_<name>``."""
        return self.inputs / f"{name}.png"

    @staticmethod
    def style_input(name: str, several: bool) -> str:
        """The name a style image is saved and logged under: ``style``, or ``style_<name>`` among several."""
        return f"style_{name}" if several else "style"

    def snapshot(self, iteration: int) -> Path:
        return self.snapshots / f"iter_{iteration:06d}.png"

    def stage_image(self, stage: str) -> Path:
        return self.path / self.STAGES / f"{stage}.png"

    # Writers: each file atomically, so a kill never leaves half of one under its name.

    def write_result(self, image: Any) -> None:
        """result.png from a (1, 3, H, W) tensor in [0, 1]."""
        from nst_exp import images  # torch: only a run that made an image writes one

        images.save(image, self.result)

    def write_inputs(self, named: Mapping[str, Any]) -> None:
        """``inputs/<name>.png`` for each (1, 3, H, W) tensor of ``named``."""
        from nst_exp import images

        for name, image in named.items():
            images.save(image, self.input_image(name))

    def write_metrics(self, record: Mapping[str, Any]) -> None:
        write_json(self.metrics, record)

    def write_record(self, config: Any, hydra_root: Any, overrides: Sequence[str], session: str = "") -> None:
        """Hydra's record of the run: config.yaml, hydra.yaml (``{"hydra": ...}``) and overrides.yaml.

        The command line and the Python API write it once the directory is known to be the
        run's own, so a refused run never relabels another. ``session``: a resume's subfolder.
        """
        from omegaconf import OmegaConf

        files = {self.CONFIG: config, self.HYDRA: hydra_root, self.OVERRIDES: list(overrides)}
        for name, node in files.items():
            with atomic_write(self.record(name, session)) as out:
                out.write(OmegaConf.to_yaml(node))

    def record_failure(self, message: str, so_far: Mapping[str, Any] | None = None) -> None:
        """metrics.json for a run that could not start or finish, so a sweep's report lists it.

        ``so_far`` is what the run measured before it stopped. A finished run's
        metrics.json is never replaced by a later attempt's failure.
        """
        try:
            finished = Status(self.read_metrics().get("status")).finished
        except (OSError, ValueError):  # none yet, unreadable, or no known status
            finished = False
        if finished and not so_far:
            return
        so_far = dict(so_far or {})
        self.write_metrics({**so_far, "status": so_far.get("status", Status.FAILED), "message": message})

    # Readers: a shared run directory is data; nothing read here runs code.

    def read_metrics(self) -> dict[str, Any]:
        """metrics.json; ValueError for one that is not JSON (truncated) or not a JSON object."""
        metrics = json.loads(self.metrics.read_text())
        if not isinstance(metrics, dict):
            raise ValueError(f"it holds a JSON {type(metrics).__name__}, not an object")
        return metrics

    def read_settings(self) -> Any:
        """The recorded config.yaml as data (no interpolation resolved); None where there is none."""
        from nst_exp.trust import read_config

        return read_config(self.record()) if self.record().is_file() else None

    def style_inputs(self) -> tuple[list[Path], list[float]]:
        """inputs/style.png with weight 1, or each inputs/style_<name>.png with metrics.json's weight for <name>.

        LookupError says what is missing (no style.png and no ``"styles"`` {name: weight} in metrics.json); a
        metrics.json that cannot be read raises as ``read_metrics`` does.
        """
        single = self.input_image(self.style_input("", several=False))
        if single.is_file():
            return [single], [1.0]
        weights = self.read_metrics().get("styles") if self.metrics.is_file() else None
        if not isinstance(weights, dict) or not weights:
            found = sorted(path.name for path in self.inputs.glob("style_*.png"))
            raise LookupError(
                f"no {self.INPUTS}/{single.name}, and {self.metrics} has no \"styles\" {{name: weight}} to say which "
                f"{self.INPUTS}/style_<name>.png files to blend (found: {', '.join(found) or 'none'})"
            )
        paths = [self.input_image(self.style_input(name, several=True)) for name in weights]
        return paths, [float(weight) for weight in weights.values()]


def inputs_used(settings: Mapping[str, Any]) -> frozenset[str]:
    """Which of "content" and "style" a run's result was made with, from its resolved config.

    An image is used when its term of the objective has a nonzero weight on some layer
    (alpha and content_layers, beta and style_layers) or when the run started from it
    (init.kind). Fig. 1's content reconstructions never see the painting, nor its style
    reconstructions the photo's pixels. A config that does not say (an older or a foreign
    run) counts as using both.
    """
    used = set()
    for name, weight, layers in (("content", "alpha", "content_layers"), ("style", "beta", "style_layers")):
        if weight not in settings or layers not in settings:
            used.add(name)
        elif (settings[weight] and settings[layers]) or (settings.get("init") or {}).get("kind") == name:
            used.add(name)
    return frozenset(used)


def nearest_existing(path: Path) -> Path:
    """``path`` (absolute, ``~`` expanded) or the nearest folder above it that exists: where making it would start."""
    existing = Path(path).expanduser().absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return existing


def job_dirs(root: Path) -> list[Path]:
    """The run directories at or under ``root``: those Hydra gave a ``.hydra/config.yaml``, sorted by path.

    Not the copies a self-contained report keeps of its jobs' records (under a folder holding
    ``REPORT_MANIFEST``): a sweep with its report inside is still the same jobs.
    """
    return outside_reports(root, {path.parent.parent for path in Path(root).rglob(f"{RunDir.RECORD}/{RunDir.CONFIG}")})


def outside_reports(root: Path, folders: Iterable[Path]) -> list[Path]:
    """``folders`` (under ``root``), sorted, less those inside a report folder: a self-contained report's copies."""
    reports = {manifest.parent for manifest in Path(root).rglob(REPORT_MANIFEST)}
    return sorted(folder for folder in folders if not reports.intersection(folder.parents))


def flatten(node: Any, prefix: str = "", lists_as_text: bool = False, private: bool = True) -> dict[str, Any]:
    """Nested dicts -> {"prefix.a.b": value}.

    ``lists_as_text`` writes a list as "[x, y]" so a table cell holds one value;
    ``private=False`` drops keys that start with ``_`` (``_target_``).
    """
    if isinstance(node, Mapping):
        flat: dict[str, Any] = {}
        for key, value in node.items():
            if private or not str(key).startswith("_"):
                flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key), lists_as_text, private))
        return flat
    if isinstance(node, (list, tuple)) and lists_as_text:
        return {prefix: "[" + ", ".join(str(item) for item in node) + "]"}
    return {prefix: node}


@dataclass
class Result:
    """What a run gives back: the image, its tensor, its metrics (metrics.json's dict) and its directory.

    ``run_dir`` is None for a run kept in memory (``stylize(..., out_dir=None)``).
    """

    image: Any  # PIL.Image.Image, RGB
    tensor: Any  # torch.Tensor (1, 3, H, W) in [0, 1], on the CPU
    metrics: dict[str, Any]
    run_dir: Path | None = None

    @property
    def status(self) -> Status:
        return Status(self.metrics["status"])

    @property
    def loss(self) -> float:
        """The final total loss (NaN if the run has none)."""
        value = self.metrics.get("loss/total")
        return float("nan") if value is None else float(value)

    def __repr__(self) -> str:
        where = f", run_dir={str(self.run_dir)!r}" if self.run_dir else ""
        size = getattr(self.image, "size", None)
        return f"Result(status={self.status.value}, loss={self.loss:.6g}, size={size}{where})"
