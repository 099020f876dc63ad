"""Spatial control: region masks, their per-layer versions, guided Gram matrices (CVPR 2017, sec. 4)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import make_config
from PIL import Image

from nst_exp import images
from nst_exp.config import MaskConf
from nst_exp.errors import NstError
from nst_exp.features import load_network
from nst_exp.guidance import layer_guides, mask_image, propagate, rectangle
from nst_exp.losses import GatysLoss, StyleTarget
from nst_exp.runner import run

STYLE_LAYERS = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]


@pytest.fixture(scope="module")
def extractor():
    return load_network("vgg19", "random", seed=0).extractor(STYLE_LAYERS)


def test_rectangle_and_file_masks(images_dir):
    mask = rectangle((10, 20), 0.0, 0.3, 0.5, 1.0)
    assert mask.shape == (10, 20)
    assert mask[:3, 10:].eq(1).all() and mask.sum() == 30
    inverted = mask_image(MaskConf(top=0.0, bottom=0.3, invert=True), (10, 20), str(images_dir), 10**8)
    assert inverted[:3].eq(0).all() and inverted[3:].eq(1).all()
    array = np.zeros((20, 40), np.uint8)
    array[:, 20:] = 255
    Image.fromarray(array, "L").save(images_dir / "half.png")
    from_file = mask_image(MaskConf(path="half.png"), (10, 20), str(images_dir), 10**8)
    assert from_file[:, :9].eq(0).all() and from_file[:, 11:].eq(1).all()


def test_downsampled_masks_have_each_layers_size_and_average_the_pooling_windows(extractor):
    image = torch.rand(1, 3, 36, 52)
    mask = rectangle((36, 52), 0.0, 0.4, 0.0, 1.0)
    guides = propagate(mask, extractor.body.named_children(), STYLE_LAYERS, "downsample")
    features = extractor(image)
    for layer in STYLE_LAYERS:
        assert guides[layer].shape == features[layer].shape[-2:], layer
    assert torch.equal(guides["relu1_1"], mask)
    assert torch.allclose(guides["relu3_1"], F.avg_pool2d(mask[None, None], 4)[0, 0])


def test_inside_masks_keep_only_neurons_that_see_the_region_alone(extractor):
    """Summed over positions where the eroded mask is 1, a layer's output ignores every pixel outside."""
    mask = rectangle((64, 64), 0.0, 0.6, 0.0, 1.0)
    guides = propagate(mask, extractor.body.named_children(), STYLE_LAYERS, "inside")
    image = torch.rand(1, 3, 64, 64, requires_grad=True)
    features = extractor(image)
    for layer in ("relu1_1", "relu2_1", "relu3_1"):
        guide = guides[layer]
        assert guide.any() and set(guide.unique().tolist()) <= {0.0, 1.0}
        assert guide.sum() < F.interpolate(mask[None, None], size=guide.shape)[0, 0].sum()  # eroded
        (gradient,) = torch.autograd.grad((features[layer] * guide).sum(), image, retain_graph=True)
        assert gradient[..., mask == 0].abs().max() == 0, layer
        assert gradient[..., mask == 1].abs().max() > 0, layer


def test_layer_guides_are_normalised_to_mean_square_one(extractor):
    mask = rectangle((32, 32), 0.0, 0.25, 0.0, 1.0)
    guides = layer_guides(mask, extractor, STYLE_LAYERS, "downsample")
    for layer in STYLE_LAYERS:
        assert guides[layer].pow(2).mean().item() == pytest.approx(1.0, rel=1e-5)


def _objective(extractor, content, styles, layers, propagation="downsample"):
    weights = [1.0 / len(layers)] * len(layers)
    return GatysLoss(
        extractor, content, styles,
        content_layers=[], style_layers=layers, style_weights=weights, alpha=0.0, beta=1.0, propagation=propagation,
    )


def test_one_region_covering_everything_is_the_plain_objective(extractor):
    generator = torch.Generator().manual_seed(0)
    content, style, image = (torch.rand(1, 3, 32, 48, generator=generator) for _ in range(3))
    plain = _objective(extractor, content, [(style, 1.0)], STYLE_LAYERS)
    guided = _objective(extractor, content, [StyleTarget(style, 1.0, torch.ones(32, 48))], STYLE_LAYERS)
    with torch.no_grad():
        expected, got = plain(image), guided(image)
    for layer in STYLE_LAYERS:
        assert got.style_layers[layer].item() == pytest.approx(expected.style_layers[layer].item(), rel=1e-5)


