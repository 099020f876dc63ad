"""The optimisation loop on the image, and the record it hands to callbacks.

One iteration is one ``optimizer.step``: for Adam one evaluation (forward and
backward pass), for L-BFGS (``max_iter: 1`` per step, its history kept across
steps) one evaluation too, more with a line search. Callbacks (TensorBoard,
progress, snapshots, checkpoints) see a small record per step and never sit
inside the loop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cached_property
from typing import Callable, Iterable, Protocol, Sequence

import torch
from torch import Tensor

from nst_exp.losses import GatysLoss, LossTerms, loss_values

COMPLETED, DIVERGED, INTERRUPTED = "completed", "diverged", "interrupted"


@dataclass
class Step:
    """What one iteration produced. ``image`` is the image the losses belong to; do not modify it."""

    iteration: int  # 1-based
    evaluations: int  # forward+backward passes so far
    losses: LossTerms
    image: Tensor
    seconds: float  # since the loop started

    @cached_property
    def values(self) -> dict[str, float]:
        """Loss scalars by TensorBoard tag; the first access copies them to the host."""
        return dict(loss_values(self.losses))


@dataclass
class Outcome:
    """How the loop ended: the image to keep and its losses."""

    image: Tensor
    values: dict[str, float]
    iterations: int
    evaluations: int
    seconds: float
    status: str  # completed | diverged | interrupted
    message: str = ""


class Callback(Protocol):
    def on_step(self, step: Step) -> None: ...

    def on_end(self, outcome: Outcome) -> None: ...


def optimize(
    objective: GatysLoss,
    init: Tensor,
    make_optimizer: Callable[[Sequence[Tensor]], torch.optim.Optimizer],
    iterations: int,
    callbacks: Iterable[Callback] = (),
) -> Outcome:
    """Minimise ``objective`` over the image, starting from ``init``.

    A non-finite loss stops the loop and keeps the last image whose loss was
    finite; Ctrl-C does the same. The caller saves the outcome either way
    (and re-raises an interruption once it has).
    """
    callbacks = list(callbacks)
    image = init.detach().clone().requires_grad_(True)
    optimizer = make_optimizer([image])
    previous = torch.empty_like(image, requires_grad=False)
    last_good = image.detach().clone()
    evaluations = 0
    latest: LossTerms | None = None

    def closure() -> Tensor:
        nonlocal evaluations, latest
        optimizer.zero_grad(set_to_none=True)
        latest = objective(image)
        latest.total.backward()
        evaluations += 1
        return latest.total

    status, message, done, last_values = COMPLETED, "", 0, None
    start = time.perf_counter()
    try:
        for iteration in range(1, iterations + 1):
            previous.copy_(image.detach())
            optimizer.step(closure)
            if not torch.isfinite(latest.total):
                status = DIVERGED
                message = (
                    f"The loss became {latest.total.item()} at iteration {iteration}; kept the image "
                    f"of iteration {done}. Lower the learning rate or the loss weights, or use L-BFGS."
                )
                break
            last_good, previous = previous, last_good
            done = iteration
            step = Step(iteration, evaluations, latest, last_good, time.perf_counter() - start)
            for callback in callbacks:
                callback.on_step(step)
    except KeyboardInterrupt:
        status, message = INTERRUPTED, f"Interrupted after {done} iterations; kept that image."
    seconds = time.perf_counter() - start
    final = image.detach() if status == COMPLETED else last_good
    with torch.no_grad():
        values = dict(loss_values(objective(final)))
    if status == COMPLETED and not all(map(_finite, values.values())):
        status, final = DIVERGED, last_good
        message = "The loss of the final image is not finite; kept the previous image."
        with torch.no_grad():
            values = dict(loss_values(objective(final)))
    outcome = Outcome(final.detach(), values, done, evaluations, seconds, status, message)
    for callback in callbacks:
        callback.on_end(outcome)
    return outcome


def _finite(value: float) -> bool:
    return value == value and abs(value) != float("inf")
