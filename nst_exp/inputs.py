"""The files a run reads, each found (or fetched) once, and a stage's tensors loaded at its size.

``Inputs.from_config`` resolves the content, every style image, every mask
file and the init file before anything heavy runs, so a sweep job with a bad
path fails in milliseconds. The content's size comes from its file header, so
the memory guard and the size checks need no decoding. ``Inputs.load(size)``
then decodes one stage's images at long side ``size``.

A path the user typed (``content.path=...``) is never fetched: the config's
download ``url`` belongs to the config's own file name, so a typo must fail
instead of downloading the default image under the typo's name.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from nst_exp import image_files, images
from nst_exp.color import ColorControl
from nst_exp.errors import NstError
from nst_exp.guidance import mask_image
from nst_exp.losses import StyleTarget
from nst_exp.results import RunDir
from nst_exp.styles import StyleSpec, style_specs

# Settings whose value is a path the user may type; their config's url is then not fetched.
USER_PATH_KEYS = ("content.path", "style.path")

Source = Path | Image.Image  # an image file, or an image given in memory (the Python API)


@dataclass(frozen=True)
class StyleSource:
    """One style term and its resolved image file."""

    spec: StyleSpec
    path: Source
    size: tuple[int, int]  # (width, height) of the file, upright


@dataclass
class StageInputs:
    """A stage's images at its size, after colour control, ready for the objective."""

    content: Tensor  # (1, 3, H, W) RGB photo
    network_content: Tensor  # what the network sees as the content
    styles: list[StyleTarget]

    def to(self, device: torch.device) -> StageInputs:
        moved = [
            target._replace(
                image=target.image.to(device),
                guide=None if target.guide is None else target.guide.to(device),
                style_guide=None if target.style_guide is None else target.style_guide.to(device),
            )
            for target in self.styles
        ]
        return StageInputs(self.content.to(device), self.network_content.to(device), moved)

    def named_images(self, used: Collection[str] = ("content", "style"), masks: bool = False) -> dict[str, Tensor]:
        """The images in ``used`` (results.inputs_used) as the network sees them, by the name a run saves them under.

        ``content``, ``style`` (``style_<name>`` for several: RunDir.style_input), and with
        ``masks`` each guided style's ``mask_<name>``: a run keeps no copy of an image it was not made with.
        """
        named = {"content": self.content} if "content" in used else {}
        several = len(self.styles) > 1
        for target in self.styles if "style" in used else ():
            named[RunDir.style_input(target.name, several)] = target.image
            if masks and target.guide is not None:
                named[f"mask_{target.name}"] = target.guide.expand(1, 3, -1, -1)
        return named


