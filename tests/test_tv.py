"""The optional total-variation regulariser: its formula, its weight, its log."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_config

from nst_exp.features import load_network
from nst_exp.losses import GatysLoss, loss_values, total_variation
from nst_exp.runner import run


def test_total_variation_is_the_sum_of_squared_neighbour_differences():
    image = torch.tensor([[[[0.0, 1.0, 3.0], [2.0, 2.0, 2.0]]]])
    # Right: (1-0)^2 + (3-1)^2 + 0 + 0 = 5; down: (2-0)^2 + (2-1)^2 + (2-3)^2 = 6.
    assert total_variation(image).item() == 11.0
    assert total_variation(torch.full((1, 3, 5, 5), 0.7)).item() == 0.0


def test_tv_weight_adds_its_term_to_the_total():
    extractor = load_network("vgg19", "random", seed=0).extractor(["relu1_1", "relu2_1"])
    generator = torch.Generator().manual_seed(0)
    content, style, image = (torch.rand(1, 3, 32, 32, generator=generator) for _ in range(3))

    def objective(tv_weight):
        return GatysLoss(
            extractor, content, [(style, 1.0)],
            content_layers=["relu2_1"], style_layers=["relu1_1"], alpha=2.0, beta=30.0, tv_weight=tv_weight,
        )

    with torch.no_grad():
        off, on = objective(0.0)(image), objective(0.5)(image)
    assert off.total.item() == pytest.approx((2.0 * off.content + 30.0 * off.style).item(), rel=1e-6)
    assert on.total.item() == pytest.approx((off.total + 0.5 * total_variation(image)).item(), rel=1e-6)
    assert loss_values(on)["loss/tv"] == pytest.approx(total_variation(image).item(), rel=1e-6)


def test_tv_weight_smooths_the_result(tmp_path, tiny):
    """Same seed and steps: with a strong TV term the result's total variation is lower."""
    tv = {}
    for weight in (0, 1000):
        out = tmp_path / f"tv{weight}"
        run(make_config([*tiny, f"tv_weight={weight}", "iterations=5", "optimizer=adam"]), out_dir=out)
        tv[weight] = json.loads((out / "metrics.json").read_text())["loss/tv"]
    assert tv[1000] < 0.5 * tv[0]


def test_negative_tv_weight_is_refused(tmp_path, tiny):
    from nst_exp.errors import NstError

    with pytest.raises(NstError, match="tv_weight=-1.0 is negative"):
        run(make_config([*tiny, "tv_weight=-1"]), out_dir=tmp_path)
