"""VGG features addressed by the paper's layer names.

The network's ``features`` block is built once from torchvision's architecture
(the classifier is never built), its weights loaded (ImageNet, a local file, a
file inside an installed package, or seeded random: see nst_exp/weights.py),
batch norm folded into the convolutions, and truncated after the deepest layer
a run reads. Layer names follow the paper (conv1_1 ... relu5_4, pool1 ...
pool5) and are generated from the architecture in one loop, never typed as
indices.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torchvision
from torch import Tensor, nn

from nst_exp.config import RESOLVED_PRECISIONS, ChannelOrder, Pooling
from nst_exp.errors import NstError, did_you_mean
from nst_exp.hardware import check_tf32
from nst_exp.weights import apply_key_map, fit_state, imagenet_state, load_state_file, resolve_weights_file

log = logging.getLogger(__name__)

# Architecture name -> (torchvision constructor, its ImageNet weights enum).
ARCHITECTURES: dict[str, tuple[Callable[..., nn.Module], torchvision.models.WeightsEnum]] = {
    "vgg19": (torchvision.models.vgg19, torchvision.models.VGG19_Weights.IMAGENET1K_V1),
    "vgg16": (torchvision.models.vgg16, torchvision.models.VGG16_Weights.IMAGENET1K_V1),
    "vgg19_bn": (torchvision.models.vgg19_bn, torchvision.models.VGG19_BN_Weights.IMAGENET1K_V1),
    "vgg16_bn": (torchvision.models.vgg16_bn, torchvision.models.VGG16_BN_Weights.IMAGENET1K_V1),
}
PAPER_ARCH = "vgg19"


def layer_names(features: Iterable[nn.Module]) -> list[str]:
    """Paper-style names for the modules of a VGG ``features`` block, in order.

    conv{b}_{i}, bn{b}_{i} and relu{b}_{i} for the i-th convolution of block b,
    pool{b} for the pooling that ends block b.
    """
    names, block, index = [], 1, 1
    for module in features:
        if isinstance(module, nn.Conv2d):
            names.append(f"conv{block}_{index}")
        elif isinstance(module, nn.BatchNorm2d):
            names.append(f"bn{block}_{index}")
        elif isinstance(module, nn.ReLU):
            names.append(f"relu{block}_{index}")
            index += 1
        elif isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
            names.append(f"pool{block}")
            block, index = block + 1, 1
        else:
            raise TypeError(f"Unexpected module in VGG features: {module!r}")
    return names


def synthesis_names(features: Iterable[nn.Module]) -> list[str]:
    """The names a run can read: conv, relu and pool (batch norm is folded into its conv)."""
    modules = list(features)
    return [n for n, m in zip(layer_names(modules), modules) if not isinstance(m, nn.BatchNorm2d)]


def check_layers(requested: Sequence[str], known: Sequence[str], what: str, network: str = "this network") -> None:
    """Raise NstError naming the first unknown layer, the nearest known one and all known."""
    for layer in requested:
        if layer not in known:
            raise NstError(
                f"Unknown {what} '{layer}': {network} has no such layer.{did_you_mean(layer, known)} "
                f"Known: {', '.join(known)}."
            )


def evaluation_layers(features: nn.Sequential, pooling: str) -> OrderedDict[str, nn.Module]:
    """Named modules for synthesis: BN folded, ReLU out of place, pooling as chosen.

    Each batch norm is folded into the convolution before it with its running
    statistics (the network is only evaluated), so ``conv{b}_{i}`` of a BN
    network is the normalised, unrectified output. torchvision's ReLU is in
    place, so a convolution's output read before its ReLU would be rectified by
    the time it is returned; every ReLU here is a new, out-of-place module. The
    paper swaps max pooling for average pooling ("improves the gradient flow"):
    ``pooling="avg"`` does that, ``"max"`` keeps torchvision's.
    """
    modules = list(features)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for position, (name, module) in enumerate(zip(layer_names(modules), modules)):
        if isinstance(module, nn.BatchNorm2d):
            continue  # folded into the convolution before it
        if isinstance(module, nn.Conv2d):
            following = modules[position + 1] if position + 1 < len(modules) else None
            if isinstance(following, nn.BatchNorm2d):
                module = nn.utils.fuse_conv_bn_eval(module.eval(), following.eval())
        elif isinstance(module, nn.ReLU):
            module = nn.ReLU(inplace=False)
        elif isinstance(module, nn.MaxPool2d) and pooling == "avg":
            module = nn.AvgPool2d(kernel_size=2, stride=2)
        layers[name] = module
    return layers


class FeatureExtractor(nn.Module):
    """Images in [0, 1] RGB -> dict of the requested layers' activations.

    Holds the input normalisation as buffers and only the modules up to the
    deepest requested layer; parameters are frozen.

    Not create_feature_extractor: its fx trace keeps the in-place ReLUs (conv4_2 comes back rectified), names nodes features.20.
    """

    def __init__(
        self,
        layers: Mapping[str, nn.Module],
        requested: Sequence[str],
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        super().__init__()
        names = list(layers)
        check_layers(requested, names, "layer")
        deepest = max(names.index(layer) for layer in requested)
        self.body = nn.Sequential(OrderedDict((n, layers[n]) for n in names[: deepest + 1]))
        self.requested = frozenset(requested)
        self.register_buffer("mean", torch.tensor(mean).reshape(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).reshape(1, -1, 1, 1))
        self.requires_grad_(False)
        self.eval()
        self.precision, self.channels_last = "fp32", False
        self._layers = self._pass
        self._bf16_body: list[nn.Sequential] = []  # a bf16 copy of the body, not registered: see speed()

    def speed(self, precision: str = "fp32", channels_last: bool = False, compile: bool = False) -> FeatureExtractor:
        """Choose how the pass is computed; the losses always see float32 features.

        ``precision``: ``fp32``; ``bf16``, the convolutions under autocast to
        bfloat16 (any device with bf16 kernels); ``tf32``, CUDA's TensorFloat-32
        tensor cores for float32 convolutions and matmuls. On CUDA ``fp32``
        turns TF32 off, so it is IEEE float32 everywhere. ``channels_last``
        stores the activations NHWC; ``compile`` runs the pass through
        ``torch.compile``. Call after moving the extractor to its device.
        """
        if precision not in RESOLVED_PRECISIONS:
            raise NstError(
                f"precision={precision!r} is not one of {', '.join(RESOLVED_PRECISIONS)} "
                "(resolve auto first: nst_exp.hardware.choose_speed)."
            )
        check_tf32(precision, self.mean.device.type)
        self.precision, self.channels_last = precision, channels_last
        self.body.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        # bf16 as autocast computes it, with the weights cast once: autocast casts frozen weights again at every
        # pass (its cache keeps only trainable ones). The float32 body stays the module's own (state_dict, the
        # checkpoint's fingerprint); a body with batch norm keeps autocast, which runs that in float32.
        plain = not any(isinstance(module, nn.modules.batchnorm._BatchNorm) for module in self.body.modules())
        self._bf16_body = [copy.deepcopy(self.body).to(torch.bfloat16)] if precision == "bf16" and plain else []
        self._layers = torch.compile(self._pass) if compile else self._pass
        return self

    def forward(self, image: Tensor, native: bool = False) -> dict[str, Tensor]:
        """image: (B, 3, H, W) in [0, 1] -> {layer: (B, N_l, H_l, W_l)} in float32.

        ``native``: as the pass computed them (bfloat16 with ``precision=bf16``), for a caller that
        takes its own float32 where it needs it (GatysLoss: the Gram matrices in bf16 with float32
        accumulation, the differences to the targets in float32).
        """
        x = (image - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with tf32(x.device, self.precision == "tf32"):
            if self._bf16_body:
                out = self._layers(x.to(torch.bfloat16))
            else:
                with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
                    out = self._layers(x)
        return out if native else {name: features.float() for name, features in out.items()}

    def _pass(self, x: Tensor) -> dict[str, Tensor]:
        out = {}
        for name, module in (self._bf16_body[0] if self._bf16_body else self.body).named_children():
            x = module(x)
            if name in self.requested:
                out[name] = x
        return out

    def downsampling(self, layer: str) -> int:
        """How many times the input is halved before ``layer``'s output."""
        factor = 1
        for name, module in self.body.named_children():
            if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
                factor *= 2
            if name == layer:
                return factor
        raise KeyError(layer)

    @property
    def deepest_downsampling(self) -> int:
        """How many times the input is halved before the deepest requested layer: the smallest side that layer sees."""
        return max(self.downsampling(layer) for layer in self.requested)

    def extra_repr(self) -> str:
        return f"layers={sorted(self.requested)}"


