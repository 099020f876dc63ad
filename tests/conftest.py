"""Shared fixtures: tiny generated images and the overrides of a tiny run, composing the real configs offline,
``python -m nst_exp`` in a subprocess, and the command line's run and sweep, each made once per session.

A test that starts a Python subprocess carries ``@pytest.mark.subprocess`` (``-m "not subprocess"`` skips it);
one that starts one without the marker fails, naming the marker.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

if os.environ.get("PYTEST_XDIST_WORKER"):  # before torch loads: one thread per worker, as many workers as cores
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # (and their subprocesses) share the cores instead of fighting

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from PIL import Image

from nst_exp.config import conf_dir, register

ROOT = Path(__file__).resolve().parents[1]  # the checkout
SHARED_IMAGES = ROOT.parent / "shared" / "images"  # the paper's images, beside the checkout (README.md)
BENCHMARKS = ROOT / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # the benchmark scripts are not installed: tests import them as bench, bench_stages

register()


def pattern_image(path: Path, size=(64, 48), seed: int = 0) -> Path:
    """A small smooth colour image with structure (gradients and a bright square)."""
    rng = np.random.default_rng(seed)
    width, height = size
    y, x = np.mgrid[0:height, 0:width] / max(size)
    phase = rng.uniform(0, 6.28, 3)
    channels = [0.5 + 0.5 * np.sin(6 * x * (i + 1) + 4 * y + phase[i]) for i in range(3)]
    array = np.stack(channels, -1)
    array[height // 4 : height // 2, width // 4 : width // 2] = 1.0
    Image.fromarray((array * 255).astype(np.uint8), "RGB").save(path)
    return path


def write_images(folder: Path) -> Path:
    """``folder`` made, with content.png (64 x 48) and style.png (48 x 64)."""
    folder.mkdir(parents=True)
    pattern_image(folder / "content.png", (64, 48), seed=1)
    pattern_image(folder / "style.png", (48, 64), seed=2)
    return folder


def tiny_overrides(images_dir: Path) -> list[str]:
    """Overrides for a fast offline run on ``write_images``' images: random VGG-19, 32 px, 3 iterations.

    A later ``key=value`` wins, in a run and in a basic sweep: ``[*tiny, "iterations=2"]``.
    """
    return [
        "model=vgg19",
        "model.weights=random",
        "image_size=32",
        "iterations=3",
        f"images_dir={images_dir}",
        "content.path=content.png",
        "style.path=style.png",
        "log.progress=false",
        "log.image_every=0",
    ]


@pytest.fixture
def images_dir(tmp_path: Path) -> Path:
    """A folder with content.png (64 x 48) and style.png (48 x 64)."""
    return write_images(tmp_path / "images")


@pytest.fixture
def tiny(images_dir: Path) -> list[str]:
    """Overrides for a fast offline run: random VGG-19, 32 px, 3 iterations."""
    return tiny_overrides(images_dir)


def make_config(overrides: list[str], return_hydra_config: bool = False) -> DictConfig:
    """The config ``python -m nst_exp <overrides>`` would run, composed offline (with ``hydra.*`` if asked)."""
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=return_hydra_config)


# --- Python in a subprocess ------------------------------------------------------------------------------------

def child_env(**variables: str) -> dict[str, str]:
    """This process's environment and ``variables``, with the checkout first on PYTHONPATH: a child imports the
    nst_exp under test, not another installed one."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **variables}


def run_python(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python <args>`` in ``cwd`` to its end, as a user runs it: exit status, stdout and stderr as text.

    ``env`` adds to (or replaces) variables of :func:`child_env`.
    """
    return subprocess.run([sys.executable, *args], cwd=cwd, env=child_env(**(env or {})), capture_output=True,
                          text=True, timeout=timeout)


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m nst_exp <args>`` in ``cwd`` (Hydra logs to stdout, errors go to stderr)."""
    return run_python("-m", "nst_exp", *args, cwd=cwd, env=env, timeout=timeout)


@dataclass(frozen=True)
class Made:
    """What one ``python -m nst_exp`` left: how it ended, the arguments after ``-m nst_exp``, its folder."""

    done: subprocess.CompletedProcess
    args: list[str]
    cwd: Path

    def copy(self, into: Path) -> Path:
        """The outputs/ folder copied into ``into`` (for a test that changes or adds files); returns ``into``."""
        shutil.copytree(self.cwd / "outputs", into / "outputs")
        return into


@pytest.fixture(scope="session")
def cli_run(tmp_path_factory) -> Made:
    """One ``python -m nst_exp`` run in outputs/run: tiny, 4 iterations, a snapshot every 2, beta=100.

    Read, not changed: a test that writes there works on a copy (``Made.copy``).
    """
    cwd = tmp_path_factory.mktemp("cli_run")
    args = [*tiny_overrides(write_images(cwd / "images")), "iterations=4", "log.image_every=2", "beta=100",
            "hydra.run.dir=outputs/run"]
    return Made(run_cli(*args, cwd=cwd), args, cwd)


@pytest.fixture(scope="session")
def cli_sweep(tmp_path_factory) -> Made:
    """One ``python -m nst_exp -m`` sweep in outputs/sweep: tiny, 2 iterations, beta=1e3,1e4,1e5 (jobs 0, 1, 2).

    Read, not changed: a test that writes there works on a copy.
    """
    cwd = tmp_path_factory.mktemp("cli_sweep")
    args = ["-m", *tiny_overrides(write_images(cwd / "images")), "iterations=2", "beta=1e3,1e4,1e5",
            "hydra.sweep.dir=outputs/sweep"]
    return Made(run_cli(*args, cwd=cwd), args, cwd)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem):
    """A test without the ``subprocess`` marker (its fixtures included) may start no Python process."""
    if item.get_closest_marker("subprocess"):
        return (yield)
    start = subprocess.Popen.__init__

    def refused(self, args, *rest, **keywords):
        single = isinstance(args, (str, bytes, os.PathLike))  # a shell line, or a program without arguments
        program = Path(os.fsdecode(args).split()[0] if single else os.fsdecode(args[0])).name
        if program.startswith("python") or program == Path(sys.executable).name:
            raise AssertionError(f"{item.nodeid} starts a Python subprocess ({program}): mark it "
                                 "@pytest.mark.subprocess (pyproject.toml), so that -m 'not subprocess' skips it")
        start(self, args, *rest, **keywords)

    subprocess.Popen.__init__ = refused
    try:
        return (yield)
    finally:
        subprocess.Popen.__init__ = start
