"""Start-up: what answers without running anything loads no torch, and --help prints what Hydra's would.

Each command runs in a fresh interpreter whose import system refuses torch, torchvision and
TensorBoard (and matplotlib's pyplot), as a user types it. A module that merely tried one of
them, even inside ``try: ... except ImportError``, is named on stderr and fails the test.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, child_env, run_python

HEAVY = ("torch", "torchvision", "tensorboard", "matplotlib.pyplot")
TRIED = "tried to import:"

# sitecustomize.py, imported by every interpreter that has its folder on PYTHONPATH.
BLOCKER = f'''
import atexit, importlib.abc, os, sys

BLOCKED = os.environ["NST_TEST_BLOCKED"].split()
tried = []


class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == blocked or name.startswith(blocked + ".") for blocked in BLOCKED):
            tried.append(name)
            raise ImportError(f"{{name}} is blocked by tests/test_startup.py")
        return None


sys.meta_path.insert(0, Blocked())
atexit.register(lambda: tried and print("{TRIED}", sorted(set(tried)), file=sys.stderr))
'''


@pytest.fixture(scope="module")
def blocker(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("blocker")
    (folder / "sitecustomize.py").write_text(BLOCKER)
    return folder


def light(blocker: Path, cwd: Path, *args: str, blocked=HEAVY, env=None) -> subprocess.CompletedProcess:
    """``python *args`` in ``cwd`` with the ``blocked`` modules refused; fails the test if one was tried."""
    environment = {
        **(env or {}),
        "PYTHONPATH": os.pathsep.join([str(blocker), str(ROOT)]),
        "NST_TEST_BLOCKED": " ".join(blocked),
        "NST_IMAGES": str(cwd),
    }
    done = run_python(*args, cwd=cwd, env=environment, timeout=120)
    assert TRIED not in done.stderr, done.stderr[-3000:]
    return done


@pytest.mark.subprocess
def test_the_blocker_refuses_torch(blocker, tmp_path):
    done = run_python("-c", "import torch", cwd=tmp_path, timeout=60,
                      env={"PYTHONPATH": str(blocker), "NST_TEST_BLOCKED": " ".join(HEAVY)})
    assert done.returncode == 1
    assert "ImportError: torch is blocked by tests/test_startup.py" in done.stderr
    assert f"{TRIED} ['torch']" in done.stderr


@pytest.mark.subprocess
def test_help_config_and_info_load_no_torch(blocker, tmp_path):
    done = light(blocker, tmp_path, "-m", "nst_exp", "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("nst_exp: neural style transfer")
    assert "  beta=1.0e3 " in done.stdout  # the main keys with their defaults

    done = light(blocker, tmp_path, "-m", "nst_exp", "--cfg", "job", "style=the_scream", "beta=1e4")
    assert done.returncode == 0, done.stderr
    assert "  name: the_scream\n" in done.stdout and "beta: 10000.0\n" in done.stdout

    done = light(blocker, tmp_path, "-m", "nst_exp", "--info")
    assert done.returncode == 0, done.stderr
    assert "Installed Hydra Plugins" in done.stdout and "Defaults Tree" in done.stdout
    assert not (tmp_path / "outputs").exists()  # none of them made a run directory


@pytest.mark.subprocess
def test_shell_completion_loads_no_torch(blocker, tmp_path):
    done = light(blocker, tmp_path, "-m", "nst_exp", "-sc", "query=bash", env={"COMP_LINE": "nst-exp style=the_"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["style=the_scream"]
    done = light(blocker, tmp_path, "-m", "nst_exp", "-sc", "query=bash", env={"COMP_LINE": "nst-exp bet"})
    assert done.stdout.split() == ["beta="]


@pytest.mark.subprocess
def test_compose_loads_no_torch(blocker, tmp_path):
    code = "from nst_exp import compose; cfg = compose('style=the_scream', 'beta=1e4'); print(cfg.style.name, cfg.beta)"
    done = light(blocker, tmp_path, "-c", code)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "the_scream 10000.0\n"


@pytest.mark.subprocess
def test_refused_run_sweep_and_resume_load_no_torch_and_the_report_reads_them(blocker, tmp_path):
    done = light(blocker, tmp_path, "-m", "nst_exp", "beta=-1", "hydra.run.dir=run")
    assert done.returncode == 2
    message = "beta=-1.0 is negative. beta must be a finite number >= 0. Use e.g. beta=1000.0 (the default)."
    assert message in done.stdout + done.stderr
    assert not (tmp_path / "run").exists()  # refused before Hydra composed it again or made its directory

    done = light(blocker, tmp_path, "-m", "nst_exp", "resume=nowhere")
    assert done.returncode == 2
    assert "Error: resume=nowhere: there is no such directory." in done.stderr

    done = light(blocker, tmp_path, "-m", "nst_exp", "-m", "beta=-1,-2", "+bta=1e4", "hydra.sweep.dir=sweep")
    assert done.returncode == 1  # the sweep summary's exit: jobs failed
    assert "Sweep finished: 0 completed, 2 failed" in done.stdout + done.stderr
    assert "Unknown key 'bta'. Did you mean 'beta'?" in done.stdout + done.stderr  # checked before the numbers

    # The report reads TensorBoard's event files with TensorBoard itself: only torch is refused here.
    done = light(blocker, tmp_path, "-m", "nst_exp.report", "sweep", blocked=("torch", "torchvision", "matplotlib.pyplot"))
    assert done.returncode == 0, done.stderr
    assert "2 jobs (2 failed); swept: beta; figure 1 x 2" in done.stdout
    assert (tmp_path / "sweep" / "report" / "results.csv").is_file()


@pytest.mark.subprocess
def test_normalize_help_loads_no_torch(blocker, tmp_path):
    done = light(blocker, tmp_path, "-m", "nst_exp.normalize", "--help")
    assert done.returncode == 0, done.stderr
    assert "normalize" in done.stdout.splitlines()[0] and "min_factor" in done.stdout  # its keys


def hydra_help(overrides: list[str]) -> str:
    """What Hydra's own --help prints for ``overrides`` (hydra._internal.hydra.Hydra.app_help, without printing)."""
    import copy

    from hydra import initialize_config_dir
    from hydra._internal.utils import get_args_parser
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from nst_exp.config import conf_dir

    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        hydra = GlobalHydra.instance().hydra
        cfg = hydra.compose_config("config", overrides, run_mode=RunMode.RUN, with_log_configuration=False)
        HydraConfig.instance().set_config(cfg)
        job = hydra.get_sanitized_cfg(copy.deepcopy(cfg), "job")
        return hydra.get_help(cfg.hydra.help, job, get_args_parser(), resolve=False)


