"""Dataclass schemas behind the YAML in conf/, and checks Hydra's types cannot make.

The schema is registered as ``base_config`` in Hydra's ConfigStore and comes
first in conf/config.yaml's defaults list, so a misspelt key or a value of the
wrong type fails when the config is composed, naming the key.
"""

from __future__ import annotations

import re

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, List, Optional, Sequence

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from nst_exp.errors import NstError

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


class Pooling(Choice):
    avg = "avg"  # the paper's
    max = "max"  # torchvision's


PRECISIONS = Precision.values()
DEVICES = ("auto", "cpu", "cuda", "mps")  # and cuda:N


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
    pooling: Pooling = Pooling.avg  # avg (the paper's) | max (torchvision's)
    key_map: List[List[str]] = field(default_factory=list)  # [[regex, replacement], ...] for other layouts
    mean: List[float] = field(default_factory=lambda: list(IMAGENET_MEAN))  # input normalisation
    std: List[float] = field(default_factory=lambda: list(IMAGENET_STD))  # divides after the mean
    description: str = "VGG-19, the paper's network"  # what it is, for logs and metrics


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
    precision: Precision = Precision.fp32  # fp32 | bf16 (autocast) | tf32 (CUDA): how the network's pass is computed
    channels_last: bool = False  # NHWC activations
    compile: bool = False  # the network's pass through torch.compile
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
    if cfg.device not in DEVICES and not re.fullmatch(r"cuda:\d+", cfg.device):
        raise NstError(f"device={cfg.device!r} is not one of {', '.join(DEVICES)}, or cuda:N for GPU number N.")
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
    validate_control(cfg)


def normalized_weights(weights: Sequence[float], key: str) -> list[float]:
    """Non-negative weights scaled to sum 1; ``key`` names the setting in the error."""
    values = [float(w) for w in weights]
    negative = [w for w in values if w < 0]
    if negative:
        raise NstError(f"{key}={values} has a negative weight ({negative[0]:g}). Weights must be >= 0.")
    total = sum(values)
    if total <= 0:
        raise NstError(f"{key}={values} sums to 0. Give at least one positive weight.")
    return [w / total for w in values]


def validate_control(cfg: Any) -> None:
    """Colour, several styles, scale, masks and TV (Gatys et al., CVPR 2017)."""
    if cfg.style_blend is not None:
        if not cfg.styles:
            raise NstError(
                "style_blend is set but styles is empty. Name the styles it weights, e.g. "
                "styles=[starry_night,the_scream] style_blend=[0.7,0.3]."
            )
        if len(cfg.style_blend) != len(cfg.styles):
            raise NstError(
                f"style_blend has {len(cfg.style_blend)} weights but styles has {len(cfg.styles)} "
                f"({', '.join(cfg.styles)}). Give one weight per style, or style_blend=null for equal weights."
            )
        normalized_weights(cfg.style_blend, "style_blend")
    if cfg.style_scale <= 0:
        raise NstError(f"style_scale={cfg.style_scale} must be > 0 (1 = the style image as large as the content).")
    if cfg.tv_weight < 0:
        raise NstError(f"tv_weight={cfg.tv_weight} is negative. Use 0 (off, as in the paper) or a positive weight.")
    validate_coarse_to_fine(cfg)
    validate_spatial(cfg)


def validate_coarse_to_fine(cfg: Any) -> None:
    sizes, iterations = list(cfg.coarse_to_fine.sizes), list(cfg.coarse_to_fine.iterations)
    if any(size < 1 for size in sizes) or sizes != sorted(set(sizes)) or (sizes and sizes[-1] >= cfg.image_size):
        raise NstError(
            f"coarse_to_fine.sizes={sizes} must be increasing positive sizes below image_size={cfg.image_size} "
            f"(the last stage), e.g. coarse_to_fine.sizes=[{cfg.image_size // 4},{cfg.image_size // 2}]."
        )
    if iterations and len(iterations) != len(sizes):
        raise NstError(
            f"coarse_to_fine.iterations has {len(iterations)} values for {len(sizes)} coarse stages "
            f"(coarse_to_fine.sizes={sizes}). Give one per size, or [] for `iterations` each."
        )
    if any(count < 0 for count in iterations):
        raise NstError(f"coarse_to_fine.iterations={iterations} must be >= 0.")


def validate_spatial(cfg: Any) -> None:
    spatial = cfg.spatial
    if not spatial.regions:
        return
    if cfg.styles:
        raise NstError(
            "styles and spatial.regions are both set. Give each region its style "
            "(spatial.regions[i].style) and leave styles=[]."
        )
    names = [region.name for region in spatial.regions]
    if len(set(names)) != len(names):
        raise NstError(f"spatial.regions names must differ: {names}.")
    for index, region in enumerate(spatial.regions):
        for key in ("mask", "style_mask"):
            mask = region[key]
            if not (0 <= mask.top < mask.bottom <= 1 and 0 <= mask.left < mask.right <= 1):
                raise NstError(
                    f"spatial.regions[{index}].{key} (region '{region.name}') has top={mask.top}, "
                    f"bottom={mask.bottom}, left={mask.left}, right={mask.right}: need "
                    "0 <= top < bottom <= 1 and 0 <= left < right <= 1 (fractions of the image)."
                )
    styled = [region.weight for region in spatial.regions if region.style]
    if not styled:
        raise NstError(
            "No region in spatial.regions has a style. Give at least one region a style "
            "(spatial.regions[i].style=starry_night), or drop spatial.regions for a plain run."
        )
    normalized_weights(styled, "spatial.regions[*].weight")
