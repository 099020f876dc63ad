"""Optimisation behaviour on tiny inputs: losses fall, reconstructions work, runs repeat."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import make_config
from PIL import Image

from nst_exp.results import RunDir
from nst_exp.runner import run


def first_and_last(run_dir, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir)).Reload()
    values = [event.value for event in events.Scalars(tag)]
    return values[0], values[-1]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_total_loss_falls(tmp_path, tiny, optimizer):
    run(make_config([*tiny, f"optimizer={optimizer}", "iterations=15"]), out_dir=tmp_path)
    first, last = first_and_last(tmp_path, "loss/total")
    assert last < 0.5 * first
    assert RunDir(tmp_path).read_metrics()["loss/total"] < first


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
@pytest.mark.parametrize("init", ["content", "style", "file"])
def test_every_image_start_runs_with_both_optimizers(tmp_path, tiny, images_dir, init, optimizer):
    """Starts read from files once reached L-BFGS in the pixels' HWC memory order, which it cannot flatten."""
    start = ["init.path=style.png"] if init == "file" else []
    run(make_config([*tiny, f"init={init}", *start, f"optimizer={optimizer}", "iterations=6"]), out_dir=tmp_path)
    first, last = first_and_last(tmp_path, "loss/total")
    metrics = RunDir(tmp_path).read_metrics()
    assert metrics["status"] == "completed" and metrics["evaluations"] == 6
    assert last < first


def test_content_reconstruction_from_noise(tmp_path, tiny):
    """beta=0, content at relu1_1: the result approaches the content image (PSNR > 25 dB here)."""
    overrides = [*tiny, "beta=0", "content_layers=[relu1_1]", "style_layers=[relu1_1]", "iterations=150"]
    run(make_config(overrides), out_dir=tmp_path)
    result = np.asarray(Image.open(tmp_path / "result.png"))
    content = np.asarray(Image.open(tmp_path / "inputs" / "content.png"))
    noise_start = psnr(np.full_like(content, 128), content)
    assert psnr(result, content) > 25.0 > noise_start


def test_style_loss_falls_by_orders_of_magnitude_with_alpha_zero(tmp_path, tiny):
    overrides = [*tiny, "alpha=0", "style_layers=[relu1_1,relu2_1,relu3_1]", "iterations=60"]
    run(make_config(overrides), out_dir=tmp_path)
    first, last = first_and_last(tmp_path, "loss/style")
    assert last < first / 100


def test_same_seed_same_image_and_other_seed_differs(tmp_path, tiny):
    arrays = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        run(make_config([*tiny, f"seed={seed}"]), out_dir=tmp_path / name)
        arrays[name] = np.asarray(Image.open(tmp_path / name / "result.png"))
    assert np.array_equal(arrays["a"], arrays["b"])
    assert not np.array_equal(arrays["a"], arrays["c"])


def test_diverging_run_stops_and_keeps_last_finite_image(tmp_path, tiny):
    """Adam with an absurd learning rate overflows float32; the run says so and keeps a finite image."""
    overrides = [*tiny, "optimizer=adam", "optimizer.lr=1e20", "iterations=20"]
    run(make_config(overrides), out_dir=tmp_path)
    metrics = RunDir(tmp_path).read_metrics()
    assert metrics["status"] == "diverged"
    assert "kept the image of iteration" in metrics["message"]
    assert "or use L-BFGS (optimizer=lbfgs)" in metrics["message"]
    assert metrics["loss/total"] is not None and metrics["iterations"] < 20
    assert np.isfinite(np.asarray(Image.open(tmp_path / "result.png"), dtype=float)).all()


def test_diverging_lbfgs_is_told_to_use_a_line_search_not_lbfgs(tmp_path, tiny):
    run(make_config([*tiny, "optimizer.lr=1e30", "iterations=20"]), out_dir=tmp_path)
    metrics = RunDir(tmp_path).read_metrics()
    assert metrics["status"] == "diverged"
    assert "add optimizer.line_search_fn=strong_wolfe" in metrics["message"]
    assert "use L-BFGS" not in metrics["message"]


def test_divergence_advice_names_what_runs_from_the_photo():
    from nst_exp.optimize import divergence_advice

    image = [torch.zeros(1, 3, 4, 4, requires_grad=True)]
    plain = divergence_advice(torch.optim.LBFGS(image))
    searched = divergence_advice(torch.optim.LBFGS(image, line_search_fn="strong_wolfe"))
    assert "optimizer.line_search_fn=strong_wolfe" in plain and "strong_wolfe" not in searched
    assert all("optimizer=adam" in advice for advice in (plain, searched))
    # Adam is what is already running: lower its step instead of suggesting it again
    assert "optimizer=adam" not in divergence_advice(torch.optim.Adam(image)) and "optimizer.lr" in divergence_advice(
        torch.optim.Adam(image))


def test_the_loop_accounts_for_the_time_in_its_evaluations():
    """``evaluating`` sums the passes, ``first_evaluation`` is the first; a callback's time is the rest of ``seconds``."""
    import time

    from nst_exp.losses import LossTerms
    from nst_exp.optimize import optimize

    passes = iter([0.06] + [0.02] * 20)  # the first pass sets up its kernels: it takes longer

    def loss(image):
        if torch.is_grad_enabled():
            time.sleep(next(passes))
        total = (image - 0.5).pow(2).sum()
        return LossTerms(total, total, total * 0, {})

    class Slow:
        def on_step(self, step):
            time.sleep(0.04)

        def on_end(self, outcome):
            pass

    outcome = optimize(loss, torch.rand(1, 3, 4, 4), lambda p: torch.optim.Adam(p, lr=0.1), 5, [Slow()])
    assert outcome.evaluations == 5
    assert 0.06 <= outcome.first_evaluation < 0.06 + 0.05
    assert 0.06 + 4 * 0.02 <= outcome.evaluating < outcome.seconds - 5 * 0.04
