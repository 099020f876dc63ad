"""`python -m nst_exp.report` on a real tiny sweep: table, figure grid, loss curves, failures."""

from __future__ import annotations

import ast
import json
import logging
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from unittest.mock import patch
from urllib.parse import unquote, urlsplit

import pandas as pd
import pytest
from conftest import ROOT, run_cli, run_python, tiny_overrides, write_images
from omegaconf import OmegaConf
from PIL import Image
from tbparse import SummaryReader

from nst_exp.report import Sweep, build_report, main, networks, read_sweep, swept_keys
from nst_exp.report.figures import grid_layout
from nst_exp.report.gallery import plot_job_curves
from nst_exp.report.labels import layers_label, number_label, ratio_label, value_label
from nst_exp.report.tradeoff import plot_tradeoff, point_labels


@pytest.fixture(scope="module")
def grid_sweep(tmp_path_factory) -> Path:
    """A real 2 x 2 CLI sweep (style layers x image size) whose relu5_1-at-12-px job fails on purpose."""
    base = tmp_path_factory.mktemp("grid")
    tiny = [o for o in tiny_overrides(write_images(base / "images")) if not o.startswith("image_size=")]
    sweep = base / "sweep"
    result = run_cli("-m", "style_layers=[relu1_1],[relu5_1]", "image_size=32,12", *tiny, "iterations=2",
                     f"hydra.sweep.dir={sweep}", cwd=base)
    assert result.returncode == 1, result.stderr[-3000:]  # the sweep summary's exit: one job failed
    assert "Sweep finished: 3 completed, 1 failed (job 3: see " in result.stderr
    return sweep


@pytest.fixture(scope="module")
def built(grid_sweep):
    return build_report(grid_sweep)


@pytest.mark.slow
@pytest.mark.subprocess
def test_table_has_every_job_sorted_by_the_swept_keys(built, grid_sweep):
    table = pd.read_csv(built.written["results.csv"])
    assert built.sweep.swept == ["style_layers", "image_size"]
    assert list(zip(table["style_layers"], table["image_size"])) == [
        ("[relu1_1]", 32), ("[relu1_1]", 12), ("[relu5_1]", 32), ("[relu5_1]", 12),
    ]
    assert list(table["status"]) == ["completed", "completed", "completed", "failed"]
    failed = table.iloc[3]
    assert "too small for layer 'relu5_1'" in failed["metrics.message"]
    assert pd.isna(failed["loss/total"])
    for _, row in table.iloc[:3].iterrows():
        metrics = json.loads((grid_sweep / str(row["dir"]) / "metrics.json").read_text())
        assert row["loss/total"] == pytest.approx(metrics["loss/total"])
    assert list(table["cfg.image_size"]) == [32, 12, 32, 12]
    assert list(table["logged_steps"].iloc[:3]) == [3, 3, 3]  # 2 iterations + the final image


@pytest.mark.slow
@pytest.mark.subprocess
def test_per_step_scalars_come_from_tensorboard(built, grid_sweep):
    scalars = pd.read_csv(built.written["scalars.csv"])
    total = scalars[scalars["tag"] == "loss/total"]
    assert sorted(total.groupby("job")["step"].apply(list).to_dict().items()) == [
        (0, [1, 2, 3]), (1, [1, 2, 3]), (2, [1, 2, 3]),
    ]
    assert {"loss/style/relu1_1", "loss/style/relu5_1"} <= set(scalars["tag"])
    assert "style_layers" in scalars.columns  # per-step rows carry the swept keys


