"""Prompt templates: `{placeholder}` text files rendered with a task's context."""
from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

from orch.core.files import read_input, universal_newlines
from orch.errors import TemplateError

MAX_TEMPLATE_BYTES = 5 * 1024 * 1024
PLACEHOLDERS = ('task_id', 'title', 'description', 'acceptance', 'paths', 'upstream', 'spec', 'schema',
                'role', 'run_id')


def check_template(path: Path) -> str:
    """Read a template and refuse unknown placeholders before any worker starts.

    Only plain `{name}` fields are allowed: attribute access (`{title.__class__}`), indexes,
    conversions and format specs (`{title:>99999999}`) would let a template reach into objects or
    blow up at render time, after the run started.
    """
    raw = read_input(path, limit=MAX_TEMPLATE_BYTES, what='prompt template', error=TemplateError,
                     missing='run `codex-orch init` to restore the defaults',
                     fix='a template is a text file: put one there; `codex-orch init --force` restores the defaults')
    try:
        text = universal_newlines(raw.decode('utf-8'))
    except UnicodeDecodeError as exc:
        raise TemplateError(f'{path}: not UTF-8 text: byte {exc.start} is invalid (save it as UTF-8)') from exc
    try:
        fields = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(text) if f is not None]
    except ValueError as exc:
        raise TemplateError(f'{path}: {exc} (write literal braces as {{{{ and }}}})') from exc
    for name, spec, conv in fields:
        shown = '{' + name + (f'!{conv}' if conv else '') + (f':{spec}' if spec else '') + '}'
        at = text.find(shown)
        line = text[:at].count('\n') + 1 if at >= 0 else '?'
        if name in PLACEHOLDERS and (spec or conv):
            raise TemplateError(f'{path}: line {line}: {shown}: only plain {{name}} placeholders are allowed '
                                '(no conversions or format specs)')
        if name not in PLACEHOLDERS:
            base = name.split('.')[0].split('[')[0]
            if base in PLACEHOLDERS:
                raise TemplateError(f'{path}: line {line}: {shown}: only plain {{name}} placeholders are allowed '
                                    '(no attributes or indexes)')
            raise TemplateError(f'{path}: line {line}: unknown placeholder {shown} '
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
