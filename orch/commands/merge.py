"""`codex-orch merge --run-id ID [--allow-automerge]`: fast-forward the run's base branch to its result.

The base branch is the one recorded when the run started (run.json), never whatever is checked out
now. The result is the run's branch (shared workspace), or in per-task mode the task branch that
contains every other one, each task's branch containing its dependencies' (otherwise the result is
not one line of work and merging it is left to the user). The result must contain every task's
recorded commit (`result.json`): a worker may have moved the branch. Without --allow-automerge
nothing changes: the command says what it would do. It only ever fast-forwards: no merge commit, no
rebase, no checkout; a checked-out base branch moves only when its checkout is clean, and its files
follow.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from orch import output
from orch.adapters import git
from orch.commands.common import find_repo
from orch.core.plan import topological_order
from orch.engine.doit_runner import stale_task_ids
from orch.engine.inputs import RunInputs, open_run
from orch.errors import EXIT_TASK_FAILED, GitError, OrchError
from orch.runstate.lock import RunLock, holder_pid
from orch.runstate.status import removed_tasks, task_rows


class MergeRefused(OrchError):
    """The merge cannot be done safely now; nothing was changed."""

    exit_code = EXIT_TASK_FAILED


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser('merge', help="fast-forward the run's base branch to the run's result "
                                     '(only shows what it would do without --allow-automerge)')
    p.add_argument('--run-id', required=True, help='the run to merge')
    p.add_argument('--allow-automerge', action='store_true',
                   help='really move the base branch (default: print what would happen, change nothing)')


def merge(args: argparse.Namespace) -> int:
    repo = find_repo()
    rt = open_run(repo, args.run_id)
    run_id = rt.run.run_id
    pid = holder_pid(rt.run_dir)
    if pid is not None:
        raise MergeRefused(f'run {run_id} is in progress (PID {pid}); wait for it to finish, then merge. '
                           'Nothing was changed.')
    base = rt.run.base_branch
    if not base:
        raise MergeRefused(f'run {run_id} was started on a detached HEAD ({rt.run.base_commit[:12]}), so it has no '
                           'base branch to fast-forward; merge its result by hand. Nothing was changed.')
    rows = task_rows(rt, stale_task_ids(rt))
    unfinished = [r for r in rows if r['status'] != 'done']
    if unfinished:
        listed = '; '.join(f'{r["id"]} {r["status"]}' + (f' ({r["reason"]})' if r.get('reason') else '')
                           for r in unfinished)
        raise MergeRefused(f'not every task of run {run_id} is done ({listed}); finish the run first '
                           f'(codex-orch resume --run-id {run_id}). Nothing was changed.')
    source, result = _result(rt)
    _check_task_commits(rt, rows, source, result)
    _check_removed_tasks(rt, source, result)
    base_sha = git.branch_tip(repo, base)
    if base_sha is None:
        raise MergeRefused(f'the base branch {base} of run {run_id} no longer exists; nothing was changed.')
    if base_sha == result:
        output.write_line(f'{base} is already at the result of run {run_id} ({result[:12]}); nothing to do.')
        return 0
    if not git.is_ancestor(repo, base_sha, result):
        ahead = git.unmerged_commits(repo, base_sha, result)
        raise MergeRefused(
            f'cannot fast-forward {base} to the result of run {run_id}: {base} has moved on since the run started '
            f'({ahead} commit(s) not in {source}). Merge {base} into {source} (or {source} into {base}) by hand. '
            'Nothing was changed.')
    checkout = _live_checkout(repo, base)
    if checkout is not None:
        dirty, clobbered = git.checkout_blockers(checkout, base_sha, result)
        if dirty or clobbered:
            raise MergeRefused(git.describe_blockers(base, checkout, dirty, clobbered))
    count = git.unmerged_commits(repo, result, base_sha)
    what = f'{base} {base_sha[:12]} -> {result[:12]} ({count} commit(s) from {source})'
    if not args.allow_automerge:
        output.write_line(f'would fast-forward {what}')
        _list_tasks(rows)
        where = f'; its checkout {checkout} would be updated' if checkout is not None else ''
        output.write_line(f'dry run: nothing was changed{where}. To do it: '
                          f'codex-orch merge --run-id {run_id} --allow-automerge')
        return 0
    with RunLock(rt.run_dir):
        try:
            git.fast_forward(repo, base, result)
        except GitError as exc:
            raise MergeRefused(str(exc)) from exc
    output.write_line(f'fast-forwarded {what}')
    _list_tasks(rows)
    if checkout is not None:
        output.write_line(f'updated the checkout of {base} in {checkout}')
    return 0


def _result(rt: RunInputs) -> tuple[str, str]:
    """(branch name, commit) the base branch should move to."""
    repo, run_id = rt.repo, rt.run.run_id
    if not rt.run.per_task:
        branch = rt.run.shared_branch
        sha = git.branch_tip(repo, branch)
        if sha is None:
            raise MergeRefused(f'the branch {branch} of run {run_id} no longer exists (was the run cleaned?); '
                               'nothing was changed.')
        return branch, sha
    layout = rt.layout
    tips: dict[str, str] = {}
    for task in rt.plan.tasks:
        sha = git.branch_tip(repo, layout.task_branch(task.id))
        if sha is None:
            raise MergeRefused(f'the branch {layout.task_branch(task.id)} of task {task.id} no longer exists '
                               '(was the run cleaned?); nothing was changed.')
        tips[task.id] = sha
    order = topological_order(rt.plan)
    for task in order:
        for dep in task.depends_on:
            if not git.is_ancestor(repo, tips[dep], tips[task.id]):
                raise MergeRefused(
                    f"the result of run {run_id} is not linear: {task.id}'s branch does not contain the latest work "
                    f'of {dep}, which it depends on ({layout.task_branch(dep)}); resume the run so that {task.id} '
                    'runs on it, then merge. Nothing was changed.')
    used = {dep for task in order for dep in task.depends_on}
    sinks = [task.id for task in order if task.id not in used]
    for candidate in reversed(sinks):
        if all(git.is_ancestor(repo, tips[other], tips[candidate]) for other in sinks):
            return layout.task_branch(candidate), tips[candidate]
    raise MergeRefused(
        f'the result of run {run_id} is not linear: no task branch contains all the others '
        f'({", ".join(sinks)} hold separate lines of work: {", ".join(layout.task_branch(s) for s in sinks)}). '
        'Merge them by hand, or add a final task that depends on all of them. Nothing was changed.')


def _check_task_commits(rt: RunInputs, rows: list[dict[str, Any]], source: str, result: str) -> None:
    """Refuse a result that lacks a task's recorded commit (a worker switched branches, reset or rebased)."""
    missing = [row for row in rows if row.get('commit') and not git.contains(rt.repo, result, row['commit'])]
    if not missing:
        return
    one = len(missing) == 1
    listed = ', '.join(f'{row["id"]} ({row["commit"][:12]})' for row in missing)
    raise MergeRefused(
        f'the result of run {rt.run.run_id} ({source} at {result[:12]}) does not contain the commit of '
        f'{"task" if one else "tasks"} {listed}: the branch was moved after {"it" if one else "they"} committed '
        f'(a worker that switched branches, reset or rebased?). Inspect it (git log {source}) and put the missing '
        'work back on it, or merge by hand. Nothing was changed.')


def _live_checkout(repo: Path, branch: str) -> Path | None:
    path = git.worktree_of_branch(repo, branch)
    return path if path is not None and path.exists() else None


def _list_tasks(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        commit = (row.get('commit') or '')[:12] or '(no changes)'
        output.write_line(f'  {row["id"]:<12} {commit:<12} {row["title"]}')


def _check_removed_tasks(rt: RunInputs, source: str, result: str) -> None:
    """Refuse a result that still holds the work of a task the plan no longer has: it is not wanted."""
    shipped = [t for t in removed_tasks(rt) if t['commit'] and git.contains(rt.repo, result, t['commit'])]
    if not shipped:
        return
    listed = ', '.join(f'{t["id"]} ({t["commit"][:12]})' for t in shipped)
    raise MergeRefused(
        f'the result of run {rt.run.run_id} ({source}) still holds the commits of {listed}, which the plan no longer '
        f'has. Put the task back in {rt.run.plan_file}, or revert its commit in the run\'s worktree (git revert), '
        'then merge. Nothing was changed.')
