"""The memory guard: refuse a run whose estimated peak exceeds the free memory, and say what would fit.

``Guard.check`` compares nst_exp.memory's estimate at ``image_size`` with what
nst_exp.device_memory says is free, before any file is written; the advice
searches the largest image_size whose estimate fits (and never one too small
for the layers). ``Guard.out_of_memory`` explains an out-of-memory error during
the run, and ``Guard.measured`` records the estimate beside the measured peak.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from nst_exp import device_memory
from nst_exp.device_memory import UNKNOWN_FREE
from nst_exp.errors import NstError
from nst_exp.features import FeatureExtractor
from nst_exp.inputs import Inputs
from nst_exp.memory import Estimate, curvature_pairs, estimate, gib, optimizer_vectors

log = logging.getLogger(__name__)


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

    ``inputs`` gives the images' shapes at any image_size from their file
    headers (no decoding), as the run will load them; ``optimizer`` is the
    factory ``trust.make_optimizer`` returns (the optimizer's class and arguments).
    """

    def __init__(
        self,
        extractor: FeatureExtractor,
        inputs: Inputs,
        image_size: int,
        optimizer: functools.partial,
        content_layers: Sequence[str],
        device: torch.device,
    ) -> None:
        self.extractor, self.inputs, self.image_size, self.device = extractor, inputs, image_size, device
        self.optimizer, self.content_layers = optimizer, list(content_layers)
        self.estimate = self.estimate_at(image_size)
        self.free = device_memory.available(device)
        self.before = device_memory.reset_peak(device)

    def estimate_at(self, size: int) -> Estimate:
        height, width = self.inputs.shape(size)
        return estimate(
            self.extractor, height, width, self.optimizer, self.content_layers, self.device.type,
            self.inputs.style_shapes(size),
        )

    def smallest_size(self) -> int:
        """The smallest image_size at which every requested layer sees a pixel of content and styles."""
        factor = self.extractor.deepest_downsampling
        return self.inputs.smallest_size(factor)

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
        if curvature_pairs(self.optimizer):
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