@contextlib.contextmanager
def tf32(device: torch.device, enabled: bool) -> Iterator[None]:
    """On CUDA: float32 convolutions and matmuls on TF32 tensor cores if ``enabled``, else IEEE float32."""
    if device.type != "cuda":
        yield
        return
    # The allow_tf32 flags, not torch 2.9's fp32_precision: setting only some of the new
    # per-operator flags makes torch's own reads of allow_tf32 raise ("a mix of the legacy and new APIs").
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    before = cudnn.allow_tf32, matmul.allow_tf32
    cudnn.allow_tf32 = matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = before


@dataclass(frozen=True)
class Network:
    """A loaded VGG ready for synthesis, and what it is, for logs and metrics."""

    arch: str
    layers: OrderedDict[str, nn.Module]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    weights: str  # where the weights came from, in words
    trained: bool  # False for random weights: results are not meaningful
    arch_layers: tuple[str, ...]  # every layer of ``arch``, including any the weights lack

    @property
    def layer_names(self) -> list[str]:
        return list(self.layers)

    @property
    def paper_network(self) -> bool:
        """The paper's architecture (VGG-19) with trained weights."""
        return self.arch == PAPER_ARCH and self.trained

    @property
    def layer_range(self) -> str:
        names = self.layer_names
        return f"{names[0]} ... {names[-1]}" if names else "none"

    def check_layers(self, requested: Sequence[str], what: str, network: str) -> None:
        """Raise NstError for the first requested layer this network (as loaded) cannot give."""
        label = network if network == self.arch else f"{network} ({self.arch})"
        for layer in requested:
            if layer in self.arch_layers and layer not in self.layers:
                raise NstError(
                    f"The {what} '{layer}' is not available: {label} has it, but its weights "
                    f"({self.weights}) end at {self.layer_names[-1]}. Available: {', '.join(self.layer_names)}."
                )
        check_layers(requested, self.layer_names, what, label)

    def extractor(self, requested: Sequence[str]) -> FeatureExtractor:
        return FeatureExtractor(self.layers, requested, self.mean, self.std)


