"""What a job returns to a sweeper: the metrics.json values that ``objective`` names.

``objective: [loss/total]`` (the default) returns one float, as Hydra's basic
sweeper and a single-objective Optuna search expect; two or more names return
a tuple in their order, one value per ``direction`` of a multi-objective
search (conf/hparams_search/balance.yaml); ``objective_weights`` sums them
into one float instead (conf/hparams_search/balance_scalar.yaml). A run that
failed returns NaN in the same shape.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from nst_exp.errors import NstError, did_you_mean
from nst_exp.results import FINAL_VALUES

OBJECTIVES = FINAL_VALUES  # written to metrics.json by every run that finishes: final losses, then eval/* scores
Value = float | tuple[float, ...]


def check(names: Sequence[str], weights: Sequence[float] | None = None) -> None:
    """Refuse an objective a run does not record, or weights that do not pair with it, before the run starts."""
    if not names:
        raise NstError(
            "objective is empty: name the metrics.json keys a job returns to the sweeper, "
            f"e.g. objective=[loss/total]. Known: {', '.join(OBJECTIVES)}."
        )
    for name in names:
        if name not in OBJECTIVES:
            raise NstError(
                f"Unknown objective '{name}': metrics.json has no such key.{did_you_mean(name, OBJECTIVES)} "
                f"Known: {', '.join(OBJECTIVES)}."
            )
    if weights is not None and len(weights) != len(names):
        raise NstError(
            f"objective_weights has {len(weights)} value{'' if len(weights) == 1 else 's'} for {len(names)} "
            f"objective{'' if len(names) == 1 else 's'} ({', '.join(names)}). Give one weight per name, "
            "or objective_weights=null to return each value."
        )


def select(metrics: Mapping[str, Any], names: Sequence[str], weights: Sequence[float] | None = None) -> Value:
    """The named values of ``metrics`` (a run's metrics.json): a float for one name or with weights, else a tuple.

    A value the run did not record (or recorded as null) is NaN, which a sweeper counts as a failed trial.
    """
    values = tuple(_number(metrics.get(name)) for name in names)
    if weights is not None:
        return math.fsum(weight * value for weight, value in zip(weights, values))
    return values[0] if len(values) == 1 else values


def failed(names: Sequence[str], weights: Sequence[float] | None = None) -> Value:
    """What a failed job returns: NaN, as many as a finished job would return (one for an empty objective)."""
    return select({}, names, weights) if names else math.nan


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)
