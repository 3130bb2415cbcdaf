"""Merging: task branches into a worktree, fast-forwarding the base branch, deleting merged branches."""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from orch.adapters.git.changes import is_dirty, status_entries, unmerged_paths
from orch.adapters.git.checkouts import live_worktree_of_branch, worktree_of_branch
from orch.adapters.git.commits import is_ancestor, unmerged_commits
from orch.adapters.git.run import (
    Result,
    check_name,
    failure,
    identity_env,
    locate,
    own_worktree,
    ref_sha,
    repo_lock,
    rev_parse,
    run,
)
from orch.errors import GitError


def merge_into_worktree(worktree: Path, branches: list[str], message: str, *,
                        union: tuple[str, ...] = ()) -> list[str]:
    """Merge `branches` one by one into a clean worktree's HEAD with --no-ff.

    Returns [] on success. On a conflict everything is rolled back to the starting HEAD, the worktree
    is left clean, and the sorted conflicting paths are returned. A conflict only in `union` paths
    (append-only logs such as the decisions file) is resolved by keeping both sides' lines.
    """
    worktree = Path(worktree)
    with _merging(worktree) as env:
        start = rev_parse(worktree, 'HEAD')
        try:
            for branch in branches:
                conflicts = _merge_one(worktree, branch, message, env, union)
                if conflicts:
                    _restore(worktree, start)
                    return conflicts
        except GitError:
            _restore(worktree, start)
            raise
    return []


@contextlib.contextmanager
def _merging(worktree: Path) -> Iterator[dict[str, str]]:
    """Under the repository's lock, a clean codex-orch worktree to merge into; yields the identity environment."""
    loc = own_worktree(worktree, 'merge into')
    env = identity_env(worktree, None)
    with repo_lock(loc.common_dir):
        if is_dirty(worktree):
            raise GitError(f'cannot merge into {worktree}: it has uncommitted changes; commit or discard them first.')
        yield env


def _require_merge_started(worktree: Path, branch: str, res: Result) -> None:
    if ref_sha(worktree, 'MERGE_HEAD') is None:  # failed before merging anything: not a conflict
        raise GitError(failure(res.argv, res.status, res.err or os.fsdecode(res.out),
                               f'Check that {branch} exists and that the merge can run in {worktree}.'))


def _merge_one(worktree: Path, branch: str, message: str, env: Mapping[str, str],
               union: tuple[str, ...] = ()) -> list[str]:
    res = run(worktree, 'merge', '--no-ff', '--no-edit', '--no-verify', '--quiet', '-m', message,
              check_name(branch, 'branch name'), ok=(0, 1), env=env)
    if res.status == 0:
        return []
    _require_merge_started(worktree, branch, res)
    conflicts = unmerged_paths(worktree)
    if conflicts and set(conflicts) <= set(union) and all(_union_resolve(worktree, p) for p in conflicts):
        run(worktree, 'commit', '--quiet', '--no-verify', '--no-edit', '--cleanup=strip', env=env)
        return []
    return conflicts


def _union_resolve(worktree: Path, path: str) -> bool:
    """Resolve a conflicted file with the lines of both sides (`git merge-file --union`) and stage it."""
    res = run(worktree, 'checkout-index', '--stage=all', '--temp', '--', path)
    temps = [None if t == '.' else worktree / t for t in res.text.partition('\t')[0].split(' ')]
    try:
        base, ours, theirs = temps
        if ours is None or theirs is None:   # deleted on one side: not a log both appended to
            return False
        run(worktree, 'merge-file', '--union', '-q', str(ours), str(base or os.devnull), str(theirs))
        os.replace(ours, worktree / path)
        run(worktree, '--literal-pathspecs', 'add', '--', path)
        return True
    finally:
        for temp in temps:
            if temp is not None:
                temp.unlink(missing_ok=True)


def _restore(worktree: Path, sha: str) -> None:
    # The worktree was clean before the merge, so anything now untracked came from the merge.
    run(worktree, 'reset', '--quiet', '--hard', sha)
    run(worktree, 'clean', '-f', '-d', '--quiet')


