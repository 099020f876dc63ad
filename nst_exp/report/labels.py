"""How the paper labels a swept value: "relu1_1 ... relu3_1", "alpha/beta = 1e-4", a config group's option."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from nst_exp.report.sweep import Sweep, ratio

LAYER = re.compile(r"^(conv|relu)(\d+)_(\d+)$")


def number_label(value: float) -> str:
    """1e-4 -> "1e-4", 0.0025 -> "2.5e-3": the paper's way of writing alpha/beta."""
    if value == 0:
        return "0"
    mantissa, exponent = f"{value:.3e}".split("e")
    return f"{float(mantissa):g}e{int(exponent)}"


def ratio_label(alpha: Any, beta: Any) -> str:
    value = ratio(alpha, beta)
    return "beta = 0" if value is None else f"alpha/beta = {number_label(value)}"


def layers_label(layers: Sequence[str]) -> str:
    """A growing set relu1_1, relu2_1, relu3_1 -> "relu1_1 ... relu3_1"; other lists in full."""
    if not layers:
        return "none"
    parsed = [LAYER.match(str(layer)) for layer in layers]
    growing = (
        len(layers) >= 3
        and all(parsed)
        and len({(m.group(1), m.group(3)) for m in parsed}) == 1
        and [int(m.group(2)) for m in parsed] == list(range(int(parsed[0].group(2)), int(parsed[0].group(2)) + len(layers)))
    )
    return f"{layers[0]} ... {layers[-1]}" if growing else ", ".join(map(str, layers))


def setting(settings: dict[str, Any], key: str) -> Any:
    """``settings["a"]["b"]`` for key "a.b"; None if absent."""
    node: Any = settings
    for part in key.lstrip("+~").split("@")[0].split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def value_label(sweep: Sweep, key: str, job: int) -> str:
    """How the paper would label ``key``'s value in ``job``."""
    settings, choices = sweep.settings[job], sweep.choices[job]
    if key in ("alpha", "beta"):
        return ratio_label(settings.get("alpha"), settings.get("beta"))
    if key in choices:
        label = str(choices[key])
        ratios = sweep.jobs["alpha/beta"].dropna().unique()
        if len(ratios) > 1 and "alpha" not in sweep.swept and "beta" not in sweep.swept:
            label += "\n" + ratio_label(settings.get("alpha"), settings.get("beta"))
        return label
    value = setting(settings, key)
    if isinstance(value, list):
        return layers_label(value)
    if value is None:
        value = sweep.jobs.at[job, key]
    if isinstance(value, float):
        value = f"{value:g}"
    return f"{key} = {value}"


def axis_title(keys: Sequence[str]) -> str:
    return " x ".join("alpha/beta" if key in ("alpha", "beta") else key for key in keys)
