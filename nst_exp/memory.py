"""A run's peak memory, estimated before it starts (nst_exp.memory_guard refuses what cannot fit).

The estimate counts float32 tensors the optimisation keeps alive at its peak:

- activations autograd saves in one evaluation of the truncated network
  (the normalised input, every ReLU and pooling output, max pooling's
  indices, the content layers' differences), plus the largest activation
  twice for the gradients alive during the backward pass;
- the optimizer's state in image-sized vectors: L-BFGS keeps
  2 x ``history_size`` of them (its curvature pairs) plus about 5 working
  vectors, Adam 2 moments plus 2 working vectors;
- about 8 image-sized tensors of the loop (image, gradient, the last good and
  previous image, content, style, init) and the targets (content features,
  Gram matrices);
- the network's weights, where they are not already in that memory;
- on the CPU, overhead: oneDNN's convolutions copy tensors between layouts
  and glibc's heap keeps freed blocks, so the peak RSS grows by about twice
  the activations counted, plus about 40 MiB of fixed cost (TensorBoard,
  checkpoint writes). Both constants were fitted on measured peaks at 192 and
  384 px; docs/long-runs.md gives the error at 128, 256 and 512 px.
  On CUDA the count is used as it is (not measured here: no GPU).

The guard compares it with what the device has free: on CUDA ``torch.cuda.mem_get_info``,
on the CPU ``MemAvailable`` of /proc/meminfo (and the cgroup's limit, if lower),
as nst_exp.device_memory reads them.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nst_exp.features import FeatureExtractor

FLOAT_BYTES = 4
GIB = 1024**3
LOOP_IMAGES = 8  # image-sized tensors the loop holds besides the optimizer's
BACKWARD_ACTIVATIONS = 2  # largest activations alive at once as gradients during backward
# Image-sized vectors an optimizer class keeps and works with, besides L-BFGS's curvature pairs: L-BFGS's
# gradient, direction, previous gradient and two temporaries of the two-loop recursion; Adam's (and AdamW's)
# two moments and two temporaries. Another torch.optim class counts as Adam.
OPTIMIZER_VECTORS = {torch.optim.LBFGS: 5, torch.optim.Adam: 4, torch.optim.AdamW: 4}
LBFGS_HISTORY = inspect.signature(torch.optim.LBFGS).parameters["history_size"].default  # torch's default
# CPU overhead, fitted on peak RSS measured at 192 and 384 px (docs/long-runs.md).
CPU_ACTIVATION_FACTOR = 2.0
CPU_FIXED_BYTES = 40 * 1024**2


@dataclass
class Estimate:
    """Bytes the optimisation needs at its peak, by what holds them."""

    activations: int
    optimizer: int
    images: int
    weights: int
    overhead: int
    styles: int = 0  # style images, their other Gram targets, and their pass's excess (see estimate)

    @property
    def total(self) -> int:
        return self.activations + self.optimizer + self.images + self.weights + self.overhead + self.styles

    def describe(self) -> str:
        parts = ", ".join(
            f"{name} {gib(value)}"
            for name, value in (
                ("activations", self.activations),
                ("optimizer state", self.optimizer),
                ("images and targets", self.images),
                ("style images' pass", self.styles),
                ("weights", self.weights),
                ("allocator overhead", self.overhead),
            )
            if value
        )
        return f"{gib(self.total)} ({parts})"


def gib(nbytes: float) -> str:
    return f"{nbytes / GIB:.2f} GiB"


def optimizer_vectors(optimizer: functools.partial) -> int:
    """Image-sized vectors the optimizer keeps and works with.

    ``optimizer`` is the factory ``trust.make_optimizer`` returns: the checked
    torch.optim class (``optimizer.func``) and its keyword arguments.
    """
    return 2 * curvature_pairs(optimizer) + OPTIMIZER_VECTORS.get(optimizer.func, 4)


def curvature_pairs(optimizer: functools.partial) -> int:
    """The (s, y) pairs L-BFGS keeps (its ``history_size``); 0 for an optimizer without them."""
    if optimizer.func is not torch.optim.LBFGS:
        return 0
    return int(optimizer.keywords.get("history_size", LBFGS_HISTORY))


def _shapes(extractor: FeatureExtractor, height: int, width: int) -> Iterator[tuple[str, nn.Module, int, int]]:
    """(name, module, channels, elements of its output) for each module of the body, on a ``height`` x ``width`` input."""
    channels, h, w = 3, height, width
    for name, module in extractor.body.named_children():
        if isinstance(module, nn.Conv2d):
            channels = module.out_channels
            h = (h + 2 * module.padding[0] - module.kernel_size[0]) // module.stride[0] + 1
            w = (w + 2 * module.padding[1] - module.kernel_size[1]) // module.stride[1] + 1
        elif isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
            kernel, stride = _pair(module.kernel_size), _pair(module.stride or module.kernel_size)
            h, w = (h - kernel[0]) // stride[0] + 1, (w - kernel[1]) // stride[1] + 1
        yield name, module, channels, channels * max(h, 0) * max(w, 0)


def style_pass(extractor: FeatureExtractor, height: int, width: int) -> int:
    """Peak float32 elements of the no-grad pass that computes a ``height`` x ``width`` style image's targets.

    Each module's input and output are alive at once, beside the requested
    layers' outputs already kept for their Gram matrices; the pass starts from
    the normalised image (the image itself is counted by the caller).
    """
    previous, previous_kept, kept, peak = 3 * height * width, False, 0, 0
    for name, _, _, size in _shapes(extractor, height, width):
        peak = max(peak, size + kept + (0 if previous_kept else previous))
        previous, previous_kept = size, name in extractor.requested
        if previous_kept:
            kept += size
    return peak


def estimate(
    extractor: FeatureExtractor,
    height: int,
    width: int,
    optimizer: functools.partial,
    content_layers: Sequence[str],
    device_type: str,
    style_shapes: Sequence[tuple[int, int]] = (),
) -> Estimate:
    """Peak bytes of optimising a ``height`` x ``width`` image through ``extractor`` on ``device_type``.

    On the CPU the weights already sit in the memory being checked (the
    network was built there), so they need no new room.

    ``style_shapes`` are the style images' (H, W) as loaded (``style_scale``
    applied). They add the ``styles`` term: the style images and the Gram
    targets of every style but one (``images`` counts one), plus the part of
    the largest style pass (``style_pass``) that exceeds the optimisation's
    activations. The pass runs before the loop and its memory is reused by it,
    so only its excess raises the peak: none at ``style_scale=1``, most of the
    peak with a large ``style_scale``. With no ``style_shapes`` the term is 0.
    """
    pixels = 3 * height * width
    saved, largest, targets, grams = pixels, 0, 0, 0
    for name, module, channels, size in _shapes(extractor, height, width):
        largest = max(largest, size)
        if isinstance(module, (nn.ReLU, nn.AvgPool2d)):
            saved += size
        elif isinstance(module, nn.MaxPool2d):
            saved += 3 * size  # the output and its int64 indices
        if name in content_layers:
            saved += size  # (F - P), kept for the square's gradient
            targets += size
        if name in extractor.requested:
            grams += channels * channels
    targets += 2 * grams  # the Gram target and the current Gram
    activations = (saved + BACKWARD_ACTIVATIONS * largest) * FLOAT_BYTES
    excess, styles = 0, 0
    if style_shapes:
        passes = max(style_pass(extractor, h, w) for h, w in style_shapes) * FLOAT_BYTES
        excess = max(0, passes - activations)
        kept = sum(3 * h * w for h, w in style_shapes) + (len(style_shapes) - 1) * grams
        styles = kept * FLOAT_BYTES + excess
    on_cpu = device_type == "cpu"
    return Estimate(
        activations=activations,
        optimizer=optimizer_vectors(optimizer) * pixels * FLOAT_BYTES,
        images=(LOOP_IMAGES * pixels + targets) * FLOAT_BYTES,
        weights=0 if on_cpu else sum(p.numel() for p in extractor.parameters()) * FLOAT_BYTES,
        overhead=round((CPU_ACTIVATION_FACTOR - 1) * (activations + excess)) + CPU_FIXED_BYTES if on_cpu else 0,
        styles=styles,
    )


def _pair(value: Any) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))
