"""The workspace steps: the run's worktree (its tasks work in checkouts of their own, orch.steps.checkout), or
one worktree and branch per task."""
from __future__ import annotations

import json
import shlex
import threading
from pathlib import Path
from typing import Any

from orch.adapters import git
from orch.core.compile import Step
from orch.core.plan import Task
from orch.engine.inputs import RunInputs
from orch.engine.session import Session
from orch.errors import GitError
from orch.runstate import atomic, state
from orch.steps.failure import Failed, fail


def shared_worktree(rt: RunInputs, session: Session, step: Step) -> None:
    """The run's one worktree, on the branch and from the commit the rule's params name."""
    path = rt.path(rt.layout.worktree)
    branch, base = step.params['branch'], step.params['base_commit']
    if git.worktree_valid(path) and git.head_state(path)[0] is None:
        # Left detached by a landing that would have overwritten a change of the user's there: back on the branch
        # when that keeps every change, else it stays where it is (the tasks work in their own checkouts).
        git.reattach(path, branch)
    else:
        git.ensure_worktree(rt.repo, path, branch, base)
    record = {'path': rt.layout.worktree, 'branch': branch, 'base_commit': base}
    atomic.write_if_changed(rt.path(step.outputs['workspace']), json.dumps(record, indent=2, sort_keys=True) + '\n')


# In a task's state: where codex-orch last left the HEAD of the task's checkout (shared mode, orch.steps.checkout)
# or worktree (per-task mode): its start, then each commit codex-orch made there. A HEAD anywhere else is a commit,
# reset or rebase codex-orch did not make: the task fails, and nothing of it is committed on or merged.
HEAD = 'checkout_head'


def head_moved(repo: Path, path: Path, task_dir: Path, actual: str) -> str | None:
    """Per-task mode: what moved the HEAD of the task's worktree `path` (now `actual`) from where codex-orch left
    it, or None."""
    expected = state.read_state(task_dir).get(HEAD)
    if not isinstance(expected, str) or actual == expected:
        return None
    return (f'{git.head_move(repo, expected, actual)}, in {path}; nothing of it is used. To drop it: '
            f'git -C {shlex.quote(str(path))} reset --hard {expected[:12]}, then resume')


# Worktree and branch changes one at a time: parallel tasks set up their worktrees from threads, and
# `git worktree add` / `prune` in one repository must not interleave.
worktree_lock = threading.Lock()


def task_worktree(rt: RunInputs, session: Session, step: Step) -> None:
    """Per-task mode: the task's worktree on its own branch, started from the tip of what it depends on.

    No dependency: the base commit. One (or one whose tip contains the others'): that branch's tip.
    Several: the first, with the others merged in; a conflict fails the task, naming the files.
    When a dependency's branch moved since (it ran again), the branch is started afresh if it holds
    nothing but this task's own earlier work (stale, about to be redone); otherwise the new
    dependency work is merged into it.
    """
    assert step.task_id is not None
    task = rt.plan.by_id[step.task_id]
    task_dir = rt.task_dir(task.id)
    target = rt.path(step.outputs['workspace'])
    try:
        with worktree_lock:
            record = _prepare_task_worktree(rt, step, task, task_dir, state.read_json(target) or {})
    except GitError as exc:
        raise fail(task_dir, f'cannot set up the worktree of {task.id}: {exc}') from None
    except Failed as exc:
        raise fail(task_dir, str(exc)) from None
    state.update_state(task_dir, **{HEAD: git.rev_parse(rt.path(record['path']), 'HEAD')})
    atomic.write_if_changed(target, json.dumps(record, indent=2, sort_keys=True) + '\n')


