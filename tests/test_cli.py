"""``python -m nst_exp`` end to end in a temporary directory, as a user runs it."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli
from PIL import Image

pytestmark = pytest.mark.subprocess


def test_cli_run_writes_image_metrics_and_tensorboard(cli_run):
    """tiny, 4 iterations, a snapshot every 2 (the session's run, which test_guarantees also reads)."""
    done = cli_run.done
    assert done.returncode == 0, done.stderr
    run_dir = cli_run.cwd / "outputs" / "run"
    with Image.open(run_dir / "result.png") as result:
        assert result.size == (32, 24)  # long side image_size, content's 4:3 aspect
    assert sorted(p.name for p in (run_dir / "snapshots").iterdir()) == ["iter_000002.png", "iter_000004.png"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["evaluations"] == 4
    assert metrics["weights"].startswith("random") and metrics["trained_weights"] is False
    assert metrics["seconds_per_evaluation"] > 0
    # Counted from the process start (seconds_start_up > 0): interpreter and imports, network, style targets, iteration 1.
    parts = [metrics[key] for key in ("seconds_start_up", "seconds_network_load", "seconds_style_targets")]
    assert all(part > 0 for part in parts), parts
    assert sum(parts) < metrics["seconds_to_first_iteration"] < metrics["seconds_start_up"] + metrics["wall_seconds"]

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir)).Reload()
    tags = set(events.Tags()["scalars"])
    layers = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]
    assert {"loss/total", "loss/content", "loss/style", *(f"loss/style/{l}" for l in layers)} <= tags
    steps = [e.step for e in events.Scalars("loss/total")]
    assert steps[:4] == [1, 2, 3, 4]
    assert sorted(events.Tags()["images"]) == ["image", "inputs/content", "inputs/style"]  # the inputs once
    hparams = events.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info", "_hparams_/session_end_info"} <= set(hparams)
    assert b"image_size" in hparams["_hparams_/session_start_info"]
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert (run_dir / "nst_exp.log").is_file() and not (run_dir / "__main__.log").exists()  # hydra.job.name


def test_cli_multirun_three_jobs(cli_sweep):
    """beta=1e3,1e4,1e5 (the session's sweep, which test_report_trust also reads)."""
    done = cli_sweep.done
    assert done.returncode == 0, done.stderr
    sweep = cli_sweep.cwd / "outputs" / "sweep"
    betas = sorted(json.loads((sweep / str(i) / "metrics.json").read_text())["status"] for i in range(3))
    assert betas == ["completed"] * 3
    for i, beta in enumerate(["1000.0", "10000.0", "100000.0"]):
        assert f"beta: {beta}" in (sweep / str(i) / ".hydra" / "config.yaml").read_text()


def test_cli_user_error_is_one_clear_message(tmp_path, tiny):
    done = run_cli(*tiny, "style_layers=[relu4_5]", "hydra.run.dir=outputs/run", cwd=tmp_path)
    assert done.returncode == 2
    output = done.stderr + done.stdout
    assert "Unknown style layer 'relu4_5': vgg19 has no such layer. Did you mean 'relu4_" in output
    assert "Known: conv1_1, relu1_1, conv1_2" in output
    assert "Traceback" not in done.stderr
    failed = json.loads((tmp_path / "outputs" / "run" / "metrics.json").read_text())
    assert failed["status"] == "failed" and "relu4_5" in failed["message"]


def test_cli_misspelt_key_fails_at_compose_time(tmp_path, tiny):
    done = run_cli(*tiny, "alhpa=3", cwd=tmp_path)
    assert done.returncode != 0
    assert "Could not override 'alhpa'" in done.stderr
    assert not (tmp_path / "outputs").exists()


def test_help_says_what_nst_exp_is_its_keys_groups_and_examples(tmp_path):
    done = run_cli("--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert text.startswith("nst_exp: neural style transfer as in Gatys et al.")
    assert "powered by Hydra" not in text
    assert "  beta=1.0e3" in text and "style weight" in text  # from conf/config.yaml's comment
    assert "  log.progress=true" in text
    assert "style: composition_vii, great_wave" in text and "model: vgg16, " in text
    assert "python -m nst_exp -m experiment=fig3" in text
    assert "  nst-exp [CONTENT STYLE [STYLE ...]] [-o OUT.png] [key=value ...]" in text  # files and -o (cli_args)
    assert "debug: quick" in text and "debug=quick" in text
    assert list(tmp_path.iterdir()) == []
