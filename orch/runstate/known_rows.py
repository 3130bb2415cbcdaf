"""Each task's status row read once per command: kept with the signature of everything it was read from.

A run reads every task's row for its report (a step inside doit, after the task steps) and again for the summary
it prints at its end; plain `doit run` for the report and for its closing summary. Between the two nothing may have
changed (a run ends with the report), or something may have (a step still finishing after an interrupt, a task
left `running`): `KnownRows.read` gives the rows it read before only while the signature of what they are read
from is as it was just before that read; otherwise it reads them again.

The signature (`signature_of` the `row_inputs`) covers all that orch.runstate.status.task_rows reads of a task:
state.json, result.json and execution.json (replaced whole by atomic writes: a new inode, new times) and its
attempts (their directories, each one's attempt.json and launch.json: orch.runstate.attempts.listing_of); and the
plan. One more
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

from orch import filesig
from orch.core.redact import redact_shared
from orch.runstate import attempts

if TYPE_CHECKING:
    from orch.engine.inputs import RunInputs

Rows = list[dict[str, Any]]
ROW_FILES = ('state.json', 'result.json', 'execution.json')
# What a task's row is read from, by stat: its ROW_FILES' signatures, and each attempt's (attempts.Listing), sorted
TaskInputs = tuple[tuple[filesig.Sig, ...], tuple[tuple[str, tuple[filesig.Sig, filesig.Sig]], ...]]
RowInputs = dict[str, TaskInputs]
DirTimes = dict[str, tuple[int, int]]   # task -> its directory's (mtime_ns, ctime_ns)


def row_inputs(rt: RunInputs, known: RowInputs | None = None, known_dirs: DirTimes | None = None) -> RowInputs:
    """What each task's row is read from, by stat (about 30 ms for 1,000 tasks). known, known_dirs: tasks whose
    attempts are known without a listing (KnownRows.quiet): their ROW_FILES are signed, their attempts' listing taken
    as it is there while their directory's times are the ones given (an attempt added or removed changes them)."""
    out: RowInputs = {}
    for task in rt.plan.tasks:
        task_dir = rt.path(rt.layout.task_dir(task.id))
        files = tuple(filesig.file_sig(f'{task_dir}/{name}') for name in ROW_FILES)
        if known and known_dirs and task.id in known and _times(task_dir) == known_dirs.get(task.id):
            out[task.id] = (files, known[task.id][1])
            continue
        out[task.id] = (files, tuple(sorted(attempts.listing_of(task_dir).items())))
    return out


def _times(directory: str | os.PathLike[str]) -> tuple[int, int] | None:
    try:
        st = os.stat(directory)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_ctime_ns


def signature_of(rt: RunInputs, inputs: RowInputs) -> str:
    """Changes whenever anything the rows are read from changes: the plan, or a task's inputs."""
    h = hashlib.sha256(rt.plan.digest.encode())
    for task in rt.plan.tasks:
        h.update(f'\0{task.id}{inputs.get(task.id)!r}'.encode())
    return h.hexdigest()


class KnownRows:
    """One command's rows (see the module's docstring); safe to use from doit's threads."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        # (the inputs, signature, rows, the tasks whose rows were the `unchanged` ones)
        self._known: tuple[RunInputs, str, Rows, frozenset[str]] | None = None
        # Rows known from before this command, by task, for tasks whose row inputs are as then (asked at each read
        # with those inputs: orch.engine.manifest_rows.unchanged_rows); None: every row is read.
        self.unchanged: Callable[[RowInputs], dict[str, dict[str, Any]] | None] | None = None
        self.as_before: frozenset[str] = frozenset()   # of the rows the last read gave: the `unchanged` ones
        # Row inputs of tasks whose attempts are known without a look (a scoped resume's tasks that no step of it
        # touches: orch.engine.manifest_rows.quiet_row_inputs), for the report step's read: their state, result and
        # execution record are signed all the same (a worker of the scope writing there is seen by this command).
        self.quiet: RowInputs = {}
        self.quiet_dirs: DirTimes = {}   # their directories' times as the old manifest signed them
        self._redacted: tuple[Rows, Rows] | None = None   # (rows given out, the same redacted: redacted())

    def read(self, rt: RunInputs, inputs: RowInputs | None = None) -> Rows:
        """inputs: the row inputs as signed a moment ago (the no-op manifest's first snapshot); None: stat now.
        Taken before the rows are read: a change while they are read shows at the next read."""
        from orch.runstate.status import task_rows
        inputs = row_inputs(rt) if inputs is None else inputs
        signature = signature_of(rt, inputs)
        with self._mutex:
            known = self._known
        if known is not None and known[0] is rt and known[1] == signature:
            self.as_before = known[3]
            return known[2]
        unchanged = self.unchanged(inputs) if self.unchanged is not None else None
        used: set[str] = set()
        rows = task_rows(rt, known=unchanged, used=used)
        self.as_before = frozenset(used)
        if not any(row['status'] == 'running' for row in rows):
            with self._mutex:
                self._known = (rt, signature, rows, self.as_before)
        return rows

    def redacted(self, rows: Rows) -> Rows:
        """The rows as written to the reports and the manifest (redact_shared: the very rows where nothing needs
        it), redacted once per list given out: the report step and the manifest's answers read the same list, and
        redacting them dumps every row's JSON text (megabytes, and a tenth of a second or more, at 10,000 tasks)."""
        with self._mutex:
            done = self._redacted
        if done is not None and done[0] is rows:
            return done[1]
        clean: Rows = redact_shared(rows)
        with self._mutex:
            self._redacted = (rows, clean)
        return clean
