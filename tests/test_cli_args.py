"""``nst-exp CONTENT STYLE [STYLE ...] [-o OUT.png] [overrides ...]``: images and -o on the command line."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import pytest
import yaml
from conftest import make_config, pattern_image, run_cli
from PIL import Image

from nst_exp import __main__ as entry
from nst_exp.cli_args import copy_result, parse, quoted

RUN = ["model.weights=random", "image_size=32", "iterations=2", "log.progress=false", "log.image_every=0"]


@pytest.mark.subprocess
def test_images_and_output_on_the_command_line_with_odd_names(tmp_path):
    """The README's one-liner: files named with '=', commas, spaces and a quote; the run dir as without -o."""
    photo = pattern_image(tmp_path / "my=photo, 1.png", (64, 48), seed=1)
    pattern_image(tmp_path / "it's,a=style.png", (48, 64), seed=2)
    done = run_cli(photo.name, "it's,a=style.png", "-o", "out dir/result, 1.jpg", *RUN, "hydra.run.dir=runs/one", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    run_dir = tmp_path / "runs" / "one"
    config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())  # YAML may fold a long path
    assert (config["content"]["path"], config["content"]["name"]) == (str(photo), "my=photo, 1")
    assert config["style"]["path"] == f"{tmp_path}/it's,a=style.png"
    with Image.open(tmp_path / "out dir" / "result, 1.jpg") as copied, Image.open(run_dir / "result.png") as result:
        assert copied.format == "JPEG" and copied.size == result.size == (32, 24)
    assert "Wrote out dir/result, 1.jpg (a copy of" in done.stdout + done.stderr
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "completed"


def test_positional_images_become_overrides(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photo.jpg").touch()
    command = parse(["photo.jpg", "a.png", "/abs/b.png", "-m", "beta=1e3,1e4", "--cfg", "job", "~x", "+y=1"])
    assert command.hydra_args == [
        f"content.path='{tmp_path}/photo.jpg'", "content.name='photo'", "content.url=null", "content.sha256=null",
        "styles=['a.png','/abs/b.png']",  # not in the current folder: looked up under images_dir
        "-m", "beta=1e3,1e4", "--cfg", "job", "~x", "+y=1",
    ]
    assert command.output is None
    one = parse(["--output=out.png", "photo.jpg", "style.png", "beta=1"])
    assert one.output == Path("out.png") and "style.path='style.png'" in one.hydra_args
    assert parse(["photo.jpg", "style=the_scream"]).hydra_args[:2] == [f"content.path='{tmp_path}/photo.jpg'",
                                                                       "content.name='photo'"]
    assert parse(["style=the_scream", "--info", "defaults"]).hydra_args == ["style=the_scream", "--info", "defaults"]


def test_quoted_values_reach_the_config_unchanged():
    for path in ["/tmp/a b,c=d/it's.png", "C:\\images\\x.png", "/tmp/${oops}.png", "/tmp/back\\"]:
        assert make_config([f"content.path={quoted(path)}"]).content.path == path
    cfg = make_config(parse(["/x/a,b.png", "/x/c.png", "/x/d'.png"]).hydra_args)
    assert list(cfg.styles) == ["/x/c.png", "/x/d'.png"] and cfg.content.path == "/x/a,b.png"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["-m", "a.png", "b.png", "-o", "out.png"], "-o out.png copies one run's result, but -m starts a sweep"),
        (["a.png", "b.png", "-o", "out.txt"], "-o out.txt: the name says no image type. End it in one of .jpg"),
        (["a.png", "b.png", "-o"], "-o needs a value, e.g. -o out.png"),
        (["a.png", "starry_night"], "'starry_night' is neither an image file nor an override: no such file"),
        (["a.png", "starry_night"], "For the shipped style 'starry_night', write style=starry_night."),
        (["stlye=starry_night"], "Could not override 'stlye': nst_exp has no key or config group of that name. "
                                 "Did you mean style= (the config group)?"),
        (["bata=1e4"], "Did you mean beta= (the key)?"),
    ],
)
def test_command_line_mistakes_are_one_message_and_exit_2(argv, message, monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["nst-exp", *argv])
    with pytest.raises(SystemExit) as stop:
        entry.main()
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith("Error: ") and message in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_output_of_a_diverged_run_is_its_last_image_and_says_so(tmp_path, caplog):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    pattern_image(run_dir / "result.png", (32, 24))
    (run_dir / "metrics.json").write_text(json.dumps({"status": "diverged"}))
    with caplog.at_level(logging.INFO, logger="nst_exp"):
        copy_result(run_dir, tmp_path / "new" / "out.png")
    assert (tmp_path / "new" / "out.png").read_bytes() == (run_dir / "result.png").read_bytes()
    assert caplog.records[-1].levelname == "WARNING"
    assert caplog.records[-1].getMessage().startswith(
        f"The run diverged (the loss turned NaN or infinite): {tmp_path}/new/out.png holds its last finite image"
    )
    assert [p.name for p in (tmp_path / "new").iterdir()] == ["out.png"]  # no partial file left


