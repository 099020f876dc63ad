"""The network-free scores: SSIM to the content, patch SWD and colour distance to the style(s), and rescoring runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nst_exp.atomic import write_json
from nst_exp.color import luminance
from nst_exp.errors import NstError
from nst_exp.evaluate import evaluate_run, main
from nst_exp.images import open_rgb, save, to_tensor
from nst_exp.picture_scores import color_distance, content_ssim, laplacian_pyramid, score, ssim, style_swd
from nst_exp.results import RunDir
from tests.conftest import pattern_image

SCORES = {"eval/content_ssim", "eval/style_swd", "eval/color_distance"}


def image(tmp_path: Path, name: str, size: tuple[int, int], seed: int) -> torch.Tensor:
    """conftest's pattern image (width, height) as a (1, 3, H, W) tensor."""
    return to_tensor(open_rgb(pattern_image(tmp_path / f"{name}.png", size, seed)))


@pytest.fixture
def content(tmp_path: Path) -> torch.Tensor:
    return image(tmp_path, "content", (64, 48), seed=1)


@pytest.fixture
def style(tmp_path: Path) -> torch.Tensor:
    """A stripy texture with noise: unlike the content's smooth gradients."""
    rng = np.random.default_rng(5)
    y, x = np.mgrid[0:56, 0:48]
    stripes = 0.5 + 0.4 * np.sign(np.sin(x * 1.3 + y * 0.4))[..., None] * np.array([1.0, -0.6, 0.3])
    array = np.clip(stripes + rng.normal(0, 0.08, (56, 48, 3)), 0, 1)
    return torch.from_numpy(array.transpose(2, 0, 1).copy()).float().unsqueeze(0)


