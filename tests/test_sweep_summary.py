"""A sweep with failed jobs says so when it ends, and exits non-zero; the report still reads it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import child_env, make_config, run_cli

from nst_exp.report import main as report_main
from nst_exp.report import read_sweep
from nst_exp.sweep_summary import FAILED_EXIT, SweepSummary, read_jobs, summary


def job(sweep: Path, name: str, overrides: list[str], metrics: dict | None) -> Path:
    """A job folder as Hydra and the runner leave it: .hydra/ and, unless killed, metrics.json."""
    folder = sweep / name
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text("alpha: 1.0\n")
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {item}\n" for item in overrides))
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def end_of_sweep(sweep: Path) -> None:
    """What Hydra does after the last job: the callback, with the sweep's composed config."""
    config = make_config([f"hydra.sweep.dir={sweep}"], return_hydra_config=True)
    SweepSummary().on_multirun_end(config=config, config_name="config")


def test_every_kind_of_unfinished_job_is_named_and_the_exit_is_non_zero(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    for number, status in enumerate(["completed", "diverged", "failed", "out_of_memory", "completed"]):
        job(sweep, str(number), [f"seed={number}"], {"status": status, "message": f"why {number}"})
    job(sweep, "10", ["seed=10"], None)  # killed before it wrote metrics.json
    (sweep / "report").mkdir()  # not a job
    with pytest.raises(SystemExit) as stopped:
        end_of_sweep(sweep)
    assert stopped.value.code == FAILED_EXIT
    said = capsys.readouterr().err
    assert said.startswith(
        "Sweep finished: 2 completed, 1 diverged (job 1: the last finite image is kept), "
        f"3 failed (jobs 2, 3, 10: 1 failed, 1 out_of_memory, 1 missing; see {sweep}/2/metrics.json, "
        f"{sweep}/3/metrics.json, {sweep}/10/metrics.json); report: python -m nst_exp.report {sweep}\n"
    )
    assert "  job 3 (seed=3): out_of_memory: why 3\n" in said
    assert "  job 10 (seed=10): missing: no metrics.json: the job was killed, or is still running" in said
    assert [j.name for j in read_jobs(sweep)] == ["0", "1", "2", "3", "4", "10"]  # by number, not as text


def test_a_sweep_whose_jobs_all_finished_ends_quietly_with_exit_0(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    job(sweep, "0", ["beta=1"], {"status": "completed"})
    job(sweep, "1", ["beta=1e9"], {"status": "diverged", "message": "loss NaN at 3"})  # a result, as in a single run
    end_of_sweep(sweep)  # no SystemExit
    assert capsys.readouterr().err == (
        "Sweep finished: 1 completed, 1 diverged (job 1: the last finite image is kept); "
        f"report: python -m nst_exp.report {sweep}\n"
    )


def test_a_sweep_without_job_folders_is_a_failure(tmp_path):
    assert "no job ran" in summary(tmp_path, [])
    with pytest.raises(SystemExit):
        end_of_sweep(tmp_path)


def test_the_callback_is_registered_for_every_run():
    callbacks = make_config([], return_hydra_config=True).hydra.callbacks
    assert [c._target_ for c in callbacks.values()] == ["nst_exp.sweep_summary.SweepSummary"]


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_real_sweep_with_a_failed_job_says_so_and_exits_non_zero(tiny, tmp_path, capsys):
    sweep = tmp_path / "sweep"
    done = run_cli("-m", *tiny, "iterations=2", "beta=1,-1", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert done.returncode == FAILED_EXIT, done.stderr[-3000:]
    assert (
        f"Sweep finished: 1 completed, 1 failed (job 1: see {sweep}/1/metrics.json); "
        f"report: python -m nst_exp.report {sweep}" in done.stderr
    )
    assert "  job 1 (beta=-1): failed: beta=-1.0 is negative." in done.stderr
    assert "Traceback" not in done.stderr

    # the report reads the failed job (Status values in metrics.json, no image, no TensorBoard events)
    assert list(read_sweep(sweep).jobs["status"]) == ["completed", "failed"]
    assert report_main([str(sweep)]) == 0
    printed = capsys.readouterr().out
    assert "2 jobs (1 completed, 1 failed)" in printed and "wrote" in printed
    only_failed = tmp_path / "only_failed"  # no image, no scalars anywhere: grey boxes, no losses.png
    shutil.copytree(sweep / "1", only_failed / "1")
    assert report_main([str(only_failed)]) == 0
    assert "1 jobs (1 failed)" in capsys.readouterr().out


def joblib_sweep(tiny: list[str], sweep: Path, betas: str) -> subprocess.Popen:
    """A joblib sweep of long jobs (two at a time), started in the background."""
    command = [
        sys.executable, "-m", "nst_exp", "-m", f"beta={betas}", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
        *tiny, "iterations=400", "checkpoint.every=5", f"hydra.sweep.dir={sweep}",
    ]
    return subprocess.Popen(command, cwd=sweep.parent, env=child_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def wait_for(condition, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()[-3000:]
        time.sleep(0.2)


def workers(process: subprocess.Popen) -> list[psutil.Process]:
    return [child for child in psutil.Process(process.pid).children(recursive=True) if "LokyProcess" in " ".join(child.cmdline())]


@pytest.mark.slow
@pytest.mark.subprocess
def test_under_joblib_a_failed_job_and_a_killed_worker_are_failed_jobs_in_the_summary(tiny, tmp_path):
    sweep = tmp_path / "sweep"
    process = joblib_sweep(tiny, sweep, "-1,1e3,1e4")  # job 0 refused at once, jobs 1 and 2 long
    wait_for(lambda: all((sweep / job / "checkpoints" / "last.pt").is_file() for job in ("1", "2")), process)
    os.kill(workers(process)[0].pid, signal.SIGKILL)  # as the out-of-memory killer does
    stderr = process.communicate(timeout=120)[1]
    assert process.returncode == FAILED_EXIT, stderr[-3000:]  # as under the basic launcher, not 2
    assert "Traceback" not in stderr and "TerminatedWorkerError" not in stderr
    assert f"Sweep finished: 0 completed, 3 failed (jobs 0, 1, 2: see {sweep}/0/metrics.json" in stderr
    assert "  job 0 (beta=-1): failed: beta=-1.0 is negative." in stderr
    for job in ("1", "2"):  # the killed worker's job, and the one loky stopped with it
        assert f"  job {job} (beta=1" in stderr
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        assert metrics["status"] == "failed" and metrics["message"].startswith("its joblib worker was killed (by the OS")
        assert f"Run the same sweep again with hydra.sweep.dir={sweep}" in metrics["message"]
        assert (sweep / job / "checkpoints" / "last.pt").is_file()  # what it had done is kept


@pytest.mark.slow
@pytest.mark.subprocess
def test_sigterm_to_a_joblib_sweep_saves_the_running_jobs_and_leaves_no_process(tiny, tmp_path):
    sweep = tmp_path / "sweep"
    process = joblib_sweep(tiny, sweep, "1e3,1e4,1e5")
    wait_for(lambda: all((sweep / job / "checkpoints" / "last.pt").is_file() for job in ("0", "1")), process)
    children = psutil.Process(process.pid).children(recursive=True)
    assert len(workers(process)) == 2 and len(children) >= 3  # two workers and the resource trackers
    process.send_signal(signal.SIGTERM)
    stderr = process.communicate(timeout=120)[1]
    assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, [child.cmdline() for child in alive]
    assert "Traceback" not in stderr
    assert f"Stopped by SIGTERM: every worker is stopped and no other job started. Run the same sweep again with " \
           f"hydra.sweep.dir={sweep} to finish it" in stderr
    assert not (sweep / "2").exists()  # not started after the signal
    for job in ("0", "1"):  # each saved as a single run does at SIGTERM: resumable
        assert json.loads((sweep / job / "metrics.json").read_text())["status"] == "interrupted"
        assert (sweep / job / "result.png").is_file() and (sweep / job / "checkpoints" / "last.pt").is_file()


@pytest.mark.filterwarnings(r"ignore:\s*'hydra/launcher/joblib' is validated against ConfigStore schema:UserWarning")
def test_hydra_launcher_joblib_is_nst_exps_launcher_with_joblibs_keys():
    from hydra.core.plugins import Plugins
    from hydra_plugins.hydra_joblib_launcher.config import JobLibLauncherConf

    launcher = make_config(["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], return_hydra_config=True).hydra.launcher
    assert launcher._target_ == "hydra_plugins.nst_exp_launcher.JoblibLauncher"
    assert set(launcher) == set(JobLibLauncherConf.__dataclass_fields__) and launcher.n_jobs == 2
    assert launcher._target_ in Plugins.instance().class_name_to_class  # Hydra takes launchers from hydra_plugins only


def test_a_damaged_job_record_is_an_unfinished_job_not_a_traceback(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    job(sweep, "0", ["seed=0"], {"status": "completed"})
    (job(sweep, "1", ["seed=1"], None) / "metrics.json").write_text("[1, 2, 3]")  # JSON, not an object
    (job(sweep, "2", ["seed=2"], {"status": "completed"}) / ".hydra" / "overrides.yaml").write_text("- a=[\n  :: {")
    with pytest.raises(SystemExit) as stopped:
        end_of_sweep(sweep)
    assert stopped.value.code == FAILED_EXIT
    said = capsys.readouterr().err
    assert said.startswith("Sweep finished: 2 completed, 1 failed (job 1: 1 unreadable; see ")
    assert "  job 1 (seed=1): unreadable: metrics.json could not be read: it holds a JSON list, not an object" in said
