"""One process per run directory: a second one is refused with the holder's pid, and a dead holder frees it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, child_env

from nst_exp.errors import NstError
from nst_exp.lock import LOCK_FILE, RunDirInUse, RunLock

HOLD = (
    "import sys, time\n"
    "from nst_exp.lock import RunLock\n"
    "with RunLock(sys.argv[1]):\n"
    "    print('locked', flush=True)\n"
    "    time.sleep(120)\n"
)


def holder(run_dir: Path) -> subprocess.Popen:
    """A real second process that takes the lock and keeps it; returns once it holds it."""
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run_dir)],
        cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, text=True,
    )
    assert child.stdout.readline().strip() == "locked"
    return child


@pytest.mark.subprocess
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL])
def test_a_second_process_is_refused_until_the_holder_is_gone(tmp_path, stop):
    run_dir = tmp_path / "run"
    child = holder(run_dir)
    try:
        with pytest.raises(RunDirInUse) as refused:
            with RunLock(run_dir):
                pytest.fail("took a lock another process holds")
        message = str(refused.value)
        assert message.startswith(f"{run_dir} is in use by process {child.pid} (started ")
        assert f"Wait for it to finish, or stop it (kill {child.pid}) and continue with " in message
        assert message.endswith(f"python -m nst_exp resume={run_dir}.")
        assert isinstance(refused.value, NstError)  # one message, no traceback, from the command line
    finally:
        child.send_signal(stop)  # SIGKILL: no cleanup ran, the kernel dropped the lock
        child.wait(timeout=30)
    with RunLock(run_dir):
        assert json.loads((run_dir / LOCK_FILE).read_text())["pid"] == os.getpid()


def test_the_lock_file_names_its_holder_and_is_released_on_exit(tmp_path):
    run_dir = tmp_path / "new" / "run"  # created if needed
    with RunLock(run_dir):
        record = json.loads((run_dir / LOCK_FILE).read_text())
        assert record["pid"] == os.getpid() and record["started"]
        with pytest.raises(RunDirInUse, match=f"in use by process {os.getpid()}"):  # a second open file, same process
            RunLock(run_dir).acquire()
    assert (run_dir / LOCK_FILE).read_text() == ""  # no holder
    with RunLock(run_dir):  # free again
        pass


def test_an_error_inside_releases_the_lock(tmp_path):
    with pytest.raises(ValueError):
        with RunLock(tmp_path):
            raise ValueError("the run failed")
    with RunLock(tmp_path):
        pass
