"""Colour control (CVPR 2017, sec. 5): luminance-only transfer and colour histogram matching."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_config

from nst_exp import images
from nst_exp.color import (
    ColorControl,
    LuminanceLoss,
    colour_map,
    colour_statistics,
    grey,
    match_histogram,
    match_luminance,
    rgb_to_yiq,
    yiq_to_rgb,
)
from nst_exp.runner import run

# An 8-bit RGB value is within 0.5/255 of the true one; I and Q sum |coefficients| to 1.19 and 1.05.
ROUNDING = 0.5 / 255 * 1.2


def test_yiq_round_trip_and_luminance_weights():
    image = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    yiq = rgb_to_yiq(image)
    assert torch.allclose(yiq[:, 0], 0.299 * image[:, 0] + 0.587 * image[:, 1] + 0.114 * image[:, 2], atol=1e-6)
    assert torch.allclose(yiq_to_rgb(yiq), image, atol=1e-6)
    # A grey pixel has no chroma.
    assert torch.allclose(rgb_to_yiq(grey(image[:, :1]))[:, 1:], torch.zeros(1, 2, 8, 8), atol=1e-6)


@pytest.mark.parametrize("variant", ["cholesky", "pca", "symmetric"])
def test_histogram_matching_gives_the_content_colour_mean_and_covariance(images_dir, variant):
    content = images.load(images_dir / "content.png", 64)
    style = images.load(images_dir / "style.png", 64)
    matched = match_histogram(style, content, variant)
    mean, cov = colour_statistics(matched)
    content_mean, content_cov = colour_statistics(content)
    style_mean, style_cov = colour_statistics(style)
    assert (style_cov - content_cov).abs().max() > 1e-2  # the images really differ
    assert torch.allclose(mean, content_mean, atol=1e-3)
    assert torch.allclose(cov, content_cov, atol=1e-3)


def test_histogram_variants_are_the_named_maps():
    generator = torch.Generator().manual_seed(0)
    a, b = torch.rand(3, 3, generator=generator, dtype=torch.float64), torch.rand(3, 3, generator=generator, dtype=torch.float64)
    source, target = a @ a.T + 0.1 * torch.eye(3, dtype=torch.float64), b @ b.T + 0.1 * torch.eye(3, dtype=torch.float64)
    for variant in ("cholesky", "pca", "symmetric"):
        matrix = colour_map(source, target, variant)
        assert torch.allclose(matrix @ source @ matrix.T, target, atol=1e-4), variant
    symmetric = colour_map(source, target, "symmetric")
    assert torch.allclose(symmetric, symmetric.T, atol=1e-8)
    # Cholesky: A = L_C L_S^-1 is lower triangular.
    cholesky = colour_map(source, target, "cholesky")
    assert torch.allclose(cholesky, torch.tril(cholesky), atol=1e-10)


def test_luminance_matching_takes_the_content_mean_and_std():
    generator = torch.Generator().manual_seed(1)
    style, content = torch.rand(1, 1, 9, 7, generator=generator) * 0.3, torch.rand(1, 1, 5, 5, generator=generator)
    matched = match_luminance(style, content)
    assert matched.mean().item() == pytest.approx(content.mean().item(), abs=1e-6)
    assert matched.std().item() == pytest.approx(content.std().item(), rel=1e-5)


def test_luminance_objective_keeps_a_grey_image_grey():
    """The objective sees the channel mean, so its gradient is the same in every channel."""
    image = torch.rand(1, 3, 6, 6, generator=torch.Generator().manual_seed(2), requires_grad=True)
    weights = torch.arange(1.0, 37.0).reshape(1, 1, 6, 6)

    class Probe(torch.nn.Module):
        def forward(self, x):
            return (x[:, 0:1] * weights).pow(2).sum() + x[:, 2].sum()

    LuminanceLoss(Probe())(image).backward()
    assert torch.allclose(image.grad[:, 0], image.grad[:, 1]) and torch.allclose(image.grad[:, 1], image.grad[:, 2])


def test_luminance_finish_keeps_the_content_chroma_exactly():
    control = ColorControl(make_config(["color=luminance"]).color)
    generator = torch.Generator().manual_seed(3)
    content, result = torch.rand(1, 3, 8, 8, generator=generator), torch.rand(1, 3, 8, 8, generator=generator)
    shown = control.finish(grey(result.mean(1, keepdim=True)), content)
    assert torch.allclose(rgb_to_yiq(shown)[:, 1:], rgb_to_yiq(content)[:, 1:], atol=1e-6)
    assert torch.allclose(rgb_to_yiq(shown)[:, 0], result.mean(1), atol=1e-6)


def test_luminance_run_result_has_the_content_chroma(tmp_path, tiny, images_dir):
    out = tmp_path / "run"
    run(make_config([*tiny, "color=luminance", "image_size=48", "init=content"]), out_dir=out)
    result = images.load(out / "result.png", 48)
    content = images.load(images_dir / "content.png", 48)
    assert result.shape == content.shape
    # Pixels where recombination left the RGB cube were clipped; elsewhere chroma is the content's.
    inside = ((result > 1 / 255) & (result < 254 / 255)).all(1, keepdim=True).expand(-1, 2, -1, -1)
    assert inside.float().mean() > 0.5
    chroma, content_chroma = rgb_to_yiq(result)[:, 1:], rgb_to_yiq(content)[:, 1:]
    assert (chroma - content_chroma)[inside].abs().max() <= ROUNDING
    # The network saw grey images.
    seen = images.load(out / "inputs" / "style.png", 48)
    assert torch.equal(seen[:, 0], seen[:, 1]) and torch.equal(seen[:, 1], seen[:, 2])
    assert json.loads((out / "metrics.json").read_text())["color"] == "luminance (YIQ)"


def test_histogram_run_matches_the_style_before_transfer(tmp_path, tiny):
    out = tmp_path / "run"
    run(make_config([*tiny, "color=histogram", "color.histogram=cholesky"]), out_dir=out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["color"] == "histogram (cholesky)"
    assert (out / "inputs" / "style.png").is_file()


def test_unknown_colour_variant_is_refused(tiny):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException) as error:
        make_config([*tiny, "color=histogram", "color.histogram=lab"])
    assert "Invalid value 'lab', expected one of [cholesky, pca, symmetric]" in str(error.value.__cause__)