def test_debug_quick_is_tiny_and_one_stage():
    cfg = make_config(["experiment=coarse_to_fine", "debug=quick"])
    assert (cfg.image_size, cfg.iterations, list(cfg.coarse_to_fine.sizes)) == (64, 10, [])
    assert cfg.log.image_every == 0 and cfg.checkpoint.every == 0


@pytest.mark.parametrize("script, module", [("nst-exp-report", "nst_exp.report.cli"), ("nst-exp-evaluate", "nst_exp.evaluate")])
def test_each_console_script_names_itself_in_its_usage(script, module, monkeypatch, capsys):
    import importlib

    main = importlib.import_module(module).main
    for argv0, name in [(f"/venv/bin/{script}", script), ("-m", f"python -m {module.removesuffix('.cli')}")]:
        monkeypatch.setattr(sys, "argv", [argv0])
        with pytest.raises(SystemExit):
            main(["--help"])
        assert capsys.readouterr().out.startswith(f"usage: {name} [-h]")


def test_existing_files_without_an_image_suffix_are_images_too(tmp_path, monkeypatch):
    from nst_exp.styles import style_specs

    monkeypatch.chdir(tmp_path)
    for name in ("photo", "first", "second"):
        (tmp_path / name).touch()
    cfg = make_config(parse(["photo", "first", "second"]).hydra_args)
    assert cfg.content.path == str(tmp_path / "photo") and cfg.content.url is None
    assert [(spec.name, spec.image.path) for spec in style_specs(cfg)] == [
        ("first", str(tmp_path / "first")), ("second", str(tmp_path / "second"))
    ]


def test_tab_completion_skips_the_images_and_the_output(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photo").touch()
    monkeypatch.setenv("COMP_LINE", "nst-exp photo a.png -o out.png --output=x.jpg -m beta=1 sty")
    assert parse(["-sc", "query=bash"]).hydra_args == ["-sc", "query=bash"]
    assert os.environ["COMP_LINE"] == "nst-exp -m beta=1 sty"


def test_main_copies_after_a_finished_run_and_not_after_a_failed_one(tmp_path, monkeypatch, caplog):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    pattern_image(run_dir / "result.png", (32, 24))
    (run_dir / "metrics.json").write_text(json.dumps({"status": "completed"}))

    def finished() -> None:
        monkeypatch.setattr(entry, "_job_started", True)
        monkeypatch.setattr(entry, "_run_dir", run_dir)

    def failed() -> None:
        finished()
        sys.exit(2)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["nst-exp", "-o", "out.png", "hydra.run.dir=run"])
    monkeypatch.setattr(entry, "job", failed)
    with caplog.at_level(logging.INFO, logger="nst_exp"), pytest.raises(SystemExit):
        entry.main()
    assert caplog.records[-1].getMessage() == "Nothing written to out.png: the run did not finish."
    assert not (tmp_path / "out.png").exists()
    monkeypatch.setattr(entry, "job", finished)
    monkeypatch.setattr(sys, "argv", ["nst-exp", "-o", "out.png", "hydra.run.dir=run"])  # main hands Hydra the rest
    with caplog.at_level(logging.INFO, logger="nst_exp"):
        entry.main()
    assert (tmp_path / "out.png").read_bytes() == (run_dir / "result.png").read_bytes()
    assert caplog.records[-1].getMessage() == f"Wrote out.png (a copy of {run_dir / 'result.png'})."
