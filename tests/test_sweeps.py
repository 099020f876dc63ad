"""The paper's figures as sweeps: every experiment's grid, tiny runs, the CLI and the launchers."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from conftest import make_config, run_cli, tiny_overrides, write_images
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper  # the expansion `-m` itself uses
from hydra.core.override_parser.overrides_parser import OverridesParser

from nst_exp.report import build_report
from nst_exp.runner import run

GROWING = [[f"relu{block}_1" for block in range(1, depth + 1)] for depth in range(1, 6)]
EXPERIMENTS = ("fig1_content", "fig1_style", "fig2", "fig3", "init", "content_layer")


def expand(experiment: str, extra: list[str] = ()) -> list[list[str]]:
    """Each job's overrides, as Hydra's basic sweeper expands the experiment's grid and ``extra``."""
    cfg = make_config([f"experiment={experiment}"], return_hydra_config=True)
    grid = [f"{key}={value}" for key, value in cfg.hydra.sweeper.params.items()]
    parsed = OverridesParser.create().parse_overrides([*grid, *extra])
    return BasicSweeper.split_arguments(parsed, max_batch_size=None)[0]


def jobs(experiment: str, tiny: list[str], extra: list[str] = ()) -> list:
    """The composed config of every job of ``experiment``."""
    return [make_config([*tiny, f"experiment={experiment}", *job]) for job in expand(experiment, extra)]


def ratio(cfg) -> float:
    return cfg.alpha / cfg.beta


def test_fig1_content_one_layer_per_job_content_loss_only(tiny):
    configs = jobs("fig1_content", tiny)
    assert [list(c.content_layers) for c in configs] == [[f"relu{b}_1"] for b in range(1, 6)]
    assert all(c.beta == 0 and list(c.style_layers) == [] and c.init.kind == "noise" for c in configs)


def test_fig1_style_growing_layer_sets_style_loss_only(tiny):
    configs = jobs("fig1_style", tiny)
    assert [list(c.style_layers) for c in configs] == GROWING
    assert all(c.alpha == 0 and list(c.content_layers) == [] and c.style_weights is None for c in configs)


def test_fig2_pairs_each_painting_with_its_ratio(tiny):
    configs = jobs("fig2", tiny)
    assert [(c.style.name, ratio(c)) for c in configs] == [
        ("shipwreck", 1e-3),
        ("starry_night", 1e-3),
        ("the_scream", 1e-3),
        ("seated_nude", 1e-4),
        ("composition_vii", 1e-4),
    ]
    assert {c.content.name for c in configs} == {"tubingen"}
    assert all(list(c.content_layers) == ["relu4_2"] and len(c.style_layers) == 5 for c in configs)


def test_fig3_rows_of_layer_sets_by_columns_of_ratios(tiny):
    configs = jobs("fig3", tiny)
    assert len(configs) == 20
    expected = list(itertools.product(range(5), [1e-5, 1e-4, 1e-3, 1e-2]))  # rows outer, as Hydra sweeps
    got = [(GROWING.index(list(c.style_layers)), ratio(c)) for c in configs]
    assert [row for row, _ in got] == [row for row, _ in expected]
    assert [r for _, r in got] == pytest.approx([r for _, r in expected])
    assert {c.style.name for c in configs} == {"composition_vii"}


def test_init_compares_content_style_and_noise_seeds(tiny):
    configs = jobs("init", tiny)
    assert [(c.init.kind, c.seed) for c in configs] == [
        ("content", 0), ("style", 0), ("noise", 0), ("noise", 1), ("noise", 2), ("noise", 3),
    ]
    assert all(ratio(c) == 1e-3 for c in configs)


def test_content_layer_compares_conv2_2_and_conv4_2(tiny):
    assert [list(c.content_layers) for c in jobs("content_layer", tiny)] == [["relu2_2"], ["relu4_2"]]


def test_command_line_replaces_a_grid_and_adds_a_sweep(tiny):
    """The raw-conv variant is one override; another key sweeps on top; size shrinks for all."""
    configs = jobs("fig1_content", tiny, ["content_layers=[conv1_1],[conv4_1]", "seed=0,1", "image_size=40"])
    assert [(list(c.content_layers), c.seed) for c in configs] == [
        (["conv1_1"], 0), (["conv1_1"], 1), (["conv4_1"], 0), (["conv4_1"], 1),
    ]
    assert {c.image_size for c in configs} == {40}