def summary(name: str, description: str, network: Network) -> str:
    """One paragraph for logs and TensorBoard: which network ran, its weights, whether it is the paper's."""
    if network.paper_network:
        paper = "the paper's architecture (VGG-19)"
    elif network.arch == PAPER_ARCH:
        paper = "the paper's architecture (VGG-19), but untrained: the paper's alpha/beta ratios do not carry over"
    else:
        paper = "NOT the paper's network (VGG-19 trained on ImageNet): the paper's alpha/beta ratios do not carry over"
    return (
        f"{name}: {description}. Architecture {network.arch}, weights {network.weights}, "
        f"layers {network.layer_range}; {paper}."
    )


def build_features(arch: str) -> nn.Sequential:
    """torchvision's ``features`` block of ``arch``, allocated but not initialised.

    The model is built on the meta device so that its 120M-parameter
    classifier, which synthesis never uses, costs neither time nor memory.
    """
    with torch.device("meta"):
        model = ARCHITECTURES[arch][0](weights=None)
    return model.features.to_empty(device="cpu")


def init_random(features: nn.Sequential, seed: int) -> None:
    """torchvision's VGG initialisation (Kaiming normal, fan-out; BN 1 and 0), from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in features:
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu", generator=generator)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                module.reset_parameters()


def load_configured_network(model: Any, seed: int) -> Network:
    """``load_network`` for a ``model`` config (conf/model/<name>.yaml)."""
    return load_network(
        model.arch,
        model.weights,
        model.pooling,
        model.key_map,
        seed=seed,
        mean=model.mean,
        std=model.std,
        channel_order=model.channel_order,
    )


def load_network(
    arch: str,
    weights: str,
    pooling: str = "avg",
    key_map: Sequence[Sequence[str]] = (),
    seed: int = 0,
    mean: Sequence[float] = (0.485, 0.456, 0.406),
    std: Sequence[float] = (0.229, 0.224, 0.225),
    channel_order: str = "rgb",
) -> Network:
    """Build ``arch`` with ``weights`` (imagenet, random, a path or package:<module>/<file>) for synthesis.

    ``channel_order="bgr"``: the weights were trained on BGR input (Caffe's
    VGGs): conv1_1's input channels are reversed once here, so the network
    takes RGB like every other; ``mean`` and ``std`` are then given in RGB order.
    """
    if arch not in ARCHITECTURES:
        raise NstError(f"Unknown model.arch '{arch}'. Known: {', '.join(ARCHITECTURES)}.")
    pooling = Pooling.parse(pooling, "model.pooling")  # a composed config's are members already
    channel_order = ChannelOrder.parse(channel_order, "model.channel_order")
    features = build_features(arch)
    if weights == "random":
        init_random(features, seed)
        covered = len(features)
        description = f"random (seed {seed}); UNTRAINED, results are not meaningful"
    else:
        if weights == "imagenet":
            source = f"torchvision {ARCHITECTURES[arch][1]}"
            state, description = imagenet_state(arch, ARCHITECTURES[arch][1]), f"imagenet ({source})"
        else:
            path = resolve_weights_file(weights)
            state, source = load_state_file(path), str(path)
            description = source if str(path) == weights else f"{weights} ({path})"
        if key_map:
            state = apply_key_map(state, key_map, source, layer_names(features))
        else:
            state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        covered = fit_state(features, state, source)
    if channel_order == "bgr":
        first = features[0]
        with torch.no_grad():
            first.weight.copy_(first.weight.flip(1))  # BGR-trained filters, fed RGB
    modules = list(features)
    if 0 < covered < len(modules) and isinstance(modules[covered], nn.BatchNorm2d):
        covered -= 1  # a convolution without its batch norm computes something else
    names = synthesis_names(modules)
    if covered < len(modules):
        kept = synthesis_names(modules[:covered])
        log.info(
            "The weights in %s end at %s; %s and later layers are absent.",
            description,
            kept[-1] if kept else "nothing",
            names[len(kept)],
        )
    features = nn.Sequential(*modules[:covered]).eval()
    return Network(
        arch=arch,
        layers=evaluation_layers(features, pooling),
        mean=tuple(mean),
        std=tuple(std),
        weights=description,
        trained=weights != "random",
        arch_layers=tuple(names),
    )
