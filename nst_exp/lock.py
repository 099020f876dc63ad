"""One process per run directory: an exclusive ``flock`` on ``<run dir>/.lock``.

Two processes in one run directory (the same ``hydra.run.dir`` twice, a sweep started
again in its sweep dir while it still runs, ``resume=`` of a running run) would write
the same checkpoints and TensorBoard files. The second one is refused instead, naming
the process that holds the directory.

The kernel drops an ``flock`` when its holder's file is closed, so the lock is released
when the ``with`` block ends and also when the process dies (SIGKILL, out of memory): a
stale lock file never blocks anyone. The file itself is left in place; removing it would
let a third process lock a new file while the second still holds the old one.

Without ``fcntl`` (Windows) the lock is filelock's on ``<run dir>/.lock.lck`` (msvcrt's
byte lock there, also released when the process dies), and ``.lock`` holds the record.
"""

from __future__ import annotations

try:
    import fcntl
except ImportError:  # Windows: filelock instead (see acquire_portable)
    fcntl = None
import json
import os
import socket
from datetime import datetime
from pathlib import Path
from types import TracebackType

from nst_exp.errors import NstError

LOCK_FILE = ".lock"


class RunDirInUse(NstError):
    """Another process holds the run directory. The directory is not ours: write nothing into it."""


class RunLock:
    """``with RunLock(run_dir):`` holds ``run_dir`` for this process, or raises :class:`RunDirInUse` at once.

    The lock file holds the holder's pid, host and start time (JSON), for the message
    another process gets.
    """

    def __init__(self, run_dir: Path | str) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._fd: int | None = None
        self._portable = None  # the filelock.FileLock held where there is no fcntl

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.release()

    def acquire(self) -> None:
        if self._fd is not None or self._portable is not None:
            raise RuntimeError(f"{self.run_dir} is already held by this RunLock; acquire it once.")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if fcntl is None:
            self.acquire_portable()
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # not O_TRUNC: the holder's record stays readable
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunDirInUse(in_use_message(self.run_dir, holder)) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder_record(), 0)
        self._fd = fd

    def acquire_portable(self) -> None:
        """The lock where there is no fcntl: filelock's on ``.lock.lck``; the holder's record in ``.lock``."""
        import filelock

        lock = filelock.FileLock(f"{self.path}.lck", timeout=0)
        try:
            lock.acquire()
        except filelock.Timeout:
            try:
                holder = json.loads(self.path.read_text() or "{}")
            except (OSError, ValueError):
                holder = {}
            raise RunDirInUse(in_use_message(self.run_dir, holder if isinstance(holder, dict) else {})) from None
        self.path.write_bytes(holder_record())
        self._portable = lock

    def release(self) -> None:
        if self._portable is not None:
            lock, self._portable = self._portable, None
            try:
                self.path.write_bytes(b"")  # no holder any more, written while still locked
            finally:
                lock.release()
            return
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # no holder any more; done while still locked, so no new holder's record is lost
        finally:
            os.close(fd)  # closing the last descriptor releases the flock


def holder_record() -> bytes:
    """This process's record for the lock file: pid, host and start time, as JSON."""
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": datetime.now().isoformat(timespec="seconds")}
    return (json.dumps(record) + "\n").encode()


def _read_holder(fd: int) -> dict:
    """The holder's record, or {} if it has not written it yet (it locks, then writes) or it is unreadable."""
    try:
        data = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def in_use_message(run_dir: Path, holder: dict) -> str:
    """``<dir> is in use by process <pid> (started <time>). Wait for it to finish, or stop it ...``"""
    pid = holder.get("pid")
    if pid is None:
        return (
            f"{run_dir} is in use by another process (it has just started). Wait for it to finish, or stop it "
            f"and continue with python -m nst_exp resume={run_dir}."
        )
    host = holder.get("host")
    elsewhere = f" on {host}" if host and host != socket.gethostname() else ""
    stop = f"ssh {host} kill {pid}" if elsewhere else f"kill {pid}"
    return (
        f"{run_dir} is in use by process {pid}{elsewhere} (started {holder.get('started', 'at an unknown time')}). "
        f"Wait for it to finish, or stop it ({stop}) and continue with python -m nst_exp resume={run_dir}."
    )
