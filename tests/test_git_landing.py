"""The git side of landing, on real repositories: replaying a task's commits onto a moved tip, putting conflicting
work on it uncommitted, moving the run's branch with its worktree following, never the user's checkout."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from orch.adapters import git as og
from orch.errors import GitError
from tests.support.gitrepo import commit_all, git, isolate_git, make_repo


@pytest.fixture(autouse=True)
def _isolated_git(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate_git(monkeypatch, tmp_path)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path, {'a.txt': 'a\n', 'shared.txt': 'base\n'})


def task_commit(checkout: Path, files: dict[str, str], msg: str) -> str:
    for name, text in files.items():
        (checkout / name).write_text(text)
    return commit_all(checkout, msg)


def test_a_clean_replay_keeps_each_commit_and_a_conflict_comes_back_uncommitted(repo: Path, tmp_path: Path) -> None:
    base = git(repo, 'rev-parse', 'HEAD')
    one, two = tmp_path / 'one', tmp_path / 'two'
    og.add_checkout(repo, one, base)
    og.add_checkout(repo, two, base)
    landed = task_commit(one, {'shared.txt': 'theirs\n'}, 'one')
    git(repo, 'update-ref', 'refs/heads/run', landed)
    task_commit(two, {'b.txt': 'b\n'}, 'two: b')
    head = task_commit(two, {'shared.txt': 'mine\n'}, 'two: shared')
    assert not og.replay_onto(two, landed, base)              # conflicts: aborted, nothing changed
    assert git(two, 'rev-parse', 'HEAD') == head and git(two, 'status', '--porcelain') == ''
    assert og.squash_onto(two, landed, head) == ['shared.txt']
    assert git(two, 'rev-parse', 'HEAD') == landed
    assert '<<<<<<<' in (two / 'shared.txt').read_text() and (two / 'b.txt').read_text() == 'b\n'
    # a clean one keeps every commit, message and author
    three = tmp_path / 'three'
    og.add_checkout(repo, three, base)
    task_commit(three, {'c.txt': 'c\n'}, 'three: c')
    task_commit(three, {'d.txt': 'd\n'}, 'three: d')
    assert og.replay_onto(three, landed, base)
    assert git(three, 'log', '--format=%s', f'{landed}..HEAD').splitlines() == ['three: d', 'three: c']


def test_a_replay_a_kill_interrupted_is_undone(repo: Path, tmp_path: Path) -> None:
    base = git(repo, 'rev-parse', 'HEAD')
    one, two = tmp_path / 'one', tmp_path / 'two'
    og.add_checkout(repo, one, base)
    og.add_checkout(repo, two, base)
    landed = task_commit(one, {'shared.txt': 'theirs\n'}, 'one')
    head = task_commit(two, {'shared.txt': 'mine\n'}, 'two')
    subprocess.run(['git', '-C', str(two), '-c', 'user.name=a', '-c', 'user.email=a@b', 'rebase', '--onto', landed,
                    base], capture_output=True, check=False)   # stops at the conflict: a rebase in progress
    assert 'rebase' in git(two, 'status')
    og.abort_replay(two)
    assert git(two, 'rev-parse', 'HEAD') == head and git(two, 'status', '--porcelain') == ''


def test_the_run_s_branch_never_moves_the_user_s_checkout(repo: Path, tmp_path: Path) -> None:
    base = git(repo, 'rev-parse', 'HEAD')
    git(repo, 'branch', 'run', base)
    git(repo, 'checkout', '-q', 'run')                       # the user checked the run's branch out at home
    one = tmp_path / 'one'
    og.add_checkout(repo, one, base)
    new = task_commit(one, {'x.txt': 'x\n'}, 'one')
    with pytest.raises(GitError, match='never changes'):
        og.advance_branch(repo, 'run', base, new, follower=tmp_path / 'run-worktree')
    assert git(repo, 'rev-parse', 'run') == base and not (repo / 'x.txt').exists()


def test_a_branch_checked_out_twice_moves_neither_checkout(repo: Path, tmp_path: Path) -> None:
    """The run's branch in its worktree and, forced, in a second checkout of the user's: moving it would change the
    files under one of them, whichever git lists first. Nothing moves; the same for the merge's fast-forward."""
    base = git(repo, 'rev-parse', 'HEAD')
    wt = tmp_path / 'run-worktree'
    og.ensure_worktree(repo, wt, 'run', base)
    for name in ('a-user', 'z-user'):   # listed before and after the run's own
        other = tmp_path / name
        git(repo, 'worktree', 'add', '-q', '--force', str(other), 'run')
        one = tmp_path / f'one-{name}'
        og.add_checkout(repo, one, base)
        new = task_commit(one, {'x.txt': 'x\n'}, 'one')
        with pytest.raises(GitError, match='checked out in 2 places'):
            og.advance_branch(repo, 'run', base, new, follower=wt)
        with pytest.raises(GitError, match='checked out in 2 places'):
            og.fast_forward(repo, 'run', new)
        assert git(repo, 'rev-parse', 'run') == base
        assert not (wt / 'x.txt').exists() and not (other / 'x.txt').exists()
        git(repo, 'worktree', 'remove', '--force', str(other))


