"""`codex-orch runs [--json]`: every run of the repository, oldest first, and which one is the latest.

Per run: its kind (`plan`: `codex-orch run`; `task`: a one-task run of `task` or `plan`), plan file, when
it was created and last run or resumed, how many tasks stand where, and whether its result is merged.
It is cheap and writes nothing: the task counts are the recorded states, as `status` reads them, but
without asking doit which done tasks are stale (`status --run-id ID` does that, per run).
"""
from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path
from typing import Any

from tabulate import tabulate

from orch import output
from orch.adapters import git
from orch.commands.common import find_repo
from orch.core.plan import id_problem
from orch.core.text import one_line
from orch.engine.inputs import layout_for, open_run
from orch.errors import OrchError
from orch.runstate import runs as records
from orch.runstate import state
from orch.runstate.lock import holder_pid
from orch.runstate.runs import RunInfo, UnreadableRunError, last_used, load_run, run_dir
from orch.runstate.status import task_rows

JSON_VERSION = 1


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser('runs', help='list the runs: kind, plan, created, last used, tasks per status, merged')
    p.add_argument('--json', action='store_true', help='machine-readable output')


def runs_document(repo: Path) -> dict[str, Any]:
    try:
        latest: str | None = records.latest_run_id(repo)
    except OrchError:
        latest = None   # no plan run yet: a listing of nothing (or of task runs) is still an answer
    listed = records.list_run_ids(repo)
    broken = sorted(set(_run_dir_names(repo)) - set(listed))
    rows = [_row(repo, rid, rid == latest) for rid in listed] + [_broken_row(repo, rid) for rid in broken]
    return {'version': JSON_VERSION, 'latest': latest, 'stale_computed': False, 'runs': rows}


def _row(repo: Path, run_id: str, latest: bool) -> dict[str, Any]:
    try:
        info = load_run(repo, run_id)
    except UnreadableRunError as exc:
        return _broken_row(repo, run_id, f'run.json: {exc.reason}')
    except OrchError as exc:   # a directory name no run can have, or a record removed since it was listed
        return _broken_row(repo, run_id, _first_line(exc))
    counts, commits, problem = _counts(repo, info)
    try:
        merged = _merged(repo, info, commits)
    except OrchError as exc:   # one run's odd branch must not hide the others
        merged, problem = None, problem or _first_line(exc)
    return {'run_id': run_id, 'kind': info.kind, 'plan_file': info.plan_file, 'spec_file': info.spec_file,
            'created': info.created, 'last_used': last_used(repo, run_id), 'latest': latest,
            'running': holder_pid(run_dir(repo, run_id)) is not None,
            'base_branch': info.base_branch, 'workspace': 'per-task' if info.per_task else 'shared',
            'tasks': sum(counts.values()), 'counts': counts, 'merged': merged,
            'problem': problem}


def _broken_row(repo: Path, run_id: str, problem: str | None = None) -> dict[str, Any]:
    """A run whose record cannot be used: listed by its directory, with why (`prune` can remove it)."""
    if problem is None:
        try:
            load_run(repo, run_id)
            problem = 'run.json: unreadable run record'
        except UnreadableRunError as exc:
            problem = f'run.json: {exc.reason}'
        except OrchError:
            problem = 'run.json is missing'
    return {'run_id': run_id, 'kind': None, 'plan_file': None, 'spec_file': None, 'created': None,
            'last_used': last_used(repo, run_id), 'latest': False, 'running': False, 'base_branch': None,
            'workspace': None, 'tasks': 0, 'counts': {}, 'merged': None, 'problem': problem}


