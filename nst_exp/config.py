"""Dataclass schemas behind the YAML in conf/ (nst_exp.validation checks what types cannot).

The schema is registered as ``base_config`` in Hydra's ConfigStore and comes
first in conf/config.yaml's defaults list, so a misspelt key or a value of the
wrong type fails when the config is composed, naming the key.

The schema gives each key its type and, for a number, its range (``bounded``),
not its value: a key's default is written once, beside its comment, in the YAML
that states it (conf/config.yaml, conf/model/, conf/init/, conf/color/), where
--help and docs/configuration.md read it; ``default(key)`` reads it for code.
Only what no YAML states has a default here: a region's and a mask's unset
keys, an image's url and sha256.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from nst_exp.errors import NstError


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

    @classmethod
    def parse(cls, value: Any, what: str) -> Choice:
        """``value`` (a member or its string) as a member; an unknown one is refused, naming ``what`` and the options.

        For values that arrive without the schema (``GatysLoss(convention=...)``,
        ``load_network(pooling=...)``); a composed config's are members already.
        """
        try:
            return cls(getattr(value, "value", value))
        except ValueError:
            raise NstError(f"Unknown {what} '{value}'. Known: {', '.join(cls.values())}.") from None


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


# What a number may be, beside its field (``bounded``): types are checked when the config is
# composed; nst_exp.validation walks the schema and checks each bounded value (each entry of a
# list) before anything loads, because a NaN weight only shows up as a "diverged" run and a
# negative learning rate as torch's traceback.


@dataclass(frozen=True)
class Bound:
    """What a numeric setting may be: a finite number (an integer if ``integer``) between ``low`` and ``high``."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # ``low`` itself is not allowed
    high_open: bool = False  # nor ``high``
    integer: bool = False
    nullable: bool = False  # null is allowed

    def describe(self) -> str:
        """``a finite number >= 0``, ``an integer in [1, 10]``, ..."""
        kind = "an integer" if self.integer else "a finite number"
        low, high = (None if bound is None else _number(bound) for bound in (self.low, self.high))
        if self.low is not None and self.high is not None:
            text = f"{kind} in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"
        elif self.low is not None:
            text = f"{kind} {'>' if self.low_open else '>='} {low}"
        elif self.high is not None:
            text = f"{kind} {'<' if self.high_open else '<='} {high}"
        else:
            text = kind
        return text + (", or null" if self.nullable else "")

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value`` (``is negative``, ``is NaN``...), or None if it is allowed."""
        if value is None:
            return None if self.nullable else "is null"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "is not a number"
        if math.isnan(value):
            return "is NaN (not a number)"
        if math.isinf(value):
            return "is infinite"
        if self.integer and value != int(value):
            return "is not an integer"
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return "is negative" if value < 0 <= self.low else f"is {'' if value == self.low else 'below '}{_number(self.low)}"
        if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
            return f"is {'' if value == self.high else 'above '}{_number(self.high)}"
        return None


def _number(value: Any) -> str:
    """1 for 1.0, 0.5 for 0.5, every digit of a large integer."""
    return str(int(value)) if isinstance(value, int) or (isinstance(value, float) and value.is_integer()) else f"{value:g}"


WEIGHT = Bound(low=0)
POSITIVE = Bound(low=0, low_open=True)
COUNT = Bound(low=0, integer=True)
AT_LEAST_ONE = Bound(low=1, integer=True)
SEED = Bound(low=0, high=2**64 - 1, integer=True)  # torch.manual_seed's range; a negative seed wraps to another


def bounded(bound: Bound, fix: str | None = None, default: Any = MISSING) -> Any:
    """A schema field whose number (each number, for a list) must be within ``bound``.

    ``fix`` ends the error message; None advises the default conf/config.yaml states
    (``Use e.g. beta=1000.0 (the default).``). ``default``: only for a key no YAML states.
    """
    return field(default=default, metadata={"bound": bound, "fix": fix})


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
    url: str | None = None  # public address, fetched on first use if the file is missing
    sha256: str | None = None  # hex digest the download must have; null = not checked


@dataclass
class ModelConf:  # conf/model/<name>.yaml
    name: str = MISSING  # label in logs and metrics
    arch: str = MISSING  # torchvision architecture: vgg19, vgg16, vgg19_bn, vgg16_bn
    weights: str = MISSING  # imagenet | random | /path/to/state_dict.(pth|safetensors) | package:<module>/<file>
    pooling: Pooling = MISSING  # avg (the paper's) | max (torchvision's)
    key_map: list[list[str]] = MISSING  # [[regex, replacement], ...] for other layouts
    mean: list[float] = bounded(Bound(), "Use the network's training statistics (ImageNet: 0.485, 0.456, 0.406).")
    std: list[float] = bounded(POSITIVE, "Use the network's training statistics (ImageNet: 0.229, 0.224, 0.225).")
    channel_order: ChannelOrder = MISSING  # input channel order the weights were trained on
    description: str = MISSING  # what it is, for logs and metrics


@dataclass
class InitConf:  # conf/init/<kind>.yaml
    kind: InitKind = MISSING  # noise | content | style | file
    path: str | None = MISSING  # for kind=file: image under images_dir, or absolute


@dataclass
class LogConf:
    scalars_every: int = bounded(COUNT)  # iterations between TensorBoard scalar writes
    image_every: int = bounded(COUNT)  # iterations between intermediate images (files and TensorBoard); 0 = none
    progress: bool = MISSING  # progress bar (shown on a terminal only)


@dataclass
class CheckpointConf:
    every: int = bounded(COUNT)  # iterations between checkpoints; also written at Ctrl-C, SIGTERM, a NaN stop, the end
    auto_resume: bool = MISSING  # a run dir holding this run's checkpoint continues it; a finished run is skipped


@dataclass
class ColorConf:  # conf/color/<mode>.yaml
    mode: ColorMode = MISSING  # none | luminance | histogram (Gatys et al. CVPR 2017, section 5)
    histogram: HistogramMatch = MISSING  # mode=histogram: the linear colour map
    match_luminance: bool = MISSING  # mode=luminance: match the style's luminance mean and std to the content's


@dataclass
class MaskConf:  # a region's; no YAML states every key
    path: str | None = None  # grey image, white = inside, under images_dir or absolute; null = the rectangle
    top: float = 0.0  # the rectangle, as fractions of the image's height ...
    bottom: float = 1.0
    left: float = 0.0  # ... and width
    right: float = 1.0
    invert: bool = False  # use the outside instead


@dataclass
class RegionConf:  # an entry of spatial.regions; no YAML states every key
    name: str = MISSING  # label in logs and TensorBoard
    mask: MaskConf = field(default_factory=MaskConf)  # where on the content image
    style: str | None = None  # a conf/style name or an image file; null = no style term here
    style_mask: MaskConf = field(default_factory=MaskConf)  # which part of the style image; default all
    weight: float = bounded(WEIGHT, "Give each region a weight >= 0 (they are normalised to sum 1).", default=1.0)  # lambda_r


@dataclass
class SpatialConf:
    regions: list[RegionConf] = MISSING  # empty = no spatial control
    propagation: Propagation = MISSING  # masks per layer: downsample | inside (eroded)


@dataclass
class CoarseToFineConf:
    sizes: list[int] = bounded(AT_LEAST_ONE, (  # long sides of the stages before the one at image_size
        "Give increasing sizes below image_size (say a quarter and a half of it), or coarse_to_fine.sizes=[] for one stage."
    ))
    iterations: list[int] = bounded(COUNT, "Give one count >= 0 per coarse size, or [] for `iterations` each.")


@dataclass
class Config:  # conf/config.yaml
    content: ImageConf = MISSING
    style: ImageConf = MISSING
    styles: list[str] = MISSING
    style_blend: list[float] | None = bounded(WEIGHT, "Give one weight >= 0 per style, or style_blend=null for equal weights.")
    style_scale: float = bounded(POSITIVE)
    color: ColorConf = field(default_factory=ColorConf)
    spatial: SpatialConf = field(default_factory=SpatialConf)
    coarse_to_fine: CoarseToFineConf = field(default_factory=CoarseToFineConf)
    tv_weight: float = bounded(WEIGHT)
    init: InitConf = field(default_factory=InitConf)
    optimizer: Any = MISSING
    model: ModelConf = field(default_factory=ModelConf)
    log: LogConf = field(default_factory=LogConf)
    checkpoint: CheckpointConf = field(default_factory=CheckpointConf)
    alpha: float = bounded(WEIGHT)
    beta: float = bounded(WEIGHT)
    content_layers: list[str] = MISSING
    style_layers: list[str] = MISSING
    style_weights: list[float] | None = bounded(
        WEIGHT, "Give one weight >= 0 per style layer, or style_weights=null for 1/L each."
    )
    loss: Convention = MISSING
    image_size: int = bounded(AT_LEAST_ONE)
    iterations: int = bounded(COUNT)
    seed: int = bounded(SEED)
    device: str = MISSING
    threads: int | None = bounded(  # CPU threads per job; None = torch's default
        Bound(low=1, integer=True, nullable=True), "Use threads=null for torch's default."
    )
    precision: Precision = MISSING  # auto | fp32 | bf16 (autocast) | tf32 (CUDA): the network's pass
    channels_last: Any = MISSING  # auto (on with bf16; with fp32 on CPUs with AMX) | true | false: NHWC activations
    compile: bool = MISSING  # the network's pass through torch.compile
    images_dir: str = MISSING
    max_image_pixels: int = bounded(AT_LEAST_ONE)
    resume: str | None = MISSING  # a run dir to continue from its last checkpoint, with its saved config
    memory_guard: bool = MISSING  # refuse a run whose estimated peak memory exceeds what the device has free
    objective: list[str] = MISSING  # metrics.json keys a job returns to a sweeper
    objective_weights: list[float] | None = bounded(  # one per objective: return their weighted sum; None = each value
        Bound(), "Give one finite weight per objective, or objective_weights=null."
    )


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


def _if_resume(resume: str | None, then: Any, otherwise: Any) -> Any:
    """``${nst.if_resume:${resume},A,B}``: A when ``resume`` is set, else B."""
    return then if resume else otherwise
