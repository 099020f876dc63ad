"""The benchmark script (benchmarks/bench.py): its report's rows, its memory column and its precision mode, at 32 px.

Speed itself is never asserted; these check that the script runs and reports
what it says it does.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import math
from pathlib import Path

import bench  # benchmarks/bench.py (conftest puts benchmarks/ on sys.path)
import pytest
from conftest import write_images


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory) -> tuple[dict, Path, str]:
    """bench.py at 32 px, both optimizers, the channels_last floor and the breakdown: its report, its --out file
    and what it printed. Its memory column's runs are children forked from this process while it holds 3 GiB."""
    folder = tmp_path_factory.mktemp("bench")
    out = folder / "bench.json"
    argv = [
        "--sizes", "32", "--repeats", "2", "--evaluations", "2", "--images-dir", str(write_images(folder / "images")),
        "--floor-variants", "channels_last", "--breakdown", "--out", str(out),
        "content.path=content.png", "style.path=style.png", "content_layers=[relu2_1]", "style_layers=[relu1_1]",
    ]
    ballast = b"\x01" * (3 * 2**30)  # 3 GiB, written, so resident in the parent the children fork from
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        report = bench.main(argv)
    assert len(ballast)  # held until the children ran
    return report, out, printed.getvalue()


@pytest.mark.subprocess
def test_bench_writes_rows_for_every_optimizer_and_variant(bench_run):
    report, out, printed = bench_run
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
    assert "| 32 | 32x24 | adam |" in printed and "| 32 | channels_last |" in printed
    assert "| 32 | objective |" in printed and "| 32 | style terms |" in printed


@pytest.mark.subprocess
def test_bench_memory_is_the_childs_own_peak_not_its_parents(bench_run):
    """The children are forked from this process (bench_run holds 3 GiB); a peak must not include its parent's size."""
    report, _, _ = bench_run
    for peak_mb in (row["peak_memory_mb"] for row in report["rows"]):
        assert 200 < peak_mb < 2.5 * 1024  # a 32 px run: torch and a small network


def resolved(caps, precisions, channels_last):
    settings = bench.precision_settings(precisions, channels_last, caps)
    return {label: (speed.precision_used, speed.channels_last_used) for label, speed in settings.items()}


def test_precisions_resolve_as_a_run_would_on_each_kind_of_machine():
    amx = bench.Capabilities("cpu", True, "this CPU has AMX-BF16", fp32_channels_last=True)
    avx512 = bench.Capabilities("cpu", True, "this CPU has AVX512-BF16")
    avx2 = bench.Capabilities("cpu", False, "this CPU has neither AMX-BF16 nor AVX512-BF16")
    assert resolved(amx, ["auto", "fp32", "bf16"], ["auto"]) == {
        "precision=auto channels_last=auto": ("bf16", True),
        "precision=fp32 channels_last=auto": ("fp32", True),
        "precision=bf16 channels_last=auto": ("bf16", True),
    }
    assert resolved(avx512, ["fp32"], ["auto"]) == {"precision=fp32 channels_last=auto": ("fp32", False)}
    assert resolved(avx2, ["auto"], ["auto", "true"]) == {
        "precision=auto channels_last=auto": ("fp32", False),
        "precision=auto channels_last=true": ("fp32", True),
    }


