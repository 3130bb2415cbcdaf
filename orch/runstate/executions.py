"""A task's earlier executions, kept when a new one replaces its result (a redo, or a gate that blamed it):
nothing paid for is ever lost. One file each under `tasks/<id>/executions/`."""
from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

from orch.runstate import atomic, state

EXECUTIONS_DIR = 'executions'   # in the task directory: the executions a later one replaced, one file each
_SAFE_NAME = re.compile(r'[A-Za-z0-9][A-Za-z0-9._-]*')


def keep_previous(task_dir: Path, now: dt.datetime, *, why: str) -> str | None:
    """Copy the task's result.json and execution.json (and its state) into `executions/<name>.json`, where no
    later execution overwrites them; returns that path relative to the task directory (None: nothing to keep)."""
    result = state.read_json(task_dir / 'result.json')
    execution = state.read_json(task_dir / 'execution.json')
    if result is None and execution is None:
        return None
    relative = f'{EXECUTIONS_DIR}/{_record_name(task_dir)}.json'
    path = task_dir / relative
    if not path.exists():   # the same execution kept before (by a redo killed before its mark): as it was
        record: dict[str, Any] = {'kept_at': now.isoformat(timespec='seconds'), 'why': why, 'result': result,
                                  'execution': execution, 'state': state.read_state(task_dir)}
        atomic.write_json(path, record)
    return relative


def _record_name(task_dir: Path) -> str:
    """The execution's own name: its exec_id's inputs digest and attempt count (`<digest>-<n>`), else the
    digest of its result.json."""
    record = state.read_result(task_dir) or state.read_json(task_dir / 'execution.json') or {}
    exec_id = record.get('exec_id')
    if isinstance(exec_id, str) and exec_id.count('/') >= 3:
        name = '-'.join(exec_id.split('/')[-2:])
        if _SAFE_NAME.fullmatch(name):
            return name
    return f'result-{(state.file_digest(task_dir / "result.json") or "none")[:16]}'
