"""The benchmark script (benchmarks/bench.py): its report's rows, its memory column and its precision mode, at 32 px.

Speed itself is never asserted; these check that the script runs and reports
what it says it does.
"""

from __future__ import annotations

import json
import math

import bench  # benchmarks/bench.py (conftest puts benchmarks/ on sys.path)
import pytest


def test_bench_writes_rows_for_every_optimizer_and_variant(tmp_path, images_dir, capsys):
    out = tmp_path / "bench.json"
    argv = [
        "--sizes", "32", "--repeats", "2", "--evaluations", "2", "--images-dir", str(images_dir),
        "--floor-variants", "channels_last", "--breakdown", "--out", str(out),
        "content.path=content.png", "style.path=style.png", "content_layers=[relu2_1]", "style_layers=[relu1_1]",
    ]
    report = bench.main(argv)
    assert json.loads(out.read_text()) == report
    assert [(r["size"], r["image"], r["optimizer"]) for r in report["rows"]] == [(32, "32x24", "lbfgs"), (32, "32x24", "adam")]
    for row in report["rows"]:
        assert row["floor_s"]["min"] <= row["floor_s"]["median"] <= row["floor_s"]["max"]
        assert row["ratio"] == pytest.approx(row["run_s"]["median"] / row["floor_s"]["median"])
        assert row["peak_memory_mb"] > 100  # torch alone is more than that
        assert math.isfinite(row["final_loss"])
    assert [(r["size"], r["variant"]) for r in report["floor_variants"]] == [(32, "channels_last")]
    assert [(r["size"], r["part"]) for r in report["breakdown"]] == [(32, "objective"), (32, "style terms")]
    for row in report["breakdown"]:
        assert 0 < row["seconds"]["min"] <= row["seconds"]["median"] <= row["seconds"]["max"]
    printed = capsys.readouterr().out
    assert "| 32 | 32x24 | adam |" in printed and "| 32 | channels_last |" in printed
    assert "| 32 | objective |" in printed and "| 32 | style terms |" in printed


def test_bench_memory_is_the_childs_own_peak_not_its_parents(tiny):
    """The child is forked from this process; its peak must not include this process's size."""
    ballast = b"\x01" * (3 * 2**30)  # 3 GiB, written, so resident in the parent the child forks from
    peak_mb = bench.peak_memory_mb([*tiny, "iterations=2", "device=cpu"])
    assert len(ballast) and 200 < peak_mb < 2.5 * 1024  # a 32 px run: torch and a small network
