"""Opening what someone else made (docs/guarantees.md, "Opening someone else's run"): a config, a checkpoint,
a weights package or a sweep never makes nst_exp import or call anything it names, nor resolve a secret."""

from __future__ import annotations

import csv
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import child_env, make_config, run_cli
from omegaconf import OmegaConf
from PIL import Image

import nst_exp.weights
from nst_exp import checkpoint, compose, stylize
from nst_exp.__main__ import preflight
from nst_exp.api import override_value
from nst_exp.errors import NstError
from nst_exp.evaluate import evaluate_run
from nst_exp.report import build_report
from nst_exp.runner import run
from nst_exp.validation import validate
from nst_exp.weights import resolve_weights_file

MARKER_MODULE = "nst_trust_probe"  # a module whose import writes a file: imported = code ran


@pytest.fixture
def probe(tmp_path, monkeypatch) -> Path:
    """A module and a package on sys.path whose top-level code writes ``ran``; returns that file's path."""
    ran = tmp_path / "ran"
    code = f"open({str(ran)!r}, 'w').write('imported')\nclass Thing:\n    pass\n"
    (tmp_path / f"{MARKER_MODULE}.py").write_text(code)
    package = tmp_path / "nst_trust_pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text(code)
    (package / "sub" / "w.pth").write_bytes(b"")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield ran
    for name in (MARKER_MODULE, "nst_trust_pkg", "nst_trust_pkg.sub"):
        sys.modules.pop(name, None)


# --- 1. a _target_ names only what its slot allows, checked before anything is imported ---------------------

@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optimizer._target_=builtins.open", "optimizer._partial_=false", "+optimizer._args_=[victim.txt,w]"],
         r"optimizer\._args_ is not allowed"),
        (["optimizer._target_=builtins.open"], r"optimizer\._target_=builtins\.open is not allowed: .*torch\.optim"),
        (["optimizer._target_=os.system"], r"optimizer\._target_=os\.system is not allowed"),
        (["optimizer._target_=subprocess.Popen"], r"optimizer\._target_=subprocess\.Popen is not allowed"),
        ([f"optimizer._target_={MARKER_MODULE}.Thing"], rf"optimizer\._target_={MARKER_MODULE}\.Thing is not allowed"),
        (["optimizer._target_=torch.optim.Optimizer"], r"torch\.optim\.Optimizer is not allowed"),  # the base class
        (["optimizer._target_=torch.optim.lr_scheduler"], r"torch\.optim\.lr_scheduler is not allowed"),  # a module
        (["optimizer._target_=torch.optim.Adam.__init__"], r"is not allowed"),
        (["optimizer._partial_=false"], r"optimizer\._partial_=False is not allowed"),
        (["+optimizer._recursive_=true"], r"optimizer\._recursive_ is not allowed"),
        (["+optimizer._convert_=all"], r"optimizer\._convert_ is not allowed"),
        (["+optimizer.maximize._target_=os.system"], r"optimizer\.maximize\._target_ is not allowed: .*values"),
        (["+content._target_=os.system"], r"content\._target_=os\.system is not allowed: .*only for `optimizer`"),
    ],
)
def test_a_target_outside_its_slot_is_refused_before_anything_is_imported(probe, overrides, message):
    cfg = make_config(overrides)
    with pytest.raises(NstError, match=message):
        validate(cfg)
    assert not probe.exists()  # the module a config named was never imported


