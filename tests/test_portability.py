"""Without POSIX-only modules (fcntl, resource: absent on Windows) nst_exp imports, composes, locks and measures."""

from __future__ import annotations

import pytest
from conftest import run_python

from nst_exp import device_memory

WITHOUT_POSIX = """
import os, sys
sys.modules["fcntl"] = None  # import fcntl raises ImportError, as on Windows
sys.modules["resource"] = None
import nst_exp
from nst_exp import compose
assert compose("style=the_scream", "debug=quick").style.name == "the_scream"
from nst_exp import device_memory, lock
assert lock.fcntl is None and device_memory.resource is None
run_dir = sys.argv[1]
print(os.getpid())
with lock.RunLock(run_dir):
    try:
        with lock.RunLock(run_dir):
            sys.exit("took a lock this process holds")
    except lock.RunDirInUse as refused:
        print(refused)
with lock.RunLock(run_dir):  # released
    print(sorted(os.listdir(run_dir)))
print(device_memory.peak_rss_bytes() > 0)  # /proc on this Linux
"""


@pytest.mark.subprocess
def test_nst_exp_works_without_fcntl_and_resource(tmp_path):
    run_dir = tmp_path / "run"
    done = run_python("-c", WITHOUT_POSIX, str(run_dir), cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    pid, refused, files, measured = done.stdout.splitlines()
    assert refused.startswith(f"{run_dir} is in use by process {pid} (started ")
    assert refused.endswith(
        f"Wait for it to finish, or stop it (kill {pid}) and continue with python -m nst_exp resume={run_dir}.")
    assert files == "['.lock', '.lock.lck']" and measured == "True"


def test_memory_where_the_system_does_not_say(monkeypatch, tmp_path):
    monkeypatch.setattr(device_memory, "Path", lambda _: tmp_path / "absent")  # no /proc
    monkeypatch.setattr(device_memory.os, "sysconf", lambda name: (_ for _ in ()).throw(ValueError(name)))  # macOS
    assert device_memory._meminfo_available() == device_memory.UNKNOWN_FREE
    monkeypatch.setattr(device_memory, "resource", None)  # Windows
    assert device_memory.peak_rss_bytes() == 0
