"""The colour, style-mixture, scale, space and TV experiment configs compose, sweep and run at tiny size."""

from __future__ import annotations

import json

import pytest
from conftest import SHARED_IMAGES, make_config
from hydra.core.override_parser.overrides_parser import OverridesParser

from nst_exp.runner import run
from nst_exp.validation import validate

# Experiment -> overrides that shrink it (the sizes must stay below the tiny image_size).
EXPERIMENTS = {
    "color_luminance": [],
    "color_histogram": [],
    "style_mix": [],
    "style_scale": [],
    "coarse_to_fine": ["coarse_to_fine.sizes=[32,40]"],
    "spatial_sky": [],
    "tv": [],
}
TINY = ["model=vgg19", "model.weights=random", "image_size=48", "iterations=2", "log.progress=false", "log.image_every=0"]


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_every_sweep_value_composes_and_validates(name):
    params = make_config([f"experiment={name}"], return_hydra_config=True).hydra.sweeper.params
    assert params, f"{name} has no sweep"
    parser = OverridesParser.create()
    for key, value in params.items():
        values = list(parser.parse_overrides([f"{key}={value}"])[0].sweep_string_iterator())
        assert len(values) > 1
        for choice in values:
            validate(make_config([f"experiment={name}", f"{key}={choice}"]))


@pytest.mark.skipif(not SHARED_IMAGES.is_dir(), reason="needs the paper's images in ../shared/images")
@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_experiment_runs_at_tiny_size(tmp_path, name):
    cfg = make_config([f"experiment={name}", *TINY, f"images_dir={SHARED_IMAGES}", *EXPERIMENTS[name]])
    run(cfg, out_dir=tmp_path / name)
    metrics = json.loads((tmp_path / name / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    assert (tmp_path / name / "result.png").is_file()
