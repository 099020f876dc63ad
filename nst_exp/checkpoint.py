"""Checkpoints: what a run needs to continue exactly, written atomically, the previous one kept.

A run dir holds ``checkpoints/last.pt`` and ``checkpoints/previous.pt``. Each
holds the image being optimised, the optimizer's state (L-BFGS's history
included), the iteration and evaluation counts, the RNG states, the resolved
config, a fingerprint of the objective and a checksum of all of it. A new
checkpoint is written to a temporary file, synced, and renamed over
``last.pt`` after the old one became ``previous.pt``: a kill at any moment
leaves at least one whole checkpoint. A file that cannot be read, or whose
checksum does not match, is set aside and the previous one is used.

Files load with ``torch.load(weights_only=True)``: nothing in them runs code.

Checksum hand-written: torch.save offers none to verify; safetensors holds flat tensors, not L-BFGS or RNG state.

Whether a run dir holds a checkpoint (``exists``, ``directory``) needs no torch: the
command line asks before a run starts, so torch and numpy load in the functions that use them.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nst_exp.atomic import atomic_write
from nst_exp.errors import NstError
from nst_exp.results import RunDir, Status

if TYPE_CHECKING:
    from torch import Tensor, nn

    from nst_exp.optimize import State

log = logging.getLogger(__name__)

LAST, PREVIOUS = "last.pt", "previous.pt"
FORMAT = 1
# Relative difference of a fingerprint entry (sum of a buffer) that still counts as the same.
FINGERPRINT_RTOL = 1e-4


@dataclass
class Checkpoint:
    """One checkpoint file's content."""

    state: State
    config: dict[str, Any]  # the run's resolved config
    status: Status
    seconds: float  # optimisation time so far, over all sessions
    fingerprint: dict[str, list[float]]  # per objective buffer: [sum, sum of |x|]
    resumed: list[int] = field(default_factory=list)  # iterations the run was resumed from
    rng: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None  # the file it was read from


def directory(run_dir: Path) -> Path:
    return RunDir(run_dir).checkpoints


def exists(run_dir: Path) -> bool:
    return any((directory(run_dir) / name).is_file() for name in (LAST, PREVIOUS))


def save(run_dir: Path, checkpoint: Checkpoint) -> Path:
    """Write ``checkpoint`` as ``last.pt``; the old ``last.pt`` becomes ``previous.pt``."""
    import torch

    folder = directory(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    state = checkpoint.state
    payload = {
        "format": FORMAT,
        "image": state.image.detach().cpu(),
        "iteration": state.iteration,
        "evaluations": state.evaluations,
        "optimizer": _to_cpu(state.optimizer),
        "config": checkpoint.config,
        "status": str(checkpoint.status),
        "seconds": checkpoint.seconds,
        "fingerprint": checkpoint.fingerprint,
        "resumed": list(checkpoint.resumed),
        "rng": checkpoint.rng,
    }
    payload["checksum"] = _checksum(payload)
    last = folder / LAST
    with atomic_write(folder / f"{LAST}.new", "wb") as out:
        try:
            torch.save(payload, out)
        except RuntimeError as error:  # torch's zip writer wraps the OSError of a full disk
            cause = error.__cause__ or error.__context__
            if isinstance(cause, OSError):
                raise cause from None
            raise OSError(errno.EIO, f"torch could not write the checkpoint ({error})", str(last)) from error
    if last.is_file():
        os.replace(last, folder / PREVIOUS)
    os.replace(folder / f"{LAST}.new", last)
    return last


def discard_previous(run_dir: Path) -> None:
    """Drop ``previous.pt`` (a finished run needs only its last checkpoint)."""
    (directory(run_dir) / PREVIOUS).unlink(missing_ok=True)


def load(run_dir: Path) -> Checkpoint:
    """The newest whole checkpoint in ``run_dir``: ``last.pt``, else ``previous.pt``.

    A file that exists but cannot be read is renamed to ``*.unreadable`` (kept
    for inspection, out of the rotation) and the previous one is used.
    """
    folder = directory(run_dir)
    problems = []
    for name in (LAST, PREVIOUS):
        path = folder / name
        if not path.is_file():
            problems.append(f"{name} does not exist")
            continue
        try:
            checkpoint = _read(path)
        except Exception as error:  # torch.load raises RuntimeError, EOFError, UnpicklingError...
            problems.append(f"{name} is damaged ({error})")
            os.replace(path, path.with_name(path.name + ".unreadable"))
            log.warning("Checkpoint %s is damaged (%s); set aside as %s.unreadable.", path, error, name)
            continue
        if problems:
            log.warning("Using %s (iteration %d): %s.", path, checkpoint.state.iteration, "; ".join(problems))
        return checkpoint
    raise NstError(
        f"Cannot resume {run_dir}: no whole checkpoint in {folder} ({'; '.join(problems)}). "
        "Nothing can be continued from there: start the run again without resume= "
        "(its result.png so far is still in the run dir)."
    )


def _read(path: Path) -> Checkpoint:
    import torch

    from nst_exp.optimize import State

    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"not an nst_exp checkpoint of format {FORMAT}")
    stored = payload.pop("checksum", None)
    if stored != _checksum(payload):
        raise ValueError("checksum mismatch: the file was changed or corrupted after it was written")
    state = State(payload["image"], payload["iteration"], payload["evaluations"], payload["optimizer"])
    return Checkpoint(
        state=state,
        config=payload["config"],
        status=Status(payload["status"]),
        seconds=payload["seconds"],
        fingerprint=payload["fingerprint"],
        resumed=payload["resumed"],
        rng=payload["rng"],
        path=path,
    )


