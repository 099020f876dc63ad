"""results.md's per-metric grids for a two-key sweep (Fig. 3's rows x columns)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from nst_exp.report import Sweep
from nst_exp.report.tables import grids, write_tables

ROWS = ("[relu1_1]", "[relu1_1,relu2_1]")
COLUMNS = (1e4, 1e3, 1e2)


def two_key_sweep(tmp_path: Path, swept=("style_layers", "beta")) -> Sweep:
    grid = [(layers, beta) for layers in ROWS for beta in COLUMNS]
    jobs = pd.DataFrame({
        "job": range(6), "dir": [str(i) for i in range(6)],
        "style_layers": [layers for layers, _ in grid], "beta": [beta for _, beta in grid],
        "status": ["completed"] * 6, "alpha/beta": [1 / beta for _, beta in grid],
        "eval/content_ssim": [0.13, 0.14, 0.2, 0.04, 0.05, 0.1],
        "eval/style_swd": [119.0, 111.0, 100.0, 82.0, 80.0, 90.0],
    })
    return Sweep(tmp_path, jobs, pd.DataFrame(columns=["job", "tag", "step", "value"]), list(swept))


def test_each_score_is_a_table_of_rows_by_columns_in_sweep_order(tmp_path):
    tables = dict(grids(two_key_sweep(tmp_path)))
    ssim = tables["eval/content_ssim: style_layers (rows) by beta (columns)"]
    assert list(ssim.index) == list(ROWS)
    assert list(ssim.columns) == ["beta=10000.0", "beta=1000.0", "beta=100.0"]
    assert ssim.loc["[relu1_1]"].tolist() == [0.13, 0.14, 0.2]
    assert tables["eval/style_swd: style_layers (rows) by beta (columns)"].loc["[relu1_1,relu2_1]"].tolist() == [82.0, 80.0, 90.0]


def test_grids_are_written_into_results_md_only_for_two_swept_keys(tmp_path):
    _, markdown, _ = write_tables(two_key_sweep(tmp_path), tmp_path / "two", per_step=False)
    text = markdown.read_text()
    assert "## eval/content_ssim: style_layers (rows) by beta (columns)" in text
    swd = text.split("## eval/style_swd: style_layers (rows) by beta (columns)")[1]
    row = next(line for line in swd.splitlines() if line.startswith("| [relu1_1,relu2_1]"))
    assert [cell.strip() for cell in row.strip("|").split("|")] == ["[relu1_1,relu2_1]", "82", "80", "90"]
    assert grids(two_key_sweep(tmp_path, swept=("beta",))) == []
