"""Coarse-to-fine synthesis: stage plan, upsampled starts, run-wide steps in TensorBoard, per-stage files."""

from __future__ import annotations

import json

import pytest
from conftest import make_config
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from nst_exp import images
from nst_exp.errors import NstError
from nst_exp.runner import run
from nst_exp.stages import Stage, plan, upsample


def test_plan_runs_coarse_sizes_then_image_size():
    assert plan(512, 100, [128, 256], [300, 200]) == [
        Stage(1, 3, 128, 300, 0),
        Stage(2, 3, 256, 200, 300),
        Stage(3, 3, 512, 100, 500),
    ]
    assert plan(512, 100, [256], []) == [Stage(1, 2, 256, 100, 0), Stage(2, 2, 512, 100, 100)]
    assert plan(64, 7, [], []) == [Stage(1, 1, 64, 7, 0)]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["coarse_to_fine.sizes=[32,16]"], "must be increasing positive sizes below image_size=32"),
        (["coarse_to_fine.sizes=[16,32]"], "must be increasing positive sizes below image_size=32"),
        (["coarse_to_fine.sizes=[16]", "coarse_to_fine.iterations=[1,2]"], "has 2 values for 1 coarse stages"),
        (["coarse_to_fine.sizes=[16]", "coarse_to_fine.iterations=[-1]"],
         r"coarse_to_fine.iterations\[0\]=-1 is negative.*must be an integer >= 0"),
        (["coarse_to_fine.sizes=[8]"], r"coarse_to_fine.sizes\[0\]=8 is too small for layer"),
    ],
)
def test_bad_stage_lists_are_refused(tmp_path, tiny, overrides, message):
    with pytest.raises(NstError, match=message):
        run(make_config([*tiny, *overrides]), out_dir=tmp_path)


def test_each_stage_starts_from_the_previous_result_upsampled(tmp_path, tiny):
    """With 0 iterations at the last stage, the result is the coarse stage's image upsampled."""
    out = tmp_path / "run"
    run(make_config([*tiny, "image_size=48", "iterations=0", "coarse_to_fine.sizes=[24]",
                     "coarse_to_fine.iterations=[3]"]), out_dir=out)
    coarse = images.load(out / "stages" / "stage_1_24px.png", 24)
    result = images.load(out / "result.png", 48)
    assert tuple(coarse.shape[-2:]) == (18, 24) and tuple(result.shape[-2:]) == (36, 48)
    # Both PNGs are rounded to 8 bits; interpolation keeps the error within one step.
    assert (upsample(coarse, (36, 48)) - result).abs().max() <= 1.5 / 255
    assert coarse.std() > 0.05  # not a blank image (a constant one has 0; its mean is no test: noise averages 0.5)


def test_coarse_to_fine_logs_one_run_with_stages(tmp_path, tiny):
    out = tmp_path / "run"
    run(make_config([*tiny, "image_size=48", "iterations=2", "coarse_to_fine.sizes=[24,32]",
                     "coarse_to_fine.iterations=[3,2]"]), out_dir=out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    assert metrics["iterations"] == 7 and metrics["image_width"] == 48
    assert [(s["stage"], s["size"], s["iterations"], s["width"]) for s in metrics["stages"]] == [
        (1, 24, 3, 24), (2, 32, 2, 32), (3, 48, 2, 48)
    ]
    assert metrics["stages"][-1]["loss/total"] == metrics["loss/total"]
    for name, width in (("stage_1_24px", 24), ("stage_2_32px", 32), ("stage_3_48px", 48)):
        assert images.open_rgb(out / "stages" / f"{name}.png").width == width
    events = EventAccumulator(str(out), size_guidance={"images": 0, "scalars": 0}).Reload()
    steps = [event.step for event in events.Scalars("loss/total")]
    assert steps == [1, 2, 3, 4, 5, 6, 7, 8]  # one global step across the stages, then the final value
    stage = {event.step: event.value for event in events.Scalars("stage")}
    assert stage == {1: 1, 3: 1, 4: 2, 5: 2, 6: 3, 7: 3}
    assert [event.step for event in events.Scalars("stage/loss/total")] == [1, 2, 3]
    assert [event.step for event in events.Images("stage/image")] == [1, 2, 3]
