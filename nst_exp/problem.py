"""The synthesis problem: for each stage, the Gatys objective on that stage's inputs and the image to start from."""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence

import torch
from torch import Tensor

from nst_exp.color import ColorControl
from nst_exp.errors import NstError
from nst_exp.features import FeatureExtractor
from nst_exp.inputs import Inputs, StageInputs
from nst_exp.losses import GatysLoss, LossSettings
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
        self._loss: torch.nn.Module | None = None

    @property
    def device(self) -> torch.device:
        return self.extractor.mean.device

    def stage_inputs(self, size: int) -> StageInputs:
        """The inputs at long side ``size`` (on the CPU), colour control applied."""
        if self._size != size:
            self._size, self._inputs, self._loss = size, self.inputs.load(size, self.color), None
        return self._inputs

    def loss(self, size: int) -> torch.nn.Module:
        """The loss (the objective L_total) at long side ``size`` (on the extractor's device), colour control applied."""
        inputs = self.stage_inputs(size)
        if self._loss is None:
            moved = inputs.to(self.device)
            loss = GatysLoss(self.extractor, moved.network_content, moved.styles, self.settings)
            self._loss = self.color.wrap_loss(loss)
        return self._loss

    def setup(self, stage: Stage, previous: Tensor | None) -> StageSetup:
        """Stage ``stage``'s loss and start: the init for the first, else ``previous`` upsampled."""
        inputs = self.stage_inputs(stage.size)
        if previous is None:
            init = self.inputs.initial_image(self.init, self.seed, inputs.content)
            init = self.color.initial(init, self.init, inputs.content)
        else:
            init = upsample(previous.clamp(0, 1), tuple(inputs.content.shape[-2:]))  # the result as saved
        loss = self.loss(stage.size)
        if stage.index == 1:
            log.info("Objective: %s; colour: %s", loss.extra_repr(), self.color.describe())
        log.info("Stage %d of %d: %d px, %d iterations", stage.index, stage.count, stage.size, stage.iterations)
        content = inputs.content.to(self.device)
        return StageSetup(loss, init.to(self.device), functools.partial(self.color.finish, content=content))

    def check_sizes(self, stages: Sequence[Stage]) -> None:
        """Every layer must see at least one pixel of every image at every stage, from the file headers.

        The fix a refusal suggests is one that passes: the smallest image_size (or coarse
        sizes) at which every image is seen, or, where that size would exceed max_image_pixels
        (a 1 x 5000 style image), shallower layers or a squarer image instead.
        """
        factor = self.extractor.deepest_downsampling
        needed = self.inputs.smallest_size(factor)
        height, width = self.inputs.shape(needed)
        practical = height * width <= self.inputs.max_pixels
        for stage in stages:
            setting, fix = size_fix(stage, stages, needed)
            fix = fix if practical else None
            check_image_size(self.extractor, self.inputs.shape(stage.size), "content", stage.size, fix, setting)
            for source, shape in zip(self.inputs.styles, self.inputs.style_shapes(stage.size)):
                check_image_size(self.extractor, shape, f"style '{source.spec.name}'", stage.size, fix, setting)


def size_fix(stage: Stage, stages: Sequence[Stage], needed: int) -> tuple[str, str]:
    """(the setting of ``stage``'s size, the change that makes every stage big enough for every layer)."""
    image_size = stages[-1].size
    if stage.index == stage.count:
        return "image_size", f"Use image_size={needed} or more, or shallower layers"
    setting = f"coarse_to_fine.sizes[{stage.index - 1}]"
    if needed > image_size:
        return setting, f"Use image_size={needed} or more with coarse_to_fine.sizes=[] (one stage), or shallower layers"
    kept = sorted({needed, *(s.size for s in stages[:-1] if s.size >= needed)} - {image_size})
    return setting, (f"Use coarse_to_fine.sizes=[{','.join(map(str, kept))}] (each at least {needed}, below "
                     "image_size), or shallower layers")


def check_image_size(
    extractor: FeatureExtractor,
    shape: tuple[int, int],
    what: str,
    image_size: int,
    fix: str | None,
    setting: str = "image_size",
) -> None:
    """Every requested layer must see at least one pixel of an image of ``shape`` = (H, W).

    The deepest layer is checked first; ``fix`` is the change that makes every image pass
    (size_fix), or None where none is practical: then the layers that do see this image.
    """
    height, width = shape
    for layer in sorted(extractor.requested, key=lambda name: (-extractor.downsampling(name), name)):
        factor = extractor.downsampling(layer)
        if min(height, width) < factor:
            seen = [name for name in extractor.requested if extractor.downsampling(name) <= min(height, width)]
            if fix is None:
                fix = (
                    f"No image_size helps: the size at which it would be seen exceeds max_image_pixels. Crop or pad "
                    f"the {what} image to a squarer shape, or use only layers that see it "
                    + (f"({', '.join(seen)})" if seen else "(none of the requested layers does)")
                )
            raise NstError(
                f"{setting}={image_size} is too small for layer '{layer}': the {what} image becomes "
                f"{width} x {height} pixels and '{layer}' sees it {factor} times smaller. {fix}."
            )
