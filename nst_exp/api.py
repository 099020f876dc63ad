"""The Python API: compose a config as the command line does, and stylize images from a script or notebook.

    from nst_exp import stylize
    result = stylize("photo.jpg", "painting.jpg", "model=vgg16", image_size=256, beta=1e4)
    result.image                      # PIL image; result.metrics, result.loss, result.status

``stylize`` composes the same config ``python -m nst_exp`` would for the same
overrides and hands it to :func:`nst_exp.runner.run`, the runner the command line
uses. Errors are :class:`~nst_exp.errors.NstError` with the command line's messages.
``compose`` needs no torch: the runner (and torch) load with the first ``stylize``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import Any

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from PIL import Image

from nst_exp.cli_args import quoted
from nst_exp.config import conf_dir, register
from nst_exp.errors import ConfigError, NstError
from nst_exp.help import register_help
from nst_exp.results import Result, RunDir, nearest_existing

# What stylize() takes as an image: a file, a PIL image, or a (3, H, W) / (1, 3, H, W) tensor in [0, 1].
ImageLike = str | Path | Image.Image | Any
IN_MEMORY = "in_memory"  # the name an image given in memory has in logs and metrics.json
# A value the override grammar reads as one plain string; anything else is quoted.
PLAIN_VALUE = re.compile(r"[\w./~@:+-]+")

__all__ = ["compose", "stylize"]


def compose(*overrides: str) -> DictConfig:
    """The config ``python -m nst_exp <overrides>`` runs, e.g. ``compose("style=the_scream", "beta=1e4")``.

    Found wherever nst_exp is installed; Hydra is left as it was found, so this
    may be called any number of times, also inside a Hydra application.
    Raises :class:`~nst_exp.errors.ConfigError` (an NstError) with Hydra's
    message for a misspelt key, a wrong value or an unknown config option.
    """
    return _compose(overrides, hydra_node=False)


def stylize(
    content: ImageLike,
    style: ImageLike,
    *overrides: str,
    out_dir: Path | str | None = None,
    **keys: Any,
) -> Result:
    """Paint ``content`` in the style of ``style``; return the :class:`~nst_exp.results.Result`.

    ``content`` and ``style``: an image file (str or Path), a PIL image, or a
    tensor (3, H, W) or (1, 3, H, W) in [0, 1]; a tensor is quantised to 8 bits
    per channel, as a file would be. ``overrides`` are the command line's
    (``"model=vgg16"``, ``"log.progress=false"``); ``keys`` set top-level keys
    (``image_size=256, beta=1e4, style_layers=["relu1_1", "relu2_1"]``).

    ``out_dir=None`` keeps the run in memory: nothing is written anywhere.
    With ``out_dir`` the run writes there what a command-line run writes
    (result.png, metrics.json, TensorBoard events, inputs/, checkpoints/), and
    ``.hydra/`` with its config and overrides, so ``nst_exp.report`` reads a
    folder of such runs like a sweep. A folder already holding this run
    continues or returns it (``checkpoint.auto_resume``).
    """
    from nst_exp.runner import run  # torch loads here, not with compose()

    given: dict[str, Image.Image] = {}
    typed = [*overrides, *(f"{key}={override_value(value)}" for key, value in keys.items())]
    for key, image in (("content", content), ("style", style)):
        if isinstance(image, (str, Path)):
            path = existing_file(image, key)
            typed += [f"{key}.path={override_value(str(path))}", f"{key}.name={override_value(path.stem)}"]
        else:
            given[key] = as_pil(image, key)
            typed.append(f"{key}.name={IN_MEMORY}")
    if out_dir is None:
        return run(compose(*typed), None, typed, given=given)
    cfg, hydra_node = _compose(typed, hydra_node=True)
    out_dir = Path(out_dir)
    check_out_dir(out_dir)
    # Written once the folder is known to be this run's: a refused run must not relabel another.
    accept = lambda folder: write_hydra_record(folder, cfg, hydra_node, typed)  # noqa: E731
    return run(cfg, out_dir, typed, given=given, on_accept=accept, dir_setting="out_dir=...")


def check_out_dir(out_dir: Path) -> None:
    """``out_dir`` is a folder, or can be made one: no file stands at it or at a folder above it."""
    existing = nearest_existing(out_dir)
    if not existing.is_dir():
        where = "is a file" if existing == out_dir.expanduser().absolute() else f"is inside {existing}, which is a file"
        raise NstError(
            f"stylize(out_dir={str(out_dir)!r}): {where}, not a folder. out_dir is the folder a run writes its "
            "result.png, metrics.json and checkpoints into: give a new or existing folder, or out_dir=None "
            "to keep the run in memory."
        )


def existing_file(image: str | Path, key: str) -> Path:
    """``image`` as an absolute path, or the NstError that names stylize's argument and says what is there instead."""
    from nst_exp import image_files

    path = Path(image).expanduser().resolve()
    problem = image_files.not_a_file(path, f"{key} image", suffixes=image_files.image_suffixes())
    if problem is None and not path.is_file():
        problem = f"'{path}' does not exist."
    if problem:
        raise NstError(
            f"stylize({key}=...): {problem} Give {key}= the path of an existing image file, a PIL image, or a "
            "tensor (3, H, W) with values in [0, 1]."
        )
    return path