def _moved_by_git(repo: Path, branch: str) -> Path | None:
    found = [w['path'] for w in og.list_worktrees(repo) if w['branch'] == branch and not w['prunable']]
    return found[0] if found else None


def test_a_checkout_on_a_symlinked_symbolic_ref_of_the_branch_is_never_moved_under(repo: Path, tmp_path: Path) -> None:
    """With core.preferSymlinkRefs, `git symbolic-ref` writes refs/heads/alias as a symlink whose text is
    refs/heads/run: for git a checkout on `alias` has `run` checked out. Moving `run` then fast-forwards that
    checkout's files, never its HEAD alone."""
    base = git(repo, 'rev-parse', 'HEAD')
    git(repo, 'branch', 'run')
    git(repo, '-c', 'core.preferSymlinkRefs=true', 'symbolic-ref', 'refs/heads/alias', 'refs/heads/run')
    assert (repo / '.git' / 'refs' / 'heads' / 'alias').is_symlink()
    git(repo, 'checkout', '-q', 'alias')
    assert _moved_by_git(repo, 'run') == repo
    one = tmp_path / 'one'
    og.add_checkout(repo, one, base)
    new = task_commit(one, {'x.txt': 'x\n'}, 'x')
    og.fast_forward(repo, 'run', new)
    assert git(repo, 'rev-parse', 'HEAD') == new and (repo / 'x.txt').exists()
    assert git(repo, 'status', '--porcelain') == ''


def test_a_checkout_whose_dot_git_is_a_dangling_symlink_still_has_its_branch(repo: Path, tmp_path: Path) -> None:
    """git tests a checkout's .git with lstat: one that is a dangling symlink is there, and the checkout is not
    prunable. Its branch is the user's: a landing never moves it (whoever can write a checkout can do this)."""
    other = tmp_path / 'other'
    git(repo, 'worktree', 'add', '-q', '-b', 'feat', str(other))
    (other / '.git').unlink()
    (other / '.git').symlink_to(tmp_path / 'nowhere')
    assert _moved_by_git(repo, 'feat') == other.resolve()
    base = git(repo, 'rev-parse', 'HEAD')
    one = tmp_path / 'one'
    og.add_checkout(repo, one, base)
    new = task_commit(one, {'x.txt': 'x\n'}, 'x')
    with pytest.raises(GitError, match='never changes'):
        og.advance_branch(repo, 'feat', base, new, follower=tmp_path / 'run-worktree')
    assert git(repo, 'rev-parse', 'feat') == base


def test_the_run_s_worktree_follows_or_stays_behind_keeping_the_user_s_change(repo: Path, tmp_path: Path) -> None:
    base = git(repo, 'rev-parse', 'HEAD')
    wt = tmp_path / 'run-worktree'
    og.ensure_worktree(repo, wt, 'run', base)
    one = tmp_path / 'one'
    og.add_checkout(repo, one, base)
    first = task_commit(one, {'x.txt': 'x\n'}, 'one')
    (wt / 'notes.txt').write_text('mine\n')                  # unrelated: kept, the worktree follows
    assert og.advance_branch(repo, 'run', base, first, follower=wt) is None
    assert (wt / 'x.txt').exists() and (wt / 'notes.txt').read_text() == 'mine\n'
    second = task_commit(one, {'a.txt': 'theirs\n'}, 'two')
    (wt / 'a.txt').write_text('my edit\n')                   # the landing would overwrite it: it stays behind
    note = og.advance_branch(repo, 'run', first, second, follower=wt)
    assert note is not None and 'detached' in note
    assert git(repo, 'rev-parse', 'run') == second
    assert (wt / 'a.txt').read_text() == 'my edit\n' and git(wt, 'rev-parse', 'HEAD') == first
    with pytest.raises(og.BranchMoved):
        og.advance_branch(repo, 'run', first, second, follower=wt)


def test_a_conflicted_path_a_worker_replaced_is_never_followed_or_read_whole(tmp_path: Path) -> None:
    from orch.steps.landing import marked_files
    work = tmp_path / 'co'
    work.mkdir()
    (work / 'clean.txt').write_text('resolved\n')
    (work / 'marked.txt').write_text('a\n<<<<<<< HEAD\nb\n')
    (tmp_path / 'outside.txt').write_text('resolved elsewhere\n')
    (work / 'link.txt').symlink_to(tmp_path / 'outside.txt')   # a link to a clean file is no resolution
    os.mkfifo(work / 'fifo.txt')                                # reading it would hang
    names = ['clean.txt', 'marked.txt', 'link.txt', 'fifo.txt', 'gone.txt']
    assert marked_files(work, names) == ['marked.txt', 'link.txt', 'fifo.txt']
