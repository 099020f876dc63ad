"""What the machine at hand can do, and which speed settings to use there.

``pick_device`` turns ``device=...`` into a torch device, ``sweep_device`` gives
each job of a parallel sweep its own GPU, ``detect`` reads whether bf16 runs in
hardware, ``choose_speed`` turns ``precision=auto`` and ``channels_last=auto``
into settings with a reason for the log, ``describe_device`` names the
device for metrics and reports, and ``reuse_freed_memory`` keeps a CPU run's
freed memory for its next evaluation.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nst_exp.config import DEVICES, PRECISIONS, device_kind
from nst_exp.errors import NstError

CHANNELS_LAST = ("auto", "true", "false")
CPUINFO = Path("/proc/cpuinfo")
# CPU flags (Linux /proc/cpuinfo names, which torch.cpu.get_capabilities also uses)
# that run bf16 convolutions in hardware, best first.
BF16_FLAGS = {"amx_bf16": "AMX-BF16", "avx512_bf16": "AVX512-BF16"}
# The first CUDA compute capability (Ampere) with bf16 and TF32 tensor cores.
AMPERE = (8, 0)
# Measured on an AVX2 CPU (docs/speed.md): oneDNN emulates bf16 there.
EMULATED_BF16 = "so bf16 would run emulated (measured about 21 times slower than fp32 on an AVX2 CPU)"
# glibc's mallopt parameters (malloc.h). Once set, glibc's thresholds no longer adapt, so a run leaves them where
# they adapt to once blocks of 32 MiB have been freed (mmap above 32 MiB, trim above 64 MiB), not at their
# 128 KiB starting values: those would map and fault every block above 128 KiB in the work that follows.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4
SETTLED_TRIM_THRESHOLD, SETTLED_MMAP_THRESHOLD, DEFAULT_MMAP_MAX = 64 << 20, 32 << 20, 65536
MALLOC_ENVIRONMENT = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_")


@dataclass(frozen=True)
class Capabilities:
    """What a device offers the speed settings: ``native_bf16`` is whether bf16 runs in hardware there."""

    device_type: str  # cpu | cuda | mps
    native_bf16: bool
    why: str  # the evidence, for the log: "this CPU has AMX-BF16", "CUDA compute capability 9.0"
    fp32_channels_last: bool = False  # fp32 convolutions run faster NHWC: CPUs with AMX (docs/speed.md)


@dataclass(frozen=True)
class SpeedChoice:
    """The speed settings a run uses, and why, for the log."""

    precision_used: str  # fp32 | bf16 | tf32
    channels_last_used: bool
    reason: str


def pick_device(name: str) -> torch.device:
    """``auto`` -> cuda, then mps, then cpu; or ``cpu``, ``cuda``, ``cuda:N``, ``mps``, which must be available."""
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "mps": torch.backends.mps.is_available(),
    }
    if name == "auto":
        return torch.device(next(d for d in ("cuda", "mps", "cpu") if available[d]))
    kind = device_kind(name)
    if kind is None:
        raise NstError(f"device={name!r} is not one of {', '.join(DEVICES)}.")
    if not available[kind]:
        raise NstError(f"device={name} was asked for but is not available here. Use device=auto or device=cpu.")
    if name.startswith("cuda:") and int(name[5:]) >= (count := torch.cuda.device_count()):
        raise NstError(
            f"device={name} was asked for but this machine has {count} CUDA GPU{'s' if count != 1 else ''} "
            f"(cuda:0 to cuda:{count - 1}). Use device=cuda:0 up to cuda:{count - 1}, or device=auto."
        )
    return torch.device(name)


def sweep_device(name: str, job_num: int | None, gpu_count: int) -> str:
    """The device for one job of a sweep: with several GPUs, job ``n`` of a parallel sweep takes GPU ``n % gpu_count``.

    Only ``auto`` and ``cuda`` are spread; a named device (``cuda:1``, ``cpu``)
    is kept, and so is any device outside a sweep (``job_num`` None).
    """
    if name in ("auto", "cuda") and gpu_count > 1 and job_num is not None:
        return f"cuda:{job_num % gpu_count}"
    return name


def cpuinfo() -> dict[str, str]:
    """The first processor's fields in /proc/cpuinfo (``model name``, ``flags``, ...); empty where there is none."""
    try:
        text = CPUINFO.read_text()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags by their Linux names (``avx2``, ``avx512_bf16``, ``amx_bf16``, ...).

    From ``torch.cpu.get_capabilities()`` where this torch has it (it asks the
    CPU through cpuinfo, also off Linux); else the ``flags`` line of
    /proc/cpuinfo; else none.
    """
    get_capabilities = getattr(torch.cpu, "get_capabilities", None)
    if get_capabilities is not None:
        return frozenset(key for key, value in get_capabilities().items() if value is True)
    return frozenset(cpuinfo().get("flags", "").split())


def cpu_bf16(flags: frozenset[str]) -> str | None:
    """The CPU's bf16 instructions by name (``AMX-BF16``, ``AVX512-BF16``), or None where it has neither."""
    return next((name for flag, name in BF16_FLAGS.items() if flag in flags), None)


