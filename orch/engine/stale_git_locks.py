"""Lock files that a git command killed mid-write left in a run's own worktrees and branches."""
from __future__ import annotations

from pathlib import Path

from orch.engine.inputs import RunInputs


def clear_stale_git_locks(rt: RunInputs) -> list[Path]:
    """Remove the lock files a git command killed mid-write left in the run's own worktrees and branches.

    Called once at the start of a run, holding the run's lock and before any git command of this process:
    nothing else may be writing in these worktrees or branches then, so any lock is a leftover (git killed
    with codex-orch, e.g. by a SIGKILL of the whole process group), which would block every commit.
    """
    removed = []
    layout = rt.layout
    worktrees = {rt.path(layout.task_worktree(t.id)) for t in rt.plan.tasks}
    branches = {layout.task_branch(t.id) for t in rt.plan.tasks} if rt.run.per_task else {rt.run.shared_branch}
    common = rt.repo / '.git'
    candidates = [common / 'refs' / 'heads' / f'{b}.lock' for b in branches]
    for wt in worktrees:
        try:
            pointer = (wt / '.git').read_text(encoding='utf-8').strip()
        except (OSError, UnicodeDecodeError):
            continue
        if pointer.startswith('gitdir: '):
            gitdir = wt / pointer.removeprefix('gitdir: ')   # absolute, or relative to the worktree
            candidates += [gitdir / 'index.lock', gitdir / 'HEAD.lock']
    for lock in candidates:
        try:
            lock.unlink()
            removed.append(lock)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            pass
    return removed

