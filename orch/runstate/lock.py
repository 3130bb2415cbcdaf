"""One writer per run: an flock on runs/<id>/lock, holding the owner's PID for the message.

The kernel releases an flock when its process dies (even by SIGKILL), so a lock left by a dead
process can never block a resume; the PID in the file only serves the error message.

Asking whether a run is held (holder_pid, for status and the commands that refuse a busy run) is done,
portably, by trying a shared flock on the same file, and for that instant a concurrent acquire's
exclusive try fails as if the run were busy. So probes and the second try of an acquire are serialised
by a second flock, on runs/<id>/lock.probe: a probe holds it for the whole of its try, and an acquire
whose first try failed takes it before trying again, so when that second try fails it was not a probe
in the way but a real holder.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from orch.errors import LockedError

LOCK = 'lock'
PROBE = 'lock.probe'


class RunLock:
    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # The probe file before the lock file, so that probes of a run that was ever locked are guarded.
        os.close(os.open(self.path.parent / PROBE, os.O_RDONLY | os.O_CREAT, 0o666))
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)   # the umask decides, as for any file
        try:
            if not _try_exclusive(fd):
                with _probe_guard(self.path.parent, create=True):   # waits out a probe in progress (microseconds)
                    taken = _try_exclusive(fd)
                if not taken:
                    holder = os.pread(fd, 64, 0).decode(errors='replace').strip() or 'unknown'
                    raise LockedError(f'run {self.path.parent.name} is in use by another codex-orch or doit '
                                      f'process (PID {holder}); wait for it to finish or stop it first')
        except BaseException:
            os.close(fd)
            raise
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
    """PID of the live process holding the run (-1 when its PID is not readable), or None when nobody does."""
    path = Path(run_dir) / LOCK
    with _probe_guard(Path(run_dir), create=False):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                text = os.pread(fd, 64, 0).decode(errors='replace').strip()
                return int(text) if text.isdigit() else -1
        finally:
            os.close(fd)   # drops the shared lock, still inside the guard: no acquire may retry before that
    return None


def _try_exclusive(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextlib.contextmanager
def _probe_guard(run_dir: Path, *, create: bool) -> Iterator[None]:
    """Hold the exclusive flock of runs/<id>/lock.probe (blocking: every holder keeps it for one flock try).

    Only an acquire creates the probe file (before the lock file). A probe never does: it may run while
    `prune` or `clean` deletes the run directory, which a file created behind their back would make fail.
    A probe that finds no probe file (the run was never locked, or only by a codex-orch from before probe
    files) goes ahead unguarded, as probes always did.
    """
    path = run_dir / PROBE
    try:
        # O_RDONLY: flock needs no write access, so read-only viewers take part too.
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o666) if create else os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        if create:
            raise
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