def detect(device: torch.device, flags: frozenset[str] | None = None) -> Capabilities:
    """Whether bf16 runs in hardware on ``device``; ``flags`` stands in for ``cpu_flags()`` (tests)."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        native = (major, minor) >= AMPERE
        why = f"CUDA compute capability {major}.{minor}"
        if not native:
            why += f" (bf16 and TF32 tensor cores need {AMPERE[0]}.{AMPERE[1]})"
        return Capabilities("cuda", native, why)
    if device.type == "mps":
        return Capabilities("mps", False, "Apple GPU (MPS), where bf16 has not been measured to pay")
    instructions = cpu_bf16(cpu_flags() if flags is None else flags)
    if instructions:
        return Capabilities(device.type, True, f"this CPU has {instructions}", instructions == BF16_FLAGS["amx_bf16"])
    return Capabilities(device.type, False, f"this CPU has neither AMX-BF16 nor AVX512-BF16, {EMULATED_BF16}")


def choose_speed(requested_precision: Any, requested_channels_last: Any, caps: Capabilities) -> SpeedChoice:
    """The precision and memory format a run uses.

    ``precision=auto``: bf16 where it runs in hardware (CPUs with AMX-BF16 or
    AVX512-BF16, CUDA GPUs from compute capability 8.0), fp32 elsewhere, MPS
    included. ``channels_last=auto``: on with bf16, where oneDNN (AMX,
    AVX512-BF16) and tensor cores pay for NHWC, and with fp32 on CPUs with AMX,
    where oneDNN's fp32 convolutions run NHWC faster too (whole runs 0.88-0.95x
    NCHW's time, Intel Xeon AMX-BF16; on an AVX2 CPU 1.04x). Explicit values are kept;
    tf32 off CUDA is an error. Either argument may be an Enum (its ``.value``
    is read) or a plain string; ``channels_last`` may be a bool.
    """
    precision = _setting("precision", requested_precision, PRECISIONS)
    channels_last = _setting("channels_last", requested_channels_last, CHANNELS_LAST)
    check_tf32(precision, caps.device_type)
    used = ("bf16" if caps.native_bf16 else "fp32") if precision == "auto" else precision
    if channels_last == "auto":
        nhwc = used == "bf16" or (used == "fp32" and caps.fp32_channels_last)
    else:
        nhwc = channels_last == "true"
    head = used if precision == "auto" else f"{used} (as asked)"
    if nhwc:
        head += " + channels_last" if channels_last == "auto" else " + channels_last (as asked)"
    elif channels_last == "false" and used == "bf16":
        head += ", channels_last off (as asked)"
    return SpeedChoice(used, nhwc, f"{head}: {caps.why}")


def check_tf32(precision: str, device_type: str) -> None:
    """Refuse ``precision=tf32`` off CUDA: TensorFloat-32 runs on CUDA's tensor cores only.

    The rule's one statement: choose_speed applies it to a run's settings before the
    network loads, FeatureExtractor.speed to a network set up directly.
    """
    if precision == "tf32" and device_type != "cuda":
        raise NstError(
            f"precision=tf32 needs a CUDA GPU (TensorFloat-32 runs on its tensor cores); this run is on "
            f"{device_type}. Use precision=fp32 or precision=auto (bf16 where the device runs it natively)."
        )


def _setting(key: str, value: Any, allowed: tuple[str, ...]) -> str:
    """A speed setting as one of ``allowed``: an Enum's value, a bool, or a string in any case."""
    value = getattr(value, "value", value)
    text = str(value).lower()
    if text not in allowed:
        raise NstError(f"{key}={value!r} is not one of {', '.join(allowed)}.")
    return text


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what ``platform`` knows."""
    return cpuinfo().get("model name") or platform.processor() or platform.machine()


def describe_device(device: torch.device) -> str:
    """The device for metrics and reports: the GPU's name, or the CPU's model with its vector ISA and bf16 support.

    E.g. "NVIDIA H100 80GB HBM3", "AMD EPYC (AVX2, no native bf16)",
    "Intel(R) Xeon(R) Platinum 8480+ (AVX512, AMX-BF16)".
    """
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return f"Apple GPU (MPS), {cpu_model()}"
    bf16 = cpu_bf16(cpu_flags()) or "no native bf16"
    return f"{cpu_model()} ({torch.backends.cpu.get_cpu_capability()}, {bf16})"


@contextlib.contextmanager
def reuse_freed_memory(device: torch.device) -> Iterator[bool]:
    """While entered, a CPU run keeps the memory it frees for its next evaluation; yields whether it does.

    Every evaluation frees its feature maps and the next allocates the same sizes again.
    glibc's malloc hands large freed blocks back to the system (unmapping them, trimming the
    heap) and takes them back as fresh zeroed pages: thousands of page faults an evaluation
    (docs/speed.md). Here malloc serves every block from its heap and keeps what is freed;
    on exit malloc maps large blocks again and ``malloc_trim`` returns the memory to the system.
    Nothing changes on a GPU, without glibc, or where MALLOC_* variables tune malloc already.
    """
    libc = _glibc() if device.type == "cpu" and not any(name in os.environ for name in MALLOC_ENVIRONMENT) else None
    if libc is None:
        yield False
        return
    libc.mallopt(M_MMAP_MAX, 0)
    libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)  # an int; trimming starts above 2 GiB of free heap top
    try:
        yield True
    finally:
        libc.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
        libc.mallopt(M_MMAP_THRESHOLD, SETTLED_MMAP_THRESHOLD)
        libc.mallopt(M_TRIM_THRESHOLD, SETTLED_TRIM_THRESHOLD)
        libc.malloc_trim(0)


def _glibc() -> Any:
    """The C library when it is glibc (mallopt and malloc_trim are glibc's), else None."""
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"):
            return None
        libc = ctypes.CDLL(None)
    except (ValueError, OSError, AttributeError):  # no such confstr name (not glibc), no C library to load
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
