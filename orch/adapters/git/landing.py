"""A task's private checkout (a detached worktree) and landing its commits on the run's branch: replaying them
onto a tip that moved, or putting them there uncommitted when they conflict, and moving the branch with the
worktree that has it checked out following without ever overwriting a change of the user's."""
from __future__ import annotations

import contextlib
import os
import re
import shlex
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from orch.adapters.git.changes import empty_filled_submodules, unmerged_paths
from orch.adapters.git.checkouts import head_state, live_worktree_of_branch, snapshot_worktree
from orch.adapters.git.commits import is_ancestor
from orch.adapters.git.run import (
    check_name,
    commit_arg,
    failure,
    forget,
    identity_env,
    known_location,
    locate,
    moved,
    own_worktree,
    pin,
    ref_sha,
    repo_lock,
    run,
    trust,
)
from orch.errors import GitError

# Settings for replaying a task's commits: nothing from the user's config may stash, rewrite other
# branches, reuse recorded resolutions or open an editor behind codex-orch's back.
_REPLAY_CONFIG = ('-c', 'rebase.autoStash=false', '-c', 'rebase.updateRefs=false', '-c', 'rebase.autoSquash=false',
                  '-c', 'rerere.enabled=false', '-c', 'merge.autoStash=false', '-c', 'pull.rebase=false')


class BranchMoved(GitError):
    """The branch was not where the caller saw it (someone committed meanwhile): look again and retry."""