def _to_cpu(value: Any) -> Any:
    from torch import Tensor

    if isinstance(value, Tensor):
        return value.detach().cpu()
    if isinstance(value, Mapping):
        return {key: _to_cpu(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(item) for item in value)
    return value


def _checksum(value: Any, crc: int = 0) -> int:
    """CRC-32 over every tensor's bytes and every other value's repr, in a fixed order."""
    import torch
    from torch import Tensor

    if isinstance(value, Tensor):
        data = value.detach().contiguous().reshape(-1).view(torch.uint8).numpy()
        return zlib.crc32(data, zlib.crc32(f"{value.dtype}{tuple(value.shape)}".encode(), crc))
    if isinstance(value, Mapping):
        for key in sorted(value, key=str):
            crc = _checksum(value[key], zlib.crc32(repr(key).encode(), crc))
        return crc
    if isinstance(value, (list, tuple)):
        for item in value:
            crc = _checksum(item, crc)
        return crc
    return zlib.crc32(repr(value).encode(), crc)


def rng_states() -> dict[str, Any]:
    """Every RNG a run may draw from, in types ``torch.load(weights_only=True)`` accepts."""
    import numpy as np
    import torch

    _, keys, position, has_gauss, cached = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng(states: Mapping[str, Any]) -> None:
    import numpy as np
    import torch

    if "torch" in states:
        torch.set_rng_state(states["torch"])
    if "python" in states:
        version, internal, gauss = states["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in states:
        keys, position, has_gauss, cached = states["numpy"]
        np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), position, has_gauss, cached))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def fingerprint(objective: nn.Module) -> dict[str, list[float]]:
    """[sum, sum of |x|] of every weight and target of the objective: changes if an input does."""
    return {name: _sums(tensor) for name, tensor in objective.state_dict().items()}


def _sums(tensor: Tensor) -> list[float]:
    """[sum, sum of |x|] in float64, a million values at a time (no full-size copy)."""
    total = absolute = 0.0
    for chunk in tensor.detach().reshape(-1).split(1 << 20):
        chunk = chunk.double()
        total, absolute = total + float(chunk.sum()), absolute + float(chunk.abs().sum())
    return [total, absolute]


def check_fingerprint(
    saved: Mapping[str, Sequence[float]], now: Mapping[str, Sequence[float]], where: Path
) -> None:
    """Refuse to continue a run whose objective is no longer the same (inputs, weights, layers)."""
    for name in list(saved) + [n for n in now if n not in saved]:
        old, new = saved.get(name), now.get(name)
        same = old is not None and new is not None and all(
            abs(a - b) <= FINGERPRINT_RTOL * max(abs(a), abs(b), 1e-12) for a, b in zip(old, new)
        )
        if not same:
            raise NstError(
                f"The run in {where} cannot be continued: its objective changed since the checkpoint "
                f"('{name}' differs: {_culprit(name)}). Continuing would not give the run's result. "
                "Restore the original inputs, or start a new run."
            )


def _culprit(name: str) -> str:
    if name.startswith("content_"):
        return "the content image changed"
    if name.startswith("gram_") or name == "blend":
        return "a style image changed"
    if name.startswith("extractor."):
        return "the network's weights changed"
    return "the objective's definition changed"
