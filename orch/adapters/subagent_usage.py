"""The tokens a Codex thread's sub-agents spent, read from their own rollouts.

Codex's `turn.completed` reports the thread's own usage only: a sub-agent (`spawn_agent`) runs in a thread of
its own, and its tokens are missing from the parent's total. With codex 0.169.0 a worker can spawn one whatever
codex-orch passes (`--disable=multi_agent`, `multi_agent_v2` or `agents.*` limits still offer and run
`collaboration.spawn_agent`), so every worker's sub-agents are counted, allowed or not. Each thread writes a rollout,
`CODEX_HOME/sessions/YYYY/MM/DD/rollout-<time>-<thread id>.jsonl`, whose first line (`session_meta`) names the
root thread of its tree (`payload.session_id`, at any depth) and whose `token_count` events carry the thread's
running total (`info.total_token_usage`). The sum of those totals over the tree, added to the parent's own
cumulative usage, is cumulative too, so an attempt's cost stays the difference from the previous attempt's.

Only rollouts made after the root thread are looked at (thread ids are UUIDv7s: they start with their creation
time, and so do the day directories), each one's first line read once per process (it never changes), and of
the tree's own rollouts only their `token_count` lines. Checked with codex 0.169.0.
"""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from orch.adapters.worker_types import USAGE_KEYS, zero_usage

MAX_ROLLOUT_BYTES = 512 * 1024 * 1024   # a rollout bigger than this is not read (its tokens are not counted)


def descendants_usage(codex_home: Path, root: str) -> dict[str, int]:
    """The summed running totals of every thread whose session is `root`, `root` itself left out."""
    total = zero_usage()
    born = _created_ms(root)
    since = dt.datetime.fromtimestamp(born / 1000, tz=dt.UTC).date() - dt.timedelta(days=1) if born else None
    for day in _days_since(codex_home / 'sessions', since):
        for path in day.glob('rollout-*.jsonl'):
            thread = path.name[-len('.jsonl') - 36:-len('.jsonl')]
            made = _created_ms(thread)
            if thread == root or (born is not None and made is not None and made < born):
                continue
            if _session_of(path) != root or path.is_symlink():
                continue
            usage = _last_total(path)
            for key in USAGE_KEYS:
                total[key] += usage.get(key, 0)
    return total


_SESSIONS: dict[Path, str | None] = {}   # rollout -> the root thread it belongs to (its first line never changes)


def _session_of(path: Path) -> str | None:
    if path not in _SESSIONS:
        try:
            with path.open('rb') as f:
                meta = _payload(f.readline(1 << 22))
        except OSError:
            return None   # not cached: it may be readable later
        session = meta.get('session_id')
        _SESSIONS[path] = session if isinstance(session, str) and meta.get('id') != session else None
    return _SESSIONS[path]


def _created_ms(thread_id: str) -> int | None:
    """When a UUIDv7 thread id was made (ms since the epoch), or None for another kind of id."""
    digits = thread_id.replace('-', '')
    if len(digits) != 32 or digits[12:13] != '7':
        return None
    try:
        return int(digits[:12], 16)
    except ValueError:
        return None


def _days_since(sessions: Path, since: dt.date | None) -> list[Path]:
    days = []
    for day in sorted(sessions.glob('[0-9]*/[0-9]*/[0-9]*')):
        try:
            when = dt.date(int(day.parent.parent.name), int(day.parent.name), int(day.name))
        except ValueError:
            continue
        if day.is_dir() and (since is None or when >= since):
            days.append(day)
    return days


def _last_total(path: Path) -> dict[str, int]:
    """The rollout's last running total (`token_count` events), as USAGE_KEYS."""
    last: dict[str, Any] = {}
    try:
        if path.stat().st_size > MAX_ROLLOUT_BYTES:
            return {}
        with path.open('rb') as f:
            for line in f:
                if b'"token_count"' in line:
                    info = _payload(line).get('info')
                    found = info.get('total_token_usage') if isinstance(info, dict) else None
                    last = found if isinstance(found, dict) else last
    except OSError:
        return {}
    return {key: _count(last.get(key)) for key in USAGE_KEYS}


def _payload(line: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(line).get('payload')
    except (ValueError, AttributeError):
        return {}
    return payload if isinstance(payload, dict) else {}


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
