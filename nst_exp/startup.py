"""How long a run takes to start: metrics.json's ``seconds_to_first_iteration`` and its parts.

The clock starts when the user asked. For the command line's first job that is the
process start, so the interpreter, the imports (torch, torchvision) and Hydra's
config count; for a later job of the same process (a sweep's basic launcher) and for
``stylize()`` or ``run()`` from Python, the call. All times are ``time.perf_counter()``
values; torch-free, as the entry point imports it before torch.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

IMPORTED = time.perf_counter()  # the process start where /proc cannot say (macOS, Windows)
PROC_STAT = Path("/proc/self/stat")
# More than an interpreter takes to reach nst_exp's entry point, even on a loaded machine: a process older than that
# when the entry point loaded ran something else first.
EXEC_GAP_S = 5.0


def process_start() -> float:
    """When this process started, as a ``time.perf_counter()`` value.

    From the start time Linux records (/proc/self/stat, to 1/100 s) against the
    boot-time clock; elsewhere when this module was imported, which misses the
    interpreter's start and the imports before it. A process that ran other
    commands before it became Python keeps their start time: ``bash -c "pip
    install ... && python -m nst_exp ..."`` runs its last command by exec, in
    bash's own process. Such a process has waited for children already (it
    holds their CPU time, fields 16 and 17, which a fresh interpreter has not)
    or started more than EXEC_GAP_S before this module was imported; its wait
    counts from the import.
    """
    try:
        fields = PROC_STAT.read_text().rsplit(")", 1)[1].split()  # fields 1-2 end at the ')': fields[0] is field 3
        ticks, children_ticks = int(fields[19]), int(fields[13]) + int(fields[14])  # starttime; cutime + cstime
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):  # no /proc, or no CLOCK_BOOTTIME
        return IMPORTED
    started = time.perf_counter() - age
    if children_ticks > 0 or IMPORTED - started > EXEC_GAP_S:
        return IMPORTED
    return started


@dataclass
class StartUp:
    """The ``time.perf_counter()`` moments of one run's start, turned into metrics.json's seconds."""

    asked: float  # the user's wait began: the process start (the command line's first job), else the call
    called: float  # run() was called
    network: float = 0.0  # seconds to build the network and load its weights
    targets: float = 0.0  # seconds for the first stage's objective: the content and style images through the network
    first_iteration: float | None = None  # the first iteration of this session ended (None: it ran none)

    def metrics(self) -> dict[str, Any]:
        """``seconds_to_first_iteration`` and the parts that precede it, for metrics.json."""
        return {
            "seconds_to_first_iteration": None if self.first_iteration is None else self.first_iteration - self.asked,
            "seconds_start_up": self.called - self.asked,
            "seconds_network_load": self.network,
            "seconds_style_targets": self.targets,
        }


class FirstIteration:
    """A callback that notes when the run's first iteration ends, into ``startup.first_iteration``."""

    def __init__(self, startup: StartUp) -> None:
        self.startup = startup

    def on_step(self, step: Any) -> None:
        if self.startup.first_iteration is None:
            self.startup.first_iteration = time.perf_counter()

    def on_end(self, outcome: Any) -> None:
        pass
