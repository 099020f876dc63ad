"""The runner end to end on tiny inputs (random weights, 32 px)."""

from __future__ import annotations

import json

from conftest import make_config

from nst_exp.runner import run


def test_run_writes_result_and_metrics(tmp_path, tiny):
    cfg = make_config(tiny)
    loss = run(cfg, out_dir=tmp_path / "run").loss
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    assert metrics["iterations"] == 3 and metrics["evaluations"] == 3
    assert metrics["loss/total"] == loss
    assert metrics["trained_weights"] is False
    assert (tmp_path / "run" / "result.png").is_file()
