"""Dataclass schemas behind the YAML in conf/ (nst_exp.validation checks what types cannot).

The schema is registered as ``base_config`` in Hydra's ConfigStore and comes
first in conf/config.yaml's defaults list, so a misspelt key or a value of the
wrong type fails when the config is composed, naming the key.
"""

from __future__ import annotations

import functools
import re

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf


class Choice(str, Enum):
    """A setting with fixed values: a wrong one fails when the config is composed, listing the options.

    Members compare equal to their strings (``Precision.bf16 == "bf16"``) and
    are written to metrics.json, checkpoints and tables as those strings.
    """

    def __str__(self) -> str:
        return self.value

    @classmethod
    def values(cls) -> tuple[str, ...]:
        return tuple(member.value for member in cls)


class Precision(Choice):
    auto = "auto"  # the fastest setting that keeps the result on this device (nst_exp.hardware.choose_speed)
    fp32 = "fp32"  # IEEE float32 everywhere: the exact-maths setting
    bf16 = "bf16"  # the network's pass under bfloat16 autocast; losses and the image in float32
    tf32 = "tf32"  # CUDA: float32 convolutions and matmuls on TensorFloat-32 tensor cores


class InitKind(Choice):
    noise = "noise"
    content = "content"
    style = "style"
    file = "file"


class ColorMode(Choice):
    none = "none"
    luminance = "luminance"
    histogram = "histogram"


class HistogramMatch(Choice):
    cholesky = "cholesky"
    pca = "pca"
    symmetric = "symmetric"


class Propagation(Choice):
    downsample = "downsample"
    inside = "inside"


class Convention(Choice):
    paper = "paper"  # 1/2 SSE, E_l = sum (G - A)^2 / (4 N^2 M^2)
    authors_code = "authors_code"  # Gram / M, MSE, 1e3 / N^2 per layer (leongatys/PytorchNeuralStyleTransfer)


class ChannelOrder(Choice):
    rgb = "rgb"  # torchvision's and PyTorch's convention
    bgr = "bgr"  # Caffe's (and Keras' "caffe" preprocessing): conv1_1's input channels are reversed at load


class Pooling(Choice):
    avg = "avg"  # the paper's
    max = "max"  # torchvision's


PRECISIONS = Precision.values()
RESOLVED_PRECISIONS = ("fp32", "bf16", "tf32")  # what a run computes in once auto is resolved
DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")  # cuda:N: the GPU numbered N


def device_kind(name: str) -> str | None:
    """``cuda`` for ``cuda`` and ``cuda:N``; ``auto``, ``cpu`` or ``mps`` as named; None for anything else."""
    if re.fullmatch(r"cuda:\d+", name):
        return "cuda"
    return name if name in DEVICES and name != "cuda:N" else None


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
    sha256: Optional[str] = None  # hex digest the download must have; null = not checked


# The schema gives each key its type (and, in nst_exp.validation, its range), not its value:
# a key's default is written once, in the YAML that states it with its comment (conf/config.yaml,
# conf/model/, conf/init/, conf/color/), which --help and docs/configuration.md read. Only what
# no YAML states has a default here: a region's and a mask's unset keys, an image's url and sha256.


@dataclass
class ModelConf:  # conf/model/<name>.yaml
    name: str = MISSING  # label in logs and metrics
    arch: str = MISSING  # torchvision architecture: vgg19, vgg16, vgg19_bn, vgg16_bn
    weights: str = MISSING  # imagenet | random | /path/to/state_dict.(pth|safetensors) | package:<module>/<file>
    pooling: Pooling = MISSING  # avg (the paper's) | max (torchvision's)
    key_map: List[List[str]] = MISSING  # [[regex, replacement], ...] for other layouts
    mean: List[float] = MISSING  # input normalisation
    std: List[float] = MISSING  # divides after the mean
    channel_order: ChannelOrder = MISSING  # input channel order the weights were trained on
    description: str = MISSING  # what it is, for logs and metrics


@dataclass
class InitConf:  # conf/init/<kind>.yaml
    kind: InitKind = MISSING  # noise | content | style | file
    path: Optional[str] = MISSING  # for kind=file: image under images_dir, or absolute


@dataclass
class LogConf:
    scalars_every: int = MISSING  # iterations between TensorBoard scalar writes
    image_every: int = MISSING  # iterations between intermediate images (files and TensorBoard); 0 = none
    progress: bool = MISSING  # progress bar (shown on a terminal only)


@dataclass
class CheckpointConf:
    every: int = MISSING  # iterations between checkpoints; also written at Ctrl-C, SIGTERM, a NaN stop, the end
    auto_resume: bool = MISSING  # a run dir holding this run's checkpoint continues it; a finished run is skipped


