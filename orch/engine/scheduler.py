"""Which tasks may run at the same time, and which files belong to whose commit.

doit's thread runner starts independent tasks together; this module keeps tasks whose `paths`
overlap apart (`concurrency.ignore` globs are left out of the check, `concurrency.allow` globs
may overlap), runs a task without `paths` alone, and serialises the commit step.
"""
from __future__ import annotations

import contextlib
import fnmatch
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orch.adapters import git
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

    def __init__(self, *, per_task: bool, allow: list[str], ignore: list[str]) -> None:
        self.per_task = per_task
        self.allow = allow
        self.ignore = ignore
        self._cond = threading.Condition()
        self._running: dict[str, tuple[str, ...] | None] = {}   # task id -> checked globs (None = alone)
        self._paths: dict[str, tuple[str, ...]] = {}             # task id -> its declared paths
        self.commit_lock = threading.Lock()

    def _others(self, task: Task) -> Running:
        """(checked globs, declared paths) of every other task running now."""
        with self._cond:
            return [(self._running[tid], self._paths[tid]) for tid in self._running if tid != task.id]

    def busy(self) -> bool:
        """Whether any task is working now (in a shared worktree: changing it)."""
        with self._cond:
            return bool(self._running)

    def checked_globs(self, task: Task) -> tuple[str, ...] | None:
        if not task.paths:
            return None
        return tuple(p for p in task.paths
                     if not any(globs_overlap(p, x) and glob_match(x, p) for x in (*self.ignore, *self.allow)))

    def _compatible(self, globs: tuple[str, ...] | None) -> bool:
        if not self._running:
            return True
        if globs is None or any(g is None for g in self._running.values()):
            return False
        return not any(globs_overlap(a, b) for other in self._running.values() for a in other or () for b in globs)

    @contextlib.contextmanager
    def slot(self, task: Task) -> Iterator[None]:
        globs = self.checked_globs(task)
        with self._cond:
            self._cond.wait_for(lambda: self._compatible(globs))
            self._running[task.id] = globs
            self._paths[task.id] = tuple(task.paths or ())
        try:
            yield
        finally:
            with self._cond:
                del self._running[task.id]
                del self._paths[task.id]
                self._cond.notify_all()

    def discard_scope(self, task: Task, workdir: Path) -> list[str] | None:
        """What to reset before a task starts: everything, unless other tasks share the worktree.

        In a shared parallel run only the changed files inside the task's own checked globs (never
        one under a `concurrency.allow`/`ignore` glob, which another task may be writing right now),
        as literal pathspecs: git's pathspec matching differs from the globs' (e.g. for `[`).
        """
        if self.per_task or not self._others(task):
            return None   # nobody else is working in the worktree now: everything changed is leftovers
        globs = self.checked_globs(task)
        if globs is None:
            return None   # a task without paths runs alone
        shared = (*self.ignore, *self.allow)
        return [f':(literal){path}' for path in git.changed_paths(workdir)
                if any(glob_match(g, path) for g in globs) and not any(glob_match(x, path) for x in shared)]

    def commit_scope(self, task: Task, workdir: Path, answer: Any) -> CommitScope:
        """Files this task's commit takes: all changes, or in a shared worktree its own (see commit_paths)."""
        if self.per_task:
            return CommitScope(None)
        others = self._others(task)
        if not task.paths and not others:
            return CommitScope(None)   # a task without paths runs alone: everything changed is its work
        claimed = set(answer.get('files_changed') or []) if isinstance(answer, dict) else set()
        return commit_paths(git.changed_paths(workdir), tuple(task.paths), claimed, others,
                            shared=(*self.ignore, *self.allow))


Running = list[tuple[tuple[str, ...] | None, tuple[str, ...]]]   # (checked globs, declared paths) per task


@dataclass(frozen=True)
class CommitScope:
    paths: list[str] | None                               # None: every change
    strays: list[str] = field(default_factory=list)       # outside the task's paths, no running task's: taken
    collisions: list[str] = field(default_factory=list)   # its answer claims them, inside a running task's paths


def commit_paths(changed: list[str], own: tuple[str, ...], claimed: set[str], others: Running, *,
                 shared: tuple[str, ...]) -> CommitScope:
    """Pure: which changed files a task's commit takes while `others` run.

    Its own: changed files matching its `paths` or listed in its answer's `files_changed`. A file inside
    another running task's paths is that task's; if this task's answer claims it, the two collide (the task
    fails, naming it). A file no one's paths cover is committed with the task that claims it, or with the
    task that commits when no other runs, and reported as a stray: no edit is ever silently dropped. Files
    under an allowed/ignored glob that a running task also declares are left to it unless this task claims
    them.
    """
    mine: list[str] = []
    strays: list[str] = []
    collisions: list[str] = []
    for path in changed:
        if any(glob_match(g, path) for globs, _ in others for g in globs or ()):
            if path in claimed:
                collisions.append(path)
            continue
        if path not in claimed and any(glob_match(x, path) for x in shared) \
                and any(glob_match(p, path) for _, paths in others for p in paths):
            continue   # under an allowed/ignored glob another running task declares: its, unless claimed
        if path not in claimed and any(glob_match(p, path) for _, paths in others for p in paths):
            continue   # inside another running task's declared paths: its
        if any(glob_match(p, path) for p in own):
            mine.append(path)
        elif path in claimed or not others:
            # Outside its paths: taken when its answer claims it, or when no other task could have made it.
            mine.append(path)
            strays.append(path)
        # else: a running task may claim it when it commits; the last one to commit takes what is left
    return CommitScope(mine, strays, collisions)
