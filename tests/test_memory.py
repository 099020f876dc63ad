"""The memory guard: the estimate's arithmetic, the refusal, the override."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from conftest import make_config
from omegaconf import OmegaConf

import nst_exp.memory
from nst_exp import memory
from nst_exp.errors import NstError
from nst_exp.features import load_network
from nst_exp.run import run

LBFGS = OmegaConf.create({"_target_": "torch.optim.LBFGS", "history_size": 7})
ADAM = OmegaConf.create({"_target_": "torch.optim.Adam"})


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
    extra = memory.estimate(maxpool, 8, 6, ADAM, [], "cpu").activations - memory.estimate(avgpool, 8, 6, ADAM, [], "cpu").activations
    assert extra == 2 * pooled * 4  # int64 indices: two float32s per output


def test_largest_size_is_the_last_that_fits():
    assert memory.largest_size(lambda size: size * size <= 1000, 512) == 31
    assert memory.largest_size(lambda size: False, 512) == 0
    assert memory.largest_size(lambda size: True, 512) == 512


def test_guard_refuses_with_the_estimate_and_the_largest_image_size(tiny, monkeypatch, tmp_path, vgg19):
    # What a 24 px run (24 x 18, the content's aspect) needs is all there is.
    extractor = vgg19.extractor(["relu4_2", "relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"])
    lbfgs = OmegaConf.create({"_target_": "torch.optim.LBFGS", "history_size": 100})
    free = memory.estimate(extractor, 18, 24, lbfgs, ["relu4_2"], "cpu").total
    monkeypatch.setattr(nst_exp.memory, "available", lambda device: free)
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
    monkeypatch.setattr(nst_exp.memory, "available", lambda device: 1)
    with caplog.at_level(logging.WARNING, logger="nst_exp.memory"):
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
    real_path = memory.Path
    monkeypatch.setattr(memory, "Path", lambda p: meminfo if p == "/proc/meminfo" else real_path(p))
    monkeypatch.setattr(memory, "_cgroup_room", lambda: None)
    assert memory.available(torch.device("cpu")) == 2000 * 1024
    monkeypatch.setattr(memory, "_cgroup_room", lambda: 1000)
    assert memory.available(torch.device("cpu")) == 1000
