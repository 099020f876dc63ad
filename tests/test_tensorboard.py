"""What TensorBoard shows of a sweep's job, read back with TensorBoard's own EventAccumulator.

One real tiny run (random VGG-19, 32 px, 2 iterations) logged as job 0 of a sweep over beta and a
boolean; the HParams protos are decoded as the HParams plugin decodes them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import make_config
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from nst_exp.report.sweep import read_scalars
from nst_exp.runner import run
from nst_exp.tensorboard_run import compact, log_dir, run_name, split_choices, sweep_task, swept_values, typed_values

SWEPT = {"beta": "1e3", "log.progress": "false"}
NAME = "beta=1e3,log.progress=false"


@pytest.fixture(scope="module")
def job(tmp_path_factory, images_dir_module) -> Path:
    """job 0 of a sweep, run through run() as the command line runs a sweep's job."""
    sweep = tmp_path_factory.mktemp("sweep")
    overrides = ["model=vgg19", "model.weights=random", "image_size=32", "iterations=2",
                 f"images_dir={images_dir_module}", "content.path=content.png", "style.path=style.png",
                 "log.image_every=0", "beta=1000.0", "log.progress=false"]
    run(make_config(overrides), sweep / "0", overrides, multirun=True, swept=SWEPT)
    return sweep / "0"


@pytest.fixture(scope="module")
def images_dir_module(tmp_path_factory) -> Path:
    from conftest import pattern_image

    folder = tmp_path_factory.mktemp("images")
    pattern_image(folder / "content.png", (40, 32), seed=1)
    pattern_image(folder / "style.png", (32, 40), seed=2)
    return folder


def plugin_data(events: EventAccumulator, tag: str) -> plugin_data_pb2.HParamsPluginData:
    return plugin_data_pb2.HParamsPluginData.FromString(events.PluginTagToContent("hparams")[tag])


def test_a_sweeps_job_is_a_run_named_by_its_swept_values(job):
    folders = sorted(path.parent.relative_to(job).as_posix() for path in job.rglob("events.out.tfevents.*"))
    assert folders == [NAME, f"{NAME}/final"]  # `tensorboard --logdir SWEEP` lists 0/beta=1e3,log.progress=false


def test_hparams_hold_the_swept_keys_typed_and_the_metrics_first(job):
    events = EventAccumulator(str(job / NAME)).Reload()
    experiment = plugin_data(events, "_hparams_/experiment").experiment
    assert [info.name for info in experiment.hparam_infos] == ["beta", "log.progress", "alpha/beta"]
    metrics = [(info.name.group, info.name.tag) for info in experiment.metric_infos]
    assert metrics[:3] == [("", "loss/total"), ("", "loss/content"), ("", "loss/style")]
    assert ("final", "eval/content_ssim") in metrics
    start = plugin_data(events, "_hparams_/session_start_info").session_start_info
    assert start.hparams["beta"].number_value == 1000.0
    assert start.hparams["log.progress"].WhichOneof("kind") == "bool_value"  # not 0.0
    assert start.hparams["log.progress"].bool_value is False
    assert start.hparams["alpha/beta"].number_value == pytest.approx(1e-3)
    assert plugin_data(events, "_hparams_/session_end_info").session_end_info.status == 1  # STATUS_SUCCESS
    settings = events.Tensors("settings/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "| image_size | 32 |" in settings and "| beta |" not in settings  # constants once, as text


def test_inputs_logged_once_and_one_point_scores_kept_out_of_the_curves(job):
    events = EventAccumulator(str(job / NAME), size_guidance={"images": 0}).Reload()
    assert sorted(events.Tags()["images"]) == ["image", "inputs/content", "inputs/style"]
    assert [image.step for image in events.Images("inputs/content")] == [0]
    scalars = events.Tags()["scalars"]
    assert "loss/total" in scalars and not [tag for tag in scalars if tag.startswith("eval/")]
    final = EventAccumulator(str(job / NAME / "final")).Reload()
    assert sorted(final.Tags()["scalars"]) == ["eval/color_distance", "eval/content_ssim", "eval/style_swd"]
    assert len(final.Scalars("eval/content_ssim")) == 1


def test_the_report_reads_a_named_run_as_its_jobs_curves(job):
    scalars = read_scalars(job.parent, {"0": 0})
    tags = set(scalars["tag"])
    assert {"loss/total", "loss/content", "loss/style"} <= tags and not {t for t in tags if t.startswith("eval/")}
    assert sorted(scalars.loc[scalars["tag"] == "loss/total", "step"]) == [1, 2, 3]  # 2 iterations and the end


def test_run_names_use_the_values_typed_and_stay_safe_folder_names(tmp_path):
    (tmp_path / "multirun.yaml").write_text(
        "hydra:\n  overrides:\n    task:\n    - beta=1e3,1e4\n    - style_layers=[relu1_1],[relu1_1,relu2_1]\n"
        "    - image_size=64\n    - style.path=a/b.png,../../etc\n")
    task = sweep_task(tmp_path)
    job = ["beta=10000.0", "style_layers=[relu1_1,relu2_1]", "image_size=64", "style.path=../../etc", "+seed=3"]
    swept = swept_values(job, task)
    assert swept == {"beta": "1e4", "style_layers": "[relu1_1,relu2_1]", "style.path": "../../etc", "+seed": "3"}
    name = run_name(swept)
    assert name == "beta=1e4,style_layers=[relu1_1,relu2_1],style.path=.._.._etc,seed=3"
    assert "/" not in name and "\\" not in name
    assert run_name({"note": "x" * 300}).startswith("note=xxx") and len(run_name({"note": "x" * 300})) == 120
    assert run_name({}) == "" and swept_values(["image_size=64"], task) == {}  # a constant names nothing
    assert split_choices("'a,b',[1,2]") == ["'a,b'", "[1,2]"] and compact("1e-07") == "1e-7"
    assert typed_values(["beta=range(1,3)"])[0] == {"beta": {}}  # a range: values named as Hydra wrote them


def test_a_continued_run_logs_where_its_first_session_did(tmp_path):
    assert log_dir(tmp_path, {"beta": "1e3"}) == tmp_path / "beta=1e3"
    assert log_dir(tmp_path, {}) == tmp_path  # a single run: its own folder, as before
    (tmp_path / "beta=1e3" / "final").mkdir(parents=True)
    (tmp_path / "beta=1e3" / "events.out.tfevents.1").write_bytes(b"")
    (tmp_path / "beta=1e3" / "final" / "events.out.tfevents.2").write_bytes(b"")
    assert log_dir(tmp_path, {"resume": "x"}) == tmp_path / "beta=1e3"  # resume=: the same run, not a new one
