"""Callbacks the optimisation loop calls once per step and once at the end."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

from torch import Tensor
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summaries
from tqdm import tqdm

from nst_exp import images
from nst_exp.optimize import Outcome, Step
from nst_exp.stages import Stage

# Metrics the HParams view compares across runs: TensorBoard takes their last logged value.
HPARAM_METRICS = ("loss/total", "loss/content", "loss/style")


class TensorBoardLogger:
    """Scalars every ``scalars_every`` steps, the image every ``image_every``, HParams at start and end.

    ``texts`` (tag -> markdown) are written once at the start, e.g. which network ran.
    """

    def __init__(
        self,
        log_dir: Path,
        hparams: Mapping[str, Any],
        scalars_every: int,
        image_every: int,
        texts: Mapping[str, str] | None = None,
    ) -> None:
        self.writer = SummaryWriter(log_dir=str(log_dir))
        for tag, text in (texts or {}).items():
            self.writer.add_text(tag, text, 0)
        self.scalars_every, self.image_every = scalars_every, image_every
        experiment, session_start, self._session_end = hparams_summaries(
            dict(hparams), {tag: math.nan for tag in HPARAM_METRICS}
        )
        self.writer.file_writer.add_summary(experiment)
        self.writer.file_writer.add_summary(session_start)

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
        for tag, value in outcome.values.items():
            self.writer.add_scalar(tag, value, outcome.iterations + 1)
        self.writer.add_image("image", outcome.image[0].clamp(0, 1).cpu(), outcome.iterations + 1)
        self.writer.file_writer.add_summary(self._session_end)
        self.writer.close()


class ProgressBar:
    """A tqdm bar with the current loss; silent when output is not a terminal."""

    def __init__(self, iterations: int, enabled: bool) -> None:
        self.bar = tqdm(total=iterations, unit="it", disable=None if enabled else True, dynamic_ncols=True)

    def on_step(self, step: Step) -> None:
        self.bar.update(1)
        if not self.bar.disable:
            values = step.values
            self.bar.set_postfix(
                loss=f"{values['loss/total']:.4g}",
                content=f"{values['loss/content']:.3g}",
                style=f"{values['loss/style']:.3g}",
                refresh=False,
            )

    def on_end(self, outcome: Outcome) -> None:
        self.bar.close()


class Snapshots:
    """Intermediate images ``iter_000050.png`` ... in the run's directory, and each stage's result."""

    def __init__(self, out_dir: Path, every: int) -> None:
        self.out_dir, self.every = out_dir, every

    def on_step(self, step: Step) -> None:
        if self.every and step.iteration % self.every == 0:
            images.save(step.image, self.out_dir / "snapshots" / f"iter_{step.iteration:06d}.png")

    def on_stage_start(self, stage: Stage) -> None:
        pass

    def on_stage_end(self, stage: Stage, image: Tensor, values: Mapping[str, float]) -> None:
        """Coarse-to-fine: each stage's result as ``stages/stage_<k>_<size>px.png``."""
        images.save(image, self.out_dir / "stages" / f"{stage.name}.png")

    def on_end(self, outcome: Outcome) -> None:
        pass  # the final image is result.png, written by the runner
