"""The coarse-to-fine benchmark: which iteration first reaches the single-scale loss, end to end at 32 px."""

from __future__ import annotations

import json

import bench_stages  # benchmarks/bench_stages.py (conftest puts benchmarks/ on sys.path)
import pandas as pd
import pytest


def test_reached_is_the_first_final_stage_iteration_at_or_below_the_target():
    curve = pd.DataFrame({"step": [1, 2, 3, 4, 5, 6], "value": [9.0, 1.0, 7.0, 5.0, 2.0, 1.5], "seconds": [0, 1, 2, 3, 4, 5.0]})
    assert bench_stages.reached(curve, 2.0, after_step=2) == {"step": 5, "seconds": 4.0, "loss": 2.0}
    assert bench_stages.reached(curve, 1.0, after_step=2) is None  # step 2 is a coarse stage's: not counted


def test_bench_stages_runs_both_and_reports(tmp_path, tiny):
    out = tmp_path / "stages.json"
    overrides = [o for o in tiny if not o.startswith(("image_size", "iterations"))]
    argv = ["--size", "32", "--coarse", "16", "--coarse-iterations", "2", "--iterations", "4", "--out", str(out), *overrides,
            "content_layers=[relu2_1]", "style_layers=[relu1_1,relu2_1]"]
    report = bench_stages.main(argv)
    assert json.loads(out.read_text()) == report
    stages = report["coarse_to_fine"]["stages"]
    assert [(stage["size"], stage["iterations"]) for stage in stages] == [(16, 2), (32, 4)]
    assert report["single"]["seconds"] > 0 and report["coarse_to_fine"]["seconds"] > 0
    start = report["coarse_to_fine"]["final_stage_start"]  # iteration 3, the 32 px stage's first
    assert start["loss/total"] == pytest.approx(start["loss/content"] + 1e3 * start["loss/style"], rel=1e-5)
    hit = report["coarse_to_fine"]["reached_single_final_loss"]
    if hit is not None:
        assert hit["step"] > 2 and hit["loss"] <= report["single"]["final_loss"]
        assert report["time_ratio"] == hit["seconds"] / report["single"]["seconds"]


def test_bench_stages_wants_one_iteration_count_per_coarse_size(capsys):
    with pytest.raises(SystemExit):
        bench_stages.main(["--coarse", "64", "128", "--coarse-iterations", "50"])
    assert "--coarse-iterations needs one value per --coarse size (2)" in capsys.readouterr().err
