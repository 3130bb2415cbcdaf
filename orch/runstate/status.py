"""Per-task status of a run, from the files the run wrote (and doit's records, for staleness)."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from orch.core.plan import Task, topological_order
from orch.core.prices import usage_cost, with_split
from orch.core.text import plain_json
from orch.runstate import state
from orch.runstate.lock import holder_pid

if TYPE_CHECKING:   # the inputs are engine-side; the status reads only their plan, layout and files
    from orch.engine.inputs import RunInputs


def task_rows(rt: RunInputs, stale: dict[str, list[tuple[str, str]]] | None = None,
              known: dict[str, dict[str, Any]] | None = None, used: set[str] | None = None) -> list[dict[str, Any]]:
    """One dict per task in plan order: id, role, title, status, attempts, reason, usage, ...

    known: done rows of tasks known to be as they were read before but for their upstream tasks' statuses
    (orch.engine.manifest_rows.unchanged_rows): used as they are while every upstream task is done, the others read;
    used: gets the ids of the known rows so used."""
    known = known or {}
    used = set() if used is None else used
    live = holder_pid(rt.run_dir) is not None
    expected_gates: dict[str, list[str]] = {}
    for step in rt.steps:
        if step.task_id and step.builtin is None and step.rule.gate:
            expected_gates.setdefault(step.task_id, []).append(step.rule.name)
    stale = stale or {}
    rows: dict[str, dict[str, Any]] = {}
    for task in topological_order(rt.plan):
        if task.id in known and all(rows[d]['status'] == 'done' for d in task.depends_on):
            rows[task.id] = dict(known[task.id])   # a copy: _fixed below may add to it, and `known` is kept
            used.add(task.id)
            continue
        task_dir = rt.path(rt.layout.task_dir(task.id))
        st = state.read_state(task_dir)
        result = state.read_result(task_dir)
        status = st.get('status') or 'pending'
        reason = st.get('reason')
        if status == 'done' and result is None:
            status, reason = 'pending', 'it has no valid result'
        if status == 'running' and not live:
            status, reason = 'pending', 'interrupted; resume to run it again'
        gates = [{'name': name, **g} for name, g in sorted((st.get('gates') or {}).items())]
        redo = state.redo_requested(st)   # `codex-orch redo`: its work runs again whatever its gates said
        if status == 'done' and result is not None and not redo:
            status, reason = _gated(status, reason, gates, expected_gates.get(task.id, []), result)
        causes: list[tuple[str, str]] = []
        if status == 'done' and redo:
            causes = [REDO_CAUSE]
        if status == 'done' and task.id in stale:
            # doit's only word on a redo's work step is that it is not up to date ('inputs_changed', its reason
            # when it found none): the redo is the reason
            causes = [*causes, *(c for c in stale[task.id] if not (redo and c[0] == 'inputs_changed'))]
        if status == 'done' and any(rows[d]['status'] != 'done' for d in task.depends_on):
            waiting = [d for d in task.depends_on if rows[d]['status'] != 'done']
            causes = [*causes, ('upstream_will_run', f'upstream {", ".join(waiting)} will run again')]
        if causes:
            status, reason = 'stale', '; '.join(text for _, text in causes)
        if status == 'pending' and reason is None:
            blocked = [d for d in task.depends_on if rows[d]['status'] in ('failed', 'deferred', 'blocked')]
            if blocked:
                reason = f'waiting for {", ".join(blocked)}'
        reasons = causes or _causes(status, reason, st)
        if redo and REDO_CAUSE not in reasons:   # not done yet (interrupted, failed, running): the redo still stands
            reasons = [*reasons, REDO_CAUSE]
            reason = f'{reason}; {REDO_CAUSE[1]}' if reason else REDO_CAUSE[1]
        rows[task.id] = _row(task, status, reason, st, result, gates, state.attempt_count(task_dir))
        _paid(rt, task, rows[task.id], state.attempts_usage(task_dir))
        rows[task.id]['reasons'] = [{'code': c, 'detail': d} for c, d in reasons]
        if rows[task.id]['attempts'] > 1:   # what the worker launches were (a single one is the first answer)
            rows[task.id]['attempt_kinds'] = state.attempt_kinds(task_dir)
    _fixed(rows)
    # recorded text for people and machines: no terminal colours (a check's tail, codex's stderr in a reason)
    return [rows[t.id] if t.id in used else plain_json(rows[t.id]) for t in rt.plan.tasks]


def _fixed(rows: dict[str, dict[str, Any]]) -> None:
    """A task whose work a reviewer's round fixed ends with that fix's commit (its own is `work_commit`)."""
    for row in list(rows.values()):
        for entry in row.get('rounds') or []:
            fix = entry.get('fix') if isinstance(entry, dict) else None
            if not isinstance(fix, dict) or row['status'] not in ('done', 'stale'):   # a failed one landed nothing
                continue
            target = rows.get(str(fix.get('task')))
            if target is not None and fix.get('commit'):
                target.setdefault('work_commit', target.get('commit'))
                target['commit'] = fix['commit']
                target.setdefault('fixed_by', []).append({'task': row['id'], 'round': entry.get('round'),
                                                          'commit': fix['commit']})


def _paid(rt: RunInputs, task: Task, row: dict[str, Any], total: dict[str, int]) -> None:
    """Usage split as a bill shows it (billed input beside the rest): `usage`, its latest execution's;
    `usage_total`, every execution's; and `cost`, what the latter cost by the config's price table (or None)."""
    row['usage'], row['usage_total'] = with_split(row['usage']), with_split(total)
    prices = rt.config.prices
    row['cost'] = usage_cost(prices, rt.role(task.role).model, total) if prices else None


# Why a task whose state asks for a fresh execution (orch.runstate.state.redo_requested) will run again.
REDO_CAUSE = ('redo_requested', 'redo requested')


def _causes(status: str, reason: str | None, st: dict[str, Any]) -> list[tuple[str, str]]:
    """Why a task that is not stale would run (or wait), as (stable code, text); none for a done task."""
    if status == 'done':
        return []
    if status == 'pending' and not st.get('status'):
        return [('never_ran', reason or 'it never ran')]
    if reason and reason.startswith('interrupted'):
        return [('interrupted', reason)]
    if reason and reason.startswith('gate ') and status == 'pending':
        return [('gate_not_run', reason)]
    if reason and reason.startswith('waiting: gate'):   # its gate runs again once the task that broke it ran
        return [('gate_waiting', reason)]
    if reason and reason.startswith(('waiting for', 'blocked: a task it depends on')):
        return [('waiting', reason)]
    codes = {'failed': 'failed_last_time', 'blocked': 'blocked', 'deferred': 'deferred', 'running': 'running',
             'pending': 'no_result'}
    return [(codes.get(status, status), reason or status)]


def _gated(status: str, reason: str | None, gates: list[dict[str, Any]], expected: list[str],
           result: dict[str, Any]) -> tuple[str, str | None]:
    """A done task is verified only when every gate its rules have now passed on its latest result.

    A gate's record counts when it ran after the result last changed: a kill can come between the work and
    its gate, and a re-run that left the result as it was is not gated again (nothing it checks changed)."""
    since = float(result.get('result_changed_at') or result.get('finished_at') or 0)
    recorded = {g['name']: g for g in gates}
    current = [recorded[name] for name in expected
               if name in recorded and float(recorded[name].get('finished_at') or 0) >= since]
    failed = next((g for g in current if not g.get('passed')), None)
    if failed is not None and failed.get('blamed'):   # another task's commit broke it: this one waits for that
        return 'pending', f'waiting: gate {failed["name"]} broken by {failed["blamed"]}'
    if failed is not None:   # a gate is a result of its task: the work is committed, but not verified
        why = 'timed out' if failed.get('exit_code') is None else f'exit {failed.get("exit_code")}'
        return 'failed', f'gate {failed["name"]} failed: {failed.get("command")} ({why})'
    unrun = [name for name in expected if name not in {g['name'] for g in current}]
    if unrun:
        return 'pending', f'gate {", ".join(unrun)} has not run on its latest work yet'
    return status, reason


def _row(task: Task, status: str, reason: str | None, st: dict[str, Any], result: dict[str, Any] | None,
         gates: list[dict[str, Any]], attempts: int) -> dict[str, Any]:
    done = result or {}

    def either(key: str, default: Any) -> Any:   # the result's, else what state.json recorded
        return done.get(key) or st.get(key) or default

    answer = done.get('answer') or st.get('answer') or {}
    return {
        'id': task.id, 'role': task.role, 'title': task.title, 'status': status, 'attempts': attempts,
        'reason': reason, 'usage': either('usage', None), 'duration': done.get('duration') or _duration(st),
        'commit': done.get('commit'), 'files_changed': done.get('files_changed') or [],
        'summary': answer.get('summary') if isinstance(answer, dict) else None,
        'decisions': _decisions(done.get('answer')),   # its result's, as the report lists them
        'depends_on': list(task.depends_on), 'round': st.get('round') if status == 'running' else None,
        'setup': st.get('setup') or [],   # worktree.setup in the checkout of its latest execution
        'checks': either('checks', []), 'repair_rounds': either('repair_rounds', 0), 'gates': gates,
        'review_rounds': either('review_rounds', 0), 'conflict_rounds': either('conflict_rounds', 0),
        'warnings': either('warnings', []),
        'fixes': either('fixes', []),
        # the story of its latest execution: its rounds in order (orch.steps.rounds.Rounds.history)
        'rounds': st['rounds'] if isinstance(st.get('rounds'), list) else done.get('rounds') or [],
        'started_at': st.get('started_at') or done.get('started_at'),
        'ended_at': st.get('ended_at') or done.get('finished_at'),
        'worker': _worker(st),
        # the result cache (config `cache:`): its latest execution's lookup; a hit names its origin. The result's
        # record only while the result is its latest execution's (a later lookup that missed is what counts)
        'cache': (done.get('cache') if st.get('status') == 'done' else None) or _lookup(st.get('cache')),
        'findings': answer.get('findings') if isinstance(answer, dict) and
        answer.get('verdict') == 'request_changes' else None,
    }


def _decisions(answer: Any) -> list[dict[str, Any]]:
    """The decisions a result's answer recorded (what a navigator or an implementer decided, and why)."""
    items = answer.get('decisions') if isinstance(answer, dict) else None
    return [{'decision': item.get('decision'), 'rationale': item.get('rationale')}
            for item in items if isinstance(item, dict)] if isinstance(items, list) else []