def fast_forward(root: Path, branch: str, to_sha: str) -> None:
    """Move `branch` to `to_sha` if that is a fast-forward; change nothing otherwise.

    A checked-out branch is moved with `merge --ff-only` in its worktree so the files follow; that
    worktree must be clean. A branch not checked out is moved with a compare-and-swap update-ref.
    """
    ref = f'refs/heads/{check_name(branch, "branch name")}'
    old = ref_sha(root, ref)
    if old is None:
        raise GitError(f'cannot fast-forward {branch}: no such branch in {root}; check the base branch name.')
    new = rev_parse(root, to_sha)
    if old == new:
        return
    if not is_ancestor(root, old, new):
        ahead = unmerged_commits(root, old, new)
        raise GitError(
            f'cannot fast-forward {branch} to {new[:12]}: the base has diverged ({branch} has {ahead} '
            f'commit(s) not in {new[:12]}). Merge {branch} into the run branch, or merge by hand, then retry.')
    with repo_lock(locate(root).common_dir):
        checkout = live_worktree_of_branch(root, branch)
        if checkout is None:
            run(root, 'update-ref', '-m', f'codex-orch: fast-forward {branch}', ref, new, old,
                hint=f'{branch} moved while codex-orch was updating it; run the merge again.')
            return
        _refuse_dirty_checkout(checkout, branch, old, new)
        run(checkout, 'merge', '--ff-only', '--quiet', new,
            hint=f'Nothing was changed; make {checkout} clean and run the merge again.')


def checkout_blockers(checkout: Path, old: str, new: str) -> tuple[list[str], list[str]]:
    """What stops a fast-forward of `checkout` from `old` to `new`: (tracked changes, untracked
    files the update would overwrite). Unrelated untracked files (a plan.json, an uncommitted
    .orchestrator/) do not block: a fast-forward never touches them."""
    entries = status_entries(checkout, submodules=True)   # the user's own checkout and submodules
    dirty = sorted({path for path, xy in entries if xy != '??'})
    untracked = {path for path, xy in entries if xy == '??'}
    incoming = run(checkout, 'diff', '--name-only', '-z', '--no-ext-diff', '--no-textconv', '--diff-filter=A',
                   old, new).out
    return dirty, sorted(p for p in map(os.fsdecode, incoming.split(b'\0')) if p in untracked)


def describe_blockers(branch: str, checkout: Path, dirty: list[str], clobbered: list[str]) -> str:
    problems = dirty + clobbered
    shown = ', '.join(problems[:10]) + (f' and {len(problems) - 10} more' if len(problems) > 10 else '')
    what = 'uncommitted changes' if dirty else 'untracked files the merge would overwrite'
    return (f'refusing to fast-forward {branch}: it is checked out in {checkout}, which has {what} '
            f'({shown}). Commit, move or stash them there, then run the merge again; nothing was changed.')


def _refuse_dirty_checkout(checkout: Path, branch: str, old: str, new: str) -> None:
    dirty, clobbered = checkout_blockers(checkout, old, new)
    if dirty or clobbered:
        raise GitError(describe_blockers(branch, checkout, dirty, clobbered))


def delete_branch(root: Path, branch: str, *, base: str, force: bool = False) -> bool:
    """Delete `branch` if it is fully merged into `base` (or `force`); never a checked-out branch.

    Returns False, changing nothing, when the branch is missing, checked out, or (without force)
    has commits not in `base`.
    """
    ref = f'refs/heads/{check_name(branch, "branch name")}'
    old = ref_sha(root, ref)
    if old is None or worktree_of_branch(root, branch) is not None:
        return False
    if not force and unmerged_commits(root, ref, base) > 0:
        return False
    # Compare-and-swap: if someone committed to the branch since the check, nothing is deleted.
    run(root, 'update-ref', '-d', ref, old, hint=f'{branch} moved while codex-orch was deleting it; retry.')
    return True


def start_merge(worktree: Path, branch: str, *, union: tuple[str, ...] = ()) -> list[str]:
    """Begin merging `branch` into a clean codex-orch worktree and leave it unfinished: the task's worker resolves
    what conflicts (its files hold git's markers), and codex-orch's next commit there concludes the merge, a merge
    commit with both parents. Conflicts only in `union` paths are resolved keeping both sides' lines. Returns the
    paths still conflicting."""
    worktree = Path(worktree)
    with _merging(worktree) as env:
        res = run(worktree, 'merge', '--no-ff', '--no-commit', '--no-verify', '--quiet',
                  check_name(branch, 'branch name'), ok=(0, 1), env=env)
        _require_merge_started(worktree, branch, res)
        conflicts = unmerged_paths(worktree)
        for path in conflicts:
            if path in union:
                _union_resolve(worktree, path)
        return [p for p in conflicts if p not in union]
