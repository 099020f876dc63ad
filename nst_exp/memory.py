"""The memory guard: estimate a run's peak memory before it starts, refuse what cannot fit.

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

It is compared with what the device has free: on CUDA ``torch.cuda.mem_get_info``,
on the CPU ``MemAvailable`` of /proc/meminfo (and the cgroup's limit, if lower),
as nst_exp.device_memory reads them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
from torch import nn

from nst_exp import device_memory
from nst_exp.device_memory import UNKNOWN_FREE
from nst_exp.errors import NstError
from nst_exp.features import FeatureExtractor
from nst_exp.images import fit_size, scaled_side

log = logging.getLogger(__name__)

FLOAT_BYTES = 4
GIB = 1024**3
LOOP_IMAGES = 8  # image-sized tensors the loop holds besides the optimizer's
BACKWARD_ACTIVATIONS = 2  # largest activations alive at once as gradients during backward
# Working vectors besides the stored state: L-BFGS's gradient, direction, previous gradient and
# two temporaries of the two-loop recursion; Adam's two temporaries.
OPTIMIZER_VECTORS = {"torch.optim.LBFGS": 5, "torch.optim.Adam": 4, "torch.optim.AdamW": 4}
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


def optimizer_vectors(optimizer: Any) -> int:
    """Image-sized vectors the optimizer keeps and works with."""
    target = str(optimizer.get("_target_", ""))
    if target == "torch.optim.LBFGS":
        return 2 * int(optimizer.get("history_size", 100)) + OPTIMIZER_VECTORS[target]
    return OPTIMIZER_VECTORS.get(target, 4)


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
    optimizer: Any,
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


def smallest_size(
    factor: int,
    content_size: tuple[int, int],
    style_sizes: Sequence[tuple[int, int]] = (),
    style_scale: float = 1.0,
) -> int:
    """The smallest image_size at which content and every style image are at least ``factor`` pixels on both sides.

    ``factor`` is how many times the deepest layer shrinks its input
    (``FeatureExtractor.downsampling``); sizes are upright (width, height)
    from ``images.header_size``; shapes are those ``images.load`` gives:
    the content at long side ``image_size``, the styles at
    ``max(1, round(style_scale * image_size))``. Both grow with image_size,
    so the search doubles, then bisects.
    """

    def seen(size: int) -> bool:
        style_side = scaled_side(size, style_scale)
        shapes = [fit_size(*content_size, size), *(fit_size(*s, style_side) for s in style_sizes)]
        return all(min(shape) >= factor for shape in shapes)

    high = max(1, factor)
    while not seen(high):
        high *= 2
    low = high // 2  # seen(low) is False, or low is 0
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if seen(middle) else (middle, high)
    return high


def largest_size(fits: Any, image_size: int) -> int:
    """The largest image_size in 1..image_size for which ``fits(size)`` holds (0 if none)."""
    low, high = 0, image_size
    while low < high:
        middle = (low + high + 1) // 2
        if fits(middle):
            low = middle
        else:
            high = middle - 1
    return low


class Guard:
    """Checks a run before it starts and explains an out-of-memory error during it.

    Plain values, read from the config by the caller: ``content_size`` and
    ``style_sizes`` are upright (width, height) from ``images.header_size``
    (no decoding); the content is loaded at long side ``image_size``, each
    style at ``max(1, round(style_scale * image_size))``; ``optimizer`` is the
    optimizer's config (``_target_``, and ``history_size`` for L-BFGS).
    """

    def __init__(
        self,
        extractor: FeatureExtractor,
        content_size: tuple[int, int],
        image_size: int,
        optimizer: Mapping[str, Any],
        content_layers: Sequence[str],
        device: torch.device,
        *,
        style_sizes: Sequence[tuple[int, int]] = (),
        style_scale: float = 1.0,
    ) -> None:
        self.extractor, self.image_size, self.device = extractor, image_size, device
        self.optimizer, self.content_layers = optimizer, list(content_layers)
        self.content_size, self.style_sizes, self.style_scale = tuple(content_size), list(style_sizes), style_scale
        self.estimate = self.estimate_at(image_size)
        self.free = device_memory.available(device)
        self.before = device_memory.reset_peak(device)

    def shapes(self, size: int) -> tuple[tuple[int, int], list[tuple[int, int]]]:
        """(H, W) of the content and of each style image at ``image_size=size``, as the run loads them."""
        style_side = scaled_side(size, self.style_scale)
        return fit_size(*self.content_size, size), [fit_size(*style, style_side) for style in self.style_sizes]

    def estimate_at(self, size: int) -> Estimate:
        content, styles = self.shapes(size)
        return estimate(
            self.extractor, content[0], content[1], self.optimizer, self.content_layers, self.device.type, styles
        )

    def smallest_size(self) -> int:
        """The smallest image_size at which every requested layer sees a pixel of content and styles."""
        factor = max(self.extractor.downsampling(layer) for layer in self.extractor.requested)
        return smallest_size(factor, self.content_size, self.style_sizes, self.style_scale)

    def fitting_size(self) -> int:
        """The largest image_size up to this one whose estimate fits the free memory (0 if none does)."""
        fits = lambda size: self.estimate_at(size).total <= self.free  # noqa: E731
        size = largest_size(fits, self.image_size)
        while size > 0 and not fits(size):  # rounding can make the estimate dip: never suggest what fails
            size -= 1
        return size

    def advice(self) -> str:
        """What would fit: the largest image_size, and what L-BFGS's history costs."""
        fitting = self.fitting_size()
        advice = (
            f"image_size={fitting} is the largest that fits"
            if fitting and fitting >= self.smallest_size()
            else "No image_size fits: free memory, use shallower layers or a smaller style_scale"
        )
        if "history_size" in self.optimizer:
            pair = 2 * self.estimate.optimizer // optimizer_vectors(self.optimizer)
            advice += f", or lower optimizer.history_size (each curvature pair costs {gib(pair)})"
        return advice

    def check(self, enabled: bool) -> None:
        """Refuse (or, if not ``enabled``, warn) when the estimate exceeds the free memory."""
        needs = f"image_size={self.image_size} needs about {self.estimate.describe()} on {self.device}"
        if self.free >= UNKNOWN_FREE:
            log.info("Memory: %s; this system does not say how much is free, so memory_guard checks nothing.", needs)
            return
        if self.estimate.total <= self.free:
            log.info("Memory: %s; %s free.", needs, gib(self.free))
            return
        message = (
            f"{needs}, but only {gib(self.free)} is free. {self.advice()}. "
            "Or set memory_guard=false to try anyway."
        )
        if enabled:
            raise NstError(f"Not enough memory: {message}")
        log.warning("memory_guard=false, going on although %s", message)

    def out_of_memory(self, message: str, out_dir: Path, kept: int | None) -> str:
        """What to say when the run ran out of memory: the estimate, what was kept, what fits."""
        checkpoint = (
            f"The last checkpoint (iteration {kept}) is kept in {out_dir}: once memory is free, "
            f"continue with python -m nst_exp resume={out_dir}."
            if kept is not None
            else f"No checkpoint was written yet (lower checkpoint.every); {out_dir}/result.png is the last image."
        )
        if self.free >= UNKNOWN_FREE:  # macOS, Windows: nothing to size the advice by
            free, advice = "an amount the system does not report", "a smaller image_size"
        else:
            free, advice = gib(self.free), self.advice()
        return (
            f"{message}. The run was estimated to need {self.estimate.describe()} with {free} free "
            f"on {self.device} at the start. {checkpoint} To start again with less: {advice}."
        )

    def measured(self) -> dict[str, int | float | None]:
        """The estimate beside the measured peak, for metrics.json."""
        peak = max(device_memory.peak_bytes(self.device), self.before or 0)  # another thread may shrink RSS after the reset
        return {
            "memory_estimate_bytes": self.estimate.total,
            "memory_free_bytes": self.free if self.free < UNKNOWN_FREE else None,  # None: the system does not say
            "memory_before_bytes": self.before,
            "memory_peak_bytes": peak or None,  # None where it cannot be measured (Windows' CPU)
            "memory_estimate_error": (
                (self.before + self.estimate.total - peak) / peak if peak and self.before is not None else None
            ),
        }
