"""Several styles with blend weights, style names resolved from conf/style, style scale."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_config, pattern_image

from nst_exp.color import ColorControl
from nst_exp.errors import NstError
from nst_exp.features import load_network
from nst_exp.inputs import Inputs
from nst_exp.losses import GatysLoss, StyleTarget, gram_matrix, style_layer_loss
from nst_exp.runner import run
from nst_exp.styles import style_specs

LAYERS = ["relu1_1", "relu2_1"]


@pytest.fixture(scope="module")
def extractor():
    return load_network("vgg19", "random", seed=0).extractor(LAYERS)


def _objective(extractor, content, styles, **kwargs):
    return GatysLoss(
        extractor, content, styles,
        content_layers=["relu2_1"], style_layers=LAYERS, style_weights=[0.5, 0.5], alpha=1.0, beta=1e3, **kwargs,
    )


def test_style_names_resolve_against_conf_style():
    specs = style_specs(make_config(["styles=[starry_night,the_scream]", "style_blend=[7,3]"]))
    assert [s.name for s in specs] == ["starry_night", "the_scream"]
    assert [s.image.path for s in specs] == ["starry_night.jpg", "the_scream.jpg"]
    assert specs[0].image.url.startswith("https://")
    assert [s.weight for s in specs] == pytest.approx([0.7, 0.3])


def test_styles_default_to_equal_weights_and_accept_image_files():
    specs = style_specs(make_config(["styles=[a.png,b.jpg,great_wave]"]))
    assert [(s.name, s.image.path) for s in specs] == [("a", "a.png"), ("b", "b.jpg"), ("great_wave", "great_wave.jpg")]
    assert [s.weight for s in specs] == pytest.approx([1 / 3] * 3)


def test_single_style_group_still_works():
    specs = style_specs(make_config(["style=the_scream"]))
    assert [(s.name, s.weight) for s in specs] == [("the_scream", 1.0)]


def test_unknown_style_name_suggests_the_nearest():
    with pytest.raises(NstError, match=r"styles\[1\]: unknown style 'the_screem'. Did you mean 'the_scream'"):
        style_specs(make_config(["styles=[starry_night,the_screem]"]))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["styles=[starry_night,the_scream]", "style_blend=[1,2,3]"], "style_blend has 3 weights but styles has 2"),
        (["styles=[starry_night,the_scream]", "style_blend=[1,-1]"], r"style_blend\[1\]=-1.0 is negative"),
        (["styles=[starry_night,the_scream]", "style_blend=[0,0]"], "style_blend=.* sums to 0"),
        (["style_blend=[1]"], "style_blend is set but styles is empty"),
        (["style_scale=0"], "style_scale=0.0 is 0. style_scale must be a finite number > 0"),
    ],
)
def test_bad_blends_are_refused_naming_the_key(tmp_path, tiny, overrides, message):
    with pytest.raises(NstError, match=message):
        run(make_config([*tiny, *overrides]), out_dir=tmp_path)


def test_blended_style_loss_is_the_weighted_sum_of_single_style_losses(extractor):
    generator = torch.Generator().manual_seed(0)
    content, first, second, image = (torch.rand(1, 3, 32, 32, generator=generator) for _ in range(4))
    both = _objective(extractor, content, [StyleTarget(first, 0.7, name="a"), StyleTarget(second, 0.3, name="b")])
    only_first = _objective(extractor, content, [(first, 1.0)])
    only_second = _objective(extractor, content, [(second, 1.0)])
    with torch.no_grad():
        terms, a, b = both(image), only_first(image), only_second(image)
    for layer in LAYERS:
        expected = 0.7 * a.style_layers[layer] + 0.3 * b.style_layers[layer]
        assert terms.style_layers[layer].item() == pytest.approx(expected.item(), rel=1e-5)
    assert terms.style_images["a"].item() == pytest.approx(a.style.item(), rel=1e-5)
    assert terms.style_images["b"].item() == pytest.approx(b.style.item(), rel=1e-5)


def test_same_size_style_loss_is_the_paper_formula(extractor):
    """With the style image as large as the image, E_l is eq. 4 with the style's own Gram matrix."""
    generator = torch.Generator().manual_seed(1)
    content, style, image = (torch.rand(1, 3, 32, 24, generator=generator) for _ in range(3))
    objective = _objective(extractor, content, [(style, 1.0)])
    with torch.no_grad():
        terms = objective(image)
        x, a = extractor(image), extractor(style)
    for layer in LAYERS:
        n, m = x[layer].shape[1], x[layer].shape[2] * x[layer].shape[3]
        expected = style_layer_loss(gram_matrix(x[layer]), gram_matrix(a[layer]), n, m)
        assert terms.style_layers[layer].item() == pytest.approx(expected.item(), rel=1e-4)


def test_style_targets_are_per_position_so_style_size_does_not_scale_them(extractor):
    """A periodic texture tiled 5 x 5 or 10 x 10 has the same Gram per position, up to its border."""
    tile = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    small_style, large_style = tile.repeat(1, 1, 5, 5), tile.repeat(1, 1, 10, 10)
    content = torch.rand(1, 3, 32, 32)
    small = _objective(extractor, content, [(small_style, 1.0)]).target("gram", "relu1_1")
    large = _objective(extractor, content, [(large_style, 1.0)]).target("gram", "relu1_1")
    # The one-pixel border (zero padding) is 10 % of the small image's positions, 5 % of the large one's.
    assert (small - large).norm() / large.norm() < 0.05
    # Raw Grams (sums over positions) would differ by the ratio of the sizes, 4.
    raw_ratio = gram_matrix(extractor(large_style)["relu1_1"]).norm() / gram_matrix(extractor(small_style)["relu1_1"]).norm()
    assert raw_ratio.item() == pytest.approx(4, rel=0.1)


def test_style_scale_resizes_the_style_relative_to_the_content(tiny, images_dir):
    pattern_image(images_dir / "wide.png", (80, 40), seed=4)
    cfg = make_config([*tiny, "style.path=wide.png", "style_scale=0.5"])
    inputs = Inputs.from_config(cfg).load(64, ColorControl(cfg.color))
    assert max(inputs.content.shape[-2:]) == 64
    assert tuple(inputs.styles[0].image.shape[-2:]) == (16, 32)


def test_run_with_two_styles_logs_each(tmp_path, tiny, images_dir):
    pattern_image(images_dir / "style2.png", (64, 64), seed=3)
    out = tmp_path / "run"
    run(make_config([*tiny, "styles=[style.png,style2.png]", "style_blend=[3,1]"]), out_dir=out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    assert metrics["styles"] == {"style": 0.75, "style2": 0.25}
    assert {"loss/style_image/style", "loss/style_image/style2"} <= metrics.keys()
    assert (out / "inputs" / "style_style.png").is_file() and (out / "inputs" / "style_style2.png").is_file()
