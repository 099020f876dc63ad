"""Searching the balance with Hydra's Optuna sweeper: what a job returns, failed trials, a real search."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest
from conftest import make_config, run_cli
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from nst_exp import objective
from nst_exp.errors import NstError
from nst_exp.sweep_summary import FailedTrials, TrialFailed
from nst_exp.validation import validate

METRICS = {"status": "completed", "loss/total": 12.5, "eval/content_ssim": 0.6, "eval/style_swd": 40.0}


def test_one_objective_is_a_float_as_the_basic_sweeper_had():
    value = objective.select(METRICS, ["loss/total"])
    assert isinstance(value, float) and value == 12.5


def test_two_objectives_are_a_tuple_in_their_order():
    assert objective.select(METRICS, ["eval/content_ssim", "eval/style_swd"]) == (0.6, 40.0)
    assert objective.select(METRICS, ["eval/style_swd", "eval/content_ssim"]) == (40.0, 0.6)


def test_weights_sum_the_objectives_into_one_float():
    value = objective.select(METRICS, ["eval/content_ssim", "eval/style_swd"], [1.0, -0.01])
    assert isinstance(value, float) and value == pytest.approx(0.6 - 0.4)


def test_a_value_the_run_did_not_record_is_nan():
    ssim, swd = objective.select({"eval/content_ssim": None}, ["eval/content_ssim", "eval/style_swd"])
    assert math.isnan(ssim) and math.isnan(swd)


def test_a_failed_job_returns_as_many_nans_as_a_finished_one():
    assert math.isnan(objective.failed(["loss/total"]))
    assert [math.isnan(v) for v in objective.failed(["eval/content_ssim", "eval/style_swd"])] == [True, True]
    assert math.isnan(objective.failed(["eval/content_ssim", "eval/style_swd"], [1.0, -1.0]))
    assert math.isnan(objective.failed([]))


def test_an_unknown_objective_names_the_nearest_and_every_known_key():
    with pytest.raises(NstError) as error:
        objective.check(["eval/content_sim"])
    message = str(error.value)
    assert "Unknown objective 'eval/content_sim'" in message and "Did you mean 'eval/content_ssim'?" in message
    assert "Known: loss/total, loss/content, loss/style, eval/content_ssim, eval/style_swd, eval/color_distance" in message


def test_objective_needs_a_name_and_one_weight_per_name():
    with pytest.raises(NstError, match="objective is empty"):
        objective.check([])
    with pytest.raises(NstError, match="objective_weights has 1 value for 2 objectives"):
        objective.check(["eval/content_ssim", "eval/style_swd"], [1.0])
    objective.check(["eval/content_ssim", "eval/style_swd"], [1.0, -0.01])


def test_objective_weights_must_be_finite(tiny):
    with pytest.raises(NstError, match=r"objective_weights\[1\]=nan is NaN"):
        validate(make_config([*tiny, "objective=[eval/content_ssim,eval/style_swd]", "objective_weights=[1,nan]"]))


def test_balance_asks_nsga2_for_the_front_of_ssim_and_swd():
    cfg = make_config(["hparams_search=balance"], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.sampler._target_.endswith("NSGAIISampler")
    assert list(cfg.objective) == ["eval/content_ssim", "eval/style_swd"] and cfg.objective_weights is None
    assert list(sweeper.direction) == ["maximize", "minimize"]
    assert sweeper.params.beta.replace(" ", "").startswith("tag(log,interval(")
    assert "failed_trials" in cfg.hydra.callbacks and "sweep_summary" in cfg.hydra.callbacks


def test_balance_scalar_asks_for_one_number():
    cfg = make_config(["hparams_search=balance_scalar"], return_hydra_config=True)
    assert cfg.hydra.sweeper.direction == "maximize" and cfg.hydra.sweeper.sampler._target_.endswith("TPESampler")
    assert len(cfg.objective_weights) == len(cfg.objective) == 2
    objective.check(cfg.objective, cfg.objective_weights)


def job_return(value, tmp_path: Path, message: str = "The content image 'x.png' was not found") -> tuple:
    (tmp_path / "metrics.json").write_text(json.dumps({"status": "failed", "message": message}))
    config = OmegaConf.create(
        {"objective": ["eval/content_ssim", "eval/style_swd"], "hydra": {"runtime": {"output_dir": str(tmp_path)}}}
    )
    returned = JobReturn(status=JobStatus.COMPLETED, _return_value=value)
    FailedTrials().on_job_end(config=config, job_return=returned)
    return returned


def test_a_nan_return_becomes_a_failed_job_with_the_runs_message(tmp_path):
    returned = job_return((math.nan, math.nan), tmp_path)
    assert returned.status == JobStatus.FAILED
    with pytest.raises(TrialFailed, match="returned \\(nan, nan\\) for objective=.*'x.png' was not found"):
        returned.return_value


def test_a_finite_return_is_left_as_it_is(tmp_path):
    returned = job_return((0.5, 30.0), tmp_path)
    assert returned.status == JobStatus.COMPLETED and returned.return_value == (0.5, 30.0)


@pytest.mark.slow
@pytest.mark.subprocess
def test_cli_refuses_an_unknown_objective_before_the_run(tiny, tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli(*tiny, "objective=[eval/ssim]", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    said = result.stdout + result.stderr  # Hydra's log goes to stdout
    assert result.returncode == 2
    assert "Unknown objective 'eval/ssim'" in said and "Known: loss/total" in said
    assert not (run_dir / "result.png").exists() and "Network:" not in said  # refused before anything loaded


def search(tiny: list[str], sweep: Path, trials: int, *extra: str) -> subprocess.CompletedProcess:
    """``python -m nst_exp -m hparams_search=balance`` at tiny size: ``trials`` runs of 2 iterations."""
    small = [override for override in tiny if not override.startswith("iterations=")]
    return run_cli(
        "-m", "hparams_search=balance", f"hydra.sweeper.n_trials={trials}", *small, "iterations=2",
        f"hydra.sweep.dir={sweep}", *extra, cwd=sweep.parent,
    )


@pytest.mark.slow
@pytest.mark.subprocess
def test_three_trial_search_writes_the_front(tiny, tmp_path):
    sweep = tmp_path / "sweep"
    result = search(tiny, sweep, 3)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = {n: json.loads((sweep / n / "metrics.json").read_text()) for n in ("0", "1", "2")}
    assert all(job["status"] == "completed" for job in jobs.values())
    assert all(isinstance(job[key], float) for job in jobs.values() for key in objective.OBJECTIVES)
    betas = [float(OmegaConf.load(sweep / n / ".hydra" / "config.yaml").beta) for n in jobs]
    assert len(set(betas)) == 3 and all(1e2 <= beta <= 1e8 for beta in betas)

    front = OmegaConf.load(sweep / "optimization_results.yaml")
    assert front.name == "optuna" and 1 <= len(front.solutions) <= 3
    scored = {beta: (jobs[n]["eval/content_ssim"], jobs[n]["eval/style_swd"]) for n, beta in zip(jobs, betas)}
    for solution in front.solutions:  # each Pareto trial is one of the jobs, with that job's scores
        assert tuple(solution["values"]) == pytest.approx(scored[solution.params.beta])


@pytest.mark.slow
@pytest.mark.subprocess
def test_failed_trials_are_recorded_and_the_search_goes_on(tiny, tmp_path):
    """Every job fails (no content image): each is a failed trial, the front is empty, the exit status 1."""
    sweep = tmp_path / "sweep"
    result = search(tiny, sweep, 2, "hydra.sweeper.n_jobs=1", "content.path=missing.png")
    said = result.stdout + result.stderr  # the sweeper logs to stdout, the sweep summary to stderr
    assert result.returncode == 1, said[-3000:]
    assert "Traceback" not in said
    assert said.count("Failed experiment: job") == 2 and "0 completed, 2 failed" in said
    front = OmegaConf.to_container(OmegaConf.load(sweep / "optimization_results.yaml"))
    assert front == {"name": "optuna", "solutions": []}
