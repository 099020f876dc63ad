"""``python -m nst_exp.normalize``: the papers' normalised VGG, written as a weights file.

Gatys et al. use VGG-19 "normalised by scaling the weights such that the mean
activation of each convolutional filter over images and positions is equal to
one". For each convolution l and filter k, with a_lk the mean of its rectified
output over the calibration images and all positions (every position of every
image counts once), the filter's weights and bias are divided by f_lk = a_lk, and the next
convolution's input weights for channel k multiplied by f_lk. ReLU and both
kinds of pooling commute with a positive per-channel scale, so every layer's
activations become the original's divided by its f_l, and each filter's mean
over the calibration images is 1. Nothing follows the last convolution here
(the classifier is dropped), so its output is the one thing that changes scale.
A filter that never fires on the calibration images (a_lk = 0) keeps f = 1.
With ``min_factor=r`` > 0, no f is below r times its layer's median f: a filter that
barely fires on the calibration images (CRAFT on eleven images: a_lk down to 2e-7) would
otherwise be amplified 1/a_lk times and dominate every Gram matrix where it does fire.

Batch norm is folded into the convolutions first, so the file is for the plain
architecture (vgg16_bn -> vgg16). The factors depend on ``model.pooling`` past
pool1: the default, avg, is the pooling synthesis uses.

    python -m nst_exp.normalize images_dir=/path/to/photos              # ImageNet VGG-19
    python -m nst_exp.normalize model.weights=random images_dir=...     # untrained, for tests
    python -m nst_exp.normalize model.arch=vgg16_bn model.weights=craft_mlt_25k.pth \\
        'model.key_map=[["^module\\.basenet\\.slice[1-4]\\.","features."]]' images_dir=...

It writes ``<model.name>_normalised.pth`` (``..._normalised_min<r>.pth`` with min_factor;
or ``output=...``) and
``normalisation.json`` (the factors, the images, and the overrides that use it)
in its run directory, and prints those overrides.

torch and the network's code load in the functions that use them: ``--help`` and
``--cfg`` answer without them.
"""

from __future__ import annotations

import logging
import sys
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import MISSING, DictConfig

from nst_exp.atomic import write_json
from nst_exp.cli_args import asks_for_information
from nst_exp.config import ModelConf, conf_dir
from nst_exp.errors import NstError
from nst_exp.help import app_help, print_page, register_help
from nst_exp.styles import IMAGE_SUFFIXES
from nst_exp.trust import check_command_line

if TYPE_CHECKING:
    from torch import Tensor, nn

    from nst_exp.features import FeatureExtractor

log = logging.getLogger("nst_exp.normalize")
PLAIN_ARCH = {"vgg19_bn": "vgg19", "vgg16_bn": "vgg16", "vgg19": "vgg19", "vgg16": "vgg16"}


@dataclass
class NormalizeConfig:
    """conf/normalize.yaml's schema: types here, each default once in the YAML (as nst_exp.config.Config)."""

    model: ModelConf = field(default_factory=ModelConf)
    images_dir: str = MISSING  # folder of calibration images
    image_size: int = MISSING  # long side each calibration image is resized to
    max_images: int = MISSING  # use at most this many (sorted by name); 0 = all
    output: str | None = MISSING  # weights file to write; null = <run dir>/<model.name>_normalised[_min<r>].pth
    seed: int = MISSING  # seeds random weights
    device: str = MISSING  # auto | cpu | cuda | mps
    max_image_pixels: int = MISSING  # larger input files are refused
    min_factor: float = MISSING  # no f below this times its layer's median f; 0 = the paper's rule


def register() -> None:
    ConfigStore.instance().store(name="base_normalize", node=NormalizeConfig)


