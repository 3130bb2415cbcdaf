"""`codex-orch redo TASK [TASK...] [--run-id ID]`: execute tasks again although nothing they are made from changed.

Each named task runs again in a fresh Codex thread (told that its previous result is in the worktree); the run
then goes on exactly as `resume` brings it up to date, so its dependents follow by the normal rules: they run
again only when the task ends with a different result (an identical one stops there, early cut-off).

The request is a mark in each task's state.json (`redo`, see orch.runstate.state.redo_requested), written under
the run's lock before anything runs, after the task's previous result and its execution record are copied to
`tasks/<id>/executions/`, where no later execution overwrites them. The work step runs while the mark is there
and clears it with the result of the execution it asked for: a kill in between leaves it, and a `resume` (or the
same `redo` again) finishes the redo, without paying twice for what the killed one had finished.

Bad input changes nothing (exit 2): a task id the run's plan does not have, a run that does not exist or is in
use, a task whose interrupted execution has work not recorded yet (`resume` finishes that first).
"""
from __future__ import annotations

import argparse
import datetime as dt

from orch import output
from orch.commands.common import find_repo
from orch.commands.run import add_run_options, request_from
from orch.engine.inputs import RunInputs
from orch.engine.start import resume_run
from orch.errors import InputError
from orch.failpoints import crash_point
from orch.runstate import state
from orch.runstate.executions import keep_previous
from orch.steps.remote_work import OUTCOME_FILE
from orch.steps.rounds import ROUNDS_FILE

# What an execution leaves until its result is recorded (orch.steps.finish, rounds, remote_work): paid-for work.
UNRECORDED = ('pending.json', ROUNDS_FILE, OUTCOME_FILE)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser('redo', help='execute tasks again, each in a fresh Codex thread; their dependents follow '
                                    'when a result changes')
    p.add_argument('tasks', nargs='+', metavar='TASK', help="a task id of the run's plan (several may be named)")
    p.add_argument('--run-id', help='the run (default: the latest)')
    add_run_options(p)


def redo(args: argparse.Namespace) -> int:
    repo = find_repo()
    ids = list(dict.fromkeys(args.tasks))
    request = request_from(args)
    # The tasks are checked before the run's lock is taken (bad input writes nothing, not even the lock file), and
    # again under it, where they are marked.
    return resume_run(repo, args.run_id, request, check=lambda rt: check_tasks(rt, ids),
                      before=lambda rt: request_redo(rt, ids, announce=request.verbosity >= 1))


def request_redo(rt: RunInputs, task_ids: list[str], *, announce: bool = True) -> list[str]:
    """Mark each task for a fresh execution (the run's lock held); returns the ids marked now.

    Every task is checked before the first is marked: bad input writes nothing. A task asked for already (its
    redo not finished) keeps its mark, and one that never ran needs none (it runs anyway)."""
    check_tasks(rt, task_ids)
    now = dt.datetime.now().astimezone()
    marked = []
    for task_id in task_ids:
        task_dir = rt.task_dir(task_id)
        st = state.read_state(task_dir)
        if not st.get('status'):
            _say(announce, f'redo {task_id}: it never ran, so it runs now anyway')
            continue
        if state.redo_requested(st):
            _say(announce, f'redo {task_id}: asked for already and not finished; it goes on')
            continue
        kept = keep_previous(task_dir, now, why='redo')
        state.update_state(task_dir, redo={'requested_at': now.isoformat(timespec='seconds'), 'previous': kept})
        marked.append(task_id)
        where = f'; its previous result is kept in {rt.layout.task_dir(task_id)}/{kept}' if kept else ''
        _say(announce, f'redo {task_id}: it runs again in a fresh Codex thread{where}')
    crash_point('after-redo-mark')
    return marked


def check_tasks(rt: RunInputs, task_ids: list[str]) -> None:
    """Refuse (InputError, nothing written) ids the plan does not have, and tasks with unrecorded work."""
    run_id = rt.run.run_id
    unknown = [t for t in task_ids if t not in rt.plan.by_id]
    if unknown:
        known = [t.id for t in rt.plan.tasks]
        shown = ', '.join(known[:20]) + (f' and {len(known) - 20} more' if len(known) > 20 else '')
        names = ', '.join(repr(t) for t in unknown)
        raise InputError(f'redo: unknown task{"s" if len(unknown) > 1 else ""} {names} in run {run_id}; '
                         f'its plan ({rt.run.plan_file}) has {shown or "no tasks"}')
    for task_id in task_ids:
        task_dir = rt.task_dir(task_id)
        st = state.read_state(task_dir)
        if state.redo_requested(st):
            continue   # its redo was interrupted: running it finishes that redo
        left = [name for name in UNRECORDED if (task_dir / name).exists()]
        if st.get('status') == 'running' or left:
            raise InputError(f'redo {task_id}: its last execution was interrupted before its result was recorded '
                             f'({", ".join(left) or "state: running"}); finish it first with '
                             f'`codex-orch resume --run-id {run_id}` (nothing paid for is paid again), '
                             'then redo it')


def _say(announce: bool, text: str) -> None:
    if announce:
        output.write_line(text)
