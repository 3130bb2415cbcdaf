"""`codex-orch clean --run-id ID [--keep-branches] [--force]`: remove a run's worktrees and branches.

Worktrees go (also those whose directory was deleted by hand: git's record of them is pruned),
except one with uncommitted changes unless --force. Branches go unless --keep-branches, except a
branch with commits not merged into the base branch (its current tip; the recorded base commit if
the branch is gone) unless --force, and never a branch checked out somewhere. The run directory
(results, reports, logs) stays: `codex-orch prune` deals with those.
"""
from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from orch import output
from orch.adapters import git
from orch.commands.common import checkouts_root, find_repo, run_branches, run_worktrees, worktree_root
from orch.errors import LockedError
from orch.runstate.lock import RunLock, holder_pid
from orch.runstate.runs import RunInfo, load_run, run_dir


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser('clean', help="remove a run's worktrees and merged branches (its results stay)")
    p.add_argument('--run-id', required=True, help='the run to clean')
    p.add_argument('--keep-branches', action='store_true', help='remove only the worktrees')
    p.add_argument('--force', action='store_true',
                   help='also remove worktrees with uncommitted changes and branches with unmerged commits')


def clean(args: argparse.Namespace) -> int:
    repo = find_repo()
    info = load_run(repo, args.run_id)
    rdir = run_dir(repo, info.run_id)
    pid = holder_pid(rdir)
    if pid is not None:
        raise LockedError(f'run {info.run_id} is in use by a live process (PID {pid}); wait for it to finish or '
                          'stop it, then clean. Nothing was changed.')
    with RunLock(rdir):
        worktrees = run_worktrees(repo, info.run_id)
        _remove_worktrees(repo, info, worktrees, force=args.force)
        if not args.keep_branches:
            _delete_branches(repo, info, run_branches(repo, info, worktrees), force=args.force)
    output.write_line(f'kept the run directory {_show(repo, rdir)} (results, reports, logs)')
    return 0


def _remove_worktrees(repo: Path, info: RunInfo, worktrees: list[git.WorktreeInfo], *, force: bool) -> None:
    """Remove the run's worktrees (a dirty one only with force); prune records of ones deleted by hand."""
    gone = []
    for wt in worktrees:
        path = Path(wt['path'])
        if wt['prunable'] or not path.exists():
            gone.append(path)
            continue
        dirty = git.changed_paths(path)
        if dirty and not force:
            shown = ', '.join(dirty[:5]) + (f' and {len(dirty) - 5} more' if len(dirty) > 5 else '')
            output.write_line(f'kept worktree {_show(repo, path)}: it has uncommitted changes ({shown}); '
                              'commit or discard them, or use --force')
            continue
        git.remove_worktree(repo, path, force=force)
        output.write_line(f'removed worktree {_show(repo, path)}')
    if gone:
        git.prune_worktrees(repo)
        for path in gone:
            output.write_line(f'removed the record of worktree {_show(repo, path)} (its directory was already gone)')
    _remove_empty_dirs(worktree_root(repo, info.run_id).resolve())
    _remove_empty_dirs(checkouts_root(repo, info.run_id).resolve())


def _remove_empty_dirs(root: Path) -> None:
    if not root.is_dir():
        return
    for path in sorted((p for p in root.rglob('*') if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            path.rmdir()
    with contextlib.suppress(OSError):
        root.rmdir()


def _delete_branches(repo: Path, info: RunInfo, names: list[str], *, force: bool) -> None:
    base_name, base = _base(repo, info)
    for branch in names:
        if git.branch_tip(repo, branch) is None:
            continue
        where = git.worktree_of_branch(repo, branch)
        if where is not None:
            output.write_line(f'kept branch {branch}: it is checked out in {where}')
            continue
        ahead = git.unmerged_commits(repo, f'refs/heads/{branch}', base)
        if ahead and not force:
            output.write_line(f'kept branch {branch}: {ahead} commit(s) not merged into {base_name} (merge them, e.g. '
                              f'codex-orch merge --run-id {info.run_id} --allow-automerge, or use --force)')
            continue
        if git.delete_branch(repo, branch, base=base, force=force):
            extra = f' ({ahead} unmerged commit(s) dropped: --force)' if ahead else ''
            output.write_line(f'deleted branch {branch}{extra}')
        else:
            output.write_line(f'kept branch {branch}: it changed while clean ran; run clean again')



def _base(repo: Path, info: RunInfo) -> tuple[str, str]:
    """What 'merged' means: the base branch's current tip, or the recorded base commit without one."""
    if info.base_branch and git.branch_tip(repo, info.base_branch) is not None:
        return info.base_branch, f'refs/heads/{info.base_branch}'
    return f'the base commit {info.base_commit[:12]}', info.base_commit



def _show(repo: Path, path: Path) -> str:
    try:
        return Path(path).resolve().relative_to(repo.resolve()).as_posix()
    except ValueError:
        return str(path)