@pytest.mark.slow
@pytest.mark.subprocess
def test_markdown_table_lists_every_job_and_the_network(built):
    text = built.written["results.md"].read_text()
    tables = re.findall(r"(?:^\|.*\n)+", text, flags=re.MULTILINE)  # each block of table lines
    table_lines = tables[0].splitlines()
    assert len(table_lines) == 2 + 4  # header, separator, one per job
    # two swept keys: each picture score also as a rows x columns grid, after the job table
    assert "eval/content_ssim: style_layers (rows) by image_size (columns)" in text
    assert len(tables) == 1 + text.count("(rows) by")
    header = [cell.strip() for cell in table_lines[0].strip("|").split("|")]
    assert header[:4] == ["job", "style_layers", "image_size", "status"]
    assert "Jobs: 4 (3 completed, 1 failed)" in text
    assert "vgg19 with random (seed 0); UNTRAINED" in text


@pytest.mark.slow
@pytest.mark.subprocess
def test_figure_grid_is_laid_out_by_the_swept_keys(built):
    layout = built.layout
    assert layout.shape == (2, 2)
    assert layout.cells == [[0, 1], [2, 3]]
    assert (layout.row_title, layout.col_title) == ("style_layers", "image_size")
    assert layout.rows == ["relu1_1", "relu5_1"]
    assert layout.cols == ["image_size = 32", "image_size = 12"]
    assert (layout.beside, layout.inset) == (["content", "style"], [])
    with Image.open(built.written["figure.png"]) as figure:
        width, height = figure.size
    assert 3 * 200 <= width <= 2000 and 2 * 150 <= height <= 1500  # 2 x 2 cells of 2 in at 100 dpi, inputs beside


@pytest.mark.slow
@pytest.mark.subprocess
def test_loss_curves_plot_every_logged_loss(built):
    assert built.loss_tags == ["loss/total", "loss/content", "loss/style"]
    with Image.open(built.written["losses.png"]) as plot:
        assert plot.size[0] > 3 * 300 and plot.size[1] > 200


@pytest.mark.slow
@pytest.mark.subprocess
def test_killed_job_is_listed_with_its_last_logged_losses(grid_sweep, tmp_path):
    copy = tmp_path / "sweep"
    shutil.copytree(grid_sweep, copy, ignore=shutil.ignore_patterns("report"))
    final = json.loads((copy / "0" / "metrics.json").read_text())["loss/total"]
    (copy / "0" / "metrics.json").unlink()
    sweep = read_sweep(copy)
    assert sweep.jobs.at[0, "status"] == "missing"
    assert "killed" in sweep.jobs.at[0, "metrics.message"]
    assert sweep.jobs.at[0, "loss/total"] == pytest.approx(final)  # TensorBoard's last step is the final image


@pytest.mark.slow
@pytest.mark.subprocess
def test_tensorboard_hparams_compare_the_jobs(grid_sweep):
    hparams = SummaryReader(str(grid_sweep), extra_columns={"dir_name"}).hparams
    layers = hparams[hparams["tag"] == "style_layers"].set_index("dir_name")["value"].to_dict()
    assert layers == {  # each job's run named by its swept values, as typed
        "0/style_layers=[relu1_1],image_size=32": "['relu1_1']", "1/style_layers=[relu1_1],image_size=12": "['relu1_1']",
        "2/style_layers=[relu5_1],image_size=32": "['relu5_1']"}
    assert set(hparams["tag"]) == {"style_layers", "image_size"}  # the swept keys only; constants are text


