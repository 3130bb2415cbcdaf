"""Lock files that a git command killed mid-write left in a run's own worktrees and branches."""
from __future__ import annotations

from pathlib import Path

from orch.adapters import git
from orch.engine.inputs import RunInputs


def clear_stale_git_locks(rt: RunInputs, only: frozenset[str] | None = None) -> list[Path]:
    """Remove the lock files a git command killed mid-write left in the run's own worktrees and branches.

    Called once at the start of a run, holding the run's lock and before any git command of this process:
    nothing else may be writing in these worktrees or branches then, so any lock is a leftover (git killed
    with codex-orch, e.g. by a SIGKILL of the whole process group), which would block every commit.
    only: the tasks whose worktrees and branches this run may use (a resume scoped after an edit): a leftover
    elsewhere blocks nothing it does, and is removed by the next run that looks at every task.
    """
    removed = []
    layout = rt.layout
    tasks = [t for t in rt.plan.tasks if only is None or t.id in only]
    worktrees = {rt.path(layout.task_worktree(t.id)) for t in tasks} | {rt.path(layout.checkout(t.id)) for t in tasks}
    branches = {layout.task_branch(t.id) for t in tasks} if rt.run.per_task else {rt.run.shared_branch}
    candidates: list[Path] = []
    # Not `<repo>/.git`: that is a file, not the directory holding the branches, when the repository was
    # made with --separate-git-dir or is a submodule.
    repo_git_dir = rt.repo / '.git' if (rt.repo / '.git').is_dir() else git.linked_git_dir(rt.repo)
    if repo_git_dir is not None:
        common = git.common_dir_of(repo_git_dir)
        candidates += [common / 'refs' / 'heads' / f'{b}.lock' for b in branches]
    own = (git.common_dir_of(repo_git_dir) / 'worktrees').resolve() if repo_git_dir is not None else None
    for wt in worktrees:
        gitdir = git.linked_git_dir(wt)   # a worktree of the run's is a linked one: its .git is a file
        # The worker can rewrite that file: only a git dir of the repository's own worktrees is swept.
        if gitdir is not None and own is not None and gitdir.resolve().parent == own:
            candidates += [gitdir / 'index.lock', gitdir / 'HEAD.lock']
    for lock in candidates:
        try:
            lock.unlink()
            removed.append(lock)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            pass
    return removed
