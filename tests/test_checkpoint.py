"""Checkpoints and resume, in process: exact continuation, fallback, refusals, NaN and OOM stops."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
import torch
from conftest import make_config
from tbparse import SummaryReader
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import nst_exp.runner
from nst_exp import checkpoint
from nst_exp.errors import NstError, RunFailed
from nst_exp.features import load_configured_network
from nst_exp.losses import GatysLoss
from nst_exp.optimize import Interrupted, State
from nst_exp.report import read_scalars
from nst_exp.runner import run

_networks: dict[str, object] = {}


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    """One thread (2 shared cores) and each random network built once: it is the same every time."""

    def cached(*args, **kwargs):
        key = repr((args, sorted(kwargs.items())))
        if key not in _networks:
            _networks[key] = load_configured_network(*args, **kwargs)
        return _networks[key]

    monkeypatch.setattr(nst_exp.runner, "load_configured_network", cached)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def short(tiny):
    """tiny, with shallow layers (fast), 8 iterations and a checkpoint every 2."""
    return [
        *tiny,
        "iterations=8",
        "checkpoint.every=2",
        "content_layers=[relu2_1]",
        "style_layers=[relu1_1,relu2_1]",
    ]


def at_evaluation(monkeypatch, number: int, action) -> None:
    """Make the objective call ``action(terms)`` on its ``number``-th evaluation (1-based)."""
    forward, calls = GatysLoss.forward, {"n": 0}

    def patched(self, image):
        calls["n"] += 1
        terms = forward(self, image)
        return action(terms) if calls["n"] == number else terms

    monkeypatch.setattr(GatysLoss, "forward", patched)


def undo_patch(monkeypatch) -> None:
    monkeypatch.setattr(GatysLoss, "forward", _forward)


_forward = GatysLoss.forward


def sigterm(terms):
    os.kill(os.getpid(), signal.SIGTERM)  # the loop's handler only sets a flag
    return terms


def stopped_run(overrides, run_dir, monkeypatch, evaluation: int) -> None:
    """A run that receives SIGTERM during ``evaluation`` and stops after that iteration."""
    at_evaluation(monkeypatch, evaluation, sigterm)
    with pytest.raises(Interrupted):
        run(make_config(overrides), out_dir=run_dir)
    undo_patch(monkeypatch)


def final_image(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["image"]


def test_sigterm_saves_a_checkpoint_and_resume_ends_with_the_uninterrupted_image(tmp_path, short, monkeypatch):
    reference_loss = run(make_config(short), out_dir=tmp_path / "reference").loss
    reference = final_image(tmp_path / "reference")

    at_evaluation(monkeypatch, 5, sigterm)
    with pytest.raises(Interrupted) as stopped:
        run(make_config(short), out_dir=tmp_path / "run")
    assert stopped.value.signal == signal.SIGTERM
    saved = checkpoint.load(tmp_path / "run")
    assert (saved.status, saved.state.iteration, saved.state.evaluations) == ("interrupted", 5, 5)
    assert saved.state.optimizer["state"][0]["n_iter"] == 5 and saved.state.optimizer["state"][0]["old_dirs"]
    assert saved.config["iterations"] == 8 and saved.config["beta"] == 1000.0
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["status"] == "interrupted"

    undo_patch(monkeypatch)
    loss = run(make_config([f"resume={tmp_path / 'run'}"]), overrides=[f"resume={tmp_path / 'run'}"]).loss
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["iterations"] == 8 and metrics["evaluations"] == 8
    assert metrics["resumed_from"] == [5]
    assert torch.equal(final_image(tmp_path / "run"), reference)
    assert loss == reference_loss


def test_completed_run_keeps_a_small_checkpoint_and_no_previous(tmp_path, short):
    run(make_config(short), out_dir=tmp_path / "run")
    folder = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["last.pt"]
    saved = checkpoint.load(tmp_path / "run")
    assert (saved.status, saved.state.iteration, saved.state.optimizer) == ("completed", 8, None)


def test_resume_falls_back_to_the_previous_checkpoint_when_the_newest_is_corrupt(tmp_path, short, monkeypatch):
    run(make_config(short), out_dir=tmp_path / "reference")
    stopped_run(short, tmp_path / "run", monkeypatch, 5)
    folder = tmp_path / "run" / "checkpoints"
    last = folder / "last.pt"
    data = bytearray(last.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the tensors: torch.load alone would not notice
    last.write_bytes(bytes(data))

    saved = checkpoint.load(tmp_path / "run")
    assert (saved.state.iteration, saved.path.name) == (4, "previous.pt")  # the periodic one before
    assert (folder / "last.pt.unreadable").is_file()
    # TensorBoard reads a folder's event files in name order: <whole seconds>.<host>.<pid>.<writer number>. In one
    # process within one second the writer number decides, and 10 sorts before 9: resume in the next second.
    time.sleep(1 - time.time() % 1)
    run(make_config([f"resume={tmp_path / 'run'}"]), overrides=[f"resume={tmp_path / 'run'}"])
    # the previous checkpoint holds the full L-BFGS state too: still the uninterrupted result
    assert torch.equal(final_image(tmp_path / "run"), final_image(tmp_path / "reference"))
    # step 5 was logged by both sessions; readers keep it once (TensorBoard by purge_step)
    raw = SummaryReader(str(tmp_path / "run")).scalars
    assert raw[raw.tag == "loss/total"].step.tolist().count(5) == 2
    scalars = read_scalars(tmp_path / "run", {".": 0})
    assert scalars[scalars.tag == "loss/total"].step.tolist() == list(range(1, 10))
    events = EventAccumulator(str(tmp_path / "run"))
    events.Reload()
    assert [event.step for event in events.Scalars("loss/total")] == list(range(1, 10))


def test_resume_says_clearly_when_no_checkpoint_is_whole(tmp_path, short, monkeypatch):
    stopped_run(short, tmp_path / "run", monkeypatch, 5)
    folder = tmp_path / "run" / "checkpoints"
    (folder / "last.pt").write_bytes(b"")
    (folder / "previous.pt").write_bytes((folder / "previous.pt").read_bytes()[:100])
    with pytest.raises(NstError, match=r"Cannot resume .*last\.pt is damaged.*previous\.pt is damaged.*start the run again"):
        checkpoint.load(tmp_path / "run")


def test_a_checkpoint_holding_a_pickle_payload_is_not_run(tmp_path, short):
    marker = tmp_path / "payload_ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save({"format": 1, "image": Payload()}, folder / "last.pt")
    with pytest.raises(NstError, match="Cannot resume"):
        checkpoint.load(tmp_path / "run")
    assert not marker.exists()


def test_resume_refuses_overrides_that_change_the_run_and_accepts_more_iterations(tmp_path, short, monkeypatch):
    stopped_run(short, tmp_path / "run", monkeypatch, 3)
    resume = f"resume={tmp_path / 'run'}"
    with pytest.raises(NstError, match=r"'beta=10' cannot be used with resume=.*Only these may change: iterations="):
        run(make_config([resume, "beta=10"]), overrides=[resume, "beta=10"])
    run(make_config([resume, "iterations=10"]), overrides=[resume, "iterations=10"])
    saved = checkpoint.load(tmp_path / "run")
    assert saved.state.iteration == 10 and saved.config["beta"] == 1000.0


def test_resume_refuses_when_an_input_changed(tmp_path, short, images_dir, monkeypatch):
    stopped_run(short, tmp_path / "run", monkeypatch, 3)
    style = images_dir / "style.png"
    style.write_bytes((images_dir / "content.png").read_bytes())
    resume = f"resume={tmp_path / 'run'}"
    with pytest.raises(NstError, match="objective changed since the checkpoint .*a style image changed"):
        run(make_config([resume]), overrides=[resume])


def test_same_dir_again_skips_a_finished_run_and_refuses_a_different_one(tmp_path, short):
    loss = run(make_config(short), out_dir=tmp_path / "run").loss
    result = tmp_path / "run" / "result.png"
    stamp = result.stat().st_mtime_ns
    assert run(make_config(short), out_dir=tmp_path / "run").loss == loss
    assert result.stat().st_mtime_ns == stamp  # skipped, not redone
    with pytest.raises(NstError, match=r"already holds a different run \(beta is 1000.0 there and 10.0 now\)"):
        run(make_config([*short, "beta=10"]), out_dir=tmp_path / "run")


def test_same_dir_again_continues_an_interrupted_run(tmp_path, short, monkeypatch):
    run(make_config(short), out_dir=tmp_path / "reference")
    stopped_run(short, tmp_path / "run", monkeypatch, 3)
    run(make_config(short), out_dir=tmp_path / "run")
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["resumed_from"] == [3]
    assert torch.equal(final_image(tmp_path / "run"), final_image(tmp_path / "reference"))


def test_a_nan_stop_checkpoints_the_last_finite_image(tmp_path, short, monkeypatch):
    def poison(terms):
        terms.total = terms.total * float("nan")
        return terms

    at_evaluation(monkeypatch, 6, poison)
    run(make_config(short), out_dir=tmp_path / "run")
    saved = checkpoint.load(tmp_path / "run")
    # evaluation 6 scores the image after 5 steps; the last finite one is the image after 4
    assert (saved.status, saved.state.iteration, saved.state.optimizer) == ("diverged", 4, None)
    assert torch.isfinite(saved.state.image).all()
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["status"] == "diverged"


def test_out_of_memory_during_the_run_keeps_the_last_checkpoint_and_says_what_fits(tmp_path, short, monkeypatch):
    def out_of_memory(terms):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    at_evaluation(monkeypatch, 6, out_of_memory)
    with pytest.raises(RunFailed) as failed:
        run(make_config(short), out_dir=tmp_path / "run")
    message = str(failed.value)
    assert "Out of memory during iteration 6 (CUDA out of memory. Tried to allocate 2.00 GiB)" in message
    assert "estimated to need" in message and "image_size=32 is the largest that fits" in message
    assert f"The last checkpoint (iteration 4) is kept in {tmp_path / 'run'}" in message
    assert f"resume={tmp_path / 'run'}" in message
    assert failed.value.metrics["status"] == "out_of_memory" and failed.value.metrics["iterations"] == 5
    saved = checkpoint.load(tmp_path / "run")
    assert (saved.status, saved.state.iteration) == ("running", 4)
    assert saved.state.optimizer is not None


def test_checkpoint_rotation_keeps_the_previous_one(tmp_path):
    for iteration in (2, 4):
        state = State(torch.full((1, 3, 2, 2), float(iteration)), iteration, iteration, None)
        checkpoint.save(tmp_path, checkpoint.Checkpoint(state, {"seed": 0}, "running", 0.0, {}))
    folder = tmp_path / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["last.pt", "previous.pt"]
    assert torch.load(folder / "previous.pt", weights_only=True)["iteration"] == 2
    assert checkpoint.load(tmp_path).state.iteration == 4


def test_resume_puts_the_run_dir_back_in_place(tmp_path):
    from nst_exp.__main__ import HydraRecord

    cfg = make_config_with_hydra([f"resume={tmp_path}"])
    assert cfg.hydra.run.dir == str(tmp_path)
    assert cfg.hydra.output_subdir is None  # nst_exp writes the record once the run is accepted
    assert HydraRecord(cfg, tmp_path).session.startswith("resume_")  # .hydra/resume_<time>/: the earlier record stays
    fresh = make_config_with_hydra([])
    assert fresh.hydra.run.dir.startswith("outputs/runs/") and HydraRecord(fresh, tmp_path).session == ""


def make_config_with_hydra(overrides):
    from hydra import compose, initialize_config_dir

    from nst_exp.config import conf_dir

    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


def test_a_checkpoint_from_before_a_setting_existed_resumes_with_its_default_or_says_what_it_lacks():
    from omegaconf import OmegaConf

    from nst_exp.resume import resumed_config

    saved = OmegaConf.to_container(make_config([]), resolve=True, enum_to_str=True)
    del saved["objective_weights"]  # a top-level setting added since: conf/config.yaml's default
    assert resumed_config(saved, ["iterations=9"]).objective_weights is None
    del saved["model"]["channel_order"]  # a network's setting: no default fits every network
    with pytest.raises(NstError, match=r"lacks model\.channel_order, which this version of nst_exp needs"):
        resumed_config(saved, [])
