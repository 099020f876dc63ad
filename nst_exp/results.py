"""The contract of a run directory, free of torch: its file names, status values, and how they are written.

A run directory holds ``result.png``, ``metrics.json`` (whose ``status`` is a
:class:`Status` value), ``inputs/``, ``snapshots/``, ``checkpoints/``, the
TensorBoard events and Hydra's ``.hydra/``. The report, the evaluation command
and the runner all read and write it through this module.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Mapping, Sequence

METRICS_FILE = "metrics.json"
RESULT_FILE = "result.png"
REPORT_MANIFEST = ".nst_exp_report.json"  # in a report folder: the files nst_exp.report wrote there
INPUTS_DIR = "inputs"
SNAPSHOTS_DIR = "snapshots"
RECORD_DIR = ".hydra"  # the run's config as Hydra records it; nst_exp.report finds runs by it
# The picture scores (nst_exp.evaluate) a finished run records, network-free.
EVAL_PREFIX = "eval/"  # the picture scores: one value per finished run, network-free
SCORES = ("eval/content_ssim", "eval/style_swd", "eval/color_distance")
# The final values every finished run records: what a sweep may optimise (``objective``), what TensorBoard's
# HParams view compares.
FINAL_VALUES = ("loss/total", "loss/content", "loss/style", *SCORES)


class Status(str, Enum):
    """How a run ended; the value is what metrics.json and checkpoints store."""

    RUNNING = "running"  # a checkpoint written mid-run
    COMPLETED = "completed"
    DIVERGED = "diverged"  # the loss turned NaN or infinite; the last finite image is kept
    INTERRUPTED = "interrupted"  # Ctrl-C or SIGTERM; continue with resume=
    OUT_OF_MEMORY = "out_of_memory"
    FAILED = "failed"  # refused or broken before it could finish

    def __str__(self) -> str:
        return self.value

    @property
    def finished(self) -> bool:
        """A run that will not continue by itself: completed or diverged."""
        return self in FINISHED


# A finished run's statuses: its result stands (a diverged run kept its last finite image) and it wrote result.png.
FINISHED = (Status.COMPLETED, Status.DIVERGED)


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


def write_record(folder: Path, config: Any, hydra_root: Any, overrides: Sequence[str]) -> None:
    """Hydra's record of a run in ``folder``: config.yaml, hydra.yaml (``{"hydra": ...}``) and overrides.yaml, each atomically.

    The command line and the Python API write it once a run directory is known
    to be the run's own, so a refused run never relabels another.
    """
    from omegaconf import OmegaConf

    files = {"config.yaml": config, "hydra.yaml": hydra_root, "overrides.yaml": list(overrides)}
    for name, node in files.items():
        with atomic_write(Path(folder) / name) as out:
            out.write(OmegaConf.to_yaml(node))


def read_metrics(run_dir: Path) -> dict[str, Any]:
    """A run's metrics.json; ValueError for one that is not JSON (truncated) or not a JSON object."""
    metrics = json.loads((Path(run_dir) / METRICS_FILE).read_text())
    if not isinstance(metrics, dict):
        raise ValueError(f"it holds a JSON {type(metrics).__name__}, not an object")
    return metrics


def inputs_used(settings: Mapping[str, Any]) -> frozenset[str]:
    """Which of "content" and "style" a run's result was made with, from its resolved config.

    An image is used when its term of the objective has a nonzero weight on some layer
    (alpha and content_layers, beta and style_layers) or when the run started from it
    (init.kind). Fig. 1's content reconstructions never see the painting, nor its style
    reconstructions the photo's pixels. A config that does not say (an older or a foreign
    run) counts as using both.
    """
    used = set()
    for name, weight, layers in (("content", "alpha", "content_layers"), ("style", "beta", "style_layers")):
        if weight not in settings or layers not in settings:
            used.add(name)
        elif (settings[weight] and settings[layers]) or (settings.get("init") or {}).get("kind") == name:
            used.add(name)
    return frozenset(used)


def nearest_existing(path: Path) -> Path:
    """``path`` (absolute, ``~`` expanded) or the nearest folder above it that exists: where making it would start."""
    existing = Path(path).expanduser().absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return existing


def job_dirs(root: Path) -> list[Path]:
    """The run directories at or under ``root``: those Hydra gave a ``.hydra/config.yaml``, sorted by path.

    Not the copies a self-contained report keeps of its jobs' records (under a folder holding
    ``REPORT_MANIFEST``): a sweep with its report inside is still the same jobs.
    """
    return outside_reports(root, {path.parent.parent for path in Path(root).rglob(f"{RECORD_DIR}/config.yaml")})


def outside_reports(root: Path, folders: Iterable[Path]) -> list[Path]:
    """``folders`` (under ``root``), sorted, less those inside a report folder: a self-contained report's copies."""
    reports = {manifest.parent for manifest in Path(root).rglob(REPORT_MANIFEST)}
    return sorted(folder for folder in folders if not reports.intersection(folder.parents))


def finite_or_none(value: Any) -> Any:
    """``value`` with every NaN and inf (at any depth) replaced by None, as JSON wants."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def flatten(node: Any, prefix: str = "", lists_as_text: bool = False, private: bool = True) -> dict[str, Any]:
    """Nested dicts -> {"prefix.a.b": value}.

    ``lists_as_text`` writes a list as "[x, y]" so a table cell holds one value;
    ``private=False`` drops keys that start with ``_`` (``_target_``).
    """
    if isinstance(node, Mapping):
        flat: dict[str, Any] = {}
        for key, value in node.items():
            if private or not str(key).startswith("_"):
                flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key), lists_as_text, private))
        return flat
    if isinstance(node, (list, tuple)) and lists_as_text:
        return {prefix: "[" + ", ".join(str(item) for item in node) + "]"}
    return {prefix: node}


def record_failure(run_dir: Path, message: str, so_far: Mapping[str, Any] | None = None) -> None:
    """metrics.json for a run that could not start or finish, so a sweep's report lists it.

    ``so_far`` is what the run measured before it stopped. A finished run's
    metrics.json is never replaced by a later attempt's failure.
    """
    path = Path(run_dir) / METRICS_FILE
    try:
        finished = Status(read_metrics(run_dir).get("status")).finished
    except (OSError, ValueError):  # none yet, unreadable, or no known status
        finished = False
    if finished and not so_far:
        return
    so_far = dict(so_far or {})
    write_json(path, {**so_far, "status": so_far.get("status", Status.FAILED), "message": message})


@dataclass
class Result:
    """What a run gives back: the image, its tensor, its metrics (metrics.json's dict) and its directory.

    ``run_dir`` is None for a run kept in memory (``stylize(..., out_dir=None)``).
    """

    image: Any  # PIL.Image.Image, RGB
    tensor: Any  # torch.Tensor (1, 3, H, W) in [0, 1], on the CPU
    metrics: dict[str, Any]
    run_dir: Path | None = None

    @property
    def status(self) -> Status:
        return Status(self.metrics["status"])

    @property
    def loss(self) -> float:
        """The final total loss (NaN if the run has none)."""
        value = self.metrics.get("loss/total")
        return float("nan") if value is None else float(value)

    def __repr__(self) -> str:
        where = f", run_dir={str(self.run_dir)!r}" if self.run_dir else ""
        size = getattr(self.image, "size", None)
        return f"Result(status={self.status.value}, loss={self.loss:.6g}, size={size}{where})"