def noised(picture: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (picture + sigma * torch.randn(picture.shape, generator=generator)).clamp(0, 1)


def tiles_shuffled(picture: torch.Tensor, tile: int = 8, seed: int = 0) -> torch.Tensor:
    """``picture`` cut to whole tiles, the tiles put back in a seeded random order."""
    _, channels, height, width = picture.shape
    rows, cols = height // tile, width // tile
    cut = picture[..., : rows * tile, : cols * tile]
    tiles = cut.reshape(channels, rows, tile, cols, tile).permute(1, 3, 0, 2, 4).reshape(rows * cols, channels, tile, tile)
    order = torch.randperm(rows * cols, generator=torch.Generator().manual_seed(seed))
    tiles = tiles[order].reshape(rows, cols, channels, tile, tile).permute(2, 0, 3, 1, 4)
    return tiles.reshape(1, channels, rows * tile, cols * tile)


def test_luminance_is_bt601() -> None:
    rgb = torch.tensor([1.0, 0.5, 0.25]).view(1, 3, 1, 1)
    assert luminance(rgb).item() == pytest.approx(0.299 + 0.587 * 0.5 + 0.114 * 0.25)


def test_identical_images_score_perfectly(content: torch.Tensor, style: torch.Tensor) -> None:
    assert content_ssim(content, content) == pytest.approx(1.0, abs=1e-6)
    assert style_swd(style, [style], [1.0]) == pytest.approx(0.0, abs=1e-9)
    assert color_distance(style, [style], [1.0]) == pytest.approx(0.0, abs=1e-12)
    # a blend of the style with itself is summarised by two interleaved sets of quantiles: not exactly 0
    assert style_swd(style, [style, style], [0.3, 0.7]) < 0.05 * style_swd(content, [style], [1.0])
    assert color_distance(style, [style, style], [0.3, 0.7]) < 0.05 * color_distance(content, [style], [1.0])


def test_scores_are_python_floats_and_deterministic(content: torch.Tensor, style: torch.Tensor) -> None:
    for measure in (
        lambda: content_ssim(style, content),
        lambda: style_swd(content, [style], [1.0]),
        lambda: color_distance(content, [style], [1.0]),
    ):
        first, second = measure(), measure()
        assert type(first) is float
        assert first == second
    assert style_swd(content, [style], [1.0], seed=1) != style_swd(content, [style], [1.0], seed=0)


def test_ssim_falls_with_blur_and_with_more_noise(content: torch.Tensor) -> None:
    blurred = F.avg_pool2d(F.pad(content, [2, 2, 2, 2], mode="reflect"), 5, stride=1)
    kept = content_ssim(content, content)
    assert content_ssim(blurred, content) < kept
    little, more = content_ssim(noised(content, 0.05), content), content_ssim(noised(content, 0.2), content)
    assert more < little < kept


def test_ssim_is_torchmetrics_ssim(content: torch.Tensor, style: torch.Tensor) -> None:
    """Wang et al.'s SSIM as torchmetrics computes it (Gaussian 11 x 11 window, sigma 1.5, data range 1)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    smooth, stripes = luminance(content), luminance(style)
    pairs = [
        (smooth, luminance(noised(content, 0.1))),  # the photo and a noisy copy
        (stripes, luminance(noised(style, 0.3, seed=2))),  # a high-contrast texture, heavily noised
        (smooth, smooth.flip(-1)),  # the same values in another structure
        (torch.rand(1, 1, 40, 33, generator=torch.Generator().manual_seed(3)), torch.full((1, 1, 40, 33), 0.25)),  # flat
    ]
    for x, y in pairs:
        expected = structural_similarity_index_measure(x, y, data_range=1.0, kernel_size=11, sigma=1.5)
        assert ssim(x, y) == pytest.approx(float(expected), abs=1e-6)
    assert ssim(smooth, smooth) == pytest.approx(1.0, abs=1e-6)


def test_ssim_resizes_the_content_to_the_result(content: torch.Tensor) -> None:
    larger = F.interpolate(content, scale_factor=2, mode="bilinear", align_corners=False)
    assert content_ssim(content, larger) > 0.9
    assert content_ssim(content, noised(larger, 0.3)) < content_ssim(content, larger)


def test_shuffled_style_tiles_are_closer_in_style_than_the_content(content: torch.Tensor, style: torch.Tensor) -> None:
    shuffled = tiles_shuffled(style)
    assert style_swd(shuffled, [style], [1.0]) < style_swd(content, [style], [1.0])
    # same pixels, rearranged: the colour distribution is (nearly) the style's, the content's is not
    assert color_distance(shuffled, [style], [1.0]) < color_distance(content, [style], [1.0])


def test_blend_weights_move_the_score_towards_the_heavier_style(content: torch.Tensor, style: torch.Tensor) -> None:
    styles = [style, content]
    assert style_swd(style, styles, [0.9, 0.1]) < style_swd(style, styles, [0.1, 0.9])
    assert color_distance(style, styles, [0.9, 0.1]) < color_distance(style, styles, [0.1, 0.9])
    # only the weights' proportions count
    assert style_swd(style, styles, [3.0, 1.0]) == style_swd(style, styles, [0.75, 0.25])


def test_color_distance_is_the_shift_of_a_uniform_offset(style: torch.Tensor) -> None:
    """Every projection of a shift by c along a unit direction d moves by c . d; averaged |c . d| over random d."""
    darker = style * 0.5
    brighter = (darker + 0.2).clamp(0, 1)
    distance = color_distance(brighter, [darker], [1.0])
    # |0.2 * (d1 + d2 + d3)| averages 0.2 * sqrt(3) * E|cos| = 0.2 * sqrt(3) / 2 over the sphere
    assert distance == pytest.approx(0.2 * 3**0.5 / 2, rel=0.15)


def test_laplacian_pyramid_halves_and_keeps_flat_areas_out_of_the_bands(content: torch.Tensor) -> None:
    pyramid = laplacian_pyramid(content, 3)
    assert [tuple(level.shape[-2:]) for level in pyramid] == [(48, 64), (24, 32), (12, 16)]
    flat = laplacian_pyramid(torch.full((1, 3, 33, 40), 0.4), 3)  # odd sizes too
    assert [tuple(level.shape[-2:]) for level in flat] == [(33, 40), (17, 20), (9, 10)]
    assert flat[0].abs().max() < 1e-6 and flat[1].abs().max() < 1e-6
    assert torch.allclose(flat[2], torch.full_like(flat[2], 0.4))


def make_run(run_dir: Path, result: torch.Tensor, content: torch.Tensor, styles: dict[str, torch.Tensor],
             weights: dict[str, float], **metrics) -> Path:
    """A finished run directory as run.py writes it."""
    save(result, run_dir / "result.png")
    save(content, run_dir / "inputs" / "content.png")
    for name, picture in styles.items():
        save(picture, run_dir / "inputs" / (f"style_{name}.png" if len(styles) > 1 else "style.png"))
    write_json(run_dir / "metrics.json", {"status": "completed", "styles": weights, **metrics})
    return run_dir


def test_evaluate_run_reads_result_and_inputs(tmp_path: Path, content: torch.Tensor, style: torch.Tensor) -> None:
    run_dir = make_run(tmp_path / "run", content, content, {"stripes": style}, {"stripes": 1.0})
    scores = evaluate_run(run_dir)
    assert set(scores) == SCORES
    assert scores["eval/content_ssim"] == pytest.approx(1.0, abs=1e-6)
    on_files = [to_tensor(open_rgb(run_dir / "inputs" / name)) for name in ("content.png", "style.png")]
    assert scores["eval/style_swd"] == style_swd(on_files[0], [on_files[1]], [1.0])
    assert scores["eval/color_distance"] == color_distance(on_files[0], [on_files[1]], [1.0])


def test_evaluate_run_blends_several_styles_with_the_run_weights(
    tmp_path: Path, content: torch.Tensor, style: torch.Tensor
) -> None:
    styles = {"stripes": style, "pattern": content}
    heavy_stripes = evaluate_run(make_run(tmp_path / "a", style, content, styles, {"stripes": 0.9, "pattern": 0.1}))
    heavy_pattern = evaluate_run(make_run(tmp_path / "b", style, content, styles, {"stripes": 0.1, "pattern": 0.9}))
    assert heavy_stripes["eval/style_swd"] < heavy_pattern["eval/style_swd"]


def test_missing_result_names_the_path(tmp_path: Path, content: torch.Tensor, style: torch.Tensor) -> None:
    run_dir = make_run(tmp_path / "run", content, content, {"s": style}, {"s": 1.0})
    (run_dir / "result.png").unlink()
    with pytest.raises(NstError, match=r"no result\.png .*run[/\\]result\.png is missing"):
        evaluate_run(run_dir)


def test_metrics_json_is_read_for_the_weights_of_several_styles_only(
    tmp_path: Path, content: torch.Tensor, style: torch.Tensor
) -> None:
    one = make_run(tmp_path / "one", content, content, {"a": style}, {"a": 1.0})
    several = make_run(tmp_path / "several", content, content, {"a": style, "b": content}, {"a": 0.5, "b": 0.5})
    for run_dir in (one, several):
        (run_dir / "metrics.json").write_text('{"status": "compl')  # truncated
    assert set(evaluate_run(one)) == SCORES  # a single style.png needs no weights
    with pytest.raises(NstError, match=r"metrics\.json is damaged .*restore that file"):
        evaluate_run(several)


def test_missing_style_weights_say_what_is_needed(tmp_path: Path, content: torch.Tensor, style: torch.Tensor) -> None:
    run_dir = make_run(tmp_path / "run", content, content, {"a": style, "b": content}, {"a": 0.5, "b": 0.5})
    write_json(run_dir / "metrics.json", {"status": "completed"})
    with pytest.raises(NstError, match=r'no "styles".*found: style_a\.png, style_b\.png'):
        evaluate_run(run_dir)


def test_cli_rescores_a_sweep_and_keeps_other_keys(
    tmp_path: Path, content: torch.Tensor, style: torch.Tensor, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = tmp_path / "multirun"
    runs = [
        make_run(sweep / "0", content, content, {"s": style}, {"s": 1.0}, loss=1.5, **{"eval/style_swd": -1.0}),
        make_run(sweep / "1", style, content, {"s": style}, {"s": 1.0}, loss=2.5),
    ]
    (sweep / "2").mkdir()  # a failed job: metrics.json without result.png is skipped
    write_json(sweep / "2" / "metrics.json", {"status": "failed"})

    assert main([str(sweep)]) == 0

    for run_dir, loss in zip(runs, (1.5, 2.5)):
        metrics = RunDir(run_dir).read_metrics()
        assert SCORES <= set(metrics)
        assert metrics["loss"] == loss and metrics["status"] == "completed" and metrics["styles"] == {"s": 1.0}
    first, second = RunDir(runs[0]).read_metrics(), RunDir(runs[1]).read_metrics()
    assert first["eval/style_swd"] != -1.0
    assert first["eval/content_ssim"] > second["eval/content_ssim"]
    assert first["eval/style_swd"] > second["eval/style_swd"]
    assert json.loads((sweep / "2" / "metrics.json").read_text()) == {"status": "failed"}
    out = capsys.readouterr().out
    assert str(runs[0]) in out and str(runs[1]) in out and "content_ssim" in out


def test_only_the_images_a_run_was_made_with_are_scored(content: torch.Tensor, style: torch.Tensor) -> None:
    assert set(score(style, None, [style], [1.0])) == {"eval/style_swd", "eval/color_distance"}
    assert set(score(content, content, [], [])) == {"eval/content_ssim"}
    assert score(content, None, [], []) == {}


def test_rescoring_a_content_reconstruction_drops_its_style_scores(
    tmp_path: Path, content: torch.Tensor, style: torch.Tensor, capsys: pytest.CaptureFixture[str]
) -> None:
    """Fig. 1's content reconstructions (beta = 0) were scored against a painting they never saw."""
    run_dir = make_run(tmp_path / "run", content, content, {"s": style}, {"s": 1.0},
                       **{"eval/style_swd": 190.0, "eval/color_distance": 0.06})
    (run_dir / ".hydra").mkdir()
    (run_dir / ".hydra" / "config.yaml").write_text(
        "alpha: 1.0\nbeta: 0.0\ncontent_layers: [relu4_2]\nstyle_layers: []\ninit:\n  kind: noise\n")
    assert main([str(run_dir)]) == 0
    assert "nan: an image that run was not made with, not scored" in capsys.readouterr().out
    metrics = RunDir(run_dir).read_metrics()
    assert metrics["eval/content_ssim"] == pytest.approx(1.0, abs=1e-6)
    assert "eval/style_swd" not in metrics and "eval/color_distance" not in metrics
    (run_dir / ".hydra" / "config.yaml").write_text(  # a style reconstruction started from the photo
        "alpha: 0.0\nbeta: 1.0\ncontent_layers: []\nstyle_layers: [relu1_1]\ninit:\n  kind: content\n")
    assert set(evaluate_run(run_dir)) == SCORES


def test_cli_user_errors_exit_2_with_one_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "nowhere")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: No finished runs under") and err.count("\n") == 1
