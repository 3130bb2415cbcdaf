"""Per-task state on disk: state.json (what happened, updated as it happens), result.json (the target) and
execution.json (how that result was made)."""
from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path
from typing import Any

from orch.core.text import encode_utf8
from orch.failpoints import crash_point
from orch.runstate import atomic, attempts


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(Path(path).read_text(encoding='utf-8'))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError):
        return None   # a torn file cannot exist (atomic writes); treat anything odd as absent
    return data if isinstance(data, dict) else None


def read_state(task_dir: Path) -> dict[str, Any]:
    return read_json(task_dir / 'state.json') or {}


def redo_requested(st: dict[str, Any]) -> bool:
    """Whether the task's state (read_state) asks for a fresh execution: state.json's `redo`.

    `codex-orch redo` sets it under the run's lock, although nothing the task is made from changed; the work step
    runs while it is there (its uptodate check and its same-inputs short-cut honour it) and clears it with the
    result of the execution it asked for, so a kill in between leaves it for a resume to finish."""
    return isinstance(st.get('redo'), dict)


# One lock per task directory: a read-modify-write of state.json from one thread (a gate blaming another task)
# must not overwrite what another thread (that task's own step) wrote in between.
_state_locks: dict[str, threading.Lock] = {}
_state_locks_guard = threading.Lock()


def _state_lock(task_dir: Path) -> threading.Lock:
    key = str(Path(task_dir).absolute())
    with _state_locks_guard:
        return _state_locks.setdefault(key, threading.Lock())


def update_state(task_dir: Path, **changes: Any) -> dict[str, Any]:
    with _state_lock(task_dir):
        state = read_state(task_dir)
        state.update(changes)
        state['updated_at'] = time.time()
        atomic.write_json(task_dir / 'state.json', state)
        return state


# result.json holds only what the task produced — its answer, its commit, the files that commit changed, and the
# results it was made from (`upstream`: each dependency's result.json digest, so that an answer repeated on other
# code is another result) — so that an execution ending with the same answer on the same code rewrites it byte
# for byte, and the tasks that depend on it (their file_dep) do not run again: early cut-off. How it was made
# (usage, attempts, times, the execution id, the inputs digest, checks and rounds) changes with every execution
# and lives beside it, in execution.json, which no task depends on.
RESULT_FIELDS = ('task_id', 'role', 'title', 'status', 'answer', 'commit', 'files_changed', 'upstream')


def file_digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def read_result(task_dir: Path) -> dict[str, Any] | None:
    """result.json, with the bookkeeping of the execution that wrote it merged in.

    execution.json names the content of the result.json it belongs to, and keeps the record of the result it
    replaced (`previous`): a kill between the two writes leaves result.json as it was, and its own record is
    still found (an execution.json of a result never written would otherwise vouch for the old result)."""
    try:
        data = (task_dir / 'result.json').read_bytes()
        result = json.loads(data)
    except (OSError, ValueError):
        return None
    if not isinstance(result, dict):
        return None
    execution = _execution_of(read_json(task_dir / 'execution.json') or {}, hashlib.sha256(data).hexdigest())
    return {**execution, **result} if execution is not None else result


def _execution_of(record: dict[str, Any], digest: str) -> dict[str, Any] | None:
    for candidate in (record, record.get('previous')):
        if isinstance(candidate, dict) and candidate.get('result_sha256') == digest:
            return {k: v for k, v in candidate.items() if k not in ('result_sha256', 'previous')}
    return None


def write_result(task_dir: Path, result: dict[str, Any], execution: dict[str, Any]) -> None:
    """execution.json, then result.json (the target, last); an unchanged result.json is not touched.

    Beside the execution's own bookkeeping, execution.json keeps `result_changed_at` (when the result last
    changed: what a gate of the task must have run after), `made_from` (every inputs digest this very result
    was made from: an edit undone after a re-run finds it still valid) and `previous` (the record of the
    result it replaces, which stays valid until result.json is replaced)."""
    text = atomic.json_text({k: result.get(k) for k in RESULT_FIELDS})
    data = encode_utf8(text)
    digest = hashlib.sha256(data).hexdigest()
    on_disk = file_digest(task_dir / 'result.json')
    before = _execution_of(read_json(task_dir / 'execution.json') or {}, on_disk) if on_disk else None
    entry: dict[str, Any] = {**execution, 'result_sha256': digest}
    made_from = [execution.get('inputs_digest')]
    if before is not None and on_disk == digest:   # the same result again
        entry['result_changed_at'] = before.get('result_changed_at') or before.get('finished_at')
        made_from = [*(before.get('made_from') or [before.get('inputs_digest')]), *made_from]
    elif before is not None:
        entry['previous'] = {**before, 'result_sha256': on_disk}
    entry['result_changed_at'] = entry.get('result_changed_at') or time.time()
    entry['made_from'] = list(dict.fromkeys(d for d in made_from if d))[-10:]
    atomic.write_json(task_dir / 'execution.json', entry)
    crash_point('after-execution', task_dir.name)
    atomic.write_if_changed(task_dir / 'result.json', text)


def attempt_count(task_dir: Path) -> int:
    return attempts.count(task_dir)


def attempt_kinds(task_dir: Path) -> dict[str, int]:
    """How many worker launches of each kind the task made (launch.json: 'initial' starts an execution,
    'resume' is a round, 'schema-retry', 'failure-retry', 'resume-retry', 'fresh-thread' are retries)."""
    return attempts.summary(task_dir).kinds


USAGE_KEYS = attempts.USAGE_KEYS


def attempts_usage(task_dir: Path) -> dict[str, int]:
    """Tokens of every attempt the task made in this run, all executions and rounds: what it was paid.

    A review fix runs in its reviewer's task directory, so it is counted there. (Kept in the task's
    attempts.json while its attempts' files are as it recorded them: orch.runstate.attempts.)"""
    return attempts.summary(task_dir).usage
