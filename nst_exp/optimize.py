"""The optimisation loop on the image, and the records it hands to callbacks.

One iteration is one ``optimizer.step``: for Adam one evaluation (forward and
backward pass), for L-BFGS (``max_iter: 1`` per step, its history kept across
steps) one evaluation too, more with a line search. Callbacks (TensorBoard,
progress, snapshots, checkpoints) see a small record per step and never sit
inside the loop.

SIGINT (Ctrl-C) and SIGTERM do not kill the loop mid-step: they ask it to stop
after the current iteration, where the image and the optimizer's state agree,
so a checkpoint written then continues the run exactly. A second signal stops
at once.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Protocol

import torch
from torch import Tensor

from nst_exp.errors import Interrupted  # noqa: F401 (re-exported: run.py and tests import it from here)
from nst_exp.losses import GatysLoss, LossTerms, loss_values
from nst_exp.results import Status

log = logging.getLogger(__name__)

COMPLETED, DIVERGED, INTERRUPTED, OUT_OF_MEMORY = Status.COMPLETED, Status.DIVERGED, Status.INTERRUPTED, Status.OUT_OF_MEMORY


@dataclass
class State:
    """A point the loop can continue from exactly: the image the next iteration evaluates."""

    image: Tensor
    iteration: int  # optimizer steps taken to reach ``image``
    evaluations: int  # forward+backward passes so far
    optimizer: dict[str, Any] | None  # optimizer.state_dict() at ``image``; None: start it afresh


@dataclass
class Step:
    """What one iteration produced. ``image`` is the image the losses belong to; do not modify it."""

    iteration: int  # 1-based
    evaluations: int  # forward+backward passes so far
    losses: LossTerms
    image: Tensor
    seconds: float  # since the loop started
    parameter: Tensor  # the image after this step, which the next iteration evaluates; do not modify
    optimizer: torch.optim.Optimizer

    @cached_property
    def values(self) -> dict[str, float]:
        """Loss scalars by TensorBoard tag; the first access copies them to the host."""
        return dict(loss_values(self.losses))

    def state(self) -> State:
        """Where the loop stands after this step (references, not copies: save them at once)."""
        return State(self.parameter.detach(), self.iteration, self.evaluations, self.optimizer.state_dict())


@dataclass
class Outcome:
    """How the loop ended: the image to keep and its losses."""

    image: Tensor
    values: dict[str, float]
    iterations: int
    evaluations: int
    seconds: float
    status: str  # completed | diverged | interrupted | out_of_memory
    message: str = ""
    state: State | None = None  # where to continue from; None when no consistent state is known
    signal: int | None = None  # the signal that stopped the loop, if one did
    evaluating: float = 0.0  # of ``seconds``, those in forward+backward passes (this session's loop)
    first_evaluation: float | None = None  # seconds of this session's first pass (oneDNN/cuDNN set up there)


class Callback(Protocol):
    def on_step(self, step: Step) -> None: ...

    def on_end(self, outcome: Outcome) -> None: ...


class StopSignals:
    """While active, SIGINT and SIGTERM ask the loop to stop after the current iteration.

    A second signal raises KeyboardInterrupt at once. Handlers can only be
    installed from the main thread; elsewhere Python's defaults stay.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {number: signal.signal(number, self._handle) for number in self.SIGNALS}
        return self

    def __exit__(self, *exc_info: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def _handle(self, number: int, frame: object) -> None:
        if self.received is not None:
            raise KeyboardInterrupt(f"second {signal.Signals(number).name}")
        self.received = number
        log.warning(
            "Received %s: stopping after this iteration to save what it has (send it again to stop at once).",
            signal.Signals(number).name,
        )


def divergence_advice(optimizer: torch.optim.Optimizer) -> str:
    """What to change when ``optimizer`` took the loss to inf or NaN."""
    if not isinstance(optimizer, torch.optim.LBFGS):
        return "Lower optimizer.lr or the loss weights, or use L-BFGS (optimizer=lbfgs)."
    if optimizer.defaults["line_search_fn"] is None:
        return ("L-BFGS without a line search stepped too far: lower the loss weights (alpha, beta) or "
                "optimizer.lr, or add optimizer.line_search_fn=strong_wolfe (no step to an infinite loss, at more "
                "loss evaluations an iteration, and it may need more iterations). From the photo (init=content), "
                "where the content term starts at zero, optimizer=adam takes no such step.")
    return ("Lower the loss weights (alpha, beta) or optimizer.lr. From the photo (init=content), where the "
            "content term starts at zero, optimizer=adam takes no such step.")


def optimize(
    loss: GatysLoss,
    init: Tensor | State,
    make_optimizer: Callable[[Sequence[Tensor]], torch.optim.Optimizer],
    iterations: int,
    callbacks: Iterable[Callback] = (),
) -> Outcome:
    """Minimise ``loss`` over the image, from ``init`` or continuing a saved ``State``.

    A non-finite loss stops the loop and keeps the last image whose loss was
    finite; Ctrl-C, SIGTERM and an out-of-memory error stop it too. The caller
    saves the outcome either way (and re-raises an interruption once it has).
    """
    callbacks = list(callbacks)
    start = init if isinstance(init, State) else State(init, 0, 0, None)
    image = start.image.detach().clone(memory_format=torch.contiguous_format).requires_grad_(True)  # L-BFGS flattens it
    optimizer = make_optimizer([image])
    if start.optimizer is not None:
        optimizer.load_state_dict(start.optimizer)
    previous = torch.empty_like(image, requires_grad=False)
    last_good = image.detach().clone()
    evaluations = start.evaluations
    latest: LossTerms | None = None
    last_values: dict[str, float] = {}

    timings: list[float] = []  # seconds of each evaluation

    def closure() -> Tensor:
        nonlocal evaluations, latest
        began = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        latest = loss(image)
        latest.total.backward()
        evaluations += 1
        if image.is_cuda:
            torch.cuda.synchronize(image.device)  # the pass's time, not its launch's
        timings.append(time.perf_counter() - began)
        return latest.total

    status, message, done = COMPLETED, "", start.iteration
    good_iteration = start.iteration  # optimizer steps that led to last_good
    consistent = True  # the image and the optimizer's state agree (no step was cut short)
    began = time.perf_counter()
    with StopSignals() as stop:
        try:
            for iteration in range(start.iteration + 1, iterations + 1):
                previous.copy_(image.detach())
                optimizer.step(closure)
                if not torch.isfinite(latest.total):
                    status = DIVERGED
                    message = (
                        f"The loss became {latest.total.item()} at iteration {iteration}; kept the image "
                        f"of iteration {done}. {divergence_advice(optimizer)}"
                    )
                    break
                last_good, previous = previous, last_good
                good_iteration, done = iteration - 1, iteration
                step = Step(
                    iteration, evaluations, latest, last_good, time.perf_counter() - began, image, optimizer
                )
                for callback in callbacks:
                    callback.on_step(step)
                last_values = step.values
                if stop.received is not None:
                    status = INTERRUPTED
                    name = signal.Signals(stop.received).name
                    message = f"Stopped by {name} after {done} iterations; kept that image."
                    break
        except KeyboardInterrupt:
            status, consistent = INTERRUPTED, False
            message = f"Interrupted during iteration {done + 1}; kept the image of iteration {done}."
        except torch.OutOfMemoryError as error:
            status, consistent = OUT_OF_MEMORY, False
            message = f"Out of memory during iteration {done + 1} ({str(error).splitlines()[0]})"
        latest = None  # frees the last graph before the final evaluation
        seconds = time.perf_counter() - began
        current = State(image.detach(), done, evaluations, optimizer.state_dict() if consistent else None)
        good = State(last_good, good_iteration, evaluations, None)
        outcome = _outcome(loss, current, good, status, message, last_values)
        outcome.seconds, outcome.signal = seconds, stop.received
        outcome.evaluating, outcome.first_evaluation = sum(timings), timings[0] if timings else None
        for callback in callbacks:
            callback.on_end(outcome)
    return outcome


def _outcome(
    loss: GatysLoss, current: State, good: State, status: str, message: str, last_values: dict[str, float]
) -> Outcome:
    """The image to keep, its losses and the state to continue from, for each way the loop ends.

    ``current`` is the image being optimised (with the optimizer's state when
    no step was cut short), ``good`` the last image whose loss was finite.
    Completed or stopped between iterations: keep ``current``, continue from
    it. Diverged: keep ``good``, continue from it with a fresh optimizer.
    Interrupted mid-step or out of memory: keep ``good``; the optimizer may be
    half-updated, so there is nothing to continue from (the last checkpoint is).
    """
    done, evaluations = current.iteration, current.evaluations
    if status == OUT_OF_MEMORY:
        if current.image.is_cuda:
            torch.cuda.empty_cache()
        return Outcome(good.image, dict(last_values), done, evaluations, 0.0, status, message)
    resumable = status != DIVERGED and current.optimizer is not None
    keep, state = (current, current) if resumable else (good, None)
    with torch.no_grad():
        values = dict(loss_values(loss(keep.image)))
    if status == COMPLETED and not all(map(_finite, values.values())):
        status, keep = DIVERGED, good
        message = "The loss of the final image is not finite; kept the previous image."
        with torch.no_grad():
            values = dict(loss_values(loss(keep.image)))
    if status == DIVERGED:
        state = good
    return Outcome(keep.image.detach(), values, done, evaluations, 0.0, status, message, state)


def _finite(value: float) -> bool:
    return value == value and abs(value) != float("inf")
