"""Files written whole or not at all: a kill or a full disk never leaves half a file under its name."""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_write(path: Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a per-process temp file beside ``path``; on success, flush it to disk and rename it over ``path``.

    A kill or an error leaves ``path`` as it was and removes the temp file, so
    no half-written file ever carries the final name or fills a disk.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        with open(partial, mode) as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as JSON atomically, NaN and inf as null."""
    with atomic_write(path) as out:
        out.write(json.dumps(finite_or_none(data), indent=2, sort_keys=False, default=str) + "\n")


def finite_or_none(value: Any) -> Any:
    """``value`` with every NaN and inf (at any depth) replaced by None, as JSON wants."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value
