"""Each task's status row read once per command: kept with the signature of everything it was read from.

A run reads every task's row for its report (a step inside doit, after the task steps) and again for the summary
it prints at its end; plain `doit run` for the report and for its closing summary. Between the two nothing may have
changed (a run ends with the report), or something may have (a step still finishing after an interrupt, a task
left `running`): `KnownRows.read` gives the rows it read before only while the signature of what they are read
from is as it was just before that read; otherwise it reads them again.

The signature (`rows_signature`) covers all that orch.runstate.status.task_rows reads of a task: state.json,
result.json and execution.json (replaced whole by atomic writes: a new inode, new times) and its attempts (their
directories, each one's attempt.json and launch.json: orch.runstate.attempts.listing_of); and the plan. One more
input is not a file: whether the run's lock is held (a task `running` in its state.json is shown pending when
nobody runs it), so rows that show a task running are never kept. Rows of a task list read with `stale` reasons
(status, dry-run) are not kept either: those commands read them once anyway.

The rows given out are the same list each time: callers read them and never change them.
"""
from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from orch.runstate import attempts

if TYPE_CHECKING:
    from orch.engine.inputs import RunInputs

Rows = list[dict[str, Any]]
_TASK_FILES = ('state.json', 'result.json', 'execution.json')


def rows_signature(rt: RunInputs) -> str:
    """Changes whenever anything a task's row is read from changes (about 30 ms for 1,000 tasks)."""
    h = hashlib.sha256(rt.plan.digest.encode())
    for task in rt.plan.tasks:
        task_dir = rt.path(rt.layout.task_dir(task.id))
        h.update(f'\0{task.id}'.encode())
        for name in _TASK_FILES:
            try:
                st = os.stat(f'{task_dir}/{name}')
                h.update(f'{st.st_ino} {st.st_size} {st.st_mtime_ns} {st.st_ctime_ns};'.encode())
            except OSError:
                h.update(b'-;')
        for name, sigs in sorted(attempts.listing_of(task_dir).items()):
            h.update(f'{name} {sigs};'.encode())
    return h.hexdigest()


class KnownRows:
    """One command's rows (see the module's docstring); safe to use from doit's threads."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        # (the inputs, signature, rows, the tasks whose rows were the `unchanged` ones)
        self._known: tuple[RunInputs, str, Rows, frozenset[str]] | None = None
        # Rows known from before this command, by task, for tasks whose files are as then (asked at each read:
        # orch.engine.noop_record.unchanged_rows); None: every row is read.
        self.unchanged: Callable[[], dict[str, dict[str, Any]] | None] | None = None
        self.as_before: frozenset[str] = frozenset()   # of the rows the last read gave: the `unchanged` ones

    def read(self, rt: RunInputs) -> Rows:
        from orch.runstate.status import task_rows
        signature = rows_signature(rt)   # before the rows: a change while they are read shows at the next read
        with self._mutex:
            known = self._known
        if known is not None and known[0] is rt and known[1] == signature:
            self.as_before = known[3]
            return known[2]
        unchanged = self.unchanged() if self.unchanged is not None else None
        rows = task_rows(rt, known=unchanged)
        self.as_before = frozenset(unchanged or ())
        if not any(row['status'] == 'running' for row in rows):
            with self._mutex:
                self._known = (rt, signature, rows, self.as_before)
        return rows