def test_bench_times_each_precision_against_the_floor_and_says_what_auto_picks(tmp_path, images_dir, capsys):
    from nst_exp.hardware import choose_speed, describe_device, detect

    out = tmp_path / "bench.json"
    argv = [
        "--sizes", "32", "--repeats", "1", "--evaluations", "2", "--images-dir", str(images_dir), "--optimizers", "lbfgs",
        "--no-memory", "--precisions", "auto", "fp32", "bf16", "--channels-last", "auto", "false", "--out", str(out),
        "content.path=content.png", "style.path=style.png", "content_layers=[relu2_1]", "style_layers=[relu1_1]",
    ]
    report = bench.main(argv)
    cpu = bench.pick_device("cpu")
    auto = choose_speed("auto", "auto", detect(cpu))
    assert json.loads(out.read_text()) == report
    assert report["machine"] == describe_device(cpu)
    assert report["auto"] == {"precision": auto.precision_used, "channels_last": auto.channels_last_used, "reason": auto.reason}
    rows = {row["asked"]: row for row in report["precisions"]}
    assert list(rows) == [f"precision={p} channels_last={c}" for p in ("auto", "fp32", "bf16") for c in ("auto", "false")]
    used = {asked: (row["precision"], row["channels_last"]) for asked, row in rows.items()}
    assert used["precision=bf16 channels_last=auto"] == ("bf16", True)
    assert used["precision=bf16 channels_last=false"] == ("bf16", False)
    assert used["precision=fp32 channels_last=auto"] == ("fp32", choose_speed("fp32", "auto", detect(cpu)).channels_last_used)
    assert used["precision=fp32 channels_last=false"] == ("fp32", False)
    assert used["precision=auto channels_last=auto"] == (auto.precision_used, auto.channels_last_used)
    floor = report["rows"][0]["floor_s"]["median"]
    for row in rows.values():
        assert 0 < row["seconds"]["min"] <= row["seconds"]["median"] <= row["seconds"]["max"]
        assert row["ratio"] == pytest.approx(row["seconds"]["median"] / floor)
    printed = capsys.readouterr().out
    assert f"precision=auto here: {auto.reason}" in printed and describe_device(cpu) in printed
    assert "| 32 | precision=bf16 channels_last=auto | bf16 + channels_last |" in printed


def test_tf32_off_cuda_is_refused_before_anything_is_timed(images_dir):
    from nst_exp.errors import NstError

    with pytest.raises(NstError, match="precision=tf32 needs a CUDA GPU"):
        bench.main(["--device", "cpu", "--precisions", "tf32", "--images-dir", str(images_dir), "--no-memory"])


def test_images_dir_defaults_to_nst_images_then_the_shared_folder_beside_the_checkout(monkeypatch):
    monkeypatch.setenv("NST_IMAGES", "/data/pictures")
    assert bench.default_images_dir() == "/data/pictures"
    monkeypatch.delenv("NST_IMAGES")
    assert Path(bench.default_images_dir()) == Path(bench.__file__).resolve().parents[2] / "shared" / "images"


ALLOWED = {  # nst_exp's public modules the benchmarks may use; only names without a leading underscore
    "nst_exp", "nst_exp.runner", "nst_exp.features", "nst_exp.losses", "nst_exp.inputs", "nst_exp.problem", "nst_exp.color",
    "nst_exp.hardware", "nst_exp.results", "nst_exp.report", "nst_exp.config",
}


@pytest.mark.parametrize("script", sorted((Path(bench.__file__).parent).glob("*.py")), ids=lambda path: path.name)
def test_benchmarks_use_only_nst_exps_public_api(script):
    tree = ast.parse(script.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("nst_exp"):
            assert node.module in ALLOWED, f"{script.name} imports {node.module}"
            assert not [alias.name for alias in node.names if alias.name.startswith("_")], f"{script.name}: {node.module}"
        if isinstance(node, ast.Import):
            assert all(alias.name in ALLOWED or not alias.name.startswith("nst_exp") for alias in node.names)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "nst_exp":
            assert not node.attr.startswith("_") or node.attr == "__file__"


@pytest.mark.subprocess
def test_bench_fresh_times_a_users_run_against_torchvisions_pass(tmp_path):
    """--fresh: a ``python -m nst_exp`` child and torchvision's pass to the deepest layer used, each in a fresh process."""
    argv = [
        "--sizes", "32", "--repeats", "1", "--evaluations", "2", "--optimizers", "adam", "--no-memory", "--fresh",
        "--images-dir", str(write_images(tmp_path / "images")), "--out", str(tmp_path / "bench.json"),
        "content.path=content.png", "style.path=style.png", "content_layers=[relu2_1]", "style_layers=[relu1_1]",
    ]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        report = bench.main(argv)
    [row] = report["fresh"]
    assert (row["size"], row["optimizer"]) == (32, "adam")
    assert row["torchvision_s"]["median"] > 0 and row["run_s"]["median"] > 0
    assert row["ratio"] == pytest.approx(row["run_s"]["median"] / row["torchvision_s"]["median"])  # one repeat
    assert 0 < row["evaluation_share"]["median"] <= 1 and row["first_evaluation_s"]["median"] > 0
    assert "| 32 | adam |" in printed.getvalue().split("Fresh processes")[1]

