"""Per-task state on disk: state.json (what happened, updated as it happens) and result.json (the target)."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from orch.runstate import atomic


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


def update_state(task_dir: Path, **changes: Any) -> dict[str, Any]:
    state = read_state(task_dir)
    state.update(changes)
    state['updated_at'] = time.time()
    atomic.write_json(task_dir / 'state.json', state)
    return state


def read_result(task_dir: Path) -> dict[str, Any] | None:
    return read_json(task_dir / 'result.json')


def attempt_count(task_dir: Path) -> int:
    return sum(1 for p in task_dir.glob('attempt-*') if p.is_dir())


USAGE_KEYS = ('input_tokens', 'cached_input_tokens', 'output_tokens', 'reasoning_output_tokens')


def attempts_usage(task_dir: Path) -> dict[str, int]:
    """Tokens of every attempt the task made in this run, all executions and rounds: what it was paid.

    A review fix runs in its reviewer's task directory, so it is counted there."""
    total = dict.fromkeys(USAGE_KEYS, 0)
    for record in task_dir.glob('attempt-*/attempt.json'):
        usage = (read_json(record) or {}).get('usage') or {}
        for key in USAGE_KEYS:
            value = usage.get(key) if isinstance(usage, dict) else None
            total[key] += int(value) if isinstance(value, int | float) else 0
    return total