@dataclass
class ColorConf:  # conf/color/<mode>.yaml
    mode: ColorMode = MISSING  # none | luminance | histogram (Gatys et al. CVPR 2017, section 5)
    histogram: HistogramMatch = MISSING  # mode=histogram: the linear colour map
    match_luminance: bool = MISSING  # mode=luminance: match the style's luminance mean and std to the content's


@dataclass
class MaskConf:  # a region's; no YAML states every key
    path: Optional[str] = None  # grey image, white = inside, under images_dir or absolute; null = the rectangle
    top: float = 0.0  # the rectangle, as fractions of the image's height ...
    bottom: float = 1.0
    left: float = 0.0  # ... and width
    right: float = 1.0
    invert: bool = False  # use the outside instead


@dataclass
class RegionConf:  # an entry of spatial.regions; no YAML states every key
    name: str = MISSING  # label in logs and TensorBoard
    mask: MaskConf = field(default_factory=MaskConf)  # where on the content image
    style: Optional[str] = None  # a conf/style name or an image file; null = no style term here
    style_mask: MaskConf = field(default_factory=MaskConf)  # which part of the style image; default all
    weight: float = 1.0  # lambda_r; normalised to sum 1 over the styled regions


@dataclass
class SpatialConf:
    regions: List[RegionConf] = MISSING  # empty = no spatial control
    propagation: Propagation = MISSING  # masks per layer: downsample | inside (eroded)


@dataclass
class CoarseToFineConf:
    sizes: List[int] = MISSING  # long sides of the stages before the one at image_size
    iterations: List[int] = MISSING  # per coarse stage; empty = `iterations` each


@dataclass
class Config:  # conf/config.yaml
    content: ImageConf = MISSING
    style: ImageConf = MISSING
    styles: List[str] = MISSING
    style_blend: Optional[List[float]] = MISSING
    style_scale: float = MISSING
    color: ColorConf = field(default_factory=ColorConf)
    spatial: SpatialConf = field(default_factory=SpatialConf)
    coarse_to_fine: CoarseToFineConf = field(default_factory=CoarseToFineConf)
    tv_weight: float = MISSING
    init: InitConf = field(default_factory=InitConf)
    optimizer: Any = MISSING
    model: ModelConf = field(default_factory=ModelConf)
    log: LogConf = field(default_factory=LogConf)
    checkpoint: CheckpointConf = field(default_factory=CheckpointConf)
    alpha: float = MISSING
    beta: float = MISSING
    content_layers: List[str] = MISSING
    style_layers: List[str] = MISSING
    style_weights: Optional[List[float]] = MISSING
    loss: Convention = MISSING
    image_size: int = MISSING
    iterations: int = MISSING
    seed: int = MISSING
    device: str = MISSING
    threads: Optional[int] = MISSING  # CPU threads per job; None = torch's default
    precision: Precision = MISSING  # auto | fp32 | bf16 (autocast) | tf32 (CUDA): the network's pass
    channels_last: Any = MISSING  # auto (on with bf16) | true | false: NHWC activations
    compile: bool = MISSING  # the network's pass through torch.compile
    images_dir: str = MISSING
    max_image_pixels: int = MISSING
    resume: Optional[str] = MISSING  # a run dir to continue from its last checkpoint, with its saved config
    memory_guard: bool = MISSING  # refuse a run whose estimated peak memory exceeds what the device has free
    objective: List[str] = MISSING  # metrics.json keys a job returns to a sweeper
    objective_weights: Optional[List[float]] = MISSING  # one per objective: return their weighted sum; None = each value


def default(key: str) -> Any:
    """The default conf/config.yaml states for a dotted key: ``beta`` -> 1000.0, ``log.image_every`` -> 50.

    Where a message suggests the default, and where code outside a composed
    config needs the paper's settings (nst_exp.losses.LossSettings), it reads them here.
    """
    absent = object()
    value = OmegaConf.select(_config_yaml(), key, default=absent)
    if value is absent:
        raise KeyError(f"conf/config.yaml states no {key!r}")
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


@functools.lru_cache(maxsize=1)
def _config_yaml() -> DictConfig:
    return OmegaConf.load(Path(conf_dir()) / "config.yaml")


def register() -> None:
    """The schema, and the resolver conf/config.yaml uses to put a resumed run in its own directory."""
    ConfigStore.instance().store(name="base_config", node=Config)
    OmegaConf.register_new_resolver("nst.if_resume", _if_resume, replace=True)


def _if_resume(resume: Optional[str], then: Any, otherwise: Any) -> Any:
    """``${nst.if_resume:${resume},A,B}``: A when ``resume`` is set, else B."""
    return then if resume else otherwise