@dataclass(frozen=True)
class Inputs:
    """Every input file of a run, resolved once, and how to load them at a stage's size."""

    content: Source
    content_size: tuple[int, int]  # (width, height) of the file, upright
    styles: tuple[StyleSource, ...]
    init: Path | None  # the start image for init=file
    style_scale: float = 1.0
    images_dir: str = "images"
    max_pixels: int = images.DEFAULT_MAX_PIXELS

    @classmethod
    def from_config(
        cls, cfg: Any, user_paths: Collection[str] = (), given: Mapping[str, Image.Image] | None = None
    ) -> Inputs:
        """Resolve (or fetch) every file ``cfg`` names; ``user_paths`` are the USER_PATH_KEYS the user set.

        ``given`` holds images in memory that stand for the ``content`` or the
        ``style`` config (the Python API); their paths are then not looked up.
        """
        folder, limit, given = cfg.images_dir, cfg.max_image_pixels, dict(given or {})
        content_url = None if "content.path" in user_paths else cfg.content.url
        content = given.get("content") or image_files.resolve(
            cfg.content.path, folder, content_url, "content", cfg.content.get("sha256")
        )
        styles = []
        for spec in style_specs(cfg):
            url = None if spec.key == "style" and "style.path" in user_paths else spec.image.url
            in_memory = given.get("style") if spec.key == "style" else None
            path = in_memory or image_files.resolve(spec.image.path, folder, url, "style", spec.image.get("sha256"))
            for mask in (spec.mask, spec.style_mask):
                if mask is not None and mask.path:
                    image_files.resolve(mask.path, folder, what="mask")
            styles.append(StyleSource(spec, path, images.header_size(path, limit)))
        init = image_files.resolve(cfg.init.path, folder, what="init") if cfg.init.kind == "file" else None
        return cls(
            content,
            images.header_size(content, limit),
            tuple(styles),
            init,
            float(cfg.style_scale),
            folder,
            limit,
        )

    def shape(self, size: int) -> tuple[int, int]:
        """(H, W) of the content at long side ``size``, from its header: the shape ``load`` gives it."""
        return images.fit_size(*self.content_size, size)

    def style_shapes(self, size: int) -> list[tuple[int, int]]:
        """(H, W) of each style image when the content's long side is ``size``, from their headers."""
        return [images.fit_size(*source.size, self.style_size(size)) for source in self.styles]

    def style_size(self, size: int) -> int:
        """The long side of every style image when the content's is ``size`` (``style_scale`` applied)."""
        return images.scaled_side(size, self.style_scale)

    def smallest_size(self, factor: int) -> int:
        """The smallest image_size at which the content and every style image are at least ``factor`` px on both sides.

        ``factor`` is how many times the deepest layer shrinks its input
        (``FeatureExtractor.downsampling``); the shapes are ``shape`` and
        ``style_shapes``. Both grow with the size, so the search doubles, then bisects.
        """

        def seen(size: int) -> bool:
            return all(min(shape) >= factor for shape in (self.shape(size), *self.style_shapes(size)))

        high = max(1, factor)
        while not seen(high):
            high *= 2
        low = high // 2  # seen(low) is False, or low is 0
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (low, middle) if seen(middle) else (middle, high)
        return high

    def load(self, size: int, color: ColorControl) -> StageInputs:
        """Content at long side ``size``, each style at ``style_scale`` times that, masks at their sizes."""
        content = images.load(self.content, size, self.max_pixels)
        targets = []
        for source in self.styles:
            style = images.load(source.path, self.style_size(size), self.max_pixels)
            spec = source.spec
            guide = self._mask(spec, "mask", tuple(content.shape[-2:])) if spec.mask is not None else None
            style_guide = (
                self._mask(spec, "style_mask", tuple(style.shape[-2:])) if spec.style_mask is not None else None
            )
            targets.append(StyleTarget(color.style(style, content), spec.weight, guide, style_guide, spec.name))
        return StageInputs(content, color.content(content), targets)

    def initial_image(self, kind: str, seed: int, content: Tensor) -> Tensor:
        """The image a run starts from (init.kind), on the CPU, the content's size."""
        if kind == "noise":
            return torch.rand(content.shape, generator=torch.Generator().manual_seed(seed))
        if kind == "content":
            return content.clone()
        path = self.styles[0].path if kind == "style" else self.init
        return images.load_sized(path, tuple(content.shape[-2:]), self.max_pixels)

    def _mask(self, spec: StyleSpec, which: str, size: tuple[int, int]) -> Tensor:
        conf = spec.mask if which == "mask" else spec.style_mask
        mask = mask_image(conf, size, self.images_dir, self.max_pixels)
        if not mask.any():
            raise NstError(
                f"{spec.key}.{which} (region '{spec.name}') covers no pixel of the "
                f"{'content' if which == 'mask' else 'style'} image at {size[1]} x {size[0]} pixels. "
                "Widen the rectangle, check the mask file (white = inside) or its invert setting."
            )
        return mask


def user_path_keys(overrides: Collection[str]) -> set[str]:
    """The USER_PATH_KEYS that command-line ``overrides`` set (``content.path=...``, ``+style.path=...``)."""
    keys = {override.split("=", 1)[0].lstrip("+~") for override in overrides if "=" in override}
    return {key for key in USER_PATH_KEYS if key in keys}
