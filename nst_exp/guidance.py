"""Spatial guidance (Gatys et al., CVPR 2017, sec. 4): region masks and their per-layer versions.

A region's mask T_r is an image-sized map in [0, 1] (a rectangle given as
fractions of the image, or a grey image file; white = inside). For a style
layer l the guided Gram matrix weights every position of F^l by T_r^l, the
mask carried to that layer's resolution. Two ways to carry it
(``spatial.propagation``), as in the paper and its code:

- ``downsample``: the mask is averaged over each pooling window, exactly as the
  network's average pooling shrinks its feature maps; convolutions keep it.
  T_r^l is the fraction of each layer position's pooled footprint inside the
  region (the paper's "simply downsample the guidance channels").
- ``inside``: the mask is made binary (>= 0.5) and eroded by every
  convolution and pooling window on the way, so T_r^l = 1 exactly where the
  neuron's whole receptive field lies inside the region ("eroded" guidance
  channels; the authors' code calls it mode 'inside'). Pixels beyond the image
  border count as inside, since zero padding carries no other region's content.
  Deep layers of small images may lose a region entirely; that region's term
  is then left out on that layer.

Each per-layer mask is normalised so that its mean square over the layer is 1
(as in the authors' code), so a guided Gram divided by M_l is the region's
average Gram whatever its area; an all-ones mask gives the plain Gram matrix.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from nst_exp import image_files, images


def rectangle(size: tuple[int, int], top: float, bottom: float, left: float, right: float) -> Tensor:
    """(H, W) mask: 1 inside the rectangle given as fractions of height and width, else 0."""
    height, width = size
    rows = torch.zeros(height)
    cols = torch.zeros(width)
    rows[round(top * height) : round(bottom * height)] = 1
    cols[round(left * width) : round(right * width)] = 1
    return rows[:, None] * cols[None, :]


def mask_image(conf: Any, size: tuple[int, int], images_dir: str, max_pixels: int) -> Tensor:
    """The (H, W) mask in [0, 1] that ``conf`` (a MaskConf) describes, at ``size`` = (H, W)."""
    if conf.path:
        path = image_files.resolve(conf.path, images_dir, what="mask")
        grey = images.open_rgb(path, max(size), max_pixels).convert("L")
        grey = grey.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        mask = images.to_tensor(grey.convert("RGB"))[0, 0]
    else:
        mask = rectangle(size, conf.top, conf.bottom, conf.left, conf.right)
    return 1 - mask if conf.invert else mask


def _window(value: Any) -> int:
    return value[0] if isinstance(value, Sequence) else value


def propagate(mask: Tensor, modules: Iterable[tuple[str, nn.Module]], layers: Sequence[str], mode: str) -> dict[str, Tensor]:
    """(H, W) mask -> {layer: (H_l, W_l) mask} for the named ``modules`` of a VGG body, by ``mode``."""
    wanted = set(layers)
    if mode == "inside":
        current = (mask >= 0.5).float()[None, None]
    else:
        current = mask.float()[None, None]
    out: dict[str, Tensor] = {}
    for name, module in modules:
        if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
            kernel, stride = _window(module.kernel_size), _window(module.stride or module.kernel_size)
            if mode == "inside":
                current = -F.max_pool2d(-current, kernel, stride)
            else:
                current = F.avg_pool2d(current, kernel, stride)
        elif isinstance(module, nn.Conv2d) and mode == "inside":
            kernel, padding = _window(module.kernel_size), _window(module.padding)
            stride = _window(module.stride)
            # max_pool2d pads with -inf, so positions beyond the border never erode the mask.
            current = -F.max_pool2d(-current, kernel, stride, padding)
        if name in wanted:
            out[name] = current[0, 0]
        if wanted <= out.keys():
            break
    return out


def normalise(mask: Tensor) -> Tensor:
    """Scale a layer's mask so its mean square is 1; an empty mask stays 0."""
    power = mask.pow(2).mean()
    return mask / power.sqrt() if power > 0 else mask


def layer_guides(mask: Tensor, extractor: nn.Module, layers: Sequence[str], mode: str) -> dict[str, Tensor]:
    """Normalised per-layer masks for a FeatureExtractor's ``layers`` (see the module docstring)."""
    raw = propagate(mask, extractor.body.named_children(), layers, mode)
    return {layer: normalise(raw[layer]) for layer in layers}
