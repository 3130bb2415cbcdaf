"""Prompt templates: `{placeholder}` text files rendered with a task's context."""
from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

from orch.errors import TemplateError

PLACEHOLDERS = ('task_id', 'title', 'description', 'acceptance', 'paths', 'upstream', 'spec', 'schema',
                'role', 'run_id')


def check_template(path: Path) -> str:
    """Read a template and refuse unknown placeholders before any worker starts."""
    try:
        text = Path(path).read_text(encoding='utf-8')
    except FileNotFoundError:
        raise TemplateError(f'{path}: prompt template not found (run `codex-orch init` to restore the defaults)')
    except UnicodeDecodeError:
        raise TemplateError(f'{path}: not UTF-8 text')
    try:
        fields = [(lit, f) for lit, f, _, _ in string.Formatter().parse(text)]
    except ValueError as exc:
        raise TemplateError(f'{path}: {exc} (write literal braces as {{{{ and }}}})')
    for literal, name in fields:
        if name is None:
            continue
        line = text[: text.find('{' + name)].count('\n') + 1 if name else '?'
        if name not in PLACEHOLDERS:
            raise TemplateError(f'{path}: line {line}: unknown placeholder {{{name}}} '
                                f'(known: {", ".join(PLACEHOLDERS)}; write literal braces as {{{{ and }}}})')
    return text


def render(template: str, values: dict[str, str]) -> str:
    return template.format_map(values)


def bullet_list(items: list[str] | tuple[str, ...], empty: str) -> str:
    return '\n'.join(f'- {item}' for item in items) if items else empty


def upstream_section(upstream: list[tuple[str, str, str, dict[str, Any] | None]]) -> str:
    """What the tasks this one depends on reported: (id, role, title, result) each."""
    if not upstream:
        return '(this task depends on no other task)'
    parts = []
    for task_id, role, title, result in upstream:
        answer = (result or {}).get('answer') or {}
        lines = [f'### {task_id} ({role}): {title}']
        if answer.get('summary'):
            lines.append(f'Summary: {answer["summary"]}')
        if answer.get('files_changed'):
            lines.append(f'Files changed: {", ".join(answer["files_changed"])}')
        commit = (result or {}).get('commit')
        if commit:
            lines.append(f'Commit: {commit}')
        rest = {k: v for k, v in answer.items() if k not in ('summary', 'files_changed', 'status', 'decisions')}
        if rest:
            lines.append('Details: ' + json.dumps(rest, ensure_ascii=False, sort_keys=True))
        parts.append('\n'.join(lines))
    return '\n\n'.join(parts)
