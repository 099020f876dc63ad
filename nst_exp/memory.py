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
  384 px; the README ("Long runs") gives the error at 128, 256 and 512 px.
  On CUDA the count is used as it is (not measured here: no GPU).

It is compared with what the device has free: on CUDA ``torch.cuda.mem_get_info``,
on the CPU ``MemAvailable`` of /proc/meminfo (and the cgroup's limit, if lower).
"""

from __future__ import annotations

import logging
import os
import resource
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nst_exp.errors import NstError
from nst_exp.features import FeatureExtractor

log = logging.getLogger(__name__)

FLOAT_BYTES = 4
GIB = 1024**3
LOOP_IMAGES = 8  # image-sized tensors the loop holds besides the optimizer's
BACKWARD_ACTIVATIONS = 2  # largest activations alive at once as gradients during backward
# Working vectors besides the stored state: L-BFGS's gradient, direction, previous gradient and
# two temporaries of the two-loop recursion; Adam's two temporaries.
OPTIMIZER_VECTORS = {"torch.optim.LBFGS": 5, "torch.optim.Adam": 4, "torch.optim.AdamW": 4}
# CPU overhead, fitted on peak RSS measured at 192 and 384 px (README, "Long runs").
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

    @property
    def total(self) -> int:
        return self.activations + self.optimizer + self.images + self.weights + self.overhead

    def describe(self) -> str:
        parts = ", ".join(
            f"{name} {gib(value)}"
            for name, value in (
                ("activations", self.activations),
                ("optimizer state", self.optimizer),
                ("images and targets", self.images),
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


def estimate(
    extractor: FeatureExtractor,
    height: int,
    width: int,
    optimizer: Any,
    content_layers: list[str],
    device_type: str,
) -> Estimate:
    """Peak bytes of optimising a ``height`` x ``width`` image through ``extractor`` on ``device_type``.

    On the CPU the weights already sit in the memory being checked (the
    network was built there), so they need no new room.
    """
    pixels = 3 * height * width
    saved, largest, targets = pixels, 0, 0
    channels, h, w = 3, height, width
    for name, module in extractor.body.named_children():
        if isinstance(module, nn.Conv2d):
            channels = module.out_channels
            h = (h + 2 * module.padding[0] - module.kernel_size[0]) // module.stride[0] + 1
            w = (w + 2 * module.padding[1] - module.kernel_size[1]) // module.stride[1] + 1
        elif isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
            kernel, stride = _pair(module.kernel_size), _pair(module.stride or module.kernel_size)
            h, w = (h - kernel[0]) // stride[0] + 1, (w - kernel[1]) // stride[1] + 1
        size = channels * h * w
        largest = max(largest, size)
        if isinstance(module, (nn.ReLU, nn.AvgPool2d)):
            saved += size
        elif isinstance(module, nn.MaxPool2d):
            saved += 3 * size  # the output and its int64 indices
        if name in content_layers:
            saved += size  # (F - P), kept for the square's gradient
            targets += size
        if name in extractor.requested:
            targets += 2 * channels * channels  # the Gram target and the current Gram
    activations = (saved + BACKWARD_ACTIVATIONS * largest) * FLOAT_BYTES
    on_cpu = device_type == "cpu"
    return Estimate(
        activations=activations,
        optimizer=optimizer_vectors(optimizer) * pixels * FLOAT_BYTES,
        images=(LOOP_IMAGES * pixels + targets) * FLOAT_BYTES,
        weights=0 if on_cpu else sum(p.numel() for p in extractor.parameters()) * FLOAT_BYTES,
        overhead=round((CPU_ACTIVATION_FACTOR - 1) * activations) + CPU_FIXED_BYTES if on_cpu else 0,
    )


def _pair(value: Any) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def available(device: torch.device) -> int:
    """Bytes free on ``device`` now: CUDA's free memory, or the CPU's available memory."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    free = _meminfo_available()
    limit = _cgroup_room()
    return min(free, limit) if limit is not None else free


def _meminfo_available() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _cgroup_room() -> int | None:
    """Room left under a cgroup memory limit (v2, then v1), if there is one."""
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        try:
            limit, usage = Path(limit_file).read_text().strip(), Path(usage_file).read_text().strip()
        except OSError:
            continue
        if limit.isdigit() and int(limit) < 1 << 60:
            return max(int(limit) - int(usage), 0)
    return None


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
    """Checks a run before it starts and explains an out-of-memory error during it."""

    def __init__(
        self,
        extractor: FeatureExtractor,
        shape: tuple[int, int],
        image_size: int,
        cfg: Any,
        device: torch.device,
    ) -> None:
        self.extractor, self.image_size, self.device = extractor, image_size, device
        self.optimizer, self.content_layers = cfg.optimizer, list(cfg.content_layers)
        self.aspect = (shape[0] / max(shape), shape[1] / max(shape))
        self.estimate = self._estimate(shape)
        self.free = available(device)
        self.before = current_bytes(device)

    def _estimate(self, shape: tuple[int, int]) -> Estimate:
        return estimate(self.extractor, shape[0], shape[1], self.optimizer, self.content_layers, self.device.type)

    def _shape(self, size: int) -> tuple[int, int]:
        return max(1, round(self.aspect[0] * size)), max(1, round(self.aspect[1] * size))

    def fitting_size(self) -> int:
        return largest_size(lambda size: self._estimate(self._shape(size)).total <= self.free, self.image_size)

    def advice(self) -> str:
        """What would fit: the largest image_size, and what L-BFGS's history costs."""
        fitting = self.fitting_size()
        advice = (
            f"image_size={fitting} is the largest that fits"
            if fitting
            else "No image_size fits: free memory or use shallower layers"
        )
        if "history_size" in self.optimizer:
            pair = 2 * self.estimate.optimizer // optimizer_vectors(self.optimizer)
            advice += f", or lower optimizer.history_size (each curvature pair costs {gib(pair)})"
        return advice

    def check(self, enabled: bool) -> None:
        """Refuse (or, if not ``enabled``, warn) when the estimate exceeds the free memory."""
        needs = f"image_size={self.image_size} needs about {self.estimate.describe()} on {self.device}"
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
        return (
            f"{message}. The run was estimated to need {self.estimate.describe()} with {gib(self.free)} free "
            f"on {self.device} at the start. {checkpoint} To start again with less: {self.advice()}."
        )

    def measured(self) -> dict[str, int | float | None]:
        """The estimate beside the measured peak, for metrics.json."""
        peak = max(peak_bytes(self.device), self.before or 0)  # another thread may shrink RSS after the reset
        return {
            "memory_estimate_bytes": self.estimate.total,
            "memory_free_bytes": self.free,
            "memory_before_bytes": self.before,
            "memory_peak_bytes": peak,
            "memory_estimate_error": (
                (self.before + self.estimate.total - peak) / peak if peak and self.before is not None else None
            ),
        }


def current_bytes(device: torch.device) -> int | None:
    """Memory in use now, where a new peak measurement starts: CUDA's reserved memory, or the RSS."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return int(torch.cuda.memory_reserved(device))
    global _PEAK_BEFORE_RESET
    try:
        _PEAK_BEFORE_RESET = max(_PEAK_BEFORE_RESET, peak_rss_bytes())
        Path("/proc/self/clear_refs").write_text("5")  # resets the peak RSS (VmHWM) to the current RSS
        return proc_status_bytes("VmRSS")
    except OSError:
        return None  # no reset: the peak would include the network's construction


_PEAK_BEFORE_RESET = 0  # the highest VmHWM that current_bytes reset


def process_peak_rss_bytes() -> int:
    """The peak RSS of the whole process so far, across the resets current_bytes makes."""
    return max(_PEAK_BEFORE_RESET, peak_rss_bytes())


def peak_bytes(device: torch.device) -> int:
    """Peak memory since ``current_bytes``: CUDA's reserved peak, or the peak RSS."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_reserved(device))
    return peak_rss_bytes()


def peak_rss_bytes() -> int:
    """This process's peak RSS: VmHWM where /proc has it, else ru_maxrss.

    ru_maxrss also keeps the peak of what the process was before exec: a child
    forked from a large process (a benchmark, a launcher) would report its parent's size.
    """
    try:
        return proc_status_bytes("VmHWM")
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def proc_status_bytes(field: str) -> int:
    """A memory field of /proc/self/status (``VmRSS``, ``VmHWM``) in bytes; OSError or StopIteration without it."""
    status = Path("/proc/self/status").read_text()
    return next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith(f"{field}:"))
