"""The git seal: a worker must not change what makes git run commands (filter and diff drivers, includes,
attributes, alternates) in the repository of its worktree.

codex-orch itself runs git on a worker's worktree — status, add, commit — outside the worker's sandbox. A
filter driver the worker wrote into the repository's config (possible when the repository lies in a
directory the sandbox lets it write, such as /tmp) would run there, with codex-orch's environment. Hooks are
off for every git call (orch.adapters.git); a driver cannot be switched off that way, so its configuration is
sealed instead: its digest is taken before the worker starts, kept in the task's directory until the task's
result is written (a kill and a resume keep it), and checked after every worker call and before anything is
staged. Each invocation also keeps the digest it first saw of every worktree, so a worker cannot change the
configuration under a parallel task that starts after it.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

from orch.adapters import git
from orch.runstate import atomic, state
from orch.steps.failure import fail

if TYPE_CHECKING:
    from pathlib import Path

    from orch.engine.session import Session

SEAL = 'git-seal.json'


def seal(session: Session, task_dir: Path, workdir: Path) -> None:
    """Before a worker starts: seal the configuration, or check it against the seal an interrupted or refused
    execution of the task left."""
    now = git.control_digest(workdir)
    session.git_seals.setdefault(str(workdir), now)
    if state.read_json(task_dir / SEAL) is None:
        atomic.write_json(task_dir / SEAL, now)
    check(session, task_dir, workdir)


def changes(session: Session, task_dir: Path, workdir: Path) -> list[str]:
    """What differs from either seal (nothing when there is none, or when the worktree is gone altogether: that
    is a lost workspace, which the work step reports as such, and no git runs on it)."""
    if not os.path.lexists(workdir / '.git'):
        return []
    for sealed in (state.read_json(task_dir / SEAL), session.git_seals.get(str(workdir))):
        # Not the identity of the worktree's own `.git` file: codex-orch re-creates a deleted worktree, and one
        # a worker replaced is not a valid worktree any more, which no commit passes (git.worktree_valid).
        changed = [n for n in git.control_changes(workdir, sealed) if n != '.git'] if sealed else []
        if changed:
            return changed
    return []


def broken(session: Session, task_dir: Path, workdir: Path) -> bool:
    return bool(changes(session, task_dir, workdir))


def check(session: Session, task_dir: Path, workdir: Path) -> None:
    """Fail the task (nothing staged, no git run on the worktree) when the configuration differs from a seal."""
    changed = changes(session, task_dir, workdir)
    if changed:
        shown = ', '.join(changed)
        raise fail(task_dir, f'git-config-changed: {shown} of the repository changed while a worker ran: a filter or '
                             'diff driver there runs whenever git reads the worktree (codex-orch\'s git and yours), '
                             'outside the worker\'s sandbox. Nothing was staged. Inspect and remove it before running '
                             'git in this repository (git config --list --show-origin --local); then delete '
                             f'{task_dir / SEAL} and resume')


def unseal(task_dir: Path) -> None:
    """The task's result is written: its seal is done with."""
    (task_dir / SEAL).unlink(missing_ok=True)
