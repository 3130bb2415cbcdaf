"""task.json: a task's plan entry as compiled and stored, and how two entries differ. Pure: shared by the run
(which writes the entries), the full status check and the fast path's answer after a plan edit."""
from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from orch.core.plan import Task
from orch.core.redact import redact_obj
from orch.core.text import clean_json, utf8_safe


def compiled_entry(task: Task, role_checks: Sequence[str]) -> dict[str, Any]:
    """The plan entry with the checks the config adds for its role (so editing either re-runs the task). A task
    without checks keeps the entry it always had."""
    entry: dict[str, Any] = dict(task.entry())
    checks = [*role_checks, *task.checks]
    if checks:
        entry['checks'] = checks
    return entry


def stored_entry(task: Task, role_checks: Sequence[str]) -> dict[str, Any]:
    """task.json as it is stored, and so as it is compared: secrets redacted, and every string as UTF-8 can hold
    it (a lone surrogate in a title is stored as U+FFFD, and compared so)."""
    stored: dict[str, Any] = json.loads(json.dumps(clean_json(redact_obj(compiled_entry(task, role_checks)),
                                                              utf8_safe)))
    return stored


def entry_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Which fields of a plan entry changed, with a short delta for text ('description changed (+1 line)')."""
    out = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key), new.get(key)
        if before == after:
            continue
        if isinstance(before, str) and isinstance(after, str):
            a, b = before.splitlines(), after.splitlines()
            added, removed = sum(1 for x in b if x not in a), sum(1 for x in a if x not in b)
            delta = ', '.join(f'{sign}{n} line{"s" if n != 1 else ""}' for sign, n in (('+', added), ('-', removed))
                              if n)
            out.append(f'{key} changed ({delta or "reworded"})')
        elif before is None:
            out.append(f'{key} added')
        elif after is None:
            out.append(f'{key} removed')
        else:
            out.append(f'{key} changed')
    return out
