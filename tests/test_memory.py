"""The memory guard: the estimate's arithmetic, the refusal, the override."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import torch
from conftest import make_config
from omegaconf import OmegaConf
from PIL import Image

from nst_exp import device_memory, images, memory, memory_guard
from nst_exp.errors import NstError
from nst_exp.features import load_network
from nst_exp.inputs import Inputs, StyleSource
from nst_exp.problem import check_image_size
from nst_exp.runner import run
from nst_exp.styles import StyleSpec
from nst_exp.trust import make_optimizer

GIB = 1024**3
LBFGS = make_optimizer(OmegaConf.create({"_target_": "torch.optim.LBFGS", "history_size": 7}))
ADAM = make_optimizer(OmegaConf.create({"_target_": "torch.optim.Adam"}))


@pytest.fixture(scope="module")
def vgg19():
    return load_network("vgg19", "random")


def test_estimate_counts_what_autograd_and_the_optimizer_keep(vgg19):
    extractor = vgg19.extractor(["relu1_1", "relu2_1"])  # conv1_1 relu1_1 conv1_2 relu1_2 pool1 conv2_1 relu2_1
    h, w = 8, 6
    full, half = 64 * h * w, 128 * (h // 2) * (w // 2)
    pixels = 3 * h * w
    # input + relu1_1 + relu1_2 + pool1 (64 ch, half size) + relu2_1 + relu2_1's (F - P) as content layer
    saved = pixels + full + full + 64 * (h // 2) * (w // 2) + half + half
    got = memory.estimate(extractor, h, w, LBFGS, ["relu2_1"], "cuda")
    assert got.activations == (saved + 2 * full) * 4  # plus two of the largest as gradients in backward
    assert got.optimizer == (2 * 7 + 5) * pixels * 4  # L-BFGS: 2 * history_size vectors + 5 working
    assert got.images == (8 * pixels + half + 2 * 64**2 + 2 * 128**2) * 4
    assert got.weights == sum(p.numel() for p in extractor.parameters()) * 4 and got.overhead == 0
    assert got.total == got.activations + got.optimizer + got.images + got.weights
    on_cpu = memory.estimate(extractor, h, w, LBFGS, ["relu2_1"], "cpu")
    assert on_cpu.weights == 0  # built there already
    assert on_cpu.overhead == got.activations + 40 * 1024**2  # activations counted twice, plus a fixed cost
    assert memory.estimate(extractor, h, w, ADAM, ["relu2_1"], "cuda").optimizer == 4 * pixels * 4


def test_max_pooling_counts_its_indices(vgg19):
    maxpool = load_network("vgg19", "random", pooling="max").extractor(["relu2_1"])
    avgpool = vgg19.extractor(["relu2_1"])
    pooled = 64 * 4 * 3
    with_indices = memory.estimate(maxpool, 8, 6, ADAM, [], "cpu").activations
    extra = with_indices - memory.estimate(avgpool, 8, 6, ADAM, [], "cpu").activations
    assert extra == 2 * pooled * 4  # int64 indices: two float32s per output


def test_largest_size_is_the_last_that_fits():
    assert memory_guard.largest_size(lambda size: size * size <= 1000, 512) == 31
    assert memory_guard.largest_size(lambda size: False, 512) == 0
    assert memory_guard.largest_size(lambda size: True, 512) == 512


def test_guard_refuses_with_the_estimate_and_the_largest_image_size(tiny, monkeypatch, tmp_path, vgg19):
    # What a 24 px run (content 24 x 18, its style 18 x 24) needs is all there is.
    extractor = vgg19.extractor(["relu4_2", "relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"])
    lbfgs = make_optimizer(OmegaConf.create({"_target_": "torch.optim.LBFGS", "history_size": 100}))
    free = memory.estimate(extractor, 18, 24, lbfgs, ["relu4_2"], "cpu", [(24, 18)]).total
    monkeypatch.setattr(device_memory, "available", lambda device: free)
    with pytest.raises(NstError) as refused:
        run(make_config([*tiny, "image_size=48"]), out_dir=tmp_path / "run")
    message = str(refused.value)
    assert message.startswith("Not enough memory: image_size=48 needs about ")
    assert "(activations " in message and "optimizer state" in message
    assert f"but only {memory.gib(free)} is free" in message
    assert "image_size=24 is the largest that fits" in message
    assert "optimizer.history_size" in message and "memory_guard=false" in message
    assert not (tmp_path / "run" / "result.png").exists()


def test_guard_can_be_overridden(tiny, monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(device_memory, "available", lambda device: 1)
    with caplog.at_level(logging.WARNING, logger="nst_exp.memory_guard"):
        run(make_config([*tiny, "memory_guard=false"]), out_dir=tmp_path / "run")
    assert "memory_guard=false, going on although image_size=32 needs about" in caplog.text
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["memory_free_bytes"] == 1


def test_metrics_record_the_estimate_beside_the_measured_peak(tiny, tmp_path):
    run(make_config(tiny), out_dir=tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["memory_estimate_bytes"] > 0 and metrics["memory_free_bytes"] > 0
    assert metrics["memory_peak_bytes"] >= metrics["memory_before_bytes"] > 0
    expected = (metrics["memory_before_bytes"] + metrics["memory_estimate_bytes"]) / metrics["memory_peak_bytes"] - 1
    assert metrics["memory_estimate_error"] == pytest.approx(expected)


def test_available_memory_on_the_cpu_is_what_meminfo_says(monkeypatch, tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24683656 kB\nMemFree:  1 kB\nMemAvailable:   2000 kB\n")
    real_path = device_memory.Path
    monkeypatch.setattr(device_memory, "Path", lambda p: meminfo if p == "/proc/meminfo" else real_path(p))
    monkeypatch.setattr(device_memory, "cgroup_room", lambda: None)
    assert device_memory.available(torch.device("cpu")) == 2000 * 1024
    monkeypatch.setattr(device_memory, "cgroup_room", lambda: 1000)
    assert device_memory.available(torch.device("cpu")) == 1000


# --- The process's own cgroup limits, in fake cgroup trees -------------------------------------


def cgroup_tree(root, files):
    for relative, text in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)


def test_cgroup_v2_takes_the_smallest_room_up_to_the_root(tmp_path):
    proc = tmp_path / "cgroup"
    proc.write_text("0::/user.slice/job.scope\n")
    root = tmp_path / "sys"
    cgroup_tree(root, {
        "memory.max": "max",  # the namespace's root: no limit
        "user.slice/memory.max": str(4 * GIB), "user.slice/memory.current": str(3 * GIB),
        "user.slice/job.scope/memory.max": str(8 * GIB), "user.slice/job.scope/memory.current": str(1 * GIB),
        "other.slice/memory.max": "1024", "other.slice/memory.current": "0",  # not ours
    })
    assert device_memory.cgroup_room(proc, root) == 1 * GIB  # the parent's 4 GiB limit with 3 GiB used binds
    (root / "user.slice/memory.max").write_text("max")
    assert device_memory.cgroup_room(proc, root) == 7 * GIB


def test_cgroup_v1_memory_controller_and_no_limit(tmp_path):
    proc = tmp_path / "cgroup"
    proc.write_text("5:cpu,cpuacct:/job\n4:memory:/job\n0::/\n")
    root = tmp_path / "sys"
    cgroup_tree(root, {
        "memory/memory.limit_in_bytes": "9223372036854771712",  # v1's "no limit"
        "memory/job/memory.limit_in_bytes": str(2 * GIB), "memory/job/memory.usage_in_bytes": str(GIB // 2),
    })
    assert device_memory.cgroup_room(proc, root) == 3 * GIB // 2
    (root / "memory/job/memory.limit_in_bytes").write_text("9223372036854771712")
    assert device_memory.cgroup_room(proc, root) is None


def test_cgroup_path_not_visible_falls_back_to_the_mount_root(tmp_path):
    proc = tmp_path / "cgroup"
    proc.write_text("0::/docker/abc123\n")  # a host path, as seen in a container without a cgroup namespace
    root = tmp_path / "sys"
    cgroup_tree(root, {"memory.max": str(2 * GIB), "memory.current": str(GIB)})
    assert device_memory.cgroup_room(proc, root) == GIB
    assert device_memory.cgroup_room(tmp_path / "absent", root) is None


# --- The style images' pass --------------------------------------------------------------------


def test_style_pass_counts_input_output_and_kept_layers(vgg19):
    extractor = vgg19.extractor(["relu1_1", "relu2_1"])  # conv1_1 relu1_1 conv1_2 relu1_2 pool1 conv2_1 relu2_1
    h, w = 16, 12
    full = 64 * h * w
    # relu1_2: its input (conv1_2), its output and relu1_1 kept for its Gram matrix
    assert memory.style_pass(extractor, h, w) == 3 * full


def test_estimate_adds_the_style_pass_only_beyond_the_loops_activations(vgg19):
    extractor = vgg19.extractor(["relu4_2", "relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"])
    plain = memory.estimate(extractor, 24, 32, LBFGS, ["relu4_2"], "cpu")
    same = memory.estimate(extractor, 24, 32, LBFGS, ["relu4_2"], "cpu", [(24, 32)])
    assert same.styles == 3 * 24 * 32 * 4 and same.overhead == plain.overhead  # the pass fits in the loop's room
    large = memory.estimate(extractor, 24, 32, LBFGS, ["relu4_2"], "cpu", [(96, 128), (120, 90)])
    excess = max(memory.style_pass(extractor, 96, 128), memory.style_pass(extractor, 120, 90)) * 4 - plain.activations
    grams = 64**2 + 128**2 + 256**2 + 3 * 512**2  # one more style's Gram targets (every requested layer, as images counts)
    assert excess > 0 and large.styles == (3 * (96 * 128 + 120 * 90) + grams) * 4 + excess
    assert large.overhead == plain.overhead + excess  # oneDNN's copies on the CPU, as for the loop's activations
    assert large.total == plain.total + large.styles + excess


# --- The guard from header sizes, and advice that really fits ----------------------------------

LAYERS = ["relu4_2", "relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]
CPU = torch.device("cpu")


def sized_inputs(content_size, style_sizes=(), style_scale=1.0) -> Inputs:
    """Inputs whose files are upright (width, height) as given: the guard and the size rule read nothing else."""
    styles = tuple(
        StyleSource(StyleSpec(f"style{i}", None, 1.0), Path(f"style{i}.png"), size) for i, size in enumerate(style_sizes)
    )
    return Inputs(Path("content.png"), content_size, styles, None, style_scale)


def test_guard_advice_accounts_for_the_styles_and_passes_the_check(vgg19, monkeypatch):
    extractor = vgg19.extractor(LAYERS)
    guard_at = lambda size, scale: memory_guard.Guard(  # noqa: E731
        extractor, sized_inputs((640, 480), [(300, 400)], scale), size, LBFGS, ["relu4_2"], CPU
    )
    free = memory.estimate(extractor, 96, 128, LBFGS, ["relu4_2"], "cpu").total  # 128 px without styles
    monkeypatch.setattr(device_memory, "available", lambda device: free)
    guard = guard_at(256, 3.0)
    with pytest.raises(NstError, match="is the largest that fits") as refused:
        guard.check(True)
    suggested = guard.fitting_size()
    assert 0 < suggested < 128 and f"image_size={suggested} is the largest" in str(refused.value)
    guard_at(suggested, 3.0).check(True)  # the suggestion passes
    with pytest.raises(NstError):
        guard_at(suggested + 1, 3.0).check(True)
    assert guard_at(suggested, 3.0).estimate.styles > 0


def test_input_shapes_are_the_shapes_load_gives(tmp_path):
    content, style = tmp_path / "content.png", tmp_path / "style.jpg"
    Image.new("RGB", (333, 777)).save(content)
    Image.new("RGB", (1001, 13)).save(style)
    inputs = sized_inputs(images.header_size(content), [images.header_size(style)], 0.7)
    assert inputs.shape(99) == tuple(images.load(content, 99).shape[-2:])
    assert inputs.style_shapes(99) == [tuple(images.load(style, round(0.7 * 99)).shape[-2:])]


def test_smallest_size_for_a_wide_content_and_a_small_style_scale(vgg19, tmp_path):
    extractor = vgg19.extractor(LAYERS)  # relu5_1 sees its input 16 times smaller
    content = tmp_path / "wide.png"
    Image.new("RGB", (1000, 10)).save(content)
    size = sized_inputs((1000, 10), [(1000, 10)], 0.1).smallest_size(16)
    for candidate, passes in ((size, True), (size - 1, False)):
        loaded = [images.load(content, candidate), images.load(content, max(1, round(0.1 * candidate)))]
        if passes:
            for image in loaded:
                check_image_size(extractor, tuple(image.shape[-2:]), "test", candidate, f"Use image_size={size}")
        else:
            with pytest.raises(NstError, match="is too small for layer 'relu5_1'"):
                for image in loaded:
                    check_image_size(extractor, tuple(image.shape[-2:]), "test", candidate, f"Use image_size={size}")
    # the runner's advice today, ceil(factor * size / short side) from the content alone, falls short
    at_32 = images.load(content, 32)
    assert math.ceil(16 * 32 / min(at_32.shape[-2:])) < size
    assert sized_inputs((640, 480)).smallest_size(16) == 21  # 21 * 480 / 640 = 15.75, which load rounds to 16


def test_a_system_that_does_not_say_how_much_is_free_is_not_refused(vgg19, monkeypatch, caplog, tmp_path):
    """macOS and Windows: no /proc and no SC_AVPHYS_PAGES; the guard says it checks nothing."""
    monkeypatch.setattr(device_memory, "available", lambda device: device_memory.UNKNOWN_FREE)
    guard = memory_guard.Guard(vgg19.extractor(["relu1_1"]), sized_inputs((640, 480)), 4096, LBFGS, [], CPU)
    with caplog.at_level(logging.INFO, logger="nst_exp.memory_guard"):
        guard.check(True)
    assert caplog.records[-1].getMessage().endswith("this system does not say how much is free, so memory_guard checks nothing.")
    assert guard.measured()["memory_free_bytes"] is None
    message = guard.out_of_memory("CUDA out of memory", tmp_path, None)
    assert "free on cpu at the start" in message and "with an amount the system does not report free" in message
    assert message.endswith("To start again with less: a smaller image_size.")
