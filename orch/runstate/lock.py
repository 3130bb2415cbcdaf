"""One writer per run: an flock on runs/<id>/lock, holding the owner's PID for the message.

The kernel releases an flock when its process dies (even by SIGKILL), so a lock left by a dead
process can never block a resume; the PID in the file only serves the error message.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from orch.errors import LockedError


class RunLock:
    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / 'lock'
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)   # the umask decides, as for any file
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors='replace').strip() or 'unknown'
            os.close(fd)
            raise LockedError(f'run {self.path.parent.name} is in use by another codex-orch or doit '
                              f'process (PID {holder}); wait for it to finish or stop it first')
        os.ftruncate(fd, 0)
        os.pwrite(fd, f'{os.getpid()}\n'.encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object | TracebackType) -> None:
        self.release()


def holder_pid(run_dir: Path) -> int | None:
    """PID of the live process holding the run, or None when nobody does."""
    path = Path(run_dir) / 'lock'
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.pread(fd, 64, 0).decode(errors='replace').strip()
        return int(text) if text.isdigit() else -1
    finally:
        os.close(fd)
    return None
