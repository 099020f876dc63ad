"""Shared fixtures: tiny generated images and composing the real configs offline."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from PIL import Image

from nst_exp.config import conf_dir, register

SHARED_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "images"
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # the benchmark scripts are not installed: tests import them as bench, bench_stages

register()


def pattern_image(path: Path, size=(64, 48), seed: int = 0) -> Path:
    """A small smooth colour image with structure (gradients and a bright square)."""
    rng = np.random.default_rng(seed)
    width, height = size
    y, x = np.mgrid[0:height, 0:width] / max(size)
    phase = rng.uniform(0, 6.28, 3)
    channels = [0.5 + 0.5 * np.sin(6 * x * (i + 1) + 4 * y + phase[i]) for i in range(3)]
    array = np.stack(channels, -1)
    array[height // 4 : height // 2, width // 4 : width // 2] = 1.0
    Image.fromarray((array * 255).astype(np.uint8), "RGB").save(path)
    return path


@pytest.fixture
def images_dir(tmp_path: Path) -> Path:
    """A folder with content.png (64 x 48) and style.png (48 x 64)."""
    folder = tmp_path / "images"
    folder.mkdir()
    pattern_image(folder / "content.png", (64, 48), seed=1)
    pattern_image(folder / "style.png", (48, 64), seed=2)
    return folder


@pytest.fixture
def tiny(images_dir: Path) -> list[str]:
    """Overrides for a fast offline run: random VGG-19, 32 px, 3 iterations."""
    return [
        "model=vgg19",
        "model.weights=random",
        "image_size=32",
        "iterations=3",
        f"images_dir={images_dir}",
        "content.path=content.png",
        "style.path=style.png",
        "log.progress=false",
        "log.image_every=0",
    ]


def make_config(overrides: list[str], return_hydra_config: bool = False) -> DictConfig:
    """The config ``python -m nst_exp <overrides>`` would run, composed offline (with ``hydra.*`` if asked)."""
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=return_hydra_config)
