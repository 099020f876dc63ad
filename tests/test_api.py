"""The Python API (nst_exp.api): compose as the command line does, stylize from paths, PIL images and tensors."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from conftest import ROOT, make_config, pattern_image, run_python
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from PIL import Image

import nst_exp
from nst_exp import ConfigError, NstError, Result, compose, stylize
from nst_exp.api import override_value
from nst_exp.config import conf_dir

TINY = ("model=vgg19", "model.weights=random", "log.progress=false", "log.image_every=0")
KEYS = {"image_size": 32, "iterations": 2}


@pytest.fixture
def empty_cwd(tmp_path, monkeypatch):
    """A current directory that must stay empty."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def check(result: Result, size=(32, 24)) -> None:
    assert isinstance(result, Result) and result.status == "completed"
    assert isinstance(result.image, Image.Image) and result.image.size == size
    assert result.tensor.shape == (1, 3, size[1], size[0])
    assert torch.isfinite(torch.tensor(result.loss))
    assert {"eval/content_ssim", "eval/style_swd", "eval/color_distance"} <= set(result.metrics)


def test_compose_is_the_command_lines_config_and_leaves_hydra_as_it_was():
    overrides = ["style=the_scream", "beta=1e4", "model=vgg16"]
    assert OmegaConf.to_yaml(compose(*overrides)) == OmegaConf.to_yaml(make_config(overrides))
    assert compose().beta == 1e3  # again, with no leftover state
    assert not GlobalHydra.instance().is_initialized()
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):  # inside an application's own Hydra
        assert compose("image_size=64").image_size == 64
        assert GlobalHydra.instance().is_initialized()
    assert not GlobalHydra.instance().is_initialized()


def test_a_bad_override_is_a_config_error_with_hydras_message():
    with pytest.raises(ConfigError, match=r"Invalid value 'fp16', expected one of \[auto, fp32, bf16, tf32\]"):
        compose("precision=fp16")
    with pytest.raises(NstError, match=r"Could not override 'alhpa'"):
        compose("alhpa=3")
    with pytest.raises(ConfigError, match="Available options in 'model'"):
        stylize(Image.new("RGB", (8, 8)), Image.new("RGB", (8, 8)), "model=vgg99")


def test_stylize_paths_in_memory_writes_nothing(tmp_path, empty_cwd):
    content = pattern_image(tmp_path / "my photo.png", (64, 48), seed=1)  # a space: the override is quoted
    style = pattern_image(tmp_path / "style.png", (48, 64), seed=2)
    result = stylize(content, str(style), *TINY, **KEYS)
    check(result)
    assert result.run_dir is None
    assert list(empty_cwd.iterdir()) == []  # no outputs/, no images/, no log


def test_stylize_pil_images_and_tensors(tmp_path, empty_cwd):
    content = Image.open(pattern_image(tmp_path / "c.png", (64, 48), seed=1))
    style = Image.open(pattern_image(tmp_path / "s.png", (48, 64), seed=2))
    from_pil = stylize(content, style, *TINY, **KEYS)
    check(from_pil)
    from nst_exp.images import to_tensor

    from_tensors = stylize(to_tensor(content)[0], to_tensor(style), *TINY, **KEYS)  # (3, H, W) and (1, 3, H, W)
    check(from_tensors)
    assert torch.equal(from_tensors.tensor, from_pil.tensor)  # 8-bit images round-trip exactly
    assert list(empty_cwd.iterdir()) == []
    with pytest.raises(NstError, match=r"tensor of shape \(3, H, W\) or \(1, 3, H, W\)"):
        stylize(torch.rand(2, 3, 8, 8), style, *TINY, **KEYS)


def test_stylize_into_out_dir_writes_a_run_the_report_reads(tmp_path, empty_cwd):
    content = pattern_image(tmp_path / "c.png", (64, 48), seed=1)
    style = pattern_image(tmp_path / "s.png", (48, 64), seed=2)
    for beta in (1e3, 1e4):
        result = stylize(content, style, *TINY, **KEYS, beta=beta, out_dir=tmp_path / "runs" / f"beta_{beta:g}")
        check(result)
        assert (result.run_dir / "result.png").is_file()
        assert json.loads((result.run_dir / "metrics.json").read_text())["status"] == "completed"
        assert OmegaConf.load(result.run_dir / ".hydra" / "config.yaml").beta == beta
    assert list(empty_cwd.iterdir()) == []

    sweep = nst_exp.read_sweep(tmp_path / "runs")
    assert sweep.swept == ["beta"] and list(sweep.jobs["status"]) == ["completed"] * 2
    assert nst_exp.evaluate_run(result.run_dir).keys() == {"eval/content_ssim", "eval/style_swd", "eval/color_distance"}
    assert (nst_exp.build_report(tmp_path / "runs").written["index.html"]).is_file()


def test_a_content_reconstruction_is_not_scored_against_the_painting(tmp_path, empty_cwd):
    content = pattern_image(tmp_path / "c.png", (64, 48), seed=1)
    style = pattern_image(tmp_path / "s.png", (48, 64), seed=2)
    result = stylize(content, style, *TINY, **KEYS, beta=0.0, out_dir=tmp_path / "run")
    assert "eval/content_ssim" in result.metrics
    assert not {"eval/style_swd", "eval/color_distance"} & set(result.metrics)  # beta = 0: no painting used
    assert nst_exp.evaluate_run(result.run_dir).keys() == {"eval/content_ssim"}
    assert sorted(path.name for path in (result.run_dir / "inputs").iterdir()) == ["content.png"]  # no painting kept


