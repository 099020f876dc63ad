"""Every bad input the runner meets gets a message naming the problem and the fix."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from conftest import child_env, make_config
from hydra.errors import ConfigCompositionException

from nst_exp.errors import NstError
from nst_exp.runner import run


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["style_weights=[0.5,0.5]"], "style_weights has 2 values but style_layers has 5"),
        (["alpha=-1"], "alpha=-1.0 is negative"),
        (["beta=-5"], "beta=-5.0 is negative"),
        (["alpha=0", "beta=0"], "alpha and beta are both 0"),
        (["content_layers=[conv9_1]"], "Unknown content layer 'conv9_1'"),
        # image_size=21: the smallest that passes (test_memory)
        (["image_size=8"], r"image_size=8 is too small for layer 'relu5_1'.*Use image_size=21 or more"),
        (["style.path=missing.jpg"], "The style image 'missing.jpg' was not found"),
        (["init=file", "init.path=nowhere.png"], "The init image 'nowhere.png' was not found"),
        (["iterations=-1"], "iterations=-1 is negative. iterations must be an integer >= 0"),
    ],
)
def test_bad_values_raise_clear_errors(tmp_path, tiny, overrides, message):
    with pytest.raises(NstError, match=message):
        run(make_config([*tiny, *overrides]), out_dir=tmp_path)


@pytest.mark.parametrize(
    ("override", "options"),
    [
        ("loss=caffe", "paper, authors_code"),
        ("model.pooling=min", "avg, max"),
        ("precision=fp16", "auto, fp32, bf16, tf32"),
        ("init.kind=zeros", "noise, content, style, file"),
        ("color.mode=sepia", "none, luminance, histogram"),
        ("spatial.propagation=blur", "downsample, inside"),
    ],
)
def test_fixed_choices_fail_when_composed_listing_the_options(tiny, override, options):
    with pytest.raises(ConfigCompositionException) as error:
        make_config([*tiny, override])
    value = override.split("=")[1]
    assert f"Invalid value '{value}', expected one of [{options}]" in str(error.value.__cause__)


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the message when CUDA is absent")
def test_unavailable_device_is_named(tmp_path, tiny):
    with pytest.raises(NstError, match="device=cuda was asked for but is not available here"):
        run(make_config([*tiny, "device=cuda"]), out_dir=tmp_path)


def test_imagenet_weights_offline_fail_fast_with_instructions(tmp_path, tiny, monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty weights cache
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    started = time.monotonic()
    with pytest.raises(NstError) as error:
        run(make_config([*tiny, "model.weights=imagenet"]), out_dir=tmp_path / "run")
    assert time.monotonic() - started < 60
    message = str(error.value)
    assert "Could not get the ImageNet vgg19 weights" in message
    assert "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth" in message
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth") in message
    assert "model.weights=/path/to/vgg19-dcbb9e9d.pth" in message and "model.weights=random" in message


@pytest.mark.subprocess
def test_ctrl_c_saves_image_and_metrics(tmp_path, tiny):
    run_dir = tmp_path / "outputs" / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "nst_exp", *tiny, "iterations=100000", "log.image_every=1", f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (run_dir / "snapshots" / "iter_000003.png").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 130, output
    line = f"Saved in {run_dir}: result.png, metrics.json and the checkpoint {run_dir / 'checkpoints' / 'last.pt'}. "
    assert "Stopped by SIGINT after " in output and line + f"Continue: python -m nst_exp resume={run_dir}" in output
    assert (run_dir / "checkpoints" / "last.pt").is_file()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and metrics["iterations"] >= 3
    assert (run_dir / "result.png").is_file()
