"""nst_exp: configuration-driven neural style transfer experiments (Gatys et al.).

    from nst_exp import stylize, compose, run, Result, NstError
    result = stylize("photo.jpg", "painting.jpg", image_size=256, beta=1e4)

``stylize`` and ``compose`` (nst_exp.api), the runner ``run`` (nst_exp.runner), the
sweep report ``build_report`` and ``read_sweep`` (nst_exp.report) and the picture
scores ``evaluate_run`` (nst_exp.evaluate) and ``score`` (nst_exp.picture_scores) are imported on first
use, so ``import nst_exp`` stays light (no torch). docs/api.md is the reference.
"""

from __future__ import annotations

import importlib
from typing import Any

from nst_exp.errors import ConfigError, NstError
from nst_exp.results import Result

__version__ = "0.1.0"

# Public name -> the module that defines it, imported when the name is first used.
LAZY = {
    "compose": "nst_exp.api",
    "stylize": "nst_exp.api",
    "run": "nst_exp.runner",
    "build_report": "nst_exp.report",
    "read_sweep": "nst_exp.report",
    "evaluate_run": "nst_exp.evaluate",
    "score": "nst_exp.picture_scores",
}

__all__ = ["ConfigError", "NstError", "Result", *LAZY]


def __getattr__(name: str) -> Any:
    if name not in LAZY:
        raise AttributeError(f"module 'nst_exp' has no attribute '{name}'")
    module = importlib.import_module(LAZY[name])
    return getattr(module, name)


def __dir__() -> list[str]:
    return sorted({*globals(), *LAZY})
