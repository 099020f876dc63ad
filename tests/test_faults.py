"""Faults from outside: a run and a sweep killed with SIGTERM through the real CLI, unsafe weights.

The CLI tests start ``python -m nst_exp`` in a subprocess (random weights,
32 px, shallow layers, one thread) and send SIGTERM once a checkpoint
exists, as a cluster preempting the job would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, child_env, make_config, run_cli
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from nst_exp.errors import NstError
from nst_exp.features import load_network
from nst_exp.runner import run

ONE_THREAD = {"OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}  # as the reference run in this process
STARTUP_TIMEOUT_S = 120


@pytest.fixture
def long_run(tiny):
    """Overrides for a small CLI run that lasts long enough to be killed mid-way."""
    return [*tiny, "content_layers=[relu2_1]", "style_layers=[relu1_1,relu2_1]", "checkpoint.every=2", "iterations=80"]


def start(*args: str) -> subprocess.Popen:
    """``python -m nst_exp *args`` in the checkout, output (Hydra logs to stdout) in one pipe."""
    return subprocess.Popen(
        [sys.executable, "-m", "nst_exp", *args],
        cwd=ROOT,
        env=child_env(**ONE_THREAD),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def kill_when(path: Path, *args: str) -> tuple[int, str]:
    """Start the CLI, send SIGTERM as soon as ``path`` exists, return its exit status and output."""
    process = start(*args)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not path.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=STARTUP_TIMEOUT_S)
    return process.returncode, output


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def saved(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)


@pytest.mark.slow
@pytest.mark.subprocess
def test_sigterm_stops_the_cli_with_a_checkpoint_and_resume_finishes_the_same_run(tmp_path, long_run):
    run_dir = tmp_path / "run"
    status, output = kill_when(run_dir / "checkpoints" / "last.pt", *long_run, f"hydra.run.dir={run_dir}")
    assert status == 128 + signal.SIGTERM, output
    assert "Stopped by SIGTERM after" in output and f"Continue: python -m nst_exp resume={run_dir}" in output
    stopped = saved(run_dir)
    assert stopped["status"] == "interrupted" and 2 <= stopped["iteration"] < 80
    assert metrics(run_dir)["status"] == "interrupted" and (run_dir / "result.png").is_file()

    done = run_cli(f"resume={run_dir}", cwd=ROOT, env=ONE_THREAD)
    status, output = done.returncode, done.stdout + done.stderr
    assert status == 0, output
    assert f"from its checkpoint at iteration {stopped['iteration']}" in output
    assert "with the config saved there, not one composed now" in output
    assert metrics(run_dir)["status"] == "completed" and metrics(run_dir)["iterations"] == 80

    torch.set_num_threads(1)  # as the subprocesses: same arithmetic, same image
    run(make_config(long_run), out_dir=tmp_path / "reference")
    assert torch.equal(saved(run_dir)["image"], saved(tmp_path / "reference")["image"])

    events = EventAccumulator(str(run_dir))  # TensorBoard's reader honours the resumed run's purge_step
    events.Reload()
    steps = [event.step for event in events.Scalars("loss/total")]
    assert steps == list(range(1, 82))  # each iteration once, then the final image's losses


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_sweep_killed_mid_job_keeps_finished_jobs_and_a_rerun_finishes_the_rest(tmp_path, long_run):
    sweep = tmp_path / "sweep"
    args = ["-m", *long_run, "seed=0,1,2", f"hydra.sweep.dir={sweep}"]
    status, output = kill_when(sweep / "1" / "checkpoints" / "last.pt", *args)
    assert status == 128 + signal.SIGTERM, output
    assert metrics(sweep / "0")["status"] == "completed" and (sweep / "0" / "result.png").is_file()
    assert metrics(sweep / "1")["status"] == "interrupted"
    assert not (sweep / "2").exists()
    stopped_at = saved(sweep / "1")["iteration"]
    finished = (sweep / "0" / "result.png").stat().st_mtime_ns

    done = run_cli(*args, cwd=ROOT, env=ONE_THREAD)
    status, output = done.returncode, done.stdout + done.stderr
    assert status == 0, output
    assert "already holds this run, completed: skipped" in output
    assert (sweep / "0" / "result.png").stat().st_mtime_ns == finished
    assert metrics(sweep / "1")["resumed_from"] == [stopped_at]
    for job in ("0", "1", "2"):
        assert metrics(sweep / job)["status"] == "completed" and metrics(sweep / job)["iterations"] == 80


def test_weights_with_a_pickle_payload_are_refused_without_running_it(tmp_path):
    marker = tmp_path / "payload_ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    weights = tmp_path / "vgg19.pth"
    torch.save({"features.0.weight": Payload()}, weights)
    with pytest.raises(NstError, match="a pickle that needs code to load is refused"):
        load_network("vgg19", str(weights))
    assert not marker.exists()


def test_weights_of_the_wrong_shape_are_refused_by_name(tmp_path):
    weights = tmp_path / "vgg19.pth"
    torch.save({"features.0.weight": torch.zeros(32, 3, 3, 3), "features.0.bias": torch.zeros(32)}, weights)
    with pytest.raises(NstError, match=r"'features.0.weight' has shape \(32, 3, 3, 3\), the network expects \(64, 3, 3, 3\)"):
        load_network("vgg19", str(weights))
