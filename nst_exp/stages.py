"""Coarse-to-fine synthesis (Gatys et al., CVPR 2017, sec. 6): a run as stages of growing size.

``coarse_to_fine.sizes=[128,256]`` with ``image_size=512`` runs three stages:
128, 256 and 512 pixels on the long side. Each stage loads the content and
style images (and masks) at its own size and optimises for its iterations
(``coarse_to_fine.iterations``, else ``iterations``); the first starts from
the configured init, every later one from the previous stage's result
(clipped to [0, 1], as saved), upsampled bilinearly to its size. A plain run is one stage at image_size.

The loop owns its stages, as pystiche's pyramid optimisation does: it asks a
:class:`StageBuilder` for each stage's loss and start, and a resumed run hands
it an explicit start (the checkpoint's state) for its first stage.

Callbacks see one run: iteration numbers (TensorBoard's global step),
evaluations and seconds continue across stages, and ``on_end`` comes once,
at the end. Callbacks that also implement StageAware hear when each stage
starts and ends (only when there are several).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple, Protocol, runtime_checkable

import torch.nn.functional as F
from torch import Tensor, nn

from nst_exp.optimize import COMPLETED, Callback, Outcome, State, Step, optimize
from nst_exp.results import FINISHED


@dataclass(frozen=True)
class Stage:
    index: int  # 1-based
    count: int  # stages in the run
    size: int  # long side in pixels
    iterations: int
    offset: int  # iterations of the stages before it

    @property
    def name(self) -> str:
        return f"stage_{self.index}_{self.size}px"


def plan(image_size: int, iterations: int, sizes: Sequence[int], stage_iterations: Sequence[int]) -> list[Stage]:
    """The stages: ``sizes`` then ``image_size``; coarse ones run ``stage_iterations`` (default ``iterations``)."""
    counts = list(stage_iterations) if stage_iterations else [iterations] * len(sizes)
    pairs = list(zip(sizes, counts)) + [(image_size, iterations)]
    stages, offset = [], 0
    for index, (size, count) in enumerate(pairs, start=1):
        stages.append(Stage(index, len(pairs), int(size), int(count), offset))
        offset += count
    return stages


def upsample(image: Tensor, size: tuple[int, int]) -> Tensor:
    """(1, 3, h, w) -> (1, 3, H, W), bilinear."""
    return F.interpolate(image, size=size, mode="bilinear", align_corners=False)


@runtime_checkable
class StageAware(Protocol):
    def on_stage_start(self, stage: Stage) -> None: ...

    def on_stage_end(self, stage: Stage, image: Tensor, values: Mapping[str, float]) -> None: ...


class StageSetup(NamedTuple):
    """What a stage runs: its loss (the objective L_total), its start, and how to show its result (colour control)."""

    loss: nn.Module
    init: Tensor
    show: Callable[[Tensor], Tensor]


class StageBuilder(Protocol):
    """Builds each stage: its loss and its start (the configured init, or the previous stage's result)."""

    def setup(self, stage: Stage, previous: Tensor | None) -> StageSetup: ...


class _Continued:
    """Hands one stage's steps to the run's callbacks with run-wide counts; keeps its end to itself."""

    def __init__(self, callbacks: Sequence[Callback], stage: Stage, evaluations: int, seconds: float) -> None:
        self.callbacks, self.stage = callbacks, stage
        self.evaluations, self.seconds = evaluations, seconds

    def on_step(self, step: Step) -> None:
        shifted = replace(
            step,
            iteration=step.iteration + self.stage.offset,
            evaluations=step.evaluations + self.evaluations,
            seconds=step.seconds + self.seconds,
        )
        for callback in self.callbacks:
            callback.on_step(shifted)

    def on_end(self, outcome: Outcome) -> None:
        pass  # synthesise() reports the run's end once


def _record(stage: Stage, outcome: Outcome, shown: Tensor) -> dict:
    """One stage's line in metrics.json."""
    return {
        "stage": stage.index,
        "size": stage.size,
        "height": int(shown.shape[-2]),
        "width": int(shown.shape[-1]),
        "iterations": outcome.iterations,
        "evaluations": outcome.evaluations,
        "seconds": outcome.seconds,
        "status": outcome.status,
        **outcome.values,
    }


def synthesise(
    stages: Sequence[Stage],
    problem: StageBuilder,
    make_optimizer: Callable,
    callbacks: Sequence[Callback],
    start: State | None = None,
    score: Callable[[Tensor], Mapping[str, float]] | None = None,
) -> tuple[Outcome, list[dict]]:
    """Run the stages in order; return the run's outcome (its image shown) and one record per stage.

    ``start`` continues the first stage from a saved state (a resumed run)
    instead of the problem's start. A stage that diverges or is interrupted
    ends the run with its image. ``score`` measures a finished run's final image
    (nst_exp.evaluate: ``eval/*``); its values join the outcome's before the
    callbacks see the end, so TensorBoard and metrics.json carry them.
    """
    staged = [c for c in callbacks if isinstance(c, StageAware)] if len(stages) > 1 else []
    previous: Tensor | None = None
    evaluations, seconds, evaluating, records = 0, 0.0, 0.0, []
    first_evaluation: float | None = None
    for stage in stages:
        setup = problem.setup(stage, previous)
        init = start if stage.index == 1 and start is not None else setup.init
        for callback in staged:
            callback.on_stage_start(stage)
        continued = _Continued(callbacks, stage, evaluations, seconds)
        outcome = optimize(setup.loss, init, make_optimizer, stage.iterations, [continued])
        evaluations, seconds = evaluations + outcome.evaluations, seconds + outcome.seconds
        evaluating += outcome.evaluating
        first_evaluation = outcome.first_evaluation if first_evaluation is None else first_evaluation
        shown = setup.show(outcome.image)
        records.append(_record(stage, outcome, shown))
        for callback in staged:
            callback.on_stage_end(stage, shown, outcome.values)
        previous = outcome.image
        if outcome.status != COMPLETED:
            break
    message = outcome.message
    if message and len(stages) > 1:
        message = f"Stage {stage.index} of {stage.count} ({stage.size} px): {message}"
    final = replace(  # keeps the last stage's optimiser state and stop signal for checkpoints
        outcome,
        image=shown.detach(),
        iterations=stage.offset + outcome.iterations,
        evaluations=evaluations,
        seconds=seconds,
        message=message,
        evaluating=evaluating,
        first_evaluation=first_evaluation,
    )
    if score is not None and final.status in FINISHED:  # an interrupted run is scored when it finishes
        final = replace(final, values={**final.values, **score(final.image)})
    for callback in callbacks:
        callback.on_end(final)
    return final, records
