"""The decisions log (docs/ai/decisions.md): one entry per task, replaced when the task re-runs."""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from orch.core.redact import redact
from orch.runstate import atomic

_HEADER = '# Decisions\n\nDesign decisions reported by codex-orch workers, one section per task.\n'


def _markers(run_id: str, task_id: str) -> tuple[str, str]:
    return (f'<!-- codex-orch: run={run_id} task={task_id} -->', f'<!-- /codex-orch: run={run_id} task={task_id} -->')


def render_entry(run_id: str, task_id: str, role: str, title: str, decisions: Sequence[Mapping[str, object]]) -> str:
    start, end = _markers(run_id, task_id)
    lines = [start, f'## {task_id} ({role}): {redact(title)}', '', f'Run `{run_id}`.', '']
    for item in decisions:
        # One line for the decision (a line break would end the bold text); the rationale keeps its
        # lines, indented so that each stays inside the list item.
        lines.append(f'- **{redact(" ".join(str(item.get("decision") or "").split()))}**')
        rationale = str(item.get('rationale') or '').strip()
        lines += [f'  {line}'.rstrip() for line in redact(rationale).splitlines()]
    lines.append(end)
    return '\n'.join(lines) + '\n'


def upsert(path: Path, run_id: str, task_id: str, role: str, title: str,
           decisions: Sequence[Mapping[str, object]]) -> bool:
    """Add or replace the task's entry; an empty list removes it. Returns True if the file changed."""
    try:
        text = path.read_text(encoding='utf-8')
    except FileNotFoundError:
        text = ''
    start, end = _markers(run_id, task_id)
    pattern = re.compile(re.escape(start) + r'.*?' + re.escape(end) + r'\n?', re.S)
    entry = render_entry(run_id, task_id, role, title, decisions) if decisions else ''
    if pattern.search(text):
        new = pattern.sub(lambda _: entry, text, count=1)
    elif entry:
        base = text if text else _HEADER
        new = base + ('' if base.endswith('\n\n') else '\n') + entry
    else:
        return False
    if new == text:
        return False
    atomic.write_text(path, new)
    return True
