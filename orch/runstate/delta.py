"""The answer of `status` and the dry run after a plan edit, from the no-op manifest and the edit alone.

The manifest (orch.runstate.manifest) holds what status said when doit found the whole run up to date, and an
index of what that answer was computed from: the digest of each task's object in the plan file, the checks the
config adds per role, the configured roles. When the plan file is the only input that differs, the tasks whose
objects changed are the only ones whose entries can differ from their task.json, and the full check would find
exactly this: each changed entry stale with its field-by-field reasons, each task downstream of a task that will
run stale because of it, every other task as it was. So the answer is computed for those tasks only: no doit, no
config models, no graph, no reading of the other tasks' files.

Anything this cannot decide the same way returns None and the full path answers: any other input that differs,
a task added, removed, reordered or given another role or other dependencies, a change outside the tasks, a plan
schema that relates tasks to each other, an entry that fails its checks (the full path says why), a result cache,
budgets or prices (the dry run's cost lines). tests/test_noop_manifest.py compares both answers on every kind of
edit.
"""
from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from orch.core.plan import (
    items_only,
    plan_digests,
    plan_from_data,
    read_plan_data,
    task_from_data,
    task_problems,
    topological_order,
)
from orch.core.redact import redact_shared
from orch.core.status_text import dry_run_lines, render_table
from orch.core.task_entry import entry_changes, stored_entry
from orch.core.text import plain
from orch.errors import OrchError
from orch.runstate.manifest import Manifest
from orch.runstate.runs import ORCH_DIR

PLAN_SCHEMA = f'{ORCH_DIR}/schemas/plan.json'


def answers_after_edit(repo: Path, found: Manifest, differing: list[str], want: str) -> dict[str, Any] | None:
    """What status or the dry run answers now (`want`: the manifest's answer key: status_table, status_json or
    dry_run_lines), if only the plan file differs and the edit is one this module can judge; else None."""
    index = found.index
    if not index.get('delta') or differing != [index.get('plan_file')]:
        return None
    try:
        doc = _status_after(repo, index, json.loads(found.answers['status_doc']))
    except (OrchError, OSError, ValueError, KeyError, TypeError, RecursionError, AttributeError):
        return None   # anything unexpected: the full path decides, and says why
    if doc is None:
        return None
    doc = redact_shared(doc)   # as data: the edit's own text (a title) is new, and JSON escapes a quote in a secret
    rows = doc['tasks']
    if want == 'status_table':
        return {want: render_table(doc)}
    if want == 'status_json':
        return {want: json.dumps(doc, indent=2, sort_keys=True)}
    if want != 'dry_run_lines' or not index.get('dry_run'):
        return None
    run_id = doc['run']['run_id']
    return {want: dry_run_lines(run_id, rows, pid=None, cache={}, money='', budget=None,
                                again=shlex.join(['codex-orch', 'resume', '--run-id', run_id])),
            'dry_run_code': 1 if any(r['status'] != 'done' for r in rows) else 0}


def _status_after(repo: Path, index: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any] | None:
    plan_path = repo / index['plan_file']
    data, _ = read_plan_data(plan_path)
    if not isinstance(data, dict) or not isinstance(data.get('tasks'), list) \
            or not all(isinstance(t, dict) for t in data['tasks']):
        return None
    rest, digests = plan_digests(data)
    known = index['plan_tasks']
    rows: list[dict[str, Any]] = doc['tasks']
    if rest != index['plan_rest'] or len(digests) != len(known) or len(rows) != len(known):
        return None
    for task, (tid, _), row in zip(data['tasks'], known, rows, strict=True):
        if task.get('id') != tid or row['id'] != tid:
            return None   # added, removed or reordered: the full path
    changed = [i for i, (digest, (_, old)) in enumerate(zip(digests, known, strict=True)) if digest != old]
    if not changed:
        return doc   # the same tasks, written otherwise (formatting, key order): the same answer
    if not _valid(repo, index, data, changed):
        return None
    causes: dict[str, list[tuple[str, str]]] = {}
    titles: dict[str, str] = {}
    for i in changed:
        task, row = task_from_data(data['tasks'][i]), rows[i]
        if task.role != row['role'] or list(task.depends_on) != row['depends_on']:
            return None   # the graph changes: the full path compiles it
        on_disk = json.loads((repo / index['tasks_dir'] / task.id / 'task.json').read_text(encoding='utf-8'))
        if not isinstance(on_disk, dict):
            return None
        new = stored_entry(task, index['role_checks'].get(task.role, []))
        causes[task.id] = [('plan_field_changed', change) for change in entry_changes(on_disk, new)]
        titles[task.id] = task.title   # as the full check's row has it: the plan's own text
    position = {row['id']: i for i, row in enumerate(rows)}
    status: dict[str, str] = {}
    out = list(rows)
    for task in topological_order(plan_from_data(data, digest='-')):
        i = position[task.id]
        why = list(causes.get(task.id, ()))
        waiting = [d for d in task.depends_on if status[d] != 'done']
        if waiting:
            why.append(('upstream_will_run', f'upstream {", ".join(waiting)} will run again'))
        row = rows[i]
        if why or task.id in titles:
            # the stored row is plain text already (orch.runstate.status.task_rows): only the new strings are made so
            row = {**row, 'title': plain(titles.get(task.id, row['title']))}
            if why:
                # as the full check words it (orch.runstate.status.task_rows): a done task with causes is stale
                row.update(status='stale', reason=plain('; '.join(text for _, text in why)),
                           reasons=[{'code': code, 'detail': plain(text)} for code, text in why])
            out[i] = row
        status[task.id] = out[i]['status']
    return {**doc, 'tasks': out}


def _valid(repo: Path, index: dict[str, Any], data: dict[str, Any], changed: list[int]) -> bool:
    """Whether the changed tasks pass what load_plan checks of a task on its own (the others did, and the plan
    schema checks each task on its own: orch.core.plan.items_only)."""
    schema = json.loads((repo / PLAN_SCHEMA).read_text(encoding='utf-8'))
    if not isinstance(schema, dict) or not items_only(schema):
        return False
    from orch.core.validate import schema_errors  # jsonschema: only here
    subset = {**data, 'tasks': [data['tasks'][i] for i in changed]}
    if schema_errors(subset, schema):
        return False
    roles = set(index['roles'])
    return not any(task_problems(i, data['tasks'][i], roles) for i in changed)
