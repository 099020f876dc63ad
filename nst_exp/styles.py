"""Which style images a run matches, where, and with what weight (nst_exp.inputs loads them).

Three ways to name them, the first that is set wins:

- ``spatial.regions``: one style per region of the content (or none), each with
  a mask on the content and optionally one on the style image (CVPR 2017, sec. 4);
- ``styles=[starry_night,the_scream] style_blend=[0.7,0.3]``: several styles over
  the whole image, blended as E_l = sum_s b_s E_l(s);
- ``style=starry_night`` (the config group): one style.

An entry of ``styles`` or a region's ``style`` is the name of a config in
conf/style/ (resolved when the run starts, so it sweeps like any list), or an
image file (a name with an image extension under images_dir, or an absolute path).
Weights are normalised to sum 1, so beta keeps its meaning.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from nst_exp.config import ImageConf, conf_dir
from nst_exp.errors import NstError, did_you_mean
from nst_exp.validation import normalized_weights

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


def known_styles() -> list[str]:
    return sorted(path.stem for path in (Path(conf_dir()) / "style").glob("*.yaml"))


def style_image_conf(entry: str, key: str) -> DictConfig:
    """``entry`` as an ImageConf: a conf/style/<entry>.yaml, else an image file name."""
    config = Path(conf_dir()) / "style" / f"{entry}.yaml"
    if config.is_file():
        return OmegaConf.merge(OmegaConf.structured(ImageConf), OmegaConf.load(config))
    if Path(entry).suffix.lower() in IMAGE_SUFFIXES or Path(entry).is_absolute():  # an absolute path is a file
        return OmegaConf.structured(ImageConf(name=Path(entry).stem, path=entry))
    known = known_styles()
    raise NstError(
        f"{key}: unknown style '{entry}'.{did_you_mean(entry, known)} Known styles (conf/style/): {', '.join(known)}. "
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
