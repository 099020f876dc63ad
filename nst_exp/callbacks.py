"""Callbacks the optimisation loop calls once per step and once at the end: they observe, never change, the run."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from torch import Tensor

from nst_exp import checkpoint, images, progress, tensorboard_run
from nst_exp.optimize import COMPLETED, INTERRUPTED, Outcome, State, Step
from nst_exp.results import CONTENT, EVAL_PREFIX, FINAL_VALUES, STYLE, TOTAL, RunDir
from nst_exp.stages import Stage

log = logging.getLogger(__name__)

# Metrics the HParams view compares across runs: TensorBoard takes their last logged value.
HPARAM_METRICS = FINAL_VALUES


class TensorBoardLogger:
    """Scalars every ``scalars_every`` steps, the image every ``image_every``, HParams at start and end.

    ``log_dir`` is the run's folder as TensorBoard names it (nst_exp.tensorboard_run: a sweep's job
    logs into ``<job>/<swept values>/``). ``settings``: the run's config flattened to dotted keys;
    ``swept``: the keys that vary (key -> value as typed), the only ones in the HParams row, where
    the final values follow them; the other settings are one text table. ``texts`` (tag ->
    markdown, e.g. which network ran) and ``inputs`` (name -> image, the content and style images
    as the network sees them) are written once, at the start of the run's first session.
    The one-point picture scores (``eval/*``) go to the ``final`` sub-run, out of the run's curves.
    A run continued from iteration ``start`` makes TensorBoard drop what an earlier session in the
    same directory logged after it (``purge_step``), so no step appears twice.
    """

    def __init__(
        self,
        log_dir: Path,
        settings: Mapping[str, Any],
        scalars_every: int,
        image_every: int,
        texts: Mapping[str, str] | None = None,
        start: int = 0,
        swept: Mapping[str, str] | None = None,
        inputs: Mapping[str, Tensor] | None = None,
    ) -> None:
        from torch.utils.tensorboard import SummaryWriter  # TensorBoard loads with the first run that logs to it

        self.log_dir = Path(log_dir)
        resumed = start > 0 or any(self.log_dir.glob("events.out.tfevents.*"))
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=start + 1 if resumed else None)
        self._final = None  # the writer of the ``final`` sub-run, opened when a score is logged
        row, constants = tensorboard_run.split_settings(settings, swept or {})
        if not resumed:
            for tag, text in {**(texts or {}), "settings": tensorboard_run.constants_text(constants)}.items():
                self.writer.add_text(tag, text, 0)
            for name, image in (inputs or {}).items():
                self.writer.add_image(f"inputs/{name}", image[0].detach().clamp(0, 1).cpu(), 0)
        self.scalars_every, self.image_every = scalars_every, image_every
        curves = [tag for tag in HPARAM_METRICS if not is_one_point(tag)]
        scores = [tag for tag in HPARAM_METRICS if is_one_point(tag)]
        for summary in tensorboard_run.hparams_summaries(row, curves, scores):
            self.writer.file_writer.add_summary(summary)

    def on_step(self, step: Step) -> None:
        if self.scalars_every and step.iteration % self.scalars_every == 0:
            for tag, value in step.values.items():
                self.writer.add_scalar(tag, value, step.iteration)
        if self.image_every and step.iteration % self.image_every == 0:
            self.writer.add_image("image", step.image[0].detach().clamp(0, 1).cpu(), step.iteration)

    def on_stage_start(self, stage: Stage) -> None:
        """Coarse-to-fine: the ``stage`` scalar steps up where each stage begins."""
        self.writer.add_scalar("stage", stage.index, stage.offset + 1)
        self.writer.add_scalar("stage/size", stage.size, stage.offset + 1)

    def on_stage_end(self, stage: Stage, image: Tensor, values: Mapping[str, float]) -> None:
        """Each stage's final losses and image, indexed by stage number (``stage/loss/total`` ...)."""
        self.writer.add_scalar("stage", stage.index, stage.offset + stage.iterations)
        for tag, value in values.items():
            self.writer.add_scalar(f"stage/{tag}", value, stage.index)
        self.writer.add_image("stage/image", image[0].detach().clamp(0, 1).cpu(), stage.index)

    def on_end(self, outcome: Outcome) -> None:
        if outcome.status != INTERRUPTED:  # an interrupted run logs its next step when it is resumed
            for tag, value in outcome.values.items():
                if is_one_point(tag):
                    self.final_writer().add_scalar(tag, value, outcome.iterations + 1)
                else:
                    self.writer.add_scalar(tag, value, outcome.iterations + 1)
            self.writer.add_image("image", outcome.image[0].clamp(0, 1).cpu(), outcome.iterations + 1)
        self.writer.file_writer.add_summary(tensorboard_run.session_end(outcome.status == COMPLETED))
        self.writer.close()
        if self._final is not None:
            self._final.close()

    def final_writer(self) -> Any:
        """The ``final`` sub-run's writer: the HParams view reads the scores there; no curve card mixes them in."""
        if self._final is None:
            from torch.utils.tensorboard import SummaryWriter

            self._final = SummaryWriter(log_dir=str(self.log_dir / tensorboard_run.FINAL_GROUP))
        return self._final


def is_one_point(tag: str) -> bool:
    """A value a run logs once, at its end (the picture scores, ``eval/*``): a metric, not a curve."""
    return tag.startswith(EVAL_PREFIX)


class ProgressBar:
    """A tqdm bar with the current loss; silent when output is not a terminal.

    A widget in a Jupyter notebook with ipywidgets, text on a terminal or in a
    notebook without them (nst_exp.progress); while the loop runs inside ``logging_above()``, log lines print
    above the bar instead of through it.
    """

    def __init__(self, iterations: int, enabled: bool, start: int = 0) -> None:
        bar, disable = progress.bar_class(enabled)
        self.bar = bar(total=iterations, initial=start, unit="it", disable=disable, dynamic_ncols=True)

    def on_step(self, step: Step) -> None:
        self.bar.update(1)
        if not self.bar.disable:
            values = step.values
            self.bar.set_postfix(
                loss=f"{values[TOTAL]:.4g}",
                content=f"{values[CONTENT]:.3g}",
                style=f"{values[STYLE]:.3g}",
                refresh=False,
            )

    def on_end(self, outcome: Outcome) -> None:
        self.bar.close()

    def logging_above(self) -> contextlib.AbstractContextManager:
        """While entered, console log handlers write through tqdm, above the bar (nothing to do without a bar)."""
        return contextlib.nullcontext() if self.bar.disable else progress.logging_above(self.bar)


class Snapshots:
    """Intermediate images ``iter_000050.png`` ... in the run's directory, and each stage's result."""

    def __init__(self, run_dir: RunDir, every: int) -> None:
        self.run_dir, self.every = run_dir, every

    def on_step(self, step: Step) -> None:
        if self.every and step.iteration % self.every == 0:
            images.save(step.image, self.run_dir.snapshot(step.iteration))

    def on_stage_start(self, stage: Stage) -> None:
        pass

    def on_stage_end(self, stage: Stage, image: Tensor, values: Mapping[str, float]) -> None:
        """Coarse-to-fine: each stage's result as ``stages/stage_<k>_<size>px.png``."""
        images.save(image, self.run_dir.stage_image(stage.name))

    def on_end(self, outcome: Outcome) -> None:
        pass  # the final image is result.png, written by the runner


class Checkpointer:
    """A checkpoint every ``every`` iterations and when the loop ends (nst_exp.checkpoint).

    At the end of a completed run the checkpoint keeps the image but not the
    optimizer's history (hundreds of image-sized vectors for L-BFGS), and the
    previous checkpoint is dropped: a finished run costs little disk.
    """

    def __init__(
        self,
        out_dir: Path,
        every: int,
        config: Mapping[str, Any],
        fingerprint: Mapping[str, list[float]],
        seconds_before: float = 0.0,
        resumed: Sequence[int] = (),
    ) -> None:
        self.out_dir, self.every, self.config, self.fingerprint = out_dir, every, dict(config), dict(fingerprint)
        self.seconds_before, self.resumed = seconds_before, list(resumed)
        self.last: int | None = None  # iteration of the newest checkpoint this run wrote

    def on_step(self, step: Step) -> None:
        if self.every and step.iteration % self.every == 0:
            self._save(step.state(), "running", step.seconds)

    def on_end(self, outcome: Outcome) -> None:
        if outcome.state is None:
            if self.last is not None or checkpoint.exists(self.out_dir):
                kept = f"of iteration {self.last}" if self.last is not None else "of an earlier session"
                log.warning("No checkpoint at this stop (%s); the last one (%s) stays.", outcome.status, kept)
            return
        state = replace(outcome.state, optimizer=None) if outcome.status == COMPLETED else outcome.state
        self._save(state, outcome.status, outcome.seconds)
        if outcome.status == COMPLETED:
            checkpoint.discard_previous(self.out_dir)

    def _save(self, state: State, status: str, seconds: float) -> None:
        saved = checkpoint.Checkpoint(
            state=state,
            config=self.config,
            status=status,
            seconds=self.seconds_before + seconds,
            fingerprint=self.fingerprint,
            resumed=self.resumed,
            rng=checkpoint.rng_states(),
        )
        path = checkpoint.save(self.out_dir, saved)
        self.last = state.iteration
        log.debug("Checkpoint of iteration %d (%s) in %s", state.iteration, status, path)
