"""What nst_exp promises about a run directory (docs/guarantees.md): no result mislabelled, nothing
half-written, every user error one message with exit status 2."""

from __future__ import annotations

import errno
import json

import pytest
import torch
from conftest import make_config, run_cli

import nst_exp.image_files
from nst_exp import checkpoint
from nst_exp.__main__ import disk_message, kept_checkpoint
from nst_exp.errors import NstError
from nst_exp.hardware import choose_speed, detect
from nst_exp.inputs import Inputs, user_path_keys
from nst_exp.results import RunDir
from nst_exp.resume import check_run_dir
from nst_exp.runner import run


@pytest.mark.subprocess
def test_a_refused_run_leaves_the_other_runs_record_alone(tmp_path, cli_run):
    """The first run is the session's (beta=100, in outputs/run), copied; the same command with beta=1000 is refused."""
    first = cli_run.done
    assert first.returncode == 0, first.stderr
    cli_run.copy(tmp_path)
    record = (tmp_path / "outputs" / "run" / ".hydra" / "config.yaml").read_text()
    metrics = (tmp_path / "outputs" / "run" / "metrics.json").read_text()
    refused = run_cli(*cli_run.args, "beta=1000", cwd=tmp_path)
    assert refused.returncode == 2
    assert "already holds a different run (beta is 100.0 there and 1000.0 now)" in refused.stderr + refused.stdout
    assert (tmp_path / "outputs" / "run" / ".hydra" / "config.yaml").read_text() == record
    assert "beta: 100.0" in record
    assert (tmp_path / "outputs" / "run" / "metrics.json").read_text() == metrics


@pytest.mark.subprocess
def test_resume_of_a_missing_directory_is_refused_before_anything_is_created(tmp_path):
    done = run_cli("resume=outputs/runs/nowhere", cwd=tmp_path)
    assert done.returncode == 2
    assert "resume=outputs/runs/nowhere: there is no such directory" in done.stderr
    assert not (tmp_path / "outputs").exists()


def test_resume_of_a_sweep_names_its_jobs(tmp_path):
    for job in ("0", "1"):
        folder = checkpoint.directory(tmp_path / job)
        folder.mkdir(parents=True)
        (folder / checkpoint.LAST).write_bytes(b"x")
    with pytest.raises(NstError, match=r"is a sweep's folder \(its jobs 0, 1 hold checkpoints\).*resume=.*/0"):
        check_run_dir(tmp_path)
    (tmp_path / "file").write_text("")
    with pytest.raises(NstError, match="is a file, not a run directory"):
        check_run_dir(tmp_path / "file")
    with pytest.raises(NstError, match="holds no checkpoint"):
        check_run_dir(tmp_path / "0" / RunDir.CHECKPOINTS)


def test_resume_with_fewer_iterations_than_done_is_refused_and_keeps_the_checkpoint(tmp_path, tiny):
    run(make_config([*tiny, "iterations=4", "checkpoint.every=2"]), out_dir=tmp_path / "run")
    before = {p.name: p.read_bytes() for p in checkpoint.directory(tmp_path / "run").iterdir()}
    resume = f"resume={tmp_path / 'run'}"
    with pytest.raises(NstError, match="has done 4 iterations already. Give iterations=4 or more"):
        run(make_config([resume, "iterations=2"]), overrides=[resume, "iterations=2"])
    after = {p.name: p.read_bytes() for p in checkpoint.directory(tmp_path / "run").iterdir()}
    assert after == before


@pytest.mark.subprocess
def test_a_config_that_does_not_compose_exits_2(tmp_path, tiny):
    done = run_cli(*tiny, "precision=fp16", cwd=tmp_path)
    assert done.returncode == 2
    assert "Invalid value 'fp16', expected one of [auto, fp32, bf16, tf32]" in done.stderr
    assert not (tmp_path / "outputs").exists()


def test_a_full_disk_leaves_no_partial_file_and_is_one_message(tmp_path, tiny, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    run_dir = tmp_path / "run"
    with pytest.raises(OSError) as error:
        run(make_config([*tiny, "iterations=4", "checkpoint.every=2"]), out_dir=run_dir)
    assert not [p for p in run_dir.rglob("*") if p.name.endswith((".part", ".new"))]
    message = disk_message(error.value, run_dir)
    assert "No space left on device" in message and "free space on that disk" in message
    assert f"resume={run_dir}" in message and "holds no checkpoint" in message


def test_the_stop_message_names_the_checkpoint_that_is_really_there(tmp_path):
    assert "holds no checkpoint" in kept_checkpoint(tmp_path)
    folder = checkpoint.directory(tmp_path)
    folder.mkdir(parents=True)
    (folder / checkpoint.PREVIOUS).write_bytes(b"x")
    assert f"the last whole checkpoint is {folder / checkpoint.PREVIOUS}" in kept_checkpoint(tmp_path)


def test_a_path_the_user_typed_is_never_fetched(tiny, monkeypatch):
    fetched = []
    monkeypatch.setattr(nst_exp.image_files, "fetch", lambda url, destination: fetched.append(url))
    overrides = [*tiny, "content.path=tubingen_typo.jpg", "style.path=style.png"]
    cfg = make_config([*overrides, "content=tubingen"])
    assert cfg.content.url  # the config's url stays, but belongs to the config's own file name
    with pytest.raises(NstError, match="The content image 'tubingen_typo.jpg' was not found"):
        Inputs.from_config(cfg, user_path_keys(overrides))
    assert fetched == []


def test_metrics_record_the_speed_setting_and_what_ran(tmp_path, tiny):
    result = run(make_config([*tiny, "precision=fp32"]), out_dir=tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert (metrics["precision"], metrics["precision_used"]) == ("fp32", "fp32")
    nhwc = choose_speed("fp32", "auto", detect(torch.device("cpu"))).channels_last_used  # True on CPUs with AMX
    assert metrics["channels_last"] == "auto" and metrics["channels_last_used"] is nhwc
    assert result.metrics == metrics


@pytest.mark.subprocess
def test_a_run_dir_where_a_file_stands_is_one_message_before_anything_runs(tmp_path, tiny):
    (tmp_path / "taken").write_text("")
    done = run_cli(*tiny, "hydra.run.dir=taken/run", cwd=tmp_path)
    assert done.returncode == 2
    assert f"{tmp_path / 'taken'} is a file, not a folder. Remove or rename that file" in done.stderr
    assert "Traceback" not in done.stderr and "Error executing job" not in done.stderr
