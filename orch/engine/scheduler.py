"""Which tasks may run at the same time.

doit's thread runner starts independent tasks together. Every task works in a checkout of its own, so running
together loses nothing; but two tasks whose `paths` overlap would most likely conflict when the second lands
(a conflict round the model is paid for), so they are kept apart (`concurrency.ignore` globs are left out of
the check, `concurrency.allow` globs may overlap). A task without `paths` runs beside any other: a wrong guess
costs a conflict round, never a lost or misattributed file. The commit lock serialises commits and landing.
"""
from __future__ import annotations

import contextlib
import fnmatch
import threading
from collections.abc import Iterator

from orch.core.plan import Task

_WILDCARDS = '*?['


def _literal_prefix(pattern: str) -> str:
    for i, ch in enumerate(pattern):
        if ch in _WILDCARDS:
            return pattern[:i]
    return pattern


def glob_match(pattern: str, path: str) -> bool:
    pattern = pattern.removeprefix('./')
    if pattern == path:   # as git does: a path is its own pattern, even one with `[` in its name
        return True
    if pattern.endswith('/'):
        return path.startswith(pattern)
    return fnmatch.fnmatchcase(path, pattern) or path.startswith(pattern.rstrip('/') + '/')


def globs_overlap(a: str, b: str) -> bool:
    """Could some file match both globs? Conservative: a false 'yes' only costs parallelism."""
    if glob_match(a, b) or glob_match(b, a):
        return True
    pa, pb = _literal_prefix(a), _literal_prefix(b)
    wild_a, wild_b = pa != a, pb != b
    return (wild_a and pb.startswith(pa)) or (wild_b and pa.startswith(pb))


class Scheduler:
    """Decides from the tasks actually running, not from a `-j` it was told: plain `doit run -n 3 -P thread`
    runs tasks in parallel without codex-orch ever seeing a jobs count."""

    def __init__(self, *, allow: list[str], ignore: list[str]) -> None:
        self.allow = allow
        self.ignore = ignore
        self._cond = threading.Condition()
        self._running: dict[str, tuple[str, ...]] = {}   # task id -> its checked globs
        self.commit_lock = threading.Lock()

    def busy(self) -> bool:
        """Whether any task is working now."""
        with self._cond:
            return bool(self._running)

    def checked_globs(self, task: Task) -> tuple[str, ...]:
        return tuple(p for p in task.paths or ()
                     if not any(globs_overlap(p, x) and glob_match(x, p) for x in (*self.ignore, *self.allow)))

    def _compatible(self, globs: tuple[str, ...]) -> bool:
        return not any(globs_overlap(a, b) for other in self._running.values() for a in other for b in globs)

    @contextlib.contextmanager
    def slot(self, task: Task) -> Iterator[None]:
        globs = self.checked_globs(task)
        with self._cond:
            self._cond.wait_for(lambda: self._compatible(globs))
            self._running[task.id] = globs
        try:
            yield
        finally:
            with self._cond:
                del self._running[task.id]
                self._cond.notify_all()
