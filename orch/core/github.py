"""GitHub-native output of a run, from its summary (orch.core.report.build_summary): workflow annotations and a
SARIF 2.1.0 log. Pure: it renders what it is given.

- `annotation_commands`: the `::error` / `::warning` / `::notice` workflow commands GitHub Actions shows inline, one for
  each failed or blocked task, each failing gate and each outstanding reviewer finding (file and line where
  known). Printed at the end of a run when `GITHUB_ACTIONS=true` (orch.engine.execute).
- `sarif`: the same as SARIF results (`findings.sarif`, written with the reports), ready for
  `github/codeql-action/upload-sarif`. Code scanning wants a location for every result: one without a file of its
  own points at the plan file.

A failed task's file is known when the output of what failed it names one as `path:line`
(`tests/test_x.py:12: AssertionError`): a file the task changed first, else any relative path in the tree.
"""
from __future__ import annotations

import re
from typing import Any

from orch.core.report import FAILED_STATUSES

SARIF_SCHEMA = 'https://json.schemastore.org/sarif-2.1.0.json'
# A reviewer's severity -> the annotation command and the SARIF level
LEVELS = {'critical': ('error', 'error'), 'major': ('error', 'error'), 'minor': ('warning', 'warning'),
          'info': ('notice', 'note')}
RULES = {
    'codex-orch/task-failed': 'A task of the plan failed or is blocked',
    'codex-orch/gate-failed': "A gate failed on a task's work",
    'codex-orch/review-finding': "A reviewer's finding that still stands",
}
_FILE_LINE = re.compile(r'(?<![\w/.-])((?:[\w.-]+/)*[\w.-]+\.\w+):(\d+)\b')


def annotation_commands(summary: dict[str, Any]) -> list[str]:
    return [_command(r) for r in _results(summary)]


def sarif(summary: dict[str, Any], version: str) -> dict[str, Any]:
    plan_file = str(summary['run'].get('plan_file') or 'plan.json')
    results = []
    for r in _results(summary):
        location: dict[str, Any] = {'artifactLocation': {'uri': r['file'] or plan_file}}
        if r['file'] and r['line']:
            location['region'] = {'startLine': r['line']}
        results.append({'ruleId': r['rule'], 'level': r['sarif_level'], 'message': {'text': r['message']},
                        'locations': [{'physicalLocation': location}],
                        'properties': {'task': r['task']}})
    driver = {'name': 'codex-orch', 'version': version,
              'rules': [{'id': rule, 'shortDescription': {'text': text}} for rule, text in RULES.items()]}
    return {'$schema': SARIF_SCHEMA, 'version': '2.1.0',
            'runs': [{'tool': {'driver': driver}, 'results': results,
                      'automationDetails': {'id': f'codex-orch/{summary["run"]["run_id"]}/'}}]}


def _results(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Every result, as {rule, level (annotation), sarif_level, title, message, file, line, task}."""
    out: list[dict[str, Any]] = []
    for task in summary['tasks']:
        tid = str(task['id'])
        if task['status'] in FAILED_STATUSES - {'deferred'}:
            file, line = _failing_file(task)
            out.append(_result('codex-orch/task-failed', 'error', f'{tid} {task["status"]}',
                               str(task.get('reason') or task['status']), file, line, tid))
        for gate in task.get('gates') or []:
            if not gate.get('passed'):
                file, line = _file_line(str(gate.get('tail') or ''), task.get('files_changed') or [])
                out.append(_result('codex-orch/gate-failed', 'error', f'{tid}: gate {gate.get("name")} failed',
                                   f'{gate.get("command")}\n{gate.get("tail") or ""}'.strip(), file, line, tid))
        for finding in task.get('findings') or []:
            if isinstance(finding, dict):
                level = LEVELS.get(str(finding.get('severity')), ('warning', 'warning'))
                line = finding.get('line')
                out.append(_result('codex-orch/review-finding', level[0],
                                   f'{tid}: {finding.get("severity", "finding")}', str(finding.get('message') or ''),
                                   _safe_path(finding.get('file')),
                                   line if isinstance(line, int) and not isinstance(line, bool) and line > 0
                                   else None, tid, level[1]))
    return out


def _result(rule: str, level: str, title: str, message: str, file: str | None, line: int | None, task: str,
            sarif_level: str = 'error') -> dict[str, Any]:
    return {'rule': rule, 'level': level, 'sarif_level': sarif_level, 'title': f'codex-orch: {title}',
            'message': message, 'file': file, 'line': line, 'task': task}


def _failing_file(task: dict[str, Any]) -> tuple[str | None, int | None]:
    runs = [*(task.get('setup') or []), *(task.get('checks') or []), *(task.get('gates') or [])]
    failed = next((r for r in runs if not r.get('passed')), None)
    return _file_line(str((failed or {}).get('tail') or ''), task.get('files_changed') or [])


def _file_line(text: str, files: list[str]) -> tuple[str | None, int | None]:
    """The first `path:line` in `text` naming one of `files`, else the first naming any relative path in the tree."""
    found = [(m.group(1), int(m.group(2))) for m in _FILE_LINE.finditer(text) if _safe_path(m.group(1))]
    known = set(files)
    return next((f for f in found if f[0] in known), found[0] if found else (None, None))


def _safe_path(value: Any) -> str | None:
    """A repository-relative path from a worker's answer, or None (absolute, `..`, control characters)."""
    if not isinstance(value, str) or not value or value.startswith('/') or '..' in value.split('/'):
        return None
    return value if value.isprintable() else None


def _command(r: dict[str, Any]) -> str:
    props = [f'title={_prop(r["title"])}']
    if r['file']:
        props.insert(0, f'file={_prop(r["file"])}')
        if r['line']:
            props.insert(1, f'line={r["line"]}')
    return f'::{r["level"]} {",".join(props)}::{_data(r["message"])}'


def _data(text: str) -> str:
    """A workflow command's message: `%`, CR and LF escaped, as the runner decodes them."""
    return text.replace('%', '%25').replace('\r', '%0D').replace('\n', '%0A')


def _prop(text: str) -> str:
    return _data(text).replace(':', '%3A').replace(',', '%2C')