def _lookup(record: Any) -> dict[str, Any] | None:
    """A miss's cache record, as a row shows it: why it missed, when that was said (orch.steps.cache_hit)."""
    if not isinstance(record, dict):
        return None
    return {'hit': False, **{k: record[k] for k in ('miss', 'refused') if record.get(k)}}


def _worker(st: dict[str, Any]) -> str | None:
    """The Dask worker that ran the task's latest remote execution (its address, else its host); None: here."""
    worker = st.get('worker')
    if not isinstance(worker, dict):
        return None
    return worker.get('address') or worker.get('host') or None


def _duration(st: dict[str, Any]) -> float | None:
    if st.get('started_at') and st.get('ended_at'):
        return round(float(st['ended_at']) - float(st['started_at']), 3)
    return None


def document(rt: RunInputs, rows: list[dict[str, Any]], *, running: bool) -> dict[str, Any]:
    """The status of a run from its task rows (also what the no-op manifest records, orch.engine.noop_record)."""
    return {'run': run_record(rt), 'running': running, 'tasks': rows, 'removed': removed_tasks(rt)}


def run_record(rt: RunInputs) -> dict[str, Any]:
    info = rt.run
    return {'run_id': info.run_id, 'created': info.created, 'base_branch': info.base_branch,
            'base_commit': info.base_commit, 'plan_file': info.plan_file, 'spec_file': info.spec_file,
            'workspace': 'per-task' if info.per_task else 'shared',
            'worktree': rt.layout.worktree, 'branch': None if info.per_task else info.shared_branch}


def removed_tasks(rt: RunInputs) -> list[dict[str, Any]]:
    """Tasks this run ran that its plan no longer has: their results and commits are still the run's.

    Found from the run's task directories, so a plan edit that drops a task is seen without a resume."""
    tasks_dir = rt.run_dir / 'tasks'
    planned = rt.plan.by_id
    try:   # names, not paths (sorting Paths is slow): only the few unplanned ones are looked at further
        unplanned = sorted(name for name in os.listdir(tasks_dir) if name not in planned)
    except (FileNotFoundError, NotADirectoryError):
        unplanned = []
    out = []
    for name in unplanned:
        task_dir = tasks_dir / name
        if not task_dir.is_dir():
            continue
        result = state.read_result(task_dir) or {}
        commit = result.get('commit') if isinstance(result.get('commit'), str) else None
        out.append({'id': task_dir.name, 'status': 'removed', 'commit': commit,
                    'reason': 'removed from the plan' + (f'; its commit {commit[:12]} is on the run\'s branch'
                                                         if commit else '')})
    return out