@pytest.mark.slow
@pytest.mark.subprocess
def test_command_line_report(grid_sweep, tmp_path, capsys, caplog):
    with caplog.at_level(logging.INFO):
        assert main([str(grid_sweep), "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "4 jobs (3 completed, 1 failed); swept: style_layers, image_size; figure 2 x 2" in printed
    written = {p.name for p in (tmp_path / "out").iterdir()}
    assert written >= {"results.csv", "results.md", "scalars.csv", "figure.png", "losses.png"}
    assert written == {
        "results.csv", "results.md", "scalars.csv", "figure.png", "losses.png", "index.html", "curves", "tradeoff.png",
        ".nst_exp_report.json",  # the files the report wrote, the only ones a later report replaces
    }  # every run scores its result (eval/*), so the trade-off plot is drawn
    for name in sorted(written - {".nst_exp_report.json"}):  # where each file went
        assert f"wrote {tmp_path / 'out' / name}" in printed
    assert f"open {(tmp_path / 'out' / 'index.html').as_uri()}" in printed


def test_a_folder_without_jobs_is_refused_with_the_fix(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "No Hydra jobs under" in error and "outputs/multirun/<date>/<time>" in error
    assert main([str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_layer_lists_are_labelled_as_in_the_paper():
    assert layers_label(["relu1_1", "relu2_1", "relu3_1"]) == "relu1_1 ... relu3_1"
    assert layers_label(["conv1_1", "conv2_1"]) == "conv1_1, conv2_1"
    assert layers_label(["relu1_1", "relu3_1", "relu4_1"]) == "relu1_1, relu3_1, relu4_1"  # a gap: in full
    assert layers_label(["relu4_2"]) == "relu4_2"
    assert layers_label([]) == "none"


def test_ratios_are_written_as_powers_of_ten():
    assert number_label(1e-4) == "1e-4"
    assert number_label(0.0025) == "2.5e-3"
    assert ratio_label(1.0, 1e5) == "alpha/beta = 1e-5"
    assert ratio_label(1.0, 0.0) == "beta = 0"


def test_swept_keys_are_those_that_differ_in_sweep_order():
    jobs = [
        {"experiment": "fig3", "style_layers": "[relu1_1]", "beta": "1e5", "image_size": "32"},
        {"experiment": "fig3", "style_layers": "[relu1_1]", "beta": "1e4", "image_size": "32"},
        {"experiment": "fig3", "style_layers": "[relu1_1,relu2_1]", "beta": "1e5", "image_size": "32", "seed": "1"},
    ]
    assert swept_keys(jobs) == ["style_layers", "beta", "seed"]


def fake_sweep(tmp_path: Path, panels: list[tuple[str, float]]) -> Sweep:
    """A sweep over a config group (as fig2_panel), built in memory: labels need no runs."""
    jobs = pd.DataFrame(
        {
            "job": range(len(panels)),
            "dir": [str(i) for i in range(len(panels))],
            "fig2_panel": [name for name, _ in panels],
            "status": "completed",
            "alpha/beta": [1.0 / beta for _, beta in panels],
        }
    )
    settings = {i: {"alpha": 1.0, "beta": beta, "style": {"path": f"{name}.jpg"}, "images_dir": "images"}
                for i, (name, beta) in enumerate(panels)}
    choices = {i: {"fig2_panel": name, "style": name} for i, (name, _) in enumerate(panels)}
    return Sweep(tmp_path, jobs, pd.DataFrame(columns=["job", "tag", "step", "value"]), ["fig2_panel"], settings, choices)


def test_a_swept_config_group_is_labelled_with_its_option_and_ratio(tmp_path):
    sweep = fake_sweep(tmp_path, [("starry_night", 1e3), ("composition_vii", 1e4)])
    assert value_label(sweep, "fig2_panel", 1) == "composition_vii\nalpha/beta = 1e-4"
    layout = grid_layout(sweep)
    assert layout.shape == (1, 2)  # one swept key: one row
    assert layout.cols == ["starry_night\nalpha/beta = 1e-3", "composition_vii\nalpha/beta = 1e-4"]
    assert layout.inset == ["style"]  # the painting changes per job: shown in each cell's corner


def test_an_input_no_job_used_is_not_shown(tmp_path):
    sweep = fake_sweep(tmp_path, [("starry_night", 1e3), ("starry_night", 1e4)])
    for settings in sweep.settings.values():  # two layers: what the full config always states
        settings.update(content_layers=["relu4_2"], style_layers=["relu1_1"], init={"kind": "noise"})
    assert grid_layout(sweep).beside == ["content", "style"]
    for settings in sweep.settings.values():  # Fig. 1's content reconstructions: beta = 0
        settings["beta"] = 0.0
    assert grid_layout(sweep).beside == ["content"]
    sweep.settings[1].update(beta=1e3, style_layers=[])  # no style layer is as unused as no weight
    assert grid_layout(sweep).beside == ["content"]
    sweep.settings[1]["init"]["kind"] = "style"  # a job started from the painting was made with it
    assert grid_layout(sweep).beside == ["content", "style"]
    for settings in sweep.settings.values():  # Fig. 1's style reconstructions: alpha = 0, from noise
        settings.update(alpha=0.0, beta=1.0, style_layers=["relu1_1"], init={"kind": "noise"})
    assert grid_layout(sweep).beside == ["style"]


def test_tradeoff_leaves_out_jobs_made_without_the_photo_or_the_painting(tmp_path):
    sweep = fake_sweep(tmp_path, [("starry_night", 1e3), ("starry_night", 1e4), ("starry_night", 1e5)])
    for settings in sweep.settings.values():
        settings.update(content_layers=["relu4_2"], style_layers=["relu1_1"], init={"kind": "noise"})
    sweep.jobs["eval/content_ssim"], sweep.jobs["eval/style_swd"] = [0.3, 0.2, 0.1], [120.0, 110.0, 100.0]
    sweep.settings[0]["beta"] = 0.0  # a content reconstruction: no painting to trade against
    sweep.settings[2]["alpha"] = 0.0  # a style reconstruction: no photo
    assert plot_tradeoff(sweep, tmp_path / "tradeoff.png") == [1]
    sweep.settings[1]["beta"] = 0.0
    assert plot_tradeoff(sweep, tmp_path / "none.png") == [] and not (tmp_path / "none.png").exists()


def test_tradeoff_points_are_labelled_by_value_and_diverged_jobs_are_not_on_the_curve(tmp_path):
    grid = [(layers, beta) for layers in (["relu1_1"], ["relu1_1", "relu2_1"]) for beta in (1e5, 1e4, 1e3)]
    jobs = pd.DataFrame({
        "job": range(6), "dir": [str(i) for i in range(6)],
        "style_layers": [str(layers) for layers, _ in grid], "beta": [beta for _, beta in grid],
        "status": ["completed", "diverged", *["completed"] * 4], "alpha/beta": [1 / beta for _, beta in grid],
        "eval/content_ssim": [0.3, 0.0, 0.1, 0.3, 0.2, 0.1], "eval/style_swd": [130.0, 99.0, 110.0, 125.0, 115.0, 105.0],
    })
    settings = {job: {"alpha": 1.0, "beta": beta, "content_layers": ["relu4_2"], "style_layers": layers,
                      "init": {"kind": "noise"}} for job, (layers, beta) in enumerate(grid)}
    sweep = Sweep(tmp_path, jobs, pd.DataFrame(columns=["job", "tag", "step", "value"]), ["style_layers", "beta"],
                  settings, {job: {} for job in range(6)})
    labels, labelled_by = point_labels(sweep, jobs, ["beta"])
    assert labelled_by == "alpha/beta" and labels == {0: "1e-5", 1: "1e-4", 2: "1e-3", 3: "1e-5", 4: "1e-4", 5: "1e-3"}
    drawn = []
    with patch("matplotlib.axes.Axes.plot", side_effect=lambda x, y, **kw: drawn.append((list(x), list(y)))):
        assert plot_tradeoff(sweep, tmp_path / "tradeoff.png") == list(range(6))
    assert drawn == [([130.0, 110.0], [0.3, 0.1]), ([125.0, 115.0, 105.0], [0.3, 0.2, 0.1])]  # job 1 not joined


def test_job_curves_leave_out_a_term_the_run_did_not_have(tmp_path):
    sweep = fake_sweep(tmp_path, [("starry_night", 1e3)])
    steps = range(1, 4)
    sweep.scalars = pd.DataFrame(
        [{"job": 0, "tag": tag, "step": step, "value": value(step)} for step in steps
         for tag, value in (("loss/total", lambda n: 10.0 / n), ("loss/content", lambda n: 10.0 / n),
                            ("loss/style", lambda n: 0.0))])
    drawn, scales = [], []
    with patch("matplotlib.axes.Axes.plot", side_effect=lambda x, y, **kw: drawn.append(kw["color"])), \
            patch("matplotlib.axes.Axes.set_yscale", side_effect=scales.append):
        curves = plot_job_curves(sweep, tmp_path / "curves")
    assert list(curves) == [0] and curves[0].is_file()
    assert drawn == ["#000000", "#1f77b4"] and scales == ["log"]  # no flat style line; the log scale kept


def test_network_label_names_a_trained_network_by_its_description_without_machine_paths():
    jobs = pd.DataFrame({
        "metrics.network": ["vgg16_bn_craft", "vgg19", "vgg16_bn_craft_normalised"],
        "metrics.weights": ["package:m/w.pth (/site-packages/m/w.pth)", "random (seed 0); UNTRAINED",
                            "/home/me/outputs/normalize/n.pth"],
        "metrics.trained_weights": [True, False, True],
        "metrics.network_description": ["CRAFT's backbone, not the paper's VGG-19", "VGG-19", "CRAFT's backbone"],
    })
    assert networks(Sweep(Path("sweep"), jobs, pd.DataFrame(), [])) == (
        "vgg16_bn_craft (CRAFT's backbone, not the paper's VGG-19; weights package:m/w.pth); "
        "vgg19 with random (seed 0); UNTRAINED; vgg16_bn_craft_normalised (CRAFT's backbone; weights n.pth)"
    )


EVAL_KEYS = ("eval/content_ssim", "eval/style_swd", "eval/color_distance")


@pytest.fixture(scope="module")
def evaluated(grid_sweep, tmp_path_factory):
    """The grid sweep with picture metrics added to its completed jobs' metrics.json, and its report."""
    copy = tmp_path_factory.mktemp("evaluated") / "sweep"
    shutil.copytree(grid_sweep, copy, ignore=shutil.ignore_patterns("report"))
    for job in range(4):
        path = copy / str(job) / "metrics.json"
        metrics = json.loads(path.read_text())
        if metrics["status"] == "completed":
            metrics.update(zip(EVAL_KEYS, (0.9 - 0.2 * job, 0.05 + 0.01 * job, 10.0 + job)))
            path.write_text(json.dumps(metrics))
    return build_report(copy)


@pytest.mark.slow
@pytest.mark.subprocess
def test_picture_metrics_are_columns_of_both_tables(evaluated):
    table = pd.read_csv(evaluated.written["results.csv"])
    assert set(EVAL_KEYS) <= set(table.columns)
    assert not [column for column in table.columns if column.startswith("metrics.eval/")]
    assert list(table["eval/content_ssim"].iloc[:3]) == pytest.approx([0.9, 0.7, 0.5])
    assert list(table["eval/style_swd"].iloc[:3]) == pytest.approx([0.05, 0.06, 0.07])
    assert pd.isna(table.at[3, "eval/content_ssim"])  # the failed job has none
    header = next(line for line in evaluated.written["results.md"].read_text().splitlines() if line.startswith("|"))
    columns = [cell.strip() for cell in header.strip("|").split("|")]
    assert columns.index("loss/style") < columns.index("eval/content_ssim")
    assert set(EVAL_KEYS) <= set(columns)


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_score_metrics_json_lacks_does_not_come_back_from_tensorboard(evaluated, tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(evaluated.sweep.root, sweep, ignore=shutil.ignore_patterns("report"))
    path = sweep / "0" / "metrics.json"
    metrics = json.loads(path.read_text())
    path.write_text(json.dumps({key: value for key, value in metrics.items() if key != "eval/style_swd"}))
    assert "eval/style_swd" in set(SummaryReader(str(sweep / "0")).scalars["tag"])  # the event file still has it
    jobs = read_sweep(sweep).jobs.set_index("job")
    assert pd.isna(jobs.at[0, "eval/style_swd"]) and jobs.at[1, "eval/style_swd"] == pytest.approx(0.06)
    assert jobs.at[0, "eval/content_ssim"] == pytest.approx(0.9)


@pytest.mark.slow
@pytest.mark.subprocess
def test_tradeoff_plot_shows_every_measured_job(evaluated):
    assert evaluated.tradeoff_jobs == [0, 1, 2]  # the failed job has no picture metrics
    path = evaluated.written["tradeoff.png"]
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as plot:
        plot.verify()
    with Image.open(path) as plot:
        width, height = plot.size
    assert 600 <= width <= 1200 and 400 <= height <= 900  # 8 x 5.5 in at 100 dpi
    assert path.stat().st_size > 10_000  # drawn, not blank


class Page(HTMLParser):
    """The links, table headers, cells per row and scripts of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []  # every href and src
        self.headers: list[str] = []  # the text of each <th>
        self.row_cells: list[int] = []  # <td>s per <tr>
        self.scripts: list[str] = []
        self.external: list[str] = []  # <link> or <script src=...>: something fetched from elsewhere
        self.inside = ""  # "th" or "script" while in one

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self.links += [values[name] for name in ("href", "src") if values.get(name)]
        if tag == "link" or (tag == "script" and values.get("src")):
            self.external.append(tag)
        if tag in ("th", "script"):
            self.inside = tag
            self.headers += [""] if tag == "th" else []
        elif tag == "tr":
            self.row_cells.append(0)
        elif tag == "td":
            self.row_cells[-1] += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == self.inside:
            self.inside = ""

    def handle_data(self, data: str) -> None:
        if self.inside == "th":
            self.headers[-1] += data
        elif self.inside == "script":
            self.scripts.append(data)


def read_page(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def assert_links_resolve(page: Page, folder: Path) -> None:
    for link in page.links:
        parts = urlsplit(link)
        assert not parts.scheme and not parts.netloc and not link.startswith("/"), f"not relative: {link}"
        assert (folder / unquote(parts.path)).exists(), f"broken link {link}"


@pytest.mark.slow
@pytest.mark.subprocess
def test_gallery_links_each_jobs_files_and_every_link_resolves(evaluated):
    out = evaluated.written["index.html"].parent
    page = read_page(evaluated.written["index.html"])
    assert_links_resolve(page, out)
    links = set(page.links)
    for job in range(4):
        assert f"../{job}/metrics.json" in links and f"../{job}/.hydra/config.yaml" in links
    for job in range(3):
        assert f"../{job}/result.png" in links
        assert f"curves/job_{job}.png" in links  # its loss curve
    assert "../3/result.png" not in links  # the failed job wrote none
    assert {"results.csv", "figure.png", "losses.png", "tradeoff.png"} <= links
    assert not page.external  # no stylesheet or script fetched from anywhere


@pytest.mark.slow
@pytest.mark.subprocess
def test_gallery_is_one_sortable_table(evaluated):
    page = read_page(evaluated.written["index.html"])
    headers = [" ".join(text.split()).replace("/ ", "/") for text in page.headers]
    assert headers[:5] == ["result", "job", "style_layers", "image_size", "status"]
    assert {"loss/total", "loss/content", "loss/style", *EVAL_KEYS, "files"} <= set(headers)
    assert page.row_cells[1:] == [len(headers)] * 4  # a header per column; one row per job
    script = "".join(page.scripts)
    assert "addEventListener(\"click\"" in script and "aria-sort" in script and ".sort(" in script


@pytest.mark.slow
@pytest.mark.subprocess
def test_gallery_links_still_resolve_after_the_sweep_is_moved(evaluated, tmp_path):
    moved = tmp_path / "elsewhere" / "sweep"
    shutil.copytree(evaluated.sweep.root, moved)
    assert_links_resolve(read_page(moved / "report" / "index.html"), moved / "report")


@pytest.mark.slow
@pytest.mark.subprocess
def test_self_contained_report_stands_alone_once_the_sweep_is_gone(evaluated, tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(evaluated.sweep.root, sweep, ignore=shutil.ignore_patterns("report"))
    out = tmp_path / "published"
    written = build_report(sweep, out, self_contained=True).written
    assert written["jobs"] == out / "jobs"
    assert sorted(path.name for path in (out / "jobs").iterdir()) == ["0", "1", "2", "3"]
    for job in range(3):
        copy = out / "jobs" / str(job)
        assert (copy / "result.png").read_bytes() == (sweep / str(job) / "result.png").read_bytes()
        assert (copy / ".hydra" / "config.yaml").read_text() == (sweep / str(job) / ".hydra" / "config.yaml").read_text()
        assert json.loads((copy / "metrics.json").read_text())["status"] == "completed"
    assert not (out / "jobs" / "3" / "result.png").exists()  # the failed job wrote none
    assert json.loads((out / "jobs" / "3" / "metrics.json").read_text())["status"] == "failed"
    assert {path.name for path in (out / "jobs" / "0" / "inputs").iterdir()} == {"content.png", "style.png"}
    assert not list((out / "jobs").glob("*/*.pt")) and not list((out / "jobs").glob("*/events.out.tfevents.*"))

    shutil.rmtree(sweep)
    moved = tmp_path / "elsewhere"
    shutil.move(out, moved)
    page = read_page(moved / "index.html")
    assert_links_resolve(page, moved)
    assert not [link for link in page.links if link.startswith("..")]  # nothing outside the folder
    assert {"jobs/0/result.png", "jobs/2/metrics.json", "jobs/3/.hydra/config.yaml"} <= set(page.links)


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_report_written_again_keeps_nothing_of_the_earlier_one(evaluated, tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(evaluated.sweep.root, sweep, ignore=shutil.ignore_patterns("report"))
    out = tmp_path / "report"
    first = build_report(sweep, out, self_contained=True).written
    assert {"tradeoff.png", "jobs", "curves", "scalars.csv"} <= set(first)
    assert (out / "curves" / "job_2.png").is_file()
    shutil.rmtree(sweep / "2")  # a job gone from the sweep
    for path in sweep.glob("*/.hydra/config.yaml"):  # the sweep re-run as content reconstructions: no trade-off
        config = OmegaConf.load(path)
        config.beta = 0.0
        OmegaConf.save(config, path)
    second = build_report(sweep, out, scalars=False).written
    assert "tradeoff.png" not in second and not (out / "tradeoff.png").exists()
    assert "scalars.csv" not in second and not (out / "scalars.csv").exists()
    assert f"every logged loss per step: the TensorBoard event files in {sweep}" in (out / "results.md").read_text()
    assert "scalars.csv" not in (out / "index.html").read_text()
    assert not (out / "jobs").exists()  # the gallery links into the sweep again
    assert "job_2.png" not in {path.name for path in (out / "curves").iterdir()}
    assert (out / "curves" / "job_0.png").is_file()


REPORT_PACKAGE = ROOT / "nst_exp" / "report"


@pytest.mark.subprocess
def test_report_package_imports_no_torch():
    modules = [f"nst_exp.report.{path.stem}" for path in REPORT_PACKAGE.glob("*.py") if path.stem != "__main__"]
    code = f"import importlib, sys\nfor name in {modules!r}: importlib.import_module(name)\n" \
           "print(sorted(name for name in sys.modules if name.split('.')[0] == 'torch'))"
    result = run_python("-c", code, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


def test_report_modules_import_each_other_without_a_cycle():
    graph = {}
    for path in REPORT_PACKAGE.glob("*.py"):
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("nst_exp.report."):
                imported.add(node.module.rsplit(".", 1)[1])
        graph[path.stem] = imported
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, f"import cycle: {' -> '.join((*path, module))}"
        if module not in done:
            for other in graph[module]:
                visit(other, (*path, module))
            done.add(module)

    for module in graph:
        visit(module, ())
    assert "figures" not in graph["sweep"] and "build" not in graph["figures"]