def _counts(repo: Path, info: RunInfo) -> tuple[dict[str, int], list[str], str | None]:
    """Tasks per status (as `status` has them, stale aside), the recorded commits, and why the run could
    not be opened (its plan or config gone or broken: then the counts are its tasks' state files as they are)."""
    counts: dict[str, int] = {}
    try:
        rows = task_rows(open_run(repo, info.run_id, info=info))
    except OrchError as exc:
        task_dirs = sorted(p for p in (run_dir(repo, info.run_id) / 'tasks').glob('*') if p.is_dir())
        commits = []
        for task_dir in task_dirs:
            status = str(state.read_state(task_dir).get('status') or 'pending')
            counts[status] = counts.get(status, 0) + 1
            commit = (state.read_result(task_dir) or {}).get('commit')
            if isinstance(commit, str):
                commits.append(commit)
        return dict(sorted(counts.items())), commits, _first_line(exc)
    for row in rows:
        counts[row['status']] = counts.get(row['status'], 0) + 1
    return dict(sorted(counts.items())), [row['commit'] for row in rows if row.get('commit')], None


def _first_line(exc: Exception) -> str:
    text = str(exc)
    return one_line(text.splitlines()[0]) if text.strip() else type(exc).__name__


def _merged(repo: Path, info: RunInfo, commits: list[str]) -> bool | None:
    """Whether the run's base branch contains its result; None when there is nothing to tell (no base branch,
    or no work: the run's branches are still at its base commit and no task committed).

    The result is the run's branch, or in per-task mode every task branch (the merged result contains them
    all, see `merge`). A cleaned run has no branches left: then every task's recorded commit must be in it.
    """
    if not info.base_branch:
        return None
    base = git.branch_tip(repo, info.base_branch)
    if base is None:
        return None
    layout = layout_for(info)
    if info.per_task:
        ids = sorted(p.name for p in (run_dir(repo, info.run_id) / 'tasks').glob('*') if p.is_dir())
        branches = [layout.task_branch(tid) for tid in ids]
    else:
        branches = [info.shared_branch]
    tips = [tip for tip in (git.branch_tip(repo, b) for b in branches) if tip is not None]
    if tips:
        work = [tip for tip in tips if tip != info.base_commit]
        return all(git.is_ancestor(repo, tip, base) for tip in work) if work else None
    return all(git.contains(repo, base, sha) for sha in commits) if commits else None


def _run_dir_names(repo: Path) -> list[str]:
    try:
        entries = list(records.runs_dir(repo).iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [p.name for p in entries if p.is_dir() and id_problem(p.name) is None]


def _when(value: object) -> str:
    """A recorded time as local `YYYY-MM-DD HH:MM:SS`, or '' (never recorded, or not a time)."""
    seconds = records.timestamp(value)
    return '' if seconds is None else f'{dt.datetime.fromtimestamp(seconds):%Y-%m-%d %H:%M:%S}'


def render_table(doc: dict[str, Any]) -> str:
    if not doc['runs']:
        return 'no runs yet (start one with `codex-orch run --plan-file PLAN`)'
    rows = []
    for r in doc['runs']:
        tasks = ', '.join(f'{n} {s}' for s, n in r['counts'].items())
        merged = {True: 'yes', False: 'no', None: '-'}[r['merged']]
        note = r['problem'] or ('in progress' if r['running'] else '')
        rows.append(['*' if r['latest'] else '', r['run_id'], r['kind'] or '?', r['plan_file'] or '',
                     _when(r['created']), _when(r['last_used']), tasks, merged, note[:80]])
    table = tabulate(rows, headers=['', 'run', 'kind', 'plan', 'created', 'last used', 'tasks', 'merged', 'note'],
                     tablefmt='simple')
    latest = (f'* the latest run ({doc["latest"]}): what resume, status, graph and report use without --run-id'
              if doc['latest'] else 'no plan run yet: resume, status, graph and report need --run-id')
    return f'{table}\n{latest}\n(stale tasks are not computed here; `codex-orch status --run-id ID` shows them)'


def runs(args: argparse.Namespace) -> int:
    doc = runs_document(find_repo())
    if args.json:
        output.write_json(doc)
    else:
        output.write_line(render_table(doc))
    return 0
