"""What a run leaves in its directory: metrics.json beside result.png and the TensorBoard events."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

METRICS_FILE = "metrics.json"
RESULT_FILE = "result.png"


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as JSON atomically (write, then rename), NaN and inf as null."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.part")
    partial.write_text(json.dumps(_finite_or_none(data), indent=2, sort_keys=False) + "\n")
    os.replace(partial, path)


def read_metrics(run_dir: Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / METRICS_FILE).read_text())


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    return value
