"""Which style images a run matches, where, and with what weight; loaded at a stage's size.

Three ways to name them, the first that is set wins:

- ``spatial.regions``: one style per region of the content (or none), each with
  a mask on the content and optionally one on the style image (CVPR 2017, sec. 4);
- ``styles=[starry_night,the_scream] style_blend=[0.7,0.3]``: several styles over
  the whole image, blended as E_l = sum_s b_s E_l(s);
- ``style=starry_night`` (the config group): one style.

An entry of ``styles`` or a region's ``style`` is the name of a config in
conf/style/ (resolved when the run starts, so it sweeps like any list), or an
image file (a name with an image extension, under images_dir or absolute).
Weights are normalised to sum 1, so beta keeps its meaning.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from nst_exp import images
from nst_exp.color import ColorControl
from nst_exp.config import ImageConf, conf_dir, normalized_weights
from nst_exp.errors import NstError
from nst_exp.guidance import mask_image
from nst_exp.losses import StyleTarget

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class StyleSpec:
    """One style term as configured: its image, weight and masks (MaskConf, or None for everywhere)."""

    name: str
    image: Any  # ImageConf: name, path, url
    weight: float
    mask: Any = None  # on the content
    style_mask: Any = None  # on the style image
    key: str = "style"  # the setting that named it, for errors


@dataclass
class StageInputs:
    """A stage's images at its size, after colour control, ready for the objective."""

    content: Tensor  # (1, 3, H, W) RGB photo
    network_content: Tensor  # what the network sees as the content
    styles: list[StyleTarget]
    style_paths: list[Path] = field(default_factory=list)

    def to(self, device: torch.device) -> "StageInputs":
        moved = [
            target._replace(
                image=target.image.to(device),
                guide=None if target.guide is None else target.guide.to(device),
                style_guide=None if target.style_guide is None else target.style_guide.to(device),
            )
            for target in self.styles
        ]
        return StageInputs(self.content.to(device), self.network_content.to(device), moved, self.style_paths)


def known_styles() -> list[str]:
    return sorted(path.stem for path in (Path(conf_dir()) / "style").glob("*.yaml"))


def style_image_conf(entry: str, key: str) -> DictConfig:
    """``entry`` as an ImageConf: a conf/style/<entry>.yaml, else an image file name."""
    config = Path(conf_dir()) / "style" / f"{entry}.yaml"
    if config.is_file():
        return OmegaConf.merge(OmegaConf.structured(ImageConf), OmegaConf.load(config))
    if Path(entry).suffix.lower() in IMAGE_SUFFIXES:
        return OmegaConf.structured(ImageConf(name=Path(entry).stem, path=entry))
    known = known_styles()
    close = difflib.get_close_matches(entry, known, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise NstError(
        f"{key}: unknown style '{entry}'.{hint} Known styles (conf/style/): {', '.join(known)}. "
        "Or give an image file, e.g. my_painting.jpg under images_dir."
    )


def _whole(mask: Any) -> bool:
    """True for the default MaskConf: the whole image."""
    return not mask.path and not mask.invert and (mask.top, mask.bottom, mask.left, mask.right) == (0, 1, 0, 1)


def style_specs(cfg: Any) -> list[StyleSpec]:
    """The run's style terms, weights normalised (see the module docstring)."""
    regions = cfg.spatial.regions
    if regions:
        styled = [(index, region) for index, region in enumerate(regions) if region.style]
        weights = normalized_weights([r.weight for _, r in styled], "spatial.regions[*].weight") if styled else []
        return [
            StyleSpec(
                region.name,
                style_image_conf(region.style, f"spatial.regions[{index}].style"),
                weight,
                region.mask,
                None if _whole(region.style_mask) else region.style_mask,
                f"spatial.regions[{index}]",
            )
            for (index, region), weight in zip(styled, weights)
        ]
    if cfg.styles:
        blend = cfg.style_blend if cfg.style_blend is not None else [1.0] * len(cfg.styles)
        weights = normalized_weights(blend, "style_blend")
        confs = [style_image_conf(entry, f"styles[{i}]") for i, entry in enumerate(cfg.styles)]
        names = [conf.name for conf in confs]
        return [
            StyleSpec(name if names.count(name) == 1 else f"{name}_{i + 1}", conf, weight, key=f"styles[{i}]")
            for i, (name, conf, weight) in enumerate(zip(names, confs, weights))
        ]
    return [StyleSpec(cfg.style.name, cfg.style, 1.0)]


def find_images(cfg: Any, specs: list[StyleSpec]) -> None:
    """Find (or fetch) the content, every style image and every mask file, before anything heavy runs."""
    images.resolve(cfg.content.path, cfg.images_dir, cfg.content.url, "content")
    for spec in specs:
        images.resolve(spec.image.path, cfg.images_dir, spec.image.url, "style")
        for mask in (spec.mask, spec.style_mask):
            if mask is not None and mask.path:
                images.resolve(mask.path, cfg.images_dir, what="mask")


def _mask(spec: StyleSpec, which: str, size: tuple[int, int], cfg: Any) -> Tensor:
    conf = spec.mask if which == "mask" else spec.style_mask
    mask = mask_image(conf, size, cfg.images_dir, cfg.max_image_pixels)
    if not mask.any():
        raise NstError(
            f"{spec.key}.{which} (region '{spec.name}') covers no pixel of the "
            f"{'content' if which == 'mask' else 'style'} image at {size[1]} x {size[0]} pixels. "
            "Widen the rectangle, check the mask file (white = inside) or its invert setting."
        )
    return mask


def load_inputs(cfg: Any, specs: list[StyleSpec], color: ColorControl, size: int) -> StageInputs:
    """Content at long side ``size``, each style at ``style_scale`` times that, masks at their sizes."""
    content_path = images.resolve(cfg.content.path, cfg.images_dir, cfg.content.url, "content")
    content = images.load(content_path, size, cfg.max_image_pixels)
    style_size = max(1, round(cfg.style_scale * size))
    targets, paths = [], []
    for spec in specs:
        path = images.resolve(spec.image.path, cfg.images_dir, spec.image.url, "style")
        style = images.load(path, style_size, cfg.max_image_pixels)
        guide = _mask(spec, "mask", tuple(content.shape[-2:]), cfg) if spec.mask is not None else None
        style_guide = _mask(spec, "style_mask", tuple(style.shape[-2:]), cfg) if spec.style_mask is not None else None
        targets.append(StyleTarget(color.style(style, content), spec.weight, guide, style_guide, spec.name))
        paths.append(path)
    return StageInputs(content, color.content(content), targets, paths)
