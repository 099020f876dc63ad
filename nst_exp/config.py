"""Dataclass schemas behind the YAML in conf/, and checks Hydra's types cannot make.

The schema is registered as ``base_config`` in Hydra's ConfigStore and comes
first in conf/config.yaml's defaults list, so a misspelt key or a value of the
wrong type fails when the config is composed, naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from nst_exp.errors import NstError

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
INIT_KINDS = ("noise", "content", "style", "file")
DEVICES = ("auto", "cpu", "cuda", "mps")


def conf_dir() -> str:
    """Absolute path of the YAML configs: inside the installed package, else the checkout's conf/."""
    here = Path(__file__).resolve().parent
    installed = here / "conf"
    return str(installed if installed.is_dir() else here.parent / "conf")


@dataclass
class ImageConf:
    name: str = MISSING  # label in logs, tables and figures
    path: str = MISSING  # file name under images_dir, or an absolute path
    url: Optional[str] = None  # public address, fetched on first use if the file is missing


@dataclass
class ModelConf:
    name: str = "vgg19"  # label in logs and metrics
    arch: str = "vgg19"  # torchvision architecture: vgg19, vgg16, vgg19_bn, vgg16_bn
    weights: str = "imagenet"  # imagenet | random | /path/to/state_dict.(pth|safetensors) | package:<module>/<file>
    pooling: str = "avg"  # avg (the paper's) | max (torchvision's)
    key_map: List[List[str]] = field(default_factory=list)  # [[regex, replacement], ...] for other layouts
    mean: List[float] = field(default_factory=lambda: list(IMAGENET_MEAN))  # input normalisation
    std: List[float] = field(default_factory=lambda: list(IMAGENET_STD))  # divides after the mean
    description: str = "VGG-19, the paper's network"  # what it is, for logs and metrics


@dataclass
class InitConf:
    kind: str = "noise"  # noise | content | style | file
    path: Optional[str] = None  # for kind=file: image under images_dir, or absolute


@dataclass
class LogConf:
    scalars_every: int = 1  # iterations between TensorBoard scalar writes
    image_every: int = 50  # iterations between intermediate images (files and TensorBoard); 0 = none
    progress: bool = True  # progress bar (shown on a terminal only)


@dataclass
class CheckpointConf:
    every: int = 100  # iterations between checkpoints; also written at Ctrl-C, SIGTERM, a NaN stop, the end
    auto_resume: bool = True  # a run dir holding this run's checkpoint continues it; a finished run is skipped


@dataclass
class Config:
    content: ImageConf = MISSING
    style: ImageConf = MISSING
    init: InitConf = field(default_factory=InitConf)
    optimizer: Any = MISSING
    model: ModelConf = field(default_factory=ModelConf)
    log: LogConf = field(default_factory=LogConf)
    checkpoint: CheckpointConf = field(default_factory=CheckpointConf)
    alpha: float = 1.0
    beta: float = 1e3
    content_layers: List[str] = field(default_factory=lambda: ["relu4_2"])
    style_layers: List[str] = field(
        default_factory=lambda: ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]
    )
    style_weights: Optional[List[float]] = None
    loss: str = "paper"
    image_size: int = 512
    iterations: int = 500
    seed: int = 0
    device: str = "auto"
    threads: Optional[int] = None  # CPU threads per job; None = torch's default
    images_dir: str = "images"
    max_image_pixels: int = 89_478_485
    resume: Optional[str] = None  # a run dir to continue from its last checkpoint, with its saved config
    memory_guard: bool = True  # refuse a run whose estimated peak memory exceeds what the device has free


def register() -> None:
    """The schema, and the resolver conf/config.yaml uses to put a resumed run in its own directory."""
    ConfigStore.instance().store(name="base_config", node=Config)
    OmegaConf.register_new_resolver("nst.if_resume", _if_resume, replace=True)


def _if_resume(resume: Optional[str], then: Any, otherwise: Any) -> Any:
    """``${nst.if_resume:${resume},A,B}``: A when ``resume`` is set, else B."""
    return then if resume else otherwise


def validate(cfg: Any) -> None:
    """Checks on values that a type cannot express; each error names the key and the fix."""
    for key in ("alpha", "beta"):
        if cfg[key] < 0:
            raise NstError(f"{key}={cfg[key]} is negative. Loss weights must be >= 0.")
    if cfg.alpha == 0 and cfg.beta == 0:
        raise NstError("alpha and beta are both 0: there is nothing to optimise.")
    if cfg.image_size < 1:
        raise NstError(f"image_size={cfg.image_size} must be a positive number of pixels.")
    if cfg.iterations < 0:
        raise NstError(f"iterations={cfg.iterations} must be >= 0.")
    if cfg.threads is not None and cfg.threads < 1:
        raise NstError(f"threads={cfg.threads} must be >= 1, or null for torch's default.")
    if cfg.device not in DEVICES:
        raise NstError(f"device={cfg.device!r} is not one of {', '.join(DEVICES)}.")
    if cfg.init.kind not in INIT_KINDS:
        raise NstError(f"init.kind={cfg.init.kind!r} is not one of {', '.join(INIT_KINDS)}.")
    if cfg.init.kind == "file" and not cfg.init.path:
        raise NstError("init=file needs init.path=/path/to/image.png.")
    if not cfg.content_layers and not cfg.style_layers:
        raise NstError("content_layers and style_layers are both empty: nothing to match.")
    for key in ("scalars_every", "image_every"):
        if cfg.log[key] < 0:
            raise NstError(f"log.{key}={cfg.log[key]} must be >= 0.")
    if cfg.checkpoint.every < 0:
        raise NstError(
            f"checkpoint.every={cfg.checkpoint.every} must be >= 0 (iterations between checkpoints; "
            "0 = only when the run stops)."
        )