@contextlib.contextmanager
def _union_attributes(paths: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    """`-c core.attributesFile=...` giving `paths` the union merge driver (append-only logs: both sides'
    lines are kept). The repository's own attributes still win, as git orders them."""
    if not paths:
        yield ()
        return
    with tempfile.NamedTemporaryFile('w', prefix='codex-orch-attributes-', encoding='utf-8') as f:
        for path in paths:
            # A pattern from the root, with its special characters escaped (gitattributes reads them as globs).
            escaped = re.sub(r'([*?\[\\ ])', r'\\\1', PurePosixPath(path).as_posix())
            f.write(f'/{escaped} merge=union\n')
        f.flush()
        yield ('-c', f'core.attributesFile={f.name}')


def add_checkout(root: Path, path: Path, commit: str) -> None:
    """A task's private checkout: a detached worktree at `commit` (any old one at `path` is removed first)."""
    snapshot_worktree(root, path, commit)


def move_checkout(worktree: Path, commit: str) -> None:
    """Point a clean codex-orch checkout's detached HEAD at `commit`, its files following."""
    loc = own_worktree(worktree, 'move')
    with repo_lock(loc.common_dir):
        run(worktree, 'checkout', '--quiet', '--detach', commit_arg(worktree, commit),
             hint=f'Discard the changes in {worktree} (codex-orch clean), then resume.')


def abort_replay(worktree: Path) -> None:
    """A replay a kill interrupted (a rebase in progress) is undone: HEAD back where it was before it."""
    loc = own_worktree(worktree, 'replay commits in')
    if (loc.git_dir / 'rebase-merge').exists() or (loc.git_dir / 'rebase-apply').exists():
        with repo_lock(loc.common_dir):
            run(worktree, 'rebase', '--abort', ok=(0, 1, 128))


def replay_onto(worktree: Path, onto: str, upstream: str, *, union: tuple[str, ...] = ()) -> bool:
    """Rebase the commits `upstream..HEAD` of a clean, detached codex-orch checkout onto `onto`, keeping each
    commit's message and author. False on a conflict: then nothing changed (the rebase was aborted)."""
    loc = own_worktree(worktree, 'replay commits in')
    env = identity_env(worktree, None)
    with repo_lock(loc.common_dir), _union_attributes(union) as attrs:
        res = run(worktree, *_REPLAY_CONFIG, *attrs, 'rebase', '--quiet', '--no-autosquash',
                   '--onto', check_name(onto, 'commit'), check_name(upstream, 'commit'), ok=(0, 1), env=env)
        if res.status == 0:
            return True
        run(worktree, 'rebase', '--abort', ok=(0, 1, 128))
        return False


def squash_onto(worktree: Path, onto: str, head: str, *, union: tuple[str, ...] = ()) -> list[str]:
    """Reset a codex-orch checkout to `onto`, then put the changes of `head` since the commit it shares with
    `onto` there, three-way merged and uncommitted (nothing staged). Returns the paths that conflict: their
    files hold git's conflict markers (or, for a file one side deleted, the other side's content)."""
    loc = own_worktree(worktree, 'replay changes in')
    env = identity_env(worktree, None)
    with repo_lock(loc.common_dir), _union_attributes(union) as attrs:
        run(worktree, 'reset', '--quiet', '--hard', check_name(onto, 'commit'))
        run(worktree, 'clean', '-f', '-f', '-d', '--quiet')
        res = run(worktree, *_REPLAY_CONFIG, *attrs, 'merge', '--squash', '--no-verify', '--quiet',
                   check_name(head, 'commit'), ok=(0, 1), env=env)
        conflicts = unmerged_paths(worktree)
        if res.status != 0 and not conflicts:
            run(worktree, 'reset', '--quiet', '--hard', onto)
            raise GitError(failure(res.argv, res.status, res.err or os.fsdecode(res.out),
                                    f'The work of {head[:12]} cannot be replayed onto {onto[:12]}.'))
        run(worktree, 'reset', '--quiet')   # unstaged: the worker resolves files, codex-orch commits them
        return conflicts


def same_as_commit(worktree: Path, commit: str, paths: list[str]) -> list[str]:
    """Which of `paths` are in `worktree`'s files exactly as `commit` has them (both absent counts as the same).
    A conflict git resolves without markers (a `-merge` or `merge=binary` attribute) leaves the tip's version:
    while a path is that, the task's own change to it is not there."""
    out = []
    for path in paths:
        in_commit = run(worktree, '--literal-pathspecs', 'ls-tree', '--name-only', check_name(commit, 'commit'),
                        '--', path).text != ''
        on_disk = os.path.lexists(Path(worktree) / path)
        if not in_commit:
            same = not on_disk
        else:
            same = on_disk and run(worktree, '--literal-pathspecs', 'diff', '--quiet', '--no-ext-diff',
                                   '--no-textconv', commit, '--', path, ok=(0, 1)).status == 0
        if same:
            out.append(path)
    return out


def advance_branch(root: Path, branch: str, old: str, new: str, *, follower: Path) -> str | None:
    """Move `branch` from `old` to its descendant `new`. When `follower` (the run's own worktree) has it checked
    out, it follows with a fast-forward, which keeps uncommitted changes in other files; when it cannot (a change
    of the user's would be overwritten) it is left detached where it was, its changes untouched, and the reason is
    returned. Any other checkout of the branch (the user's own) is never touched: GitError, nothing moved.
    Raises BranchMoved when the branch is not at `old` (someone committed on it meanwhile)."""
    ref = f'refs/heads/{check_name(branch, "branch name")}'
    with repo_lock(locate(root).common_dir):
        if ref_sha(root, ref) != old:
            raise BranchMoved(f'{branch} moved while codex-orch was landing a commit on it; retry.')
        checkout = live_worktree_of_branch(root, branch)
        if checkout is not None and Path(checkout).resolve() != Path(follower).resolve():
            raise GitError(f'the run\'s branch {branch} is checked out in {checkout}, which codex-orch never changes; '
                           'check out another branch there, then resume (nothing was landed)')
        note = None
        if checkout is not None:
            res = run(checkout, *_REPLAY_CONFIG, 'merge', '--ff-only', '--quiet', '--no-verify',
                       check_name(new, 'commit'), ok=(0, 1, 128))
            if res.status == 0:
                return None
            # Its HEAD stays at `old` with the user's changes, off the branch, which then moves on alone.
            run(checkout, 'checkout', '--quiet', '--detach')
            detail = ' '.join((res.err or os.fsdecode(res.out)).split())[:300]
            note = (f'{checkout} stays at {old[:12]} (detached), because updating it to the run\'s tip would '
                    f'overwrite uncommitted changes there ({detail}); commit or stash them, then '
                    f'`git -C {shlex.quote(str(checkout))} checkout {shlex.quote(branch)}`')
        run(root, 'update-ref', '-m', f'codex-orch: land {new[:12]}', ref, new, old,
             hint=f'{branch} moved while codex-orch was landing a commit on it; retry.')
        return note


def reattach(worktree: Path, branch: str) -> bool:
    """Put a detached worktree back on `branch` when its HEAD is behind the branch and the switch keeps every
    uncommitted change (git refuses one that would not); whether it is on the branch now."""
    on, head = head_state(worktree)
    if on is not None:
        return on == branch
    tip = ref_sha(worktree, f'refs/heads/{check_name(branch, "branch name")}')
    if tip is None or not is_ancestor(worktree, head, tip):
        return False
    with repo_lock(locate(worktree).common_dir):
        res = run(worktree, 'checkout', '--quiet', branch, ok=(0, 1))
    return res.status == 0


def move_worktree(root: Path, source: Path, target: Path) -> None:
    """Move a linked worktree (`git worktree move`): a rename and a record update, however big its tree. Never into
    an existing `target` (git would move it inside, as `target/<name>`): GitError."""
    if os.path.lexists(target):
        raise GitError(f'cannot move the worktree {source} to {target}: something is there already; remove it and '
                       'retry.')
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    known = known_location(source)
    forget(source)
    forget(target)
    trust(root)
    run(root, 'worktree', 'move', str(Path(source).resolve()), str(Path(target).resolve()),
        hint=f'Remove {target} (or {source}) and retry.')
    moved(source, target, known)
    pin(target)


def reset_checkout(worktree: Path, commit: str) -> None:
    """A reused codex-orch checkout made as good as new at `commit`: every change and every untracked or ignored
    file of its previous task gone, its detached HEAD at `commit`, only the files that differ rewritten."""
    abort_replay(worktree)   # a rebase its task left half done
    loc = own_worktree(worktree, 'reset')
    with repo_lock(loc.common_dir):
        empty_filled_submodules(worktree)   # `clean` keeps what is in a submodule's directory
        run(worktree, 'clean', '-f', '-f', '-d', '-x', '--quiet')
        # A forced checkout throws away every change to tracked and staged files on its way, and detaches HEAD
        # whatever it was on: never a reset to the commit, which would move a branch a worker switched it to.
        target = commit_arg(worktree, commit)
        if run(worktree, 'checkout', '--quiet', '--force', '--detach', target, ok=(0, 1, 128)).status != 0:
            # An index entry marked assume-unchanged or skip-worktree stops it: reset in place first (to HEAD
            # itself, so no branch moves).
            run(worktree, 'reset', '--quiet', '--hard')
            run(worktree, 'checkout', '--quiet', '--force', '--detach', target)