@pytest.mark.parametrize("propagation", ["downsample", "inside"])
def test_guided_style_loss_ignores_pixels_outside_its_region(extractor, propagation):
    """relu1_1 sees 3 x 3 pixels: with the left half guided, changing columns >= 26 of 48 changes nothing."""
    generator = torch.Generator().manual_seed(1)
    content, style, image = (torch.rand(1, 3, 32, 48, generator=generator) for _ in range(3))
    left = rectangle((32, 48), 0.0, 1.0, 0.0, 0.5)
    objective = _objective(extractor, content, [StyleTarget(style, 1.0, left, name="left")], ["relu1_1"], propagation)
    changed = image.clone()
    changed[..., 26:] = torch.rand(1, 3, 32, 22, generator=generator)
    inside_changed = image.clone()
    inside_changed[..., :20] = 1.0  # white: the region's statistics change
    with torch.no_grad():
        base = objective(image).style.item()
        assert objective(changed).style.item() == pytest.approx(base, rel=1e-6)
        assert objective(inside_changed).style.item() != pytest.approx(base, rel=0.1)


def test_style_mask_takes_the_target_from_part_of_the_style_image(extractor):
    """A style image half noise, half flat: guided to the noise half, its target is the noise's."""
    generator = torch.Generator().manual_seed(2)
    noise = torch.rand(1, 3, 32, 32, generator=generator)
    half = torch.cat([noise, torch.full((1, 3, 32, 32), 0.5)], -1)
    top = rectangle((32, 64), 0.0, 1.0, 0.0, 0.5)
    content = torch.rand(1, 3, 32, 32, generator=generator)
    from_half = _objective(extractor, content, [StyleTarget(half, 1.0, None, top)], ["relu1_1"], "inside")
    from_noise = _objective(extractor, content, [(noise, 1.0)], ["relu1_1"])
    whole_half = _objective(extractor, content, [(half, 1.0)], ["relu1_1"])
    target, expected = from_half.target("gram", "relu1_1"), from_noise.target("gram", "relu1_1")
    # The eroded guide drops the noise half's border column, so the match is close, not exact.
    assert (target - expected).norm() / expected.norm() < 0.1
    assert (whole_half.target("gram", "relu1_1") - expected).norm() / expected.norm() > 0.3


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["spatial.regions=[{name:sky,mask:{top:0.5,bottom:0.2},style:style.png}]"],
         r"spatial.regions\[0\].mask \(region 'sky'\) has top=0.5, bottom=0.2"),
        (["spatial.regions=[{name:sky,mask:{bottom:0.3}}]"], "No region in spatial.regions has a style"),
        (["styles=[style.png]", "spatial.regions=[{name:sky,style:style.png}]"], "styles and spatial.regions"),
        (["spatial.regions=[{name:sky,mask:{top:0.0,bottom:0.001},style:style.png}]"],
         r"spatial.regions\[0\].mask \(region 'sky'\) covers no pixel of the content image at 32 x 24"),
    ],
)
def test_bad_regions_are_refused(tmp_path, tiny, overrides, message):
    with pytest.raises(NstError, match=message):
        run(make_config([*tiny, *overrides]), out_dir=tmp_path)


def test_run_with_two_regions_writes_masks_and_logs_each(tmp_path, tiny):
    out = tmp_path / "run"
    regions = (
        "spatial.regions=[{name:top,mask:{bottom:0.4},style:style.png},"
        "{name:bottom,mask:{top:0.4},style:content.png,weight:3}]"
    )
    run(make_config([*tiny, "image_size=48", regions]), out_dir=out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    assert metrics["styles"] == {"top": 0.25, "bottom": 0.75}
    assert {"loss/style_image/top", "loss/style_image/bottom"} <= metrics.keys()
    mask = images.load(out / "inputs" / "mask_top.png", 48)
    assert tuple(mask.shape[-2:]) == (36, 48)
    assert mask[..., :14, :].eq(1).all() and mask[..., 15:, :].eq(0).all()