@pytest.mark.parametrize("overrides", [
    [],  # nst_exp's template: $APP_CONFIG_GROUPS
    ["style=the_scream", "hydra.help.template='$FLAGS_HELP\n$HYDRA_CONFIG_GROUPS\n$APP_CONFIG_GROUPS\n$CONFIG'"],
])
def test_help_prints_what_hydras_help_prints(overrides):
    from nst_exp.help import app_help

    text = app_help(["--help", *overrides])
    assert text == hydra_help(overrides)
    assert "style: composition_vii, great_wave, seated_nude," in text  # the config groups
    assert app_help(["--help", "--hydra-help"]) is None and app_help(["beta=1"]) is None  # Hydra's to answer


@pytest.mark.subprocess
@pytest.mark.parametrize("module", ["nst_exp", "nst_exp.normalize"])
def test_help_to_a_reader_that_stops_early_is_no_error(module):
    """``nst-exp --help | head -1``: the reader is gone before the page is written; no BrokenPipeError."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will read: the child's write fails with EPIPE
    try:
        done = subprocess.run([sys.executable, "-m", module, "--help"], stdout=write_end, stderr=subprocess.PIPE,
                              text=True, timeout=120, env=child_env())
    finally:
        os.close(write_end)
    assert done.returncode == 0, done.stderr
    assert "BrokenPipeError" not in done.stderr and "Traceback" not in done.stderr


PROBE = "from nst_exp.startup import IMPORTED, process_start; print(IMPORTED - process_start())"


@pytest.mark.subprocess
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="the process start comes from Linux's /proc")
def test_the_wait_counts_from_the_interpreter_not_from_a_shell_that_became_it(tmp_path):
    """README's first command is `python3 -m venv .venv && pip install ... && python -m nst_exp ...`: bash runs
    the last command by exec, in its own process, whose start Linux keeps. That wait is not nst_exp's start-up."""
    fresh = run_python("-c", PROBE, cwd=tmp_path, timeout=60)
    assert 0 < float(fresh.stdout) < 5, fresh.stderr  # the interpreter's start before nst_exp.startup's import
    python = shlex.quote(sys.executable)
    shell = f"{python} -c 'sum(range(10**7))' && exec {python} -c {shlex.quote(PROBE)}"  # a child first, then exec
    chained = subprocess.run(["bash", "-c", shell], cwd=tmp_path, env=child_env(), capture_output=True, text=True,
                             timeout=60)
    assert float(chained.stdout) == 0, chained.stderr  # counted from the import: the shell's child is not counted
