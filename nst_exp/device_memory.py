"""What the system says about memory: how much is free now, and the peak of a span of the run.

On CUDA ``torch.cuda.mem_get_info`` and the allocator's reserved memory; on the
CPU ``MemAvailable`` of /proc/meminfo (and the process's cgroup limits, if
lower) and the resident set size from /proc/self/status. Where the system does
not say (macOS, Windows), ``available`` returns ``UNKNOWN_FREE`` and the peak is 0.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

try:
    import resource
except ImportError:  # Windows: no ru_maxrss; the peak is unknown there (peak_rss_bytes)
    resource = None

NO_LIMIT = 1 << 60  # cgroup v1 writes "no limit" as a huge number (9223372036854771712)
UNKNOWN_FREE = 1 << 62  # what _meminfo_available returns where the OS does not say: the guard cannot refuse


def available(device: torch.device) -> int:
    """Bytes free on ``device`` now: CUDA's free memory, or the CPU's available memory."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    free = _meminfo_available()
    limit = cgroup_room()
    return min(free, limit) if limit is not None else free


def _meminfo_available() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # macOS has no SC_AVPHYS_PAGES, Windows no sysconf
        return UNKNOWN_FREE


def cgroup_room(proc_cgroup: Path = Path("/proc/self/cgroup"), root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Room left under this process's own cgroup memory limits, or None without any.

    ``proc_cgroup`` names the process's cgroups: v2's ``0::/path`` ->
    ``root/path/memory.max`` and ``memory.current``; v1's memory controller
    (``N:memory:/path``) -> ``root/memory/path/memory.limit_in_bytes`` and
    ``memory.usage_in_bytes``. Every level from the process's cgroup up to the
    mount's root counts (a parent's limit binds its children too) and the
    smallest room wins. A path not visible under ``root`` (a container without
    its own cgroup namespace) falls back to the mount's root, which is then the
    container's cgroup.
    """
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    rooms: list[int] = []
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and not controllers:
            rooms += _rooms_up(root, path, "memory.max", "memory.current")
        elif "memory" in controllers.split(","):
            rooms += _rooms_up(root / "memory", path, "memory.limit_in_bytes", "memory.usage_in_bytes")
    return min(rooms) if rooms else None


def _rooms_up(mount: Path, path: str, limit_file: str, usage_file: str) -> list[int]:
    """limit - usage at each level from ``mount/path`` up to ``mount`` that has a limit."""
    folder = mount / path.strip("/")
    if not folder.is_dir():
        folder = mount
    rooms = []
    while True:
        limit = _read_bytes(folder / limit_file)
        if limit is not None and limit < NO_LIMIT:
            rooms.append(max(limit - (_read_bytes(folder / usage_file) or 0), 0))
        if folder == mount or folder == folder.parent:
            return rooms
        folder = folder.parent


def _read_bytes(path: Path) -> int | None:
    """A cgroup file's number of bytes; None if absent, unreadable or 'max'."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def reset_peak(device: torch.device) -> int | None:
    """Start a new peak measurement on ``device`` and return the memory in use now (None where unknown).

    On CUDA it resets the allocator's peak statistics and returns the reserved
    memory; on the CPU it resets the process's peak RSS (VmHWM) to its current
    RSS through /proc/self/clear_refs and returns that RSS. Without /proc
    nothing is reset: the peak then includes what came before (the network's construction).
    """
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return int(torch.cuda.memory_reserved(device))
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to VmRSS
        return proc_status_bytes("VmRSS")
    except OSError:
        return None


def peak_bytes(device: torch.device) -> int:
    """Peak memory since ``reset_peak``: CUDA's reserved peak, or the peak RSS."""
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
        pass
    if resource is None:
        return 0  # Windows: unknown; metrics.json then shows no measured peak for the CPU
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is in bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def proc_status_bytes(field: str) -> int:
    """A memory field of /proc/self/status (``VmRSS``, ``VmHWM``) in bytes; OSError or StopIteration without it."""
    status = Path("/proc/self/status").read_text()
    return next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith(f"{field}:"))
