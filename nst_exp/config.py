"""Dataclass schemas behind the YAML in conf/ (nst_exp.validation checks what types cannot).

The schema is registered as ``base_config`` in Hydra's ConfigStore and comes
first in conf/config.yaml's defaults list, so a misspelt key or a value of the
wrong type fails when the config is composed, naming the key.
"""

from __future__ import annotations

import re

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from nst_exp.results import TOTAL

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


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


@dataclass
class ModelConf:
    name: str = "vgg19"  # label in logs and metrics
    arch: str = "vgg19"  # torchvision architecture: vgg19, vgg16, vgg19_bn, vgg16_bn
    weights: str = "imagenet"  # imagenet | random | /path/to/state_dict.(pth|safetensors) | package:<module>/<file>
    pooling: Pooling = Pooling.avg  # avg (the paper's) | max (torchvision's)
    key_map: List[List[str]] = field(default_factory=list)  # [[regex, replacement], ...] for other layouts
    mean: List[float] = field(default_factory=lambda: list(IMAGENET_MEAN))  # input normalisation
    std: List[float] = field(default_factory=lambda: list(IMAGENET_STD))  # divides after the mean
    channel_order: ChannelOrder = ChannelOrder.rgb  # input channel order the weights were trained on
    description: str = "VGG-19 (the paper's architecture)"  # what it is, for logs and metrics


@dataclass
class InitConf:
    kind: InitKind = InitKind.noise  # noise | content | style | file
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
class ColorConf:
    mode: ColorMode = ColorMode.none  # none | luminance | histogram (Gatys et al. CVPR 2017, section 5)
    histogram: HistogramMatch = HistogramMatch.pca  # mode=histogram: the linear colour map
    match_luminance: bool = True  # mode=luminance: match the style's luminance mean and std to the content's


@dataclass
class MaskConf:
    path: Optional[str] = None  # grey image, white = inside, under images_dir or absolute; null = the rectangle
    top: float = 0.0  # the rectangle, as fractions of the image's height ...
    bottom: float = 1.0
    left: float = 0.0  # ... and width
    right: float = 1.0
    invert: bool = False  # use the outside instead


@dataclass
class RegionConf:
    name: str = MISSING  # label in logs and TensorBoard
    mask: MaskConf = field(default_factory=MaskConf)  # where on the content image
    style: Optional[str] = None  # a conf/style name or an image file; null = no style term here
    style_mask: MaskConf = field(default_factory=MaskConf)  # which part of the style image; default all
    weight: float = 1.0  # lambda_r; normalised to sum 1 over the styled regions


@dataclass
class SpatialConf:
    regions: List[RegionConf] = field(default_factory=list)  # empty = no spatial control
    propagation: Propagation = Propagation.downsample  # masks per layer: downsample | inside (eroded)


@dataclass
class CoarseToFineConf:
    sizes: List[int] = field(default_factory=list)  # long sides of the stages before the one at image_size
    iterations: List[int] = field(default_factory=list)  # per coarse stage; empty = `iterations` each


@dataclass
class Config:
    content: ImageConf = MISSING
    style: ImageConf = MISSING
    styles: List[str] = field(default_factory=list)
    style_blend: Optional[List[float]] = None
    style_scale: float = 1.0
    color: ColorConf = field(default_factory=ColorConf)
    spatial: SpatialConf = field(default_factory=SpatialConf)
    coarse_to_fine: CoarseToFineConf = field(default_factory=CoarseToFineConf)
    tv_weight: float = 0.0
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
    loss: Convention = Convention.paper
    image_size: int = 512
    iterations: int = 500
    seed: int = 0
    device: str = "auto"
    threads: Optional[int] = None  # CPU threads per job; None = torch's default
    precision: Precision = Precision.auto  # auto | fp32 | bf16 (autocast) | tf32 (CUDA): the network's pass
    channels_last: Any = "auto"  # auto (on with bf16) | true | false: NHWC activations
    compile: bool = False  # the network's pass through torch.compile
    images_dir: str = "images"
    max_image_pixels: int = 89_478_485
    resume: Optional[str] = None  # a run dir to continue from its last checkpoint, with its saved config
    memory_guard: bool = True  # refuse a run whose estimated peak memory exceeds what the device has free
    objective: List[str] = field(default_factory=lambda: [TOTAL])  # metrics.json keys a job returns to a sweeper
    objective_weights: Optional[List[float]] = None  # one per objective: return their weighted sum; None = each value


def register() -> None:
    """The schema, and the resolver conf/config.yaml uses to put a resumed run in its own directory."""
    ConfigStore.instance().store(name="base_config", node=Config)
    OmegaConf.register_new_resolver("nst.if_resume", _if_resume, replace=True)


def _if_resume(resume: Optional[str], then: Any, otherwise: Any) -> Any:
    """``${nst.if_resume:${resume},A,B}``: A when ``resume`` is set, else B."""
    return then if resume else otherwise