def as_pil(image: Any, what: str) -> Image.Image:
    """A PIL image, or a (3, H, W) / (1, 3, H, W) tensor in [0, 1] as an 8-bit RGB PIL image."""
    from nst_exp import images

    if isinstance(image, Image.Image):
        return image
    shape = tuple(getattr(image, "shape", ()))
    if not hasattr(image, "detach") or len(shape) not in (3, 4) or shape[-3] != 3 or (len(shape) == 4 and shape[0] != 1):
        raise NstError(
            f"{what} is {type(image).__name__}{' of shape ' + str(list(shape)) if shape else ''}; give an image "
            "file's path, a PIL image, or a tensor of shape (3, H, W) or (1, 3, H, W) with values in [0, 1]."
        )
    if not bool(image.detach().isfinite().all()):
        raise NstError(f"{what} holds values that are not finite numbers (NaN or infinity); give values in [0, 1].")
    if not image.is_floating_point():
        raise NstError(
            f"{what} is a tensor of {image.dtype}; stylize takes floats in [0, 1]. For an 8-bit image, "
            f"divide by 255: {what}=image.float() / 255."
        )
    low, high = float(image.detach().min()), float(image.detach().max())
    if low < 0 or high > 1:
        raise NstError(
            f"{what} holds values from {low:g} to {high:g}; stylize takes values in [0, 1] (outside, they would be "
            "clipped to black or white). An 8-bit image (0..255): divide it by 255. A normalised one (mean/std): "
            "undo the normalisation. Rounding errors just outside: .clamp(0, 1)."
        )
    return images.to_pil(image)


def override_value(value: Any) -> str:
    """``value`` as an override's right-hand side: null, true, 1e-05, [relu1_1,relu2_1], 'a path with spaces'."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{key}:{override_value(item)}" for key, item in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(override_value(item) for item in value) + "]"
    text = str(value)
    if PLAIN_VALUE.fullmatch(text) and text.lower() not in ("null", "true", "false"):
        return text
    return quoted(text)  # C:\images\x.png as typed; a name holding ${ is that text, never an interpolation


def write_hydra_record(out_dir: Path, cfg: DictConfig, hydra_node: Mapping[str, Any], overrides: Sequence[str]) -> None:
    """``.hydra/`` as a command-line run has it, with the part of Hydra's node the report reads.

    The report reads the config, the overrides (what differs between runs) and
    hydra.yaml's config group choices; the rest of Hydra's node (its launcher,
    logging, help) says nothing about the run and is left out.
    """
    hydra = {
        "job": {"name": hydra_node["job"]["name"], "num": None},
        "runtime": {"output_dir": str(Path(out_dir).resolve()), "choices": hydra_node["runtime"]["choices"]},
        "mode": "RUN",
    }
    RunDir(out_dir).write_record(cfg, {"hydra": hydra}, overrides)


def _compose(overrides: Sequence[str], hydra_node: bool) -> Any:
    """The task config; with ``hydra_node`` also the job name and config group choices from Hydra's node, without it."""
    register()
    register_help()
    global_hydra = GlobalHydra.instance()
    outer = global_hydra.hydra  # an application's own Hydra (@hydra.main, initialize()), put back afterwards
    global_hydra.clear()
    try:
        with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
            cfg = hydra_compose(config_name="config", overrides=list(overrides), return_hydra_config=hydra_node)
    except HydraException as error:
        cause = f"\n{error.__cause__}" if error.__cause__ is not None else ""
        raise ConfigError(f"{error}{cause}") from error
    finally:
        if outer is not None:
            GlobalHydra.instance().clear()
            GlobalHydra.instance().initialize(outer)
    if not hydra_node:
        return cfg
    node = {
        "job": {"name": str(cfg.hydra.job.name)},
        "runtime": {"choices": OmegaConf.to_container(cfg.hydra.runtime.choices)},
    }
    with open_dict(cfg):  # as Hydra's run_job does: the job sees its config without the hydra node
        del cfg["hydra"]
    return cfg, node