def test_stylize_into_a_folder_holding_another_run_is_refused_and_keeps_its_record(tmp_path, empty_cwd):
    content = pattern_image(tmp_path / "c.png", (64, 48), seed=1)
    style = pattern_image(tmp_path / "s.png", (48, 64), seed=2)
    first = stylize(content, style, *TINY, **KEYS, beta=1e3, out_dir=tmp_path / "run")
    record = (first.run_dir / ".hydra" / "config.yaml").read_text()
    with pytest.raises(NstError) as refused:
        stylize(content, style, *TINY, **KEYS, beta=1e4, out_dir=tmp_path / "run")
    assert str(refused.value) == (
        f"{tmp_path / 'run'} already holds a different run (beta is 1000.0 there and 10000.0 now). "
        "Use another output dir (out_dir=...), or delete that one to start over."
    )
    assert (first.run_dir / ".hydra" / "config.yaml").read_text() == record


def test_a_missing_image_names_the_argument_of_stylize(tmp_path, empty_cwd):
    style = pattern_image(tmp_path / "s.png", (48, 64), seed=2)
    with pytest.raises(NstError) as missing:
        stylize(tmp_path / "nope.jpg", style, *TINY, **KEYS)
    assert str(missing.value) == (
        f"stylize(content=...): '{tmp_path / 'nope.jpg'}' does not exist. Give content= the path of an existing "
        "image file, a PIL image, or a tensor (3, H, W) with values in [0, 1]."
    )
    with pytest.raises(NstError, match=r"^stylize\(style=...\): '.*' is a directory, not a style image file"):
        stylize(style, tmp_path, *TINY, **KEYS)


@pytest.mark.parametrize(
    "value, typed",
    [
        (None, "null"), (True, "true"), (1e7, "10000000.0"), (3, "3"), ("relu4_2", "relu4_2"),
        (["relu1_1", "relu2_1"], "[relu1_1,relu2_1]"), ("/a b/it's.png", r"'/a b/it\'s.png'"),
        ("null", "'null'"), ({"progress": False}, "{progress:false}"),
    ],
)
def test_keys_become_overrides_hydra_reads_back(value, typed):
    assert override_value(value) == typed


def test_a_quoted_path_reaches_the_config_unchanged():
    for path in ["/tmp/a b,c=d/it's.png", "C:\\images\\x.png", "C:\\dir\\", "a\\'b"]:  # Windows paths too
        assert compose(f"content.path={override_value(path)}").content.path == path


@pytest.mark.subprocess
def test_the_public_names_and_that_import_nst_exp_does_not_import_torch():
    import nst_exp.report
    import nst_exp.runner

    # each public function under its own name, beside (not instead of) its module
    assert nst_exp.run is nst_exp.runner.run and nst_exp.build_report is nst_exp.report.build_report
    assert nst_exp.build_report.__module__ == "nst_exp.report.build" and nst_exp.score.__module__ == "nst_exp.picture_scores"
    code = "import sys, nst_exp; assert nst_exp.NstError and nst_exp.Result; print('torch' in sys.modules)"
    done = run_python("-c", code, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


@pytest.mark.parametrize(
    "script, module, args",
    [
        ("nst-exp-report", "nst_exp.report.cli", ["--help"]),
        ("nst-exp-evaluate", "nst_exp.evaluate", ["--help"]),
    ],
)
def test_console_scripts_read_argv(script, module, args, capsys):
    import importlib

    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts[script] == f"{module}:main"
    with pytest.raises(SystemExit) as stop:
        importlib.import_module(module).main(args)
    assert stop.value.code == 0 and "usage:" in capsys.readouterr().out


@pytest.mark.subprocess
def test_hydra_console_scripts_answer_help(tmp_path):
    """nst-exp and nst-exp-normalize are Hydra apps: main() reads sys.argv."""
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["nst-exp"] == "nst_exp.__main__:main"
    assert scripts["nst-exp-normalize"] == "nst_exp.normalize:main"
    for entry in ("nst_exp.__main__", "nst_exp.normalize"):
        code = f"import sys; sys.argv = ['x', '--help']; from {entry} import main; main()"
        done = run_python("-c", code, cwd=tmp_path, timeout=120)
        assert done.returncode == 0, done.stderr
        assert list(tmp_path.iterdir()) == []
    # nst-exp-normalize's help is a page like nst-exp's: what it does, its own keys and group, examples.
    assert done.stdout.startswith("nst-exp-normalize: the papers' normalised VGG, written as a weights file")
    assert "  min_factor=0.0                    no filter's f below this times" in done.stdout
    assert "\n  model: vgg16, vgg16_bn, vgg16_bn_craft, vgg16_caffe, vgg19, vgg19_bn\n" in done.stdout
    assert "style:" not in done.stdout and "alpha" not in done.stdout and "powered by Hydra" not in done.stdout


def test_log_lines_print_above_an_enabled_progress_bar(monkeypatch):
    import io
    import logging

    from tqdm.contrib.logging import _TqdmLoggingHandler

    from nst_exp.callbacks import ProgressBar

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    root = logging.getLogger()
    console = logging.StreamHandler(sys.stderr)
    root.addHandler(console)
    try:
        bar = ProgressBar(3, enabled=True)
        assert not bar.bar.disable
        with bar.logging_above():
            assert any(isinstance(h, _TqdmLoggingHandler) for h in root.handlers) and console not in root.handlers
        assert console in root.handlers
        bar.bar.close()
    finally:
        root.removeHandler(console)