def _prepare_task_worktree(rt: RunInputs, step: Step, task: Task, task_dir: Path,
                           previous: dict[str, Any]) -> dict[str, Any]:
    layout, repo = rt.layout, rt.repo
    path = rt.path(layout.task_worktree(task.id))
    branch, base_commit = step.params['branch'], step.params['base_commit']
    tips = {dep: git.rev_parse(repo, f'refs/heads/{layout.task_branch(dep)}') for dep in task.depends_on}
    needed = _tips_to_merge(repo, list(task.depends_on), tips)
    tip = git.branch_tip(repo, branch)
    if tip is not None:
        moved = head_moved(repo, path, task_dir, tip)   # never merged into, nor started afresh over, a worker's commit
        if moved:
            raise Failed(f'cannot start {task.id}: {moved}')
    behind = [d for d in needed if tip is not None and not git.is_ancestor(repo, tips[d], tip)]
    if behind and tip in _own_states(task_dir, previous):
        # Nothing on the branch but this task's stale work: start it afresh from the new tips.
        git.remove_worktree(repo, path, force=True)
        if not git.delete_branch(repo, branch, base=tip, force=True):
            raise Failed(f'cannot start {task.id} afresh: its branch {branch} is checked out in '
                         f'{git.worktree_of_branch(repo, branch)}; check out another branch there, then resume')
        tip, behind = None, []
    fresh = tip is None
    if tip is None:
        git.ensure_worktree(repo, path, branch, tips[needed[0]] if needed else base_commit)
        to_merge = needed[1:]
    else:
        git.ensure_worktree(repo, path, branch, tip)
        if behind:
            git.discard_changes(path)   # leftovers of an earlier attempt; the task runs again anyway
        to_merge = behind
    start = previous.get('start_commit') if not fresh and not to_merge else None
    pending_merge: dict[str, Any] | None = previous.get('merge') if not fresh and not to_merge else None
    if to_merge:
        message = (f'Merge {", ".join(to_merge)} into {task.id}\n\n'
                   f'Orch-Run: {rt.run.run_id}\nOrch-Task: {task.id}')
        # Every task appends its own entry to the decisions log: both sides' lines are kept.
        union = (rt.config.decisions_file,)
        *first, last = to_merge
        conflicts = git.merge_into_worktree(path, [layout.task_branch(d) for d in first], message, union=union)
        if not conflicts:
            conflicts = git.merge_into_worktree(path, [layout.task_branch(last)], message, union=union)
            if conflicts:
                # The landing discipline: the task's own worker resolves it (then a conflict round, bounded), and
                # its commit concludes the merge. The work step begins the merge; the record says what to expect.
                pending_merge = {'task': last, 'branch': layout.task_branch(last), 'conflicts': conflicts}
                conflicts = []
        if conflicts:
            if fresh:   # leave nothing behind: the next attempt starts over
                git.remove_worktree(repo, path, force=True)
                git.delete_branch(repo, branch, base=base_commit, force=True)
            merged = [*needed[:1], *to_merge] if fresh else [task.id, *to_merge]
            hint = ('make the tasks touch different files, or make one depend on the other' if fresh else
                    f'merge them by hand in {layout.task_worktree(task.id)}, or delete the branch {branch} '
                    '(codex-orch clean --force) to start the task afresh')
            raise Failed(f'cannot start {task.id}: merging the work of {", ".join(merged)} conflicts in '
                         f'{", ".join(conflicts)} ({hint})')
    if start is None:
        start = git.rev_parse(path, 'HEAD')
    record = {'path': layout.task_worktree(task.id), 'branch': branch, 'base_commit': base_commit,
              'depends_on': list(task.depends_on), 'start_commit': start}
    if pending_merge is not None:   # until a commit of the task concludes it
        dep_tip, own_tip = git.branch_tip(repo, pending_merge['branch']), git.branch_tip(repo, branch)
        if dep_tip is not None and own_tip is not None and not git.is_ancestor(repo, dep_tip, own_tip):
            record['merge'] = pending_merge
    return record


def _tips_to_merge(repo: Path, deps: list[str], tips: dict[str, str]) -> list[str]:
    """The dependencies whose tips are not already contained in another one's, in plan order."""
    needed: list[str] = []
    for dep in deps:
        sha = tips[dep]
        if any(tips[d] == sha for d in needed):
            continue
        if any(other != sha and git.is_ancestor(repo, sha, other) for other in tips.values()):
            continue
        needed.append(dep)
    return needed


def _own_states(task_dir: Path, previous: dict[str, Any]) -> set[str]:
    """Commits at which the task's branch holds nothing but codex-orch's own work for the task."""
    result = state.read_result(task_dir) or {}
    return {sha for sha in (previous.get('start_commit'), result.get('commit')) if sha}


def worktree_ready(rt: RunInputs, session: Session, step: Step, values: dict[str, Any]) -> bool:
    """uptodate check: the worktree the step made still exists (a hand-deleted one is re-attached)."""
    record = state.read_json(rt.path(step.outputs['workspace']))
    return record is not None and git.worktree_valid(rt.path(record['path']))