@pytest.mark.subprocess
def test_the_issues_example_leaves_the_victim_file_alone_and_is_one_line(tmp_path, tiny):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    done = run_cli(*tiny, "optimizer=adam", "~optimizer.lr", "~optimizer.betas", "~optimizer.eps",
                   "optimizer._target_=builtins.open", "optimizer._partial_=false",
                   "+optimizer._args_=['victim.txt','w']", "hydra.run.dir=run", cwd=tmp_path, timeout=300)
    assert done.returncode == 2
    assert victim.read_text() == "precious"
    output = done.stdout + done.stderr
    assert "Traceback" not in output and output.count("optimizer._args_ is not allowed") == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["+hydra.callbacks.x._target_=os.system"], r"hydra\.callbacks\.x\._target_=os\.system is not allowed"),
        (["-m", "beta=1,2", "hydra.callbacks.sweep_summary._target_=builtins.exec"], r"sweep_summary\._target_="),
        (["-m", "beta=1,2", f"hydra.callbacks.sweep_summary._target_=nst_exp.sweep_summary.{'RunDir.METRICS'}"], r"not allowed"),
        (["+hydra.callbacks.sweep_summary._args_=[1]"], r"sweep_summary\._args_ is not allowed"),
        (["-m", "hparams_search=balance", "hydra.sweeper.sampler._target_=builtins.exec"],
         r"hydra\.sweeper\.sampler\._target_=builtins\.exec is not allowed"),
        (["+hydra.extra._target_=os.system"], r"hydra\.extra\._target_=os\.system is not allowed"),
        (["hydra.job_logging.handlers.console.class=os.system"], r"job_logging\.handlers\.console\.class=os\.system"),
        (["hydra.job_logging.handlers.console.stream=ext://os.system"], r"stream=ext://os\.system is not allowed"),
        (["--experimental-rerun", "config.pickle"], r"unpickles a file"),
    ],
)
def test_a_target_in_hydras_config_is_checked_before_hydra_makes_it(tmp_path, monkeypatch, probe, argv, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(NstError, match=message):
        preflight(argv)
    assert not (tmp_path / "outputs").exists()


def test_a_shared_config_dir_may_not_add_a_callback_and_the_shipped_configs_pass(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shared = tmp_path / "shared_conf" / "experiment"
    shared.mkdir(parents=True)
    (shared / "nice.yaml").write_text(
        "# @package _global_\nbeta: 1e4\nhydra:\n  callbacks:\n    hi:\n      _target_: os.system\n"
    )
    with pytest.raises(NstError, match=r"hydra\.callbacks\.hi\._target_=os\.system is not allowed"):
        preflight(["--config-dir", str(tmp_path / "shared_conf"), "experiment=nice"])
    logging_dir = tmp_path / "shared_conf" / "hydra" / "job_logging"
    logging_dir.mkdir(parents=True)
    (logging_dir / "fancy.yaml").write_text("version: 1\nformatters:\n  simple:\n    (): os.system\n    command: id\n")
    with pytest.raises(NstError, match=r"hydra\.job_logging\.formatters\.simple\.\(\)=os\.system is not allowed"):
        preflight(["--config-dir", str(tmp_path / "shared_conf"), "hydra/job_logging=fancy"])
    for argv in ([], ["-m", "beta=1,2"], ["-m", "hparams_search=balance"], ["-m", "hparams_search=balance_scalar"],
                 ["-m", "hydra/launcher=joblib", "beta=1,2"], ["-m", "hydra/launcher=submitit_local", "beta=1,2"],
                 ["-m", "hydra/sweeper=optuna", "hydra/sweeper/sampler=cmaes"], ["hydra/job_logging=stdout"],
                 ["--cfg", "job"]):
        preflight(argv)  # nst_exp's own callbacks, Hydra's plugins and Optuna's sampler are allowed


# --- a checkpoint's config is data, validated as the command line is -----------------------------------------

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A tiny finished run written through the API (checkpoints/ and .hydra/ included)."""
    folder = tmp_path_factory.mktemp("shared")
    stylize(torch.rand(3, 24, 32), torch.rand(3, 32, 24), "model=vgg19", "model.weights=random", "log.progress=false",
            "log.image_every=0", out_dir=folder / "run", image_size=32, iterations=2)
    return folder / "run"


def forge(run_dir: Path, destination: Path, change) -> Path:
    """A copy of ``run_dir`` whose last.pt config is changed by ``change(config)``, its checksum recomputed."""
    import shutil

    shutil.copytree(run_dir, destination)
    path = checkpoint.directory(destination) / checkpoint.LAST
    payload = torch.load(path, weights_only=True)
    payload.pop("checksum")
    change(payload["config"])
    payload["iteration"] = 1  # unfinished: resume= would continue it
    payload["checksum"] = checkpoint._checksum(payload)
    torch.save(payload, path)
    checkpoint.discard_previous(destination)
    return destination


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c["optimizer"].update(_target_="builtins.exec", _args_=["print(1)"]), r"optimizer\._args_"),
        (lambda c: c["optimizer"].update(_target_=f"{MARKER_MODULE}.Thing"), rf"{MARKER_MODULE}\.Thing is not allowed"),
        (lambda c: c["optimizer"].update(maximize={"_target_": "os.system"}), r"optimizer\.maximize\._target_"),
        (lambda c: c["optimizer"].update(_partial_=False), r"_partial_=False is not allowed"),
    ],
)
def test_a_forged_checkpoint_config_is_refused_on_resume_and_nothing_runs(finished_run, tmp_path, probe, change,
                                                                           message):
    forged = forge(finished_run, tmp_path / "forged", change)
    cfg = make_config([f"resume={forged}"])
    with pytest.raises(NstError, match=message):
        run(cfg, None, [f"resume={forged}"])
    assert not probe.exists()


# --- package: weights come only from files inside an installed distribution -----------------------------------

def test_package_weights_import_nothing_and_stay_inside_the_package(probe, tmp_path, monkeypatch):
    cases = [
        (f"package:{MARKER_MODULE}/w.pth", "is a single module, not a package"),
        ("package:os/w.pth", "is a single module, not a package"),
        ("package:nst_trust_pkg/sub/w.pth", "not part of an installed distribution"),  # a folder on sys.path
        ("package:nst_trust_pkg.sub/w.pth", "not part of an installed distribution"),  # not its parent imported
        ("package:json/tool.py", "not part of an installed distribution"),
        ("package:nst_exp/../../../etc/passwd", "leaves the package"),
        ("package:nst_exp//etc/passwd", "leaves the package"),
    ]
    for weights, message in cases:
        with pytest.raises(NstError, match=message):
            resolve_weights_file(weights)
    assert not probe.exists()
    # As if nst_trust_pkg were pip-installed: its files are taken, a link out of it is not.
    real = nst_exp.weights.importlib.metadata.packages_distributions
    monkeypatch.setattr(nst_exp.weights.importlib.metadata, "packages_distributions",
                        lambda: {**real(), "nst_trust_pkg": ["nst-trust-pkg"]})
    assert resolve_weights_file("package:nst_trust_pkg.sub/w.pth") == tmp_path / "nst_trust_pkg" / "sub" / "w.pth"
    (tmp_path / "outside.pth").write_bytes(b"")
    (tmp_path / "nst_trust_pkg" / "link.pth").symlink_to(tmp_path / "outside.pth")
    with pytest.raises(NstError, match="outside the package"):
        resolve_weights_file("package:nst_trust_pkg/link.pth")
    assert not probe.exists()


# --- the report and evaluate read configs as data: no interpolation is resolved ------------------------------

def test_report_and_evaluate_never_resolve_a_shared_configs_interpolations(finished_run, tmp_path, monkeypatch):
    import shutil

    secret = "s3cr3t-token-do-not-leak"
    monkeypatch.setenv("NST_TRUST_SECRET", secret)
    calls = []
    OmegaConf.register_new_resolver("trust_probe", lambda: calls.append(1) or "called", replace=True)
    sweep = tmp_path / "sweep"
    for job, beta in (("0", 10.0), ("1", "${oc.env:NST_TRUST_SECRET}")):
        shutil.copytree(finished_run, sweep / job)
        config = sweep / job / ".hydra" / "config.yaml"
        text = config.read_text().replace("\nbeta: 1000.0\n", f"\nbeta: {beta}\n", 1)
        config.write_text(text + "leak: ${oc.env:NST_TRUST_SECRET}\nprobe: ${trust_probe:}\n")
        overrides = sweep / job / ".hydra" / "overrides.yaml"
        overrides.write_text(overrides.read_text() + f"- beta={beta}\n")
        assert "${oc.env:NST_TRUST_SECRET}" in config.read_text()
    built = build_report(sweep, tmp_path / "out")
    assert built is not None
    written = [path for path in (tmp_path / "out").rglob("*") if path.is_file()]
    assert any(path.name == "results.csv" for path in written) and any(path.name == "index.html" for path in written)
    for path in written:
        assert secret.encode() not in path.read_bytes(), path
    with open(tmp_path / "out" / "results.csv", newline="") as table:
        rows = list(csv.DictReader(table))
    assert rows and rows[0]["cfg.leak"] == "${oc.env:NST_TRUST_SECRET}"  # shown as the text it is
    assert isinstance(evaluate_run(sweep / "0"), dict)
    assert calls == []


# --- 6. the API and messages --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("image", "message"),
    [
        (torch.rand(3, 16, 16) * 255, r"values from .* to .*; stylize takes values in \[0, 1\].*divide it by 255"),
        ((torch.rand(3, 16, 16) * 255).to(torch.uint8), r"tensor of torch\.uint8.*divide by 255"),
        (torch.rand(1, 3, 16, 16) - 0.5, r"values from -0\.\d+ .*undo the normalisation"),
    ],
)
def test_stylize_refuses_a_tensor_outside_0_1_saying_to_divide_by_255(image, message):
    with pytest.raises(NstError, match=message):
        stylize(image, torch.rand(3, 16, 16), "model=vgg19", "model.weights=random")
    with pytest.raises(NstError, match=message.replace("content", "style")):
        stylize(torch.rand(3, 16, 16), image, "model=vgg19", "model.weights=random")


def test_a_path_holding_dollar_brace_is_opened_literally_and_out_dir_may_not_be_a_file(images_dir, tmp_path, monkeypatch):
    import shutil

    monkeypatch.setenv("NST_TRUST_SECRET", "not-this")
    content = images_dir / "${oc.env:NST_TRUST_SECRET}.png"
    style = images_dir / "a ${x} b.png"
    shutil.copy(images_dir / "content.png", content)
    shutil.copy(images_dir / "style.png", style)
    tiny = ["model=vgg19", "model.weights=random", "log.progress=false", "log.image_every=0"]
    result = stylize(content, style, *tiny, image_size=32, iterations=1, style_layers=["relu1_1", "relu2_1"])
    assert result.image.size[0] == 32
    assert result.status == "completed"  # ${x} would not resolve, and not-this.png does not exist
    described = compose(*tiny, f"model.description={override_value('${oc.env:NST_TRUST_SECRET}')}")
    assert described.model.description == "${oc.env:NST_TRUST_SECRET}"
    (tmp_path / "taken").write_text("mine")
    for out_dir, where in ((tmp_path / "taken", "is a file, not a folder"),
                           (tmp_path / "taken" / "run", f"is inside {tmp_path / 'taken'}, which is a file")):
        with pytest.raises(NstError, match=re.escape(f"stylize(out_dir='{out_dir}'): {where}")):
            stylize(content, style, *tiny, out_dir=out_dir, image_size=32, iterations=1)
    assert (tmp_path / "taken").read_text() == "mine"


def test_size_advice_is_only_advice_that_passes(tiny, images_dir, tmp_path):
    Image.new("RGB", (5000, 1), "white").save(images_dir / "thin.png")
    with pytest.raises(NstError) as refused:
        run(make_config([*tiny, "style.path=thin.png"]), None)
    message = str(refused.value)
    assert "No image_size helps" in message and "Crop or pad the style 'starry_night' image" in message
    assert "image_size=7" not in message.split("too small")[1]  # no image_size=77500
    with pytest.raises(NstError, match=r"Use coarse_to_fine\.sizes=\[21\] \(each at least 21") as refused:
        run(make_config([*tiny, "coarse_to_fine.sizes=[4,8]"]), None)
    fixed = re.search(r"(coarse_to_fine\.sizes=\[[\d,]*\])", str(refused.value)).group(1)
    assert run(make_config([*tiny, fixed]), None).metrics["status"] == "completed"  # the advice passes
    with pytest.raises(NstError, match=r"Use image_size=21 or more with coarse_to_fine\.sizes=\[\] \(one stage\)"):
        run(make_config([*tiny, "image_size=16", "coarse_to_fine.sizes=[8]"]), None)
    with pytest.raises(NstError, match=r"e\.g\. coarse_to_fine\.sizes=\[1\]\."):
        validate(make_config([*tiny, "image_size=2", "coarse_to_fine.sizes=[4]"]))
    with pytest.raises(NstError, match=r"Give increasing sizes below image_size .* or coarse_to_fine\.sizes=\[\] "):
        validate(make_config([*tiny, "image_size=2", "coarse_to_fine.sizes=[0]"]))
    validate(make_config([*tiny, "image_size=2", "coarse_to_fine.sizes=[1]"]))  # the example passes


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["style_layers=[]"], r"style_layers is empty but beta=1000\.0: .*silently be content-only.*or beta=0"),
        (["content_layers=[]"], r"content_layers is empty but alpha=1\.0: .*silently be style-only.*or alpha=0"),
        (["content_layers=[]", "alpha=0.5", "beta=0"], r"content_layers and style_layers|content_layers is empty"),
    ],
)
def test_an_empty_layer_list_with_a_nonzero_weight_is_refused(tiny, overrides, message):
    with pytest.raises(NstError, match=message):
        validate(make_config([*tiny, *overrides]))


def test_the_reconstruction_experiments_with_an_empty_layer_list_pass(tiny):
    for experiment in ("fig1_style", "fig1_content"):
        validate(make_config([*tiny, f"experiment={experiment}"]))


@pytest.mark.subprocess
def test_a_tab_in_a_users_yaml_is_one_message(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    style = tmp_path / "my_conf" / "style"
    style.mkdir(parents=True)
    (style / "mine.yaml").write_text("name: mine\npath: mine.jpg\n\tweight: 1\n")
    with pytest.raises(NstError) as refused:
        preflight(["--config-dir", str(tmp_path / "my_conf"), "style=mine"])
    message = str(refused.value)
    assert message.startswith(f"Cannot read the config file {style / 'mine.yaml'}, line 3, column 1: ")
    assert "replace the tab with spaces" in message and "\n" not in message
    done = run_cli("--config-dir", "my_conf", "style=mine", cwd=tmp_path, timeout=300)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0 and "replace the tab" in done.stderr


# --- 5. interrupts that tell the truth ------------------------------------------------------------------------

def test_the_stop_line_advises_resume_only_when_a_checkpoint_is_on_disk(tmp_path):
    from nst_exp.__main__ import stop_message
    from nst_exp.errors import Interrupted

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    cases = [
        Interrupted("Stopped by SIGINT after 7 iterations; kept that image.", signal.SIGINT),
        Interrupted("Interrupted during iteration 8; kept the image of iteration 7.", signal.SIGINT),
        Interrupted("Stopped by SIGTERM.", signal.SIGTERM, saved=False),
        KeyboardInterrupt(),
    ]
    for stop in cases:
        line = stop_message(stop, run_dir)
        assert "resume=" not in line and "no checkpoint" in line and "\n" not in line, line
        assert ("Saved in" in line) == getattr(stop, "saved", False)
    folder = checkpoint.directory(run_dir)
    folder.mkdir()
    (folder / checkpoint.PREVIOUS).write_bytes(b"x")  # the only whole checkpoint: previous.pt
    for stop in cases:
        line = stop_message(stop, run_dir)
        assert line.endswith(f"Continue: python -m nst_exp resume={run_dir}") and str(folder / "previous.pt") in line
    before = stop_message(KeyboardInterrupt(), None)
    assert before == "Stopped by SIGINT. Interrupted before the run started: nothing was written."
    assert "hydra.sweep.dir=outputs/multirun/x" in stop_message(KeyboardInterrupt(), run_dir, "outputs/multirun/x")


def reachable_by_ctrl_c() -> None:
    """In the child before it starts: SIGINT as a terminal's foreground run has it. A shell starts a background job
    (and so a test suite run from one) ignoring SIGINT, its children inherit that, and Python then keeps ignoring it:
    a Ctrl-C during start-up would be lost, as Unix intends for a background job, and the run would go on."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt(tmp_path, tiny, when: Path, signals: list[tuple[float, int]], *extra: str) -> tuple[int, str]:
    """Start the CLI, wait for ``when`` to exist, send each (delay, signal) in turn; exit status and output."""
    process = subprocess.Popen(
        [sys.executable, "-m", "nst_exp", *tiny, *extra, "hydra.run.dir=run"], cwd=tmp_path,
        env=child_env(OMP_NUM_THREADS="1"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=reachable_by_ctrl_c,
    )
    deadline = time.monotonic() + 120
    while not when.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    for delay, number in signals:
        time.sleep(delay)
        process.send_signal(number)
    output, _ = process.communicate(timeout=120)
    return process.returncode, output


@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("when", "signals", "status"),
    [
        ("snapshots/iter_000002.png", [(0, signal.SIGINT), (0.05, signal.SIGINT)], 130),  # a second Ctrl-C 50 ms on
        ("nst_exp.log", [(0, signal.SIGINT)], 130),  # during start-up, before the first iteration
        ("nst_exp.log", [(0, signal.SIGTERM)], 143),
    ],
)
def test_every_interrupt_exits_128_plus_signal_with_one_true_line(tmp_path, tiny, when, signals, status):
    run_dir = tmp_path / "run"
    code, output = interrupt(tmp_path, [*tiny, "iterations=100000", "image_size=64"], run_dir / when, signals,
                             "log.image_every=1", "checkpoint.every=0")
    assert code == status, output
    assert "Traceback" not in output
    stops = [line for line in output.splitlines() if "Stopped by SIG" in line or "Interrupted during" in line]
    assert len(stops) == 1, output
    has_checkpoint = (run_dir / "checkpoints" / "last.pt").is_file() or (run_dir / "checkpoints" / "previous.pt").is_file()
    assert ("resume=" in stops[0]) == has_checkpoint, (stops[0], has_checkpoint)
    if "Saved in" in stops[0]:
        assert (run_dir / "result.png").is_file() and (run_dir / "metrics.json").is_file()


SMUGGLED = [  # shared YAML files whose interpolations would resolve to a node with a _target_
    "hydra:\n  callbacks:\n    x: \"${oc.create:'{_target_: builtins.exec, _args_: [print(1)]}'}\"\n",
    "optimizer:\n  evil:\n    _target_: os.system\nhydra:\n  callbacks:\n    x: ${optimizer.evil}\n",
    "hydra:\n  callbacks:\n    sweep_summary:\n      extra: \"${oc.decode:'{_target_: os.system}'}\"\n",
]


@pytest.mark.parametrize("yaml", SMUGGLED)
def test_an_interpolation_cannot_smuggle_a_target_into_what_hydra_makes(tmp_path, monkeypatch, yaml):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "conf" / "experiment").mkdir(parents=True)
    (tmp_path / "conf" / "experiment" / "shared.yaml").write_text("# @package _global_\n" + yaml)
    with pytest.raises(NstError, match=r"is not allowed"):
        preflight(["--config-dir", "conf", "experiment=shared"])
    assert not (tmp_path / "ran").exists()


def test_the_normalize_command_checks_its_targets_too(tmp_path, monkeypatch, capsys):
    import nst_exp.normalize

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["nst-exp-normalize", "+hydra.callbacks.x._target_=os.system"])
    with pytest.raises(SystemExit) as stopped:
        nst_exp.normalize.main()
    assert stopped.value.code == 2
    assert "hydra.callbacks.x._target_=os.system is not allowed" in capsys.readouterr().err
    assert not (tmp_path / "outputs").exists()


def test_a_ctrl_c_inside_a_destructor_is_one_line_and_other_errors_keep_pythons_report(capsys):
    from nst_exp.__main__ import quiet_unraisable

    class Raises:
        def __init__(self, error: type[BaseException]) -> None:
            self.error = error

        def __del__(self) -> None:
            raise self.error("from a destructor")

    previous = sys.unraisablehook
    sys.unraisablehook = quiet_unraisable
    try:
        Raises(KeyboardInterrupt)  # dropped at once: Python cannot raise from __del__ and calls the hook
        quiet = capsys.readouterr().err
        Raises(ValueError)
        loud = capsys.readouterr().err
    finally:
        sys.unraisablehook = previous
    assert "Traceback" not in quiet and quiet.count("\n") == 1 and "a Ctrl-C arrived while Python was cleaning up" in quiet
    assert "Exception ignored" in loud and "ValueError: from a destructor" in loud
