"""Worktrees: where the repository is, which branch a worktree has, making, listing and removing them."""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TypedDict

from orch.adapters.git.gitfiles import worktree_branches
from orch.adapters.git.run import (
    check_name,
    commit_arg,
    detached_head_of,
    forget,
    git_version,
    locate,
    pin,
    ref_sha,
    rev_parse,
    run,
    trust,
)
from orch.errors import GitError


class WorktreeInfo(TypedDict):
    path: Path
    head: str | None
    branch: str | None  # short name; None when detached or bare
    detached: bool
    bare: bool
    locked: bool
    prunable: bool  # its directory is gone; `prune_worktrees` drops the record


def repo_root(path: Path) -> Path:
    """The top of the repository's main working tree, also when `path` is inside a linked worktree."""
    loc = locate(path)
    trust(path)   # the repository codex-orch runs in: its task checkouts are pinned to it (run.own_worktree)
    if loc.is_main:
        return loc.toplevel
    main = list_worktrees(loc.toplevel)[0]  # git always lists the main worktree first
    if main['bare']:
        raise GitError(f'{path} belongs to a bare repository ({main["path"]}); run codex-orch in a normal clone.')
    return main['path']


def current_branch(root: Path) -> str | None:
    res = run(root, 'symbolic-ref', '--quiet', 'HEAD', ok=(0, 1))
    return res.text.removeprefix('refs/heads/') if res.status == 0 else None


def head_state(worktree: Path) -> tuple[str | None, str]:
    """(branch checked out, or None when HEAD is detached; the commit HEAD is at) of a worktree."""
    detached = detached_head_of(worktree)
    if detached is not None:
        return None, detached
    return current_branch(worktree), rev_parse(worktree, 'HEAD')


def branch_tip(root: Path, branch: str) -> str | None:
    """The commit `branch` points at, or None when there is no such branch (never a same-named tag)."""
    return ref_sha(root, f'refs/heads/{branch}')


# --- worktrees -----------------------------------------------------------------------------------

def worktree_valid(path: Path) -> bool:
    """Whether `path` is the top of a working tree git recognises."""
    try:
        return locate(path).toplevel == Path(path).resolve()
    except GitError:
        return False


def ensure_worktree(root: Path, path: Path, branch: str, start_commit: str) -> bool:
    """Make `path` a worktree on `branch`, creating the branch at `start_commit` if it is new.

    Idempotent. An existing branch keeps its tip (a worktree deleted by hand comes back with the work
    committed on it, not reset to `start_commit`). Returns True if something was created.
    """
    path = Path(path).resolve()
    check_name(branch, 'branch name')
    if worktree_valid(path):
        _check_existing_worktree(root, path, branch)
        pin(path)
        return False
    forget(path)
    trust(root)   # its checkouts are this repository's (run.own_worktree)
    prune_worktrees(root)  # a record whose directory was deleted would block `worktree add`
    hint = (f'Check that {branch} is not checked out in another worktree and that {path} is free '
            '(move it away if it is not a worktree), then retry.')
    if ref_sha(root, f'refs/heads/{branch}') is not None:
        run(root, 'worktree', 'add', str(path), branch, hint=hint)
    else:
        start = rev_parse(root, start_commit)
        run(root, 'worktree', 'add', '--no-track', '-b', branch, str(path), start, hint=hint)
    pin(path)   # before anything else may write its .git
    return True


def _check_existing_worktree(root: Path, path: Path, branch: str) -> None:
    loc, root_loc = locate(path), locate(root)
    if loc.common_dir != root_loc.common_dir or loc.is_main:
        raise GitError(f'{path} is not a worktree of the repository at {root}; move it away and retry.')
    actual = current_branch(path)
    if actual != branch:
        raise GitError(
            f'worktree {path} has {actual or "a detached HEAD"} checked out, not {branch}; '
            'remove it (codex-orch clean) and retry.')


def list_worktrees(root: Path) -> list[WorktreeInfo]:
    """Every worktree of the repository, the main one first."""
    if _worktree_list_has_z():
        return _parse_worktrees(os.fsdecode(run(root, 'worktree', 'list', '--porcelain', '-z').out), '\0')
    return _parse_worktrees(os.fsdecode(run(root, 'worktree', 'list', '--porcelain').out), '\n')


@functools.lru_cache(maxsize=1)
def _worktree_list_has_z() -> bool:
    return git_version() >= (2, 36)  # -z keeps paths with newlines intact


def _parse_worktrees(text: str, sep: str) -> list[WorktreeInfo]:
    result: list[WorktreeInfo] = []
    for record in text.split(sep * 2):
        attrs = dict(line.partition(' ')[::2] for line in record.split(sep) if line)
        if 'worktree' not in attrs:
            continue
        path = Path(attrs['worktree'])
        branch = attrs.get('branch')
        result.append(WorktreeInfo(
            path=path, head=attrs.get('HEAD'),
            branch=branch.removeprefix('refs/heads/') if branch else None,
            detached='detached' in attrs, bare='bare' in attrs, locked='locked' in attrs,
            # git < 2.31 has no 'prunable' annotation; a missing directory means the same.
            prunable='prunable' in attrs or not path.exists(),
        ))
    return result


def prune_worktrees(root: Path) -> None:
    run(root, 'worktree', 'prune')


def snapshot_worktree(root: Path, path: Path, commit: str) -> None:
    """A throw-away detached worktree at `commit` (what a gate tests when others changed the shared one)."""
    path = Path(path).resolve()
    forget(path)
    trust(root)   # its checkouts are this repository's (run.own_worktree)
    if path.exists() or any(Path(w['path']) == path for w in list_worktrees(root)):
        remove_worktree(root, path, force=True)
    prune_worktrees(root)
    run(root, 'worktree', 'add', '--detach', str(path), commit_arg(root, commit),
        hint=f'Remove {path} and retry.')
    pin(path)   # before anything else may write its .git


def remove_worktree(root: Path, path: Path, *, force: bool = False) -> None:
    """Remove a worktree, also when its directory was already deleted by hand.

    Without `force`, git refuses a worktree with uncommitted or untracked files.
    """
    path = Path(path).resolve()
    forget(path)
    if not path.exists():
        prune_worktrees(root)
        return
    run(root, 'worktree', 'remove', *(['--force'] if force else []), str(path),
        hint=f'Commit or discard the changes in {path}, or remove it with force, then retry.')


def worktree_of_branch(root: Path, branch: str) -> Path | None:
    """The worktree (main checkout included) that has `branch` checked out, if any."""
    for wt in list_worktrees(root):
        if wt['branch'] == branch:
            return wt['path']
    return None


def live_worktree_of_branch(root: Path, branch: str) -> Path | None:
    """The checkout that has `branch` checked out and still exists, if any: asked at every landing, and read from
    git's worktree records when they are plain (gitfiles.worktree_branches). GitError when more than one has it
    (`git worktree add --force`): moving the branch would change the files under all but one of them."""
    listed = worktree_branches(locate(root).common_dir)
    if listed is not None:
        found = [path for path, on, prunable in listed if on == branch and not prunable]
    else:
        found = [wt['path'] for wt in list_worktrees(root) if wt['branch'] == branch and not wt['prunable']]
    if len(found) > 1:
        raise GitError(f'the branch {branch} is checked out in {len(found)} places ({", ".join(map(str, found))}); '
                       'check out another branch in all but one of them, then retry (nothing was changed)')
    return found[0] if found else None
