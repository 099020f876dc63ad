"""The synthesis problem: for each stage, the Gatys objective on that stage's inputs and the image to start from."""

from __future__ import annotations

import functools
import logging
from typing import Sequence

import torch
from torch import Tensor

from nst_exp.color import ColorControl
from nst_exp.errors import NstError
from nst_exp.features import FeatureExtractor
from nst_exp.inputs import Inputs, StageInputs
from nst_exp.losses import GatysLoss, LossSettings
from nst_exp.memory import smallest_size
from nst_exp.stages import Stage, StageSetup, upsample

log = logging.getLogger(__name__)


class Problem:
    """What a run optimises, stage by stage (nst_exp.stages asks it for each one).

    Holds the resolved inputs, the loss settings, the network's extractor (on
    its device), colour control and the start (init kind and seed). The
    inputs of the stage asked for last are kept, so a one-stage run decodes
    its images once.
    """

    def __init__(
        self,
        inputs: Inputs,
        settings: LossSettings,
        extractor: FeatureExtractor,
        color: ColorControl,
        *,
        init: str = "noise",
        seed: int = 0,
    ) -> None:
        self.inputs, self.settings, self.extractor, self.color = inputs, settings, extractor, color
        self.init, self.seed = init, seed
        self._size: int | None = None
        self._inputs: StageInputs | None = None
        self._objective: torch.nn.Module | None = None

    @property
    def device(self) -> torch.device:
        return self.extractor.mean.device

    def stage_inputs(self, size: int) -> StageInputs:
        """The inputs at long side ``size`` (on the CPU), colour control applied."""
        if self._size != size:
            self._size, self._inputs, self._objective = size, self.inputs.load(size, self.color), None
        return self._inputs

    def objective(self, size: int) -> torch.nn.Module:
        """The objective at long side ``size`` (on the extractor's device), colour control applied."""
        inputs = self.stage_inputs(size)
        if self._objective is None:
            moved = inputs.to(self.device)
            loss = GatysLoss(self.extractor, moved.network_content, moved.styles, self.settings)
            self._objective = self.color.objective(loss)
        return self._objective

    def setup(self, stage: Stage, previous: Tensor | None) -> StageSetup:
        """Stage ``stage``'s objective and start: the init for the first, else ``previous`` upsampled."""
        inputs = self.stage_inputs(stage.size)
        if previous is None:
            init = self.inputs.start(self.init, self.seed, inputs.content)
            init = self.color.initial(init, self.init, inputs.content)
        else:
            init = upsample(previous.clamp(0, 1), tuple(inputs.content.shape[-2:]))  # the result as saved
        objective = self.objective(stage.size)
        if stage.index == 1:
            log.info("Objective: %s; colour: %s", objective.extra_repr(), self.color.describe())
        log.info("Stage %d of %d: %d px, %d iterations", stage.index, stage.count, stage.size, stage.iterations)
        content = inputs.content.to(self.device)
        return StageSetup(objective, init.to(self.device), functools.partial(self.color.finish, content=content))

    def check_sizes(self, stages: Sequence[Stage]) -> None:
        """Every layer must see at least one pixel of every image at every stage, from the file headers."""
        factor = max(self.extractor.downsampling(layer) for layer in self.extractor.requested)
        styles = [source.size for source in self.inputs.styles]
        needed = smallest_size(factor, self.inputs.content_size, styles, self.inputs.style_scale)
        for stage in stages:
            setting = "image_size" if stage.index == stage.count else f"coarse_to_fine.sizes[{stage.index - 1}]"
            check_image_size(self.extractor, self.inputs.shape(stage.size), "content", stage.size, needed, setting)
            for source, shape in zip(self.inputs.styles, self.inputs.style_shapes(stage.size)):
                check_image_size(self.extractor, shape, f"style '{source.spec.name}'", stage.size, needed, setting)


def check_image_size(
    extractor: FeatureExtractor,
    shape: tuple[int, int],
    what: str,
    image_size: int,
    needed: int,
    setting: str = "image_size",
) -> None:
    """Every requested layer must see at least one pixel of an image of ``shape`` = (H, W).

    The deepest layer is checked first; ``needed`` is the smallest size at which
    every image passes (memory.smallest_size), which the error suggests.
    """
    height, width = shape
    for layer in sorted(extractor.requested, key=lambda name: (-extractor.downsampling(name), name)):
        factor = extractor.downsampling(layer)
        if min(height, width) < factor:
            raise NstError(
                f"{setting}={image_size} is too small for layer '{layer}': the {what} image becomes "
                f"{width} x {height} pixels and '{layer}' sees it {factor} times smaller. "
                f"Use {setting}={needed} or more, or shallower layers."
            )