def test_slurm_example_config_composes_onto_submitit():
    cfg = make_config(["hydra/launcher=slurm", "experiment=fig3"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.timeout_min, launcher.gpus_per_node, launcher.array_parallelism) == (60, 1, 20)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_each_experiment_runs_its_last_job_at_tiny_size(experiment, tiny, tmp_path):
    """The last job has the deepest layers (and the paper's hardest settings) of each grid."""
    cfg = jobs(experiment, [*tiny, "iterations=2"])[-1]
    run(cfg, out_dir=tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["iterations"] == 2
    assert (tmp_path / "result.png").is_file()
    expected = cfg.alpha * metrics["loss/content"] + cfg.beta * metrics["loss/style"]
    assert metrics["loss/total"] == pytest.approx(expected, rel=1e-5)
    if not cfg.style_layers:
        assert metrics["loss/style"] == 0
    if not cfg.content_layers:
        assert metrics["loss/content"] == 0


@pytest.fixture(scope="module")
def cli_images(tmp_path_factory) -> list[str]:
    """tiny with 2 iterations, on images made once for this module's sweeps."""
    return [*tiny_overrides(write_images(tmp_path_factory.mktemp("cli") / "images")), "iterations=2"]


def statuses(sweep: Path) -> dict[str, dict]:
    """Each job folder's metrics.json by job number (other folders, e.g. .submitit, skipped)."""
    folders = sorted((job for job in sweep.iterdir() if job.name.isdigit()), key=lambda job: int(job.name))
    return {job.name: json.loads((job / "metrics.json").read_text()) for job in folders}


@pytest.mark.slow
@pytest.mark.subprocess
def test_cli_three_job_experiment_multirun(cli_images, tmp_path):
    """fig1_content from raw conv outputs, three layers: a real `python -m nst_exp -m`."""
    sweep = tmp_path / "sweep"
    result = run_cli(
        "-m", "experiment=fig1_content", "content_layers=[conv1_1],[conv2_1],[conv3_1]", *cli_images,
        f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = statuses(sweep)
    assert list(jobs) == ["0", "1", "2"]
    assert all(job["status"] == "completed" for job in jobs.values())
    layers = [Path(sweep / n / ".hydra" / "overrides.yaml").read_text() for n in jobs]
    assert [f"content_layers=[conv{b}_1]" in text for b, text in zip((1, 2, 3), layers)] == [True] * 3
    assert not (tmp_path / "outputs").exists()  # everything went under hydra.sweep.dir
    built = build_report(sweep)
    assert built.layout.shape == (1, 3) and built.layout.cols == ["conv1_1", "conv2_1", "conv3_1"]
    assert list(built.sweep.jobs["loss/style"]) == [0, 0, 0]  # content reconstructions: no style loss


@pytest.mark.slow
@pytest.mark.subprocess
def test_joblib_launcher_runs_two_jobs_with_threads_shared(cli_images, tmp_path):
    from joblib import cpu_count

    sweep = tmp_path / "sweep"
    result = run_cli(
        "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=0,1", *cli_images,
        f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = statuses(sweep)
    assert [job["status"] for job in jobs.values()] == ["completed", "completed"]
    assert {job["threads"] for job in jobs.values()} == {max(1, cpu_count() // 2)}
    assert jobs["0"]["loss/total"] != jobs["1"]["loss/total"]  # different seeds, different runs


@pytest.mark.slow
@pytest.mark.subprocess
def test_submitit_local_launcher_runs_two_jobs(cli_images, tmp_path):
    """The submitit path that Slurm uses, on this machine (hydra/launcher=submitit_local)."""
    sweep = tmp_path / "sweep"
    result = run_cli(
        "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", "threads=1", "seed=0,1",
        *cli_images, f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = statuses(sweep)
    assert [(job["status"], job["threads"]) for job in jobs.values()] == [("completed", 1), ("completed", 1)]
    assert (sweep / ".submitit").is_dir()
