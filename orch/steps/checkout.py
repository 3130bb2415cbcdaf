"""A task's private checkout (shared mode): no two workers, resumes or the user ever write one directory.

The run keeps one branch and one worktree that shows its tip; each task's worker works in a detached checkout of
its own beside it (`<worktree>.tasks/<task id>`), made from the run branch's tip when the task starts and kept
for its repair, review and conflict rounds. Everything uncommitted there is that task's, so a resume discards
nothing outside the restarted task's own checkout and its commit holds exactly what its worker changed. Its
verified commits reach the run branch through the landing step (orch.steps.landing); then the checkout goes to a
pool, from which the next task to start takes it, reset as good as new at the tip: making a checkout writes every
file of the tree (seconds in a big repository), resetting one rewrites only what differs.

`checkout_start` in the task's state is the commit the checkout's work is based on: landing replays the commits
after it when the run branch moved on meanwhile. `checkout_head` (HEAD) is where codex-orch itself last left its
HEAD (the start, then each commit it made there): a commit a worker made on its own is never committed on, or
landed. Per-task mode keeps the same record for the task's worktree (orch.steps.worktree).
"""
from __future__ import annotations

import uuid
from pathlib import Path

from orch.adapters import git
from orch.engine.inputs import RunInputs
from orch.errors import GitError
from orch.runstate import state
from orch.steps.failure import fail
from orch.steps.worktree import HEAD, worktree_lock

START = 'checkout_start'
POOL = '.pool'   # in the checkouts' directory: checkouts of finished tasks, for the next to reuse


def run_tip(rt: RunInputs, branch: str, task_dir: Path) -> str:
    tip = git.branch_tip(rt.repo, branch)
    if tip is None:
        raise fail(task_dir, f'the run\'s branch {branch} is gone; recreate it at the run\'s last commit '
                             f'(git branch {branch} <commit>), or start a new run')
    return tip


def ensure(rt: RunInputs, task_dir: Path, workdir: Path, branch: str) -> bool:
    """The task's checkout exists and is detached (a worker with full access may have switched it to a branch);
    a missing one is made at the run branch's tip. True when it was made (or reused) just now: then it is as
    `restart` would leave it."""
    if git.worktree_valid(workdir):
        try:
            git.pin(workdir)   # from now on its .git is not read (a resume: right after the lookup above)
        except GitError as exc:
            raise fail(task_dir, f'the task\'s checkout {workdir} cannot be used: {exc}') from None
        on, _ = git.head_state(workdir)
        if on is not None:
            raise fail(task_dir, f'the task\'s checkout {workdir} was switched to the branch {on} (by its worker?); '
                                 f'remove it (git worktree remove --force {workdir}), then resume')
        if state.read_state(task_dir).get(START):
            return False
    tip = run_tip(rt, branch, task_dir)
    try:
        with worktree_lock:
            if not _reuse(rt, workdir, tip):
                git.add_checkout(rt.repo, workdir, tip)
    except GitError as exc:
        raise fail(task_dir, f'cannot make the task\'s checkout {workdir}: {exc}') from None
    state.update_state(task_dir, **{START: tip, HEAD: tip})
    return True


def _reuse(rt: RunInputs, workdir: Path, tip: str) -> bool:
    """Take a checkout a finished task left in the pool, moved to this task's path and made as good as new at `tip`:
    writing every file of a big tree costs seconds a task, a reset of one rewrites only what differs."""
    for free in sorted(_pool(rt).glob('*')):
        if not git.worktree_valid(free):
            continue
        try:
            git.move_worktree(rt.repo, free, workdir)
        except GitError:
            continue
        try:
            git.reset_checkout(workdir, tip)
            return True
        except GitError:
            git.remove_worktree(rt.repo, workdir, force=True)
    return False


def _pool(rt: RunInputs) -> Path:
    return rt.path(rt.layout.checkouts()) / POOL


def restart(rt: RunInputs, task_dir: Path, workdir: Path, branch: str, *, made_now: bool = False) -> None:
    """A fresh execution: what an earlier attempt left in the task's own checkout goes, and it moves to the run
    branch's tip. Nothing outside this checkout is touched. Nothing to do for a checkout `ensure` made just now
    (`made_now`): it is clean, at a tip of the run branch (landing replays the work if the tip moved since)."""
    if made_now:
        return
    git.discard_changes(workdir)
    tip = run_tip(rt, branch, task_dir)
    git.move_checkout(workdir, tip)
    state.update_state(task_dir, **{START: tip, HEAD: tip})


def expected_head(task_dir: Path) -> str | None:
    value = state.read_state(task_dir).get(HEAD)
    return value if isinstance(value, str) else None


def moved(task_dir: Path, head: str, start: str | None = None) -> None:
    """codex-orch moved the checkout's HEAD (a commit, a replay): that is where it expects it now."""
    state.update_state(task_dir, **{HEAD: head, **({START: start} if start else {})})


def start_of(task_dir: Path) -> str | None:
    value = state.read_state(task_dir).get(START)
    return value if isinstance(value, str) else None


def release(rt: RunInputs, workdir: Path) -> None:
    """After the task's work landed its checkout is not needed any more (the commits are on the run branch): it
    goes to the pool for the next task to start (see `_reuse`), or away."""
    if not git.worktree_valid(workdir):
        return
    try:
        with worktree_lock:
            try:
                git.move_worktree(rt.repo, workdir, _pool(rt) / f'{workdir.name}-{uuid.uuid4().hex[:8]}')
            except GitError:
                git.remove_worktree(rt.repo, workdir, force=True)
    except GitError:
        pass   # left for `codex-orch clean`; the next execution of the task reuses or replaces it