def calibration_images(folder: str, size: int, limit: int, max_pixels: int) -> list[Tensor]:
    """Every image file in ``folder`` (sorted; at most ``limit`` if > 0), long side ``size``."""
    from nst_exp import images

    root = Path(folder).expanduser()
    paths = sorted(p for p in root.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if root.is_dir() else []
    if not paths:
        raise NstError(
            f"No calibration images in '{root}' (looked for {', '.join(IMAGE_SUFFIXES)}). "
            "Point images_dir=... at a folder of photos."
        )
    return [images.load(path, size, max_pixels) for path in paths[: limit or None]]


def activation_layers(layers: Mapping[str, nn.Module]) -> dict[str, str]:
    """{conv name: the layer whose output is its rectified activation} (conv3_1 -> relu3_1)."""
    from torch import nn

    names = list(layers)
    pairs = {}
    for name in names:
        if isinstance(layers[name], nn.Conv2d):
            relu = name.replace("conv", "relu")
            pairs[name] = relu if relu in layers else name
    return pairs


def mean_activations(extractor: FeatureExtractor, batch: Iterable[Tensor], pairs: Mapping[str, str]) -> dict[str, Tensor]:
    """{conv name: (N,) mean rectified activation per filter over all images and positions}, float64."""
    import torch

    sums: dict[str, Tensor] = {}
    counts: dict[str, int] = {}
    for image in batch:
        with torch.no_grad():
            features = extractor(image)
        for conv, layer in pairs.items():
            value = features[layer].double()
            sums[conv] = sums.get(conv, 0) + value.sum((0, 2, 3))
            counts[conv] = counts.get(conv, 0) + value.shape[0] * value.shape[2] * value.shape[3]
    return {conv: sums[conv] / counts[conv] for conv in pairs}


def scale_factors(means: Mapping[str, Tensor], min_factor: float = 0.0) -> dict[str, Tensor]:
    """f = the mean activation, at least ``min_factor`` times the layer's median f; 1 for filters that never fire."""
    import torch

    factors = {}
    for conv, mean in means.items():
        fired = mean > 0
        floor = min_factor * mean[fired].median() if min_factor > 0 and fired.any() else mean.new_zeros(())
        factors[conv] = torch.where(fired, torch.maximum(mean, floor), torch.ones_like(mean))
    return factors


def normalised_layers(layers: Mapping[str, nn.Module], factors: Mapping[str, Tensor]) -> OrderedDict[str, nn.Module]:
    """A copy of ``layers`` whose convolutions are rescaled: output / f, next input * f."""
    import torch
    from torch import nn

    out: OrderedDict[str, nn.Module] = OrderedDict()
    incoming: Tensor | None = None
    for name, module in layers.items():
        if isinstance(module, nn.Conv2d):
            factor = factors[name].to(module.weight)
            conv = nn.Conv2d(module.in_channels, module.out_channels, module.kernel_size, module.stride, module.padding)
            weight = module.weight.detach().clone()
            if incoming is not None:
                weight = weight * incoming.reshape(1, -1, 1, 1)
            bias = module.bias.detach() if module.bias is not None else torch.zeros_like(factor)
            with torch.no_grad():
                conv.weight.copy_(weight / factor.reshape(-1, 1, 1, 1))
                conv.bias.copy_(bias / factor)
            module, incoming = conv, factor
        out[name] = module
    return out


def plain_state_dict(layers: Mapping[str, nn.Module]) -> dict[str, Tensor]:
    """``features.<i>.weight/bias`` of the plain (no batch norm) architecture for each convolution.

    ``layers`` has no batch norm modules left, so a module's position in it is
    its index in the plain architecture's ``features``.
    """
    from torch import nn

    state = {}
    for index, (name, module) in enumerate(layers.items()):
        if isinstance(module, nn.Conv2d):
            state[f"features.{index}.weight"] = module.weight.detach().cpu().contiguous()
            state[f"features.{index}.bias"] = module.bias.detach().cpu().contiguous()
    return state


def _list(values: Iterable[float]) -> str:
    """[0.485,0.456,0.406]: a list override with no spaces, safe to paste into a shell."""
    return "[" + ",".join(f"{v:g}" for v in values) + "]"


def save_state(state: Mapping[str, Tensor], path: Path) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(dict(state), str(path))
    else:
        torch.save(dict(state), path)


def normalize(cfg: Any, out_dir: Path) -> Path:
    """Compute the factors for ``cfg.model`` on ``cfg.images_dir``; write the weights and normalisation.json."""
    from nst_exp.features import load_configured_network
    from nst_exp.hardware import pick_device

    if cfg.model.arch not in PLAIN_ARCH:
        raise NstError(f"Unknown model.arch '{cfg.model.arch}'. Known: {', '.join(PLAIN_ARCH)}.")
    if not cfg.min_factor >= 0 or cfg.min_factor == float("inf"):  # NaN fails the first test
        raise NstError(f"min_factor={cfg.min_factor} is not a finite fraction >= 0: give a fraction of each layer's median f, "
                       "e.g. min_factor=0.01, or 0 for the paper's rule.")
    device = pick_device(cfg.device)
    batch = calibration_images(cfg.images_dir, cfg.image_size, cfg.max_images, cfg.max_image_pixels)
    network = load_configured_network(cfg.model, cfg.seed)
    pairs = activation_layers(network.layers)
    extractor = network.extractor(list(pairs.values())).to(device)
    means = mean_activations(extractor, (image.to(device) for image in batch), pairs)
    factors = scale_factors(means, cfg.min_factor)
    floored = {conv: int(((mean > 0) & (factors[conv] > mean)).sum()) for conv, mean in means.items()}
    if any(floored.values()):
        log.info("Filters raised to min_factor=%g of their layer's median: %s", cfg.min_factor,
                 {conv: count for conv, count in floored.items() if count})
    dead = {conv: int((mean <= 0).sum()) for conv, mean in means.items() if (mean <= 0).any()}
    if dead:
        log.warning("Filters that never fired on the calibration images (kept at scale 1): %s", dead)
    layers = normalised_layers(network.layers, {k: v.float().cpu() for k, v in factors.items()})
    name = f"{cfg.model.name}_normalised" + (f"_min{cfg.min_factor:g}" if cfg.min_factor else "")
    path = Path(cfg.output).expanduser() if cfg.output else out_dir / f"{name}.pth"
    save_state(plain_state_dict(layers), path)
    plain = PLAIN_ARCH[cfg.model.arch]
    overrides = (
        f"model.arch={plain} model.weights={path.resolve()} model.key_map=[] "
        f"model.name={name} model.mean={_list(cfg.model.mean)} model.std={_list(cfg.model.std)} "
        "model.channel_order=rgb"  # a BGR network's conv1_1 was reversed at load: the file takes RGB
    )
    write_json(
        out_dir / "normalisation.json",
        {
            "source_weights": network.weights,
            "trained_weights": network.trained,
            "arch": cfg.model.arch,
            "written_arch": plain,
            "pooling": cfg.model.pooling,
            "images_dir": str(Path(cfg.images_dir).expanduser().resolve()),
            "images": len(batch),
            "image_size": cfg.image_size,
            "weights_file": str(path.resolve()),
            "use_with": overrides,
            "dead_filters": dead,
            "min_factor": cfg.min_factor,
            "floored_filters": {conv: count for conv, count in floored.items() if count},
            "factors": {conv: factor.tolist() for conv, factor in factors.items()},
        },
    )
    log.info("Wrote %s (%d convolutions, %d calibration images). Use it with:\n  %s", path, len(factors), len(batch), overrides)
    return path


register()
register_help()  # the resolvers conf/hydra/help/normalize.yaml calls for --help


@hydra.main(config_path=conf_dir(), config_name="normalize", version_base="1.3")
def job(cfg: DictConfig) -> None:
    try:
        normalize(cfg, Path(HydraConfig.get().runtime.output_dir))
    except NstError as error:
        log.error("%s", error)
        raise SystemExit(2) from None


def main() -> None:
    """``nst-exp-normalize``: the command line's ``_target_``s are checked (nst_exp.trust) before Hydra makes anything."""
    text = app_help(sys.argv[1:], config_name="normalize")  # --help without Hydra's listing of its own groups
    if text is not None:
        print_page(text)
        return
    try:
        if not asks_for_information(sys.argv[1:]):
            check_command_line(sys.argv[1:], "normalize")
    except NstError as error:
        print(f"Error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    job()


if __name__ == "__main__":
    main()
