"""orch.adapters.git against real temporary repositories."""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from orch.adapters import git as og
from orch.adapters.git import run as git_run
from orch.core.text import display_path
from orch.errors import GitError
from tests.support.gitrepo import commit_all, file_tree, git, isolate_git, make_repo, snapshot, write_files

TRAILERS = {'Orch-Run': 'r1', 'Orch-Task': 't1'}


@pytest.fixture(autouse=True)
def _isolated_git(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate_git(monkeypatch, tmp_path)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path, {'README.md': 'hello\n', 'src/a.py': 'a = 1\n', '.gitignore': '*.log\n'})


@pytest.fixture
def wt(repo: Path, tmp_path: Path) -> Path:
    """A linked worktree on branch `work`, started from main."""
    path = tmp_path / 'wt'
    og.ensure_worktree(repo, path, 'work', 'main')
    return path.resolve()


def _committed(sha: str | None) -> str:
    assert sha is not None, 'expected a commit'
    return sha


def _message(repo: Path, sha: str) -> str:
    return git(repo, 'log', '-1', '--format=%B', sha)


# --- locating ------------------------------------------------------------------------------------

def test_repo_root_from_main_subdir_and_linked_worktree(repo: Path, wt: Path) -> None:
    assert og.repo_root(repo) == repo
    assert og.repo_root(repo / 'src') == repo
    assert og.repo_root(wt) == repo
    (wt / 'deep').mkdir()
    assert og.repo_root(wt / 'deep') == repo


def test_repo_root_outside_a_repository(tmp_path: Path) -> None:
    plain = tmp_path / 'plain'
    plain.mkdir()
    with pytest.raises(GitError, match=r'not a git repository: .*plain \(run codex-orch inside the repository\)'):
        og.repo_root(plain)
    with pytest.raises(GitError, match='not a git repository'):
        og.repo_root(tmp_path / 'missing')


def test_current_branch_rev_parse_and_version(repo: Path) -> None:
    head = git(repo, 'rev-parse', 'HEAD')
    assert og.current_branch(repo) == 'main'
    assert og.rev_parse(repo, 'main') == head
    assert og.rev_parse(repo, 'HEAD') == head
    git(repo, 'tag', '-a', '-m', 'annotated', 'v1')
    assert og.rev_parse(repo, 'v1') == head  # peeled to the commit
    git(repo, 'checkout', '--quiet', '--detach')
    assert og.current_branch(repo) is None
    version = og.git_version()
    assert len(version) >= 2 and all(isinstance(p, int) for p in version)


def test_a_detached_head_is_read_as_git_reads_it(repo: Path, tmp_path: Path) -> None:
    """A detached checkout's HEAD is read from its file (no git process); on a branch, or where the file names no
    commit, git is asked: the answers are git's in every case."""
    detached = tmp_path / 'detached'
    og.snapshot_worktree(repo, detached, 'main')
    assert og.detached_head(detached) == git(detached, 'rev-parse', 'HEAD') == og.rev_parse(detached, 'HEAD')
    assert og.head_state(detached) == (None, git(detached, 'rev-parse', 'HEAD'))
    write_files(detached, {'new.txt': 'new\n'})
    sha = _committed(og.commit(detached, message='more', trailers=TRAILERS))
    assert og.rev_parse(detached, 'HEAD') == sha == git(detached, 'rev-parse', 'HEAD')
    assert og.detached_head(repo) is None   # on a branch
    assert og.head_state(repo) == ('main', git(repo, 'rev-parse', 'HEAD'))
    assert og.detached_head(repo / 'src') is None   # not the top of a checkout: git finds the repository
    assert og.rev_parse(repo / 'src', 'HEAD') == git(repo, 'rev-parse', 'HEAD')
    git_dir = Path(git(detached, 'rev-parse', '--absolute-git-dir'))
    (git_dir / 'HEAD').write_text('ref: refs/heads/.invalid\n')   # what a reftable store keeps there
    assert og.detached_head(detached) is None
    main_head = repo / '.git' / 'HEAD'
    main_head.unlink()
    main_head.symlink_to('refs/heads/main')   # the old form of a HEAD on a branch
    assert og.detached_head(repo) is None
    assert og.head_state(repo) == ('main', git(repo, 'rev-parse', 'main'))


def test_a_branch_tip_is_read_as_git_reads_it(repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A branch's loose ref is read from its file (no git process); a packed, symbolic, damaged or special one is
    left to git: the answer is git's in every case, from the main checkout and from a linked one."""
    from orch.adapters.git.gitfiles import loose_branch
    started: list[list[str]] = []
    execute = git_run._execute

    def counting(argv: list[str], *args: Any, **kwargs: Any) -> Any:
        started.append(argv)
        return execute(argv, *args, **kwargs)
    monkeypatch.setattr(git_run, '_execute', counting)
    detached = tmp_path / 'detached'
    og.snapshot_worktree(repo, detached, 'main')
    common = repo / '.git'
    git(repo, 'branch', 'orch/run-1/work')
    tip = git(repo, 'rev-parse', 'main')

    def answers(branch: str) -> list[str | None]:
        return [og.branch_tip(where, branch) for where in (repo, detached)]
    og.branch_tip(repo, 'main')
    og.branch_tip(detached, 'main')   # (each checkout located once)
    started.clear()
    assert answers('orch/run-1/work') == [tip, tip] and loose_branch(common, 'refs/heads/orch/run-1/work') == tip
    assert started == []   # read from the file
    git(repo, 'pack-refs', '--all')   # packed: no loose file, git finds it
    assert loose_branch(common, 'refs/heads/main') is None and answers('main') == [tip, tip] and started
    assert answers('nope') == [None, None]
    git(repo, 'symbolic-ref', 'refs/heads/alias', 'refs/heads/main')   # a symbolic ref names no commit itself
    assert loose_branch(common, 'refs/heads/alias') is None and answers('alias') == [tip, tip]
    (common / 'refs' / 'heads' / 'odd').write_text(f'{tip} trailing\n')   # git reads a sha and whitespace after it
    assert loose_branch(common, 'refs/heads/odd') is None
    assert answers('odd') == [git(repo, 'rev-parse', '--verify', '--quiet', 'refs/heads/odd')] * 2
    os.mkfifo(common / 'refs' / 'heads' / 'fifo')   # not a ref git would read; never blocks
    assert loose_branch(common, 'refs/heads/fifo') is None
    (common / 'refs' / 'heads' / 'link').symlink_to(common / 'refs' / 'heads' / 'orch' / 'run-1' / 'work')
    assert loose_branch(common, 'refs/heads/link') is None
    for name in ('refs/heads/../../config', 'refs/heads/.hidden', 'refs/heads/x.lock', 'refs/tags/v1', 'HEAD'):
        assert loose_branch(common, name) is None


def test_failures_are_git_errors_with_command_and_advice(repo: Path) -> None:
    with pytest.raises(GitError, match="unknown revision 'nope'"):
        og.rev_parse(repo, 'nope')
    with pytest.raises(GitError) as info:
        og.unmerged_commits(repo, 'nope', 'main')
    text = str(info.value)
    assert 'git failed (exit 128)' in text and 'rev-list --count main..nope' in text
    assert 'nope' in text.splitlines()[1]  # git's stderr, indented
    assert text.splitlines()[-1].endswith('retry.')
    with pytest.raises(GitError, match='does not start with "-"'):
        og.rev_parse(repo, '--all')


def test_repository_variables_from_a_hook_are_ignored(
        repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = make_repo(tmp_path, {'other.txt': 'x\n'}, name='other', branch='elsewhere')
    monkeypatch.setenv('GIT_DIR', str(other / '.git'))
    monkeypatch.setenv('GIT_WORK_TREE', str(other))
    monkeypatch.setenv('GIT_INDEX_FILE', str(other / '.git' / 'index'))
    assert og.current_branch(repo) == 'main'
    assert og.repo_root(repo / 'src') == repo
    assert 'GIT_DIR' not in os.environ  # dropped, so workers started later do not inherit it


# --- worktrees -----------------------------------------------------------------------------------

def test_ensure_worktree_creates_once(repo: Path, tmp_path: Path) -> None:
    path = tmp_path / 'wt'
    assert og.ensure_worktree(repo, path, 'work', 'main') is True
    assert og.worktree_valid(path)
    assert og.current_branch(path) == 'work'
    assert (path / 'src' / 'a.py').read_text() == 'a = 1\n'
    assert og.ensure_worktree(repo, path, 'work', 'main') is False
    assert 'branch.work' not in git(repo, 'config', '--list')  # no upstream tracking set up
    assert og.current_branch(repo) == 'main'


def test_ensure_worktree_restores_hand_deleted_worktree_on_branch_tip(repo: Path, wt: Path) -> None:
    start = og.rev_parse(repo, 'main')
    write_files(wt, {'new.txt': 'work\n'})
    tip = commit_all(wt, 'work in progress')
    shutil.rmtree(wt)
    assert not og.worktree_valid(wt)
    assert og.ensure_worktree(repo, wt, 'work', start) is True
    assert og.rev_parse(wt, 'HEAD') == tip
    assert (wt / 'new.txt').read_text() == 'work\n'


def test_ensure_worktree_refuses_a_worktree_on_another_branch(repo: Path, wt: Path) -> None:
    with pytest.raises(GitError, match='has work checked out, not other'):
        og.ensure_worktree(repo, wt, 'other', 'main')


def test_ensure_worktree_with_unknown_start_commit(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(GitError, match="unknown revision 'no-such-commit'"):
        og.ensure_worktree(repo, tmp_path / 'x', 'newbranch', 'no-such-commit')
    assert git(repo, 'branch', '--list', 'newbranch') == ''


def test_worktree_valid(repo: Path, wt: Path, tmp_path: Path) -> None:
    assert og.worktree_valid(wt)
    assert og.worktree_valid(repo)
    assert not og.worktree_valid(repo / 'src')  # inside a checkout, not its top
    assert not og.worktree_valid(tmp_path / 'missing')
    stray = repo / 'stray'
    stray.mkdir()
    assert not og.worktree_valid(stray)


def test_list_prune_and_remove_worktrees(repo: Path, wt: Path, tmp_path: Path) -> None:
    other = tmp_path / 'other'
    og.ensure_worktree(repo, other, 'other', 'main')
    listed = og.list_worktrees(repo)
    assert listed[0]['path'] == repo  # the main checkout comes first
    by_path = {w['path']: w for w in listed}
    assert set(by_path) == {repo, wt, other.resolve()}
    assert by_path[wt]['branch'] == 'work' and by_path[repo]['branch'] == 'main'
    assert by_path[wt]['head'] == og.rev_parse(repo, 'main')
    assert not any(w['prunable'] or w['detached'] or w['bare'] for w in listed)

    shutil.rmtree(other)
    assert [w['path'] for w in og.list_worktrees(repo) if w['prunable']] == [other.resolve()]
    og.prune_worktrees(repo)
    assert [w['path'] for w in og.list_worktrees(repo)] == [repo, wt]

    og.remove_worktree(repo, wt)
    assert not wt.exists()
    assert [w['path'] for w in og.list_worktrees(repo)] == [repo]
    assert git(repo, 'branch', '--list', 'work').strip() == 'work'  # the branch stays


def test_remove_worktree_deleted_by_hand(repo: Path, wt: Path) -> None:
    shutil.rmtree(wt)
    og.remove_worktree(repo, wt)
    assert [w['path'] for w in og.list_worktrees(repo)] == [repo]


def test_remove_dirty_worktree_needs_force(repo: Path, wt: Path) -> None:
    write_files(wt, {'scratch.txt': 'x\n'})
    with pytest.raises(GitError, match='Commit or discard the changes'):
        og.remove_worktree(repo, wt)
    assert wt.exists()
    og.remove_worktree(repo, wt, force=True)
    assert not wt.exists()


def test_remove_worktree_refuses_main_checkout(repo: Path) -> None:
    before = snapshot(repo)
    with pytest.raises(GitError):
        og.remove_worktree(repo, repo, force=True)
    assert snapshot(repo) == before and (repo / 'README.md').exists()


def test_a_ref_name_or_file_git_would_not_read_as_a_branch_is_no_branch(repo: Path) -> None:
    """A name that is a directory of refs, a name git refuses, a 64-digit sha in a sha1 repository: git says there
    is no such branch, and so does the files reader (nothing leaks, nothing raises)."""
    from orch.adapters.git.gitfiles import loose_branch
    tip = git(repo, 'rev-parse', 'HEAD')
    git(repo, 'branch', 'orch/2024-01-01/run-1/workspace-shared')   # refs/heads/orch is a directory
    assert og.branch_tip(repo, 'orch') is None and og.branch_tip(repo, 'orch/2024-01-01') is None
    assert loose_branch(repo / '.git', 'refs/heads/orch') is None
    for name in ('a..b', 'trailing.', 'x/y.'):
        path = repo / '.git' / 'refs' / 'heads' / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f'{tip}\n')
        assert og.branch_tip(repo, name) is None, name
    (repo / '.git' / 'refs' / 'heads' / 'long').write_text(f'{tip}{tip[:24]}\n')   # git: a broken ref
    assert og.branch_tip(repo, 'long') is None


def test_a_head_that_is_no_file_is_not_read(repo: Path, tmp_path: Path) -> None:
    """A FIFO or a directory where a checkout's HEAD is: the reader neither blocks nor raises; git answers."""
    detached = tmp_path / 'detached'
    og.snapshot_worktree(repo, detached, 'main')
    head = Path(git(detached, 'rev-parse', '--absolute-git-dir')) / 'HEAD'
    head.unlink()
    os.mkfifo(head)
    assert og.detached_head(detached) is None
    head.unlink()
    head.mkdir()
    assert og.detached_head(detached) is None


def test_the_checkout_of_a_branch_is_read_as_git_lists_it(repo: Path, wt: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Which live checkout has a branch, from git's worktree records, is what `git worktree list` says, in every
    state a checkout can be in; where the records are unusual git is asked."""
    from orch.adapters.git import checkouts
    from orch.adapters.git.gitfiles import worktree_branches
    common = repo / '.git'
    branches = ('main', 'work', 'other', 'gone', 'locked', 'unborn', 'nope')
    git(repo, 'branch', 'other')
    git(repo, 'branch', 'gone')
    git(repo, 'branch', 'locked')
    og.snapshot_worktree(repo, tmp_path / 'detached', 'main')
    for name in ('gone', 'locked', 'unborn'):
        git(repo, 'worktree', 'add', '-q', str(tmp_path / name), 'other' if name == 'unborn' else name)
    git(tmp_path / 'unborn', 'checkout', '-q', '--orphan', 'unborn')   # a branch with no commit yet
    shutil.rmtree(tmp_path / 'gone')   # prunable: its directory is gone
    git(repo, 'worktree', 'lock', str(tmp_path / 'locked'))
    ((tmp_path / 'locked') / '.git').unlink()   # locked: never prunable, though its .git is gone

    def by_git(branch: str) -> Path | None:
        for info in og.list_worktrees(repo):
            if info['branch'] == branch and not info['prunable']:
                return info['path']
        return None

    def compare() -> None:
        for branch in branches:
            assert checkouts.live_worktree_of_branch(repo, branch) == by_git(branch), branch
    compare()
    assert worktree_branches(common) is not None   # all read from the files
    listed = og.list_worktrees(repo)
    monkeypatch.setattr(checkouts, 'list_worktrees', lambda root: pytest.fail('git asked'))
    compare_files = {b: checkouts.live_worktree_of_branch(repo, b) for b in branches}
    monkeypatch.undo()
    assert compare_files == {b: by_git(b) for b in branches} and listed
    assert compare_files['work'] == wt and compare_files['main'] == repo and compare_files['gone'] is None
    # Unusual records: each is left to git, whose answer stands.
    git(repo, 'symbolic-ref', 'refs/heads/alias', 'refs/heads/other')
    git(tmp_path / 'detached', 'symbolic-ref', 'HEAD', 'refs/heads/alias')   # HEAD names a symbolic ref
    assert worktree_branches(common) is None
    compare()
    git(tmp_path / 'detached', 'checkout', '-q', '--detach', 'main')
    record = common / 'worktrees' / 'detached' / 'gitdir'
    record.write_text('../relative/.git\n')
    assert worktree_branches(common) is None
    compare()
    record.unlink()   # no record: git does not list it
    assert worktree_branches(common) is not None
    compare()
    head = common / 'worktrees' / 'wt' / 'HEAD'
    head.unlink()
    head.symlink_to(common / 'refs' / 'heads' / 'work')
    assert worktree_branches(common) is None


def test_worktree_of_branch(repo: Path, wt: Path) -> None:
    assert og.worktree_of_branch(repo, 'work') == wt
    assert og.worktree_of_branch(repo, 'main') == repo
    git(repo, 'branch', 'idle')
    assert og.worktree_of_branch(repo, 'idle') is None


# --- changes -------------------------------------------------------------------------------------

def test_changed_paths_kinds_spaces_and_unicode(repo: Path, wt: Path) -> None:
    assert og.changed_paths(wt) == []
    write_files(wt, {
        'src/a.py': 'a = 2\n',                    # modified
        'dir with space/fi le.txt': 's\n',       # untracked, in a new directory
        'ünï/cödé ✓.md': 'u\n',                  # unicode
        'debug.log': 'ignored\n',                # ignored
    })
    (wt / 'README.md').unlink()                  # deleted
    assert og.changed_paths(wt) == sorted(
        ['README.md', 'dir with space/fi le.txt', 'src/a.py', 'ünï/cödé ✓.md'])
    assert og.is_dirty(wt)


def test_changed_paths_reports_both_sides_of_a_staged_rename(repo: Path, wt: Path) -> None:
    git(wt, 'mv', 'src/a.py', 'src/b c.py')
    assert og.changed_paths(wt) == ['src/a.py', 'src/b c.py']


def test_is_dirty(repo: Path, wt: Path) -> None:
    assert not og.is_dirty(wt)
    write_files(wt, {'x.log': 'ignored\n'})
    assert not og.is_dirty(wt)
    write_files(wt, {'new.txt': 'n\n'})
    assert og.is_dirty(wt)


def test_discard_all_changes(repo: Path, wt: Path) -> None:
    head = og.rev_parse(wt, 'HEAD')
    write_files(wt, {'src/a.py': 'changed\n', 'new/dir/file.txt': 'n\n', 'keep.log': 'ignored\n'})
    git(wt, 'add', 'new/dir/file.txt')
    (wt / 'README.md').unlink()
    og.discard_changes(wt)
    assert og.changed_paths(wt) == []
    assert (wt / 'src/a.py').read_text() == 'a = 1\n'
    assert (wt / 'README.md').exists() and not (wt / 'new').exists()
    assert (wt / 'keep.log').exists()  # ignored files are not the worker's changes
    assert og.rev_parse(wt, 'HEAD') == head


def test_discard_only_matching_paths(repo: Path, wt: Path) -> None:
    write_files(wt, {'src/a.py': 'changed\n', 'src/new.py': 'n\n', 'README.md': 'mine\n', 'other.txt': 'o\n'})
    git(wt, 'add', 'src/new.py')
    og.discard_changes(wt, ['src'])
    assert og.changed_paths(wt) == ['README.md', 'other.txt']
    og.discard_changes(wt, ['*.md', 'nothing/matches'])
    assert og.changed_paths(wt) == ['other.txt']
    og.discard_changes(wt, [])
    assert og.changed_paths(wt) == ['other.txt']


def test_discard_refuses_main_checkout(repo: Path, wt: Path) -> None:
    write_files(repo, {'README.md': 'user edit\n', 'user-new.txt': 'u\n'})
    before = snapshot(repo)
    for target in (repo, repo / 'src'):
        with pytest.raises(GitError, match='refusing to discard changes in'):
            og.discard_changes(target)
    assert snapshot(repo) == before
    assert (repo / 'README.md').read_text() == 'user edit\n'
    assert (repo / 'user-new.txt').exists()


def test_discard_refuses_a_subdirectory_of_a_worktree(repo: Path, wt: Path) -> None:
    write_files(wt, {'README.md': 'changed\n'})
    with pytest.raises(GitError, match='not the top of a worktree'):
        og.discard_changes(wt / 'src')
    assert og.changed_paths(wt) == ['README.md']


# --- commits -------------------------------------------------------------------------------------

def test_commit_everything_with_trailers(repo: Path, wt: Path) -> None:
    write_files(wt, {'src/a.py': 'a = 2\n', 'new file.txt': 'n\n'})
    (wt / 'README.md').unlink()
    sha = og.commit(wt, message='t1: do things', trailers=TRAILERS)
    assert sha == og.rev_parse(wt, 'HEAD')
    assert _message(wt, sha) == 't1: do things\n\nOrch-Run: r1\nOrch-Task: t1'
    assert og.commit_files(wt, sha) == ['README.md', 'new file.txt', 'src/a.py']
    assert og.changed_paths(wt) == []
    assert git(wt, 'log', '-1', '--format=%an <%ae>|%cn <%ce>') == \
        'Test Author <test@example.com>|Test Author <test@example.com>'
    assert og.rev_parse(repo, 'main') != sha  # the main checkout is untouched


def test_commit_returns_none_when_nothing_changed(repo: Path, wt: Path) -> None:
    head = og.rev_parse(wt, 'HEAD')
    assert og.commit(wt, message='noop', trailers=TRAILERS) is None
    write_files(wt, {'only.log': 'ignored\n'})
    assert og.commit(wt, message='noop', trailers=TRAILERS) is None
    write_files(wt, {'x.txt': 'x\n'})
    assert og.commit(wt, message='noop', trailers=TRAILERS, paths=['y.txt']) is None
    assert og.rev_parse(wt, 'HEAD') == head


def test_commit_only_given_paths(repo: Path, wt: Path) -> None:
    write_files(wt, {'mine.txt': 'm\n', 'src/a.py': 'a = 3\n', 'theirs.txt': 't\n'})
    (wt / 'README.md').unlink()
    git(wt, 'add', 'theirs.txt')  # staged by someone else: must not ride along
    sha = og.commit(wt, message='partial', trailers=TRAILERS, paths=['mine.txt', './README.md'])
    assert sha is not None
    assert og.commit_files(wt, sha) == ['README.md', 'mine.txt']
    assert og.changed_paths(wt) == ['src/a.py', 'theirs.txt']


def test_commit_author_and_fallback_identity(repo: Path, wt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_files(wt, {'a.txt': 'a\n'})
    sha = _committed(og.commit(wt, message='by someone', trailers={}, author=('Ada', 'ada@example.com')))
    assert git(wt, 'log', '-1', '--format=%an <%ae>|%cn <%ce>', sha) == 'Ada <ada@example.com>|Ada <ada@example.com>'
    assert _message(wt, sha) == 'by someone'

    for var in ('GIT_AUTHOR_NAME', 'GIT_AUTHOR_EMAIL', 'GIT_COMMITTER_NAME', 'GIT_COMMITTER_EMAIL'):
        monkeypatch.delenv(var)
    git(repo, 'config', 'user.useConfigOnly', 'true')  # no guessing from the host name
    write_files(wt, {'b.txt': 'b\n'})
    sha = _committed(og.commit(wt, message='nobody configured', trailers=TRAILERS))
    assert git(wt, 'log', '-1', '--format=%an <%ae>', sha) == 'codex-orch <codex-orch@localhost>'

    git(repo, 'config', 'user.name', 'Configured')
    git(repo, 'config', 'user.email', 'conf@example.com')
    write_files(wt, {'c.txt': 'c\n'})
    sha = _committed(og.commit(wt, message='configured', trailers=TRAILERS))
    assert git(wt, 'log', '-1', '--format=%an <%ae>', sha) == 'Configured <conf@example.com>'


def test_commit_runs_no_hooks_and_keeps_message_verbatim(repo: Path, wt: Path) -> None:
    hook = repo / '.git' / 'hooks' / 'pre-commit'
    hook.write_text('#!/bin/sh\nexit 1\n')
    hook.chmod(0o755)
    write_files(wt, {'a.txt': 'a\n'})
    sha = og.commit(wt, message='# not a comment\n\nbody -m --amend', trailers=TRAILERS)
    assert sha is not None
    assert _message(wt, sha).startswith('# not a comment\n\nbody -m --amend\n\nOrch-Run: r1')


def test_commit_rejects_bad_trailers_and_main_checkout(repo: Path, wt: Path) -> None:
    write_files(wt, {'a.txt': 'a\n'})
    with pytest.raises(ValueError):
        og.commit(wt, message='m', trailers={'Bad Key': 'v'})
    with pytest.raises(ValueError):
        og.commit(wt, message='m', trailers={'Key': 'two\nlines'})
    with pytest.raises(ValueError):
        og.commit(wt, message='  ', trailers={})
    write_files(repo, {'user.txt': 'u\n'})
    before = snapshot(repo)
    with pytest.raises(GitError, match='main checkout'):
        og.commit(repo, message='m', trailers={})
    assert snapshot(repo) == before


def test_concurrent_commits_in_one_worktree_stay_separate(repo: Path, wt: Path) -> None:
    names = [f'file{i}.txt' for i in range(4)]  # without the lock even two threads collide
    write_files(wt, {name: f'{name}\n' for name in names})
    barrier = threading.Barrier(len(names))
    results: dict[str, str | None] = {}
    errors: list[BaseException] = []

    def work(name: str) -> None:
        try:
            barrier.wait()
            results[name] = og.commit(wt, message=f'commit {name}', trailers={'Orch-Task': name}, paths=[name])
        except BaseException as exc:  # re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    shas = [_committed(results[n]) for n in names]
    assert len(set(shas)) == len(names)
    for name, sha in zip(names, shas, strict=True):
        assert og.commit_files(wt, sha) == [name]
        assert og.find_commit_by_trailer(wt, 'Orch-Task', name) == sha
    assert og.changed_paths(wt) == []
    assert int(git(wt, 'rev-list', '--count', 'main..HEAD')) == len(names)


def test_commit_waits_for_the_lock_file_held_by_another_process(repo: Path, wt: Path) -> None:
    write_files(wt, {'a.txt': 'a\n'})
    head = og.rev_parse(wt, 'HEAD')
    done: list[str | None] = []
    with open(repo / '.git' / 'codex-orch-commit.lock', 'a') as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)  # another open file description, as another process has
        thread = threading.Thread(target=lambda: done.append(og.commit(wt, message='m', trailers={})))
        thread.start()
        thread.join(0.5)
        assert thread.is_alive() and og.rev_parse(wt, 'HEAD') == head
    thread.join(10)
    assert done and done[0] == og.rev_parse(wt, 'HEAD') != head


def test_find_commit_by_trailer(repo: Path, wt: Path) -> None:
    base = og.rev_parse(wt, 'HEAD')
    write_files(wt, {'1.txt': '1\n'})
    first = og.commit(wt, message='one', trailers={'Orch-Task': 't1', 'Orch-Exec': 'r/t1/abc/1'})
    write_files(wt, {'2.txt': '2\n'})
    second = og.commit(wt, message='mentions Orch-Task: t1 in the body\n\nOrch-Task: t1 too',
                       trailers={'Orch-Task': 't10'})
    write_files(wt, {'3.txt': '3\n'})
    third = og.commit(wt, message='again', trailers={'Orch-Task': 't1'})
    assert og.find_commit_by_trailer(wt, 'Orch-Task', 't1') == third
    assert og.find_commit_by_trailer(wt, 'orch-task', 't1') == third  # git trailer keys ignore case
    assert og.find_commit_by_trailer(wt, 'Orch-Task', 't10') == second
    assert og.find_commit_by_trailer(wt, 'Orch-Exec', 'r/t1/abc/1') == first
    assert og.find_commit_by_trailer(wt, 'Orch-Exec', 'r/t1/abc/1', since=base) == first
    assert og.find_commit_by_trailer(wt, 'Orch-Exec', 'r/t1/abc/1', since=first) is None
    assert og.find_commit_by_trailer(wt, 'Orch-Task', 't') is None
    assert og.find_commit_by_trailer(wt, 'Orch-Run', 't1') is None


def _git_files(checkout: Path, sha: str) -> list[str]:
    out = subprocess.run(['git', '-C', str(checkout), 'diff-tree', '-r', '-z', '--name-only', '--no-renames',
                          '--no-commit-id', f'{sha}^', sha], check=True, capture_output=True).stdout
    return sorted(display_path(os.fsdecode(p)) for p in out.split(b'\0') if p)


@pytest.mark.parametrize('head', ['detached', 'on a branch', 'assume-unchanged'])
def test_a_reused_checkout_is_reset_to_exactly_the_commit(repo: Path, tmp_path: Path, head: str) -> None:
    """reset_checkout leaves exactly the commit's files, its HEAD detached there: every edit, staged file, untracked
    and ignored file of the previous task gone. A checkout a worker switched to a branch: the branch is not moved."""
    old = git(repo, 'rev-parse', 'HEAD')
    write_files(repo, {'src/b.py': 'b = 2\n', 'README.md': 'newer\n'})
    git(repo, 'rm', '-q', 'src/a.py')
    commit_all(repo, 'newer')
    new = git(repo, 'rev-parse', 'HEAD')
    co = tmp_path / 'co'
    og.snapshot_worktree(repo, co, old)
    if head == 'on a branch':
        git(co, 'switch', '-q', '-c', 'side')
    write_files(co, {'README.md': 'edited\n', 'staged.txt': 's\n', 'untracked/u.txt': 'u\n', 'x.log': 'ignored\n',
                     'src/a.py': 'a = "edited, gone in the commit"\n', 'src/b.py': 'b = "in the way"\n'})
    git(co, 'add', 'staged.txt')
    if head == 'assume-unchanged':   # a forced checkout alone stops at such an entry
        git(co, 'update-index', '--assume-unchanged', 'README.md')
    og.reset_checkout(co, new)
    assert file_tree(co) == file_tree(repo)
    assert og.head_state(co) == (None, new)
    assert git(co, 'status', '--porcelain', '--ignored', '--untracked-files=all') == ''
    if head == 'on a branch':
        assert git(repo, 'rev-parse', 'side') == old


@pytest.mark.parametrize('end', [' ', '\t'])
def test_a_git_pointer_is_read_as_git_reads_it(repo: Path, tmp_path: Path, end: str) -> None:
    """A worker writes `.git` as "gitdir: fake<space>" and builds both `fake` (a detached HEAD) and `fake<space>` (HEAD
    on main, the real common dir) in its checkout: codex-orch reads the one git reads, and reusing the checkout never
    moves the user's main."""
    main0 = git(repo, 'rev-parse', 'main')
    git(repo, 'switch', '-q', '-c', 'run')
    write_files(repo, {'b.txt': 'b\n'})
    tip = commit_all(repo, 'run tip')
    git(repo, 'switch', '-q', 'main')
    wt = (tmp_path / 'wt')
    git(repo, 'worktree', 'add', '--quiet', '--detach', str(wt), main0)
    wt = wt.resolve()
    assert og.rev_parse(wt, 'HEAD') == main0   # located and known before the worker ran
    common = git(wt, 'rev-parse', '--path-format=absolute', '--git-common-dir')
    write_files(wt, {'fake/HEAD': main0 + '\n', f'fake{end}/HEAD': 'ref: refs/heads/main\n',
                     f'fake{end}/commondir': common + '\n'})
    # the fake git dir's own index tracks the fake files, so `git clean` keeps them
    env = {**os.environ, 'GIT_INDEX_FILE': str(wt / f'fake{end}' / 'index')}
    subprocess.run(['git', '--git-dir', common, '--work-tree', str(wt), 'update-index', '--add', '--info-only',
                    'fake/HEAD', f'fake{end}/HEAD', f'fake{end}/commondir'], env=env, check=True)
    (wt / '.git').write_text(f'gitdir: fake{end}\n')
    assert og.detached_head(wt) is None   # git's HEAD there is a branch
    with contextlib.suppress(GitError):
        og.reset_checkout(wt, tip)
    assert git(repo, 'rev-parse', 'main') == main0, "the user's main was moved"


@pytest.mark.parametrize('kind', ['no objects or refs', 'a commondir naming nothing', 'a .git file naming no repo'])
def test_a_git_directory_git_would_not_take_is_not_read(tmp_path: Path, kind: str) -> None:
    """A git dir whose common dir has no objects and refs is no repository to git (from a `.git` directory it looks
    further up; a `.git` file naming one is an error): its HEAD is not taken for the checkout's."""
    fake = tmp_path / 'fake'
    git_dir = fake / ('fake-git' if kind == 'a .git file naming no repo' else '.git')
    git_dir.mkdir(parents=True)
    (git_dir / 'HEAD').write_text('a' * 40 + '\n')
    if kind == 'a commondir naming nothing':
        for name in ('objects', 'refs'):
            (git_dir / name).mkdir()
        (git_dir / 'commondir').write_text('nowhere\n')
    if kind == 'a .git file naming no repo':
        (fake / '.git').write_text('gitdir: fake-git\n')
    assert og.detached_head(fake) is None


def test_a_checkout_switched_to_a_branch_is_never_committed_on(repo: Path, tmp_path: Path) -> None:
    """A task's private checkout is detached; a worker that points its HEAD at the user's branch (at the same commit,
    so the HEAD check alone would pass) gets nothing committed, and the branch stays where it was."""
    main0 = git(repo, 'rev-parse', 'main')
    co = tmp_path / 'co'
    og.snapshot_worktree(repo, co, 'main')
    git(co, 'symbolic-ref', 'HEAD', 'refs/heads/main')
    write_files(co, {'work.txt': 'w\n'})
    with pytest.raises(og.CommitRefused, match='switched it to a branch'):
        og.commit(co, message='work', trailers=TRAILERS, expect_head=main0, detached=True)
    assert git(repo, 'rev-parse', 'main') == main0


def test_a_worktree_is_never_moved_into_an_existing_directory(repo: Path, tmp_path: Path) -> None:
    """`git worktree move` would put it inside (target/<name>); codex-orch refuses, and a checkout moved where nothing
    was is located where git says."""
    source, target = tmp_path / 'pool' / 'p1', tmp_path / 't1'
    og.snapshot_worktree(repo, source, 'main')
    og.snapshot_worktree(repo, target, 'main')
    og.rev_parse(source, 'HEAD')
    with pytest.raises(GitError, match='something is there already'):
        og.move_worktree(repo, source, target)
    free = tmp_path / 't2'
    og.move_worktree(repo, source, free)
    assert og.worktree_valid(free)
    assert git_run.locate(free).git_dir == Path(git(free, 'rev-parse', '--absolute-git-dir'))


def test_a_git_pointer_rewritten_with_its_old_times_is_located_again(repo: Path, tmp_path: Path) -> None:
    """Where a checkout sits is remembered by what its `.git` says, not by its times (a worker can put those back).
    (Checkouts made elsewhere: one codex-orch made is pinned, and its `.git` no longer read at all.)"""
    one, two = tmp_path / 'one', tmp_path / 'two'
    git(repo, 'worktree', 'add', '-q', '--detach', str(one), 'main')
    git(repo, 'worktree', 'add', '-q', '--detach', str(two), 'main')
    first = git_run.locate(one).git_dir
    st = os.stat(one / '.git')
    (one / '.git').write_text((two / '.git').read_text())
    os.utime(one / '.git', ns=(st.st_atime_ns, st.st_mtime_ns))
    assert git_run.locate(one).git_dir != first
    assert git_run.locate(one).git_dir == Path(git(one, 'rev-parse', '--absolute-git-dir'))


def test_a_reused_checkout_keeps_nothing_in_a_submodule_directory(repo: Path, tmp_path: Path) -> None:
    """`git clean` keeps a submodule directory's contents: the previous task's worker may have filled it, and the next
    task would be refused its commit for it (or read what is there)."""
    git(repo, 'update-index', '--add', '--cacheinfo', f'160000,{git(repo, "rev-parse", "HEAD")},sub')
    git(repo, 'commit', '-q', '-m', 'a submodule')
    co = tmp_path / 'co'
    og.snapshot_worktree(repo, co, 'main')
    write_files(co, {'sub/left.txt': 'left by a worker\n', 'sub/.git/HEAD': 'ref: refs/heads/main\n'})
    og.reset_checkout(co, git(repo, 'rev-parse', 'main'))
    assert list((co / 'sub').iterdir()) == []
    assert og.filled_submodules(co) == []


@pytest.mark.parametrize('when', ['before codex-orch first looks', 'after it pinned the checkout'])
def test_a_git_dir_a_worker_plants_never_turns_git_on_the_users_checkout(repo: Path, tmp_path: Path,
                                                                         when: str) -> None:
    """A worker points its checkout's `.git` at a git dir it builds inside the checkout (its commondir the real one),
    and a process it left behind later turns that git dir into a repository whose work tree is the user's checkout.
    Before: codex-orch refuses the checkout (its git dir is not one its repository keeps). After: codex-orch's
    commands name the pinned git dir and work tree themselves, and never read the `.git` again. Either way the
    user's uncommitted work is untouched."""
    sha = git(repo, 'rev-parse', 'HEAD')
    (repo / 'precious.txt').write_text('uncommitted user work\n')
    (repo / 'README.md').write_text('user edit\n')
    og.repo_root(repo)   # where codex-orch runs (every command starts so)
    wt = tmp_path / 'wt'
    git(repo, 'worktree', 'add', '-q', '--detach', str(wt), sha)   # made by an earlier process: not pinned here yet
    wt = wt.resolve()
    if when == 'after it pinned the checkout':
        og.discard_changes(wt)
    planted = wt / '.g' / 'w'
    planted.mkdir(parents=True)
    (planted / 'HEAD').write_text(sha + '\n')
    admin = Path(git(wt, 'rev-parse', '--absolute-git-dir'))
    (planted / 'commondir').write_bytes((admin / 'commondir').read_bytes())
    (wt / 'objects').symlink_to(repo / '.git' / 'objects')
    (wt / 'refs').mkdir()
    shutil.copy(repo / '.git' / 'config', wt / 'config')
    (wt / '.git').write_text('gitdir: .g/w\n')
    assert og.worktree_valid(wt)   # git takes the planted git dir: codex-orch's location cache too
    if when == 'before codex-orch first looks':
        with pytest.raises(GitError, match='not one of'):
            og.reset_checkout(wt, sha)
    (planted / 'commondir').unlink()   # the process left behind
    (planted / 'objects').symlink_to(repo / '.git' / 'objects')
    (planted / 'refs').mkdir()
    (planted / 'config').write_text(f'[core]\n\trepositoryformatversion = 0\n\tbare = false\n\tworktree = {repo}\n')
    with contextlib.suppress(GitError):
        og.reset_checkout(wt, sha)
    with contextlib.suppress(GitError):
        og.discard_changes(wt)
    assert (repo / 'precious.txt').exists(), "the user's untracked file was deleted"
    assert (repo / 'README.md').read_text() == 'user edit\n', "the user's edit was thrown away"


def test_a_new_checkout_is_pinned_before_a_worker_can_swap_its_git_pointer(repo: Path, tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkout codex-orch makes is pinned at once: a process a worker left behind that swaps its `.git` (to a git
    dir it built, whose config defines a filter `.gitattributes` names) between the driver listing and the command
    that follows changes nothing: no command reads that `.git`."""
    co = tmp_path / 'tasks' / 'T1'
    og.add_checkout(repo, co, git(repo, 'rev-parse', 'HEAD'))
    marker = tmp_path / 'ran'
    evil = co / '.evil'
    git(tmp_path, 'init', '-q', '--bare', str(evil))
    (evil / 'config').write_text('[core]\n\trepositoryformatversion = 0\n\tbare = false\n'
                                 f'[filter "x"]\n\tclean = touch {marker} && cat\n')
    write_files(co, {'.gitattributes': '* filter=x\n', 'victim.txt': 'a\n'})
    execute = git_run._execute
    real = (co / '.git').read_text()

    def swapping(argv: list[str], *args: Any, **kwargs: Any) -> Any:
        listing = 'config' in argv and '--list' in argv
        if listing:   # the listing reads the real config, the command after it the worker's
            (co / '.git').write_text(real)
        result = execute(argv, *args, **kwargs)
        if listing:
            (co / '.git').write_text(f'gitdir: {evil}\n')
        return result
    monkeypatch.setattr(git_run, '_execute', swapping)
    with contextlib.suppress(GitError):
        og.changed_paths(co)
        git_run.run(co, 'add', '--all')
    assert not marker.exists(), 'a filter of a git dir the worker built ran'


def test_a_pin_whose_git_dir_went_to_another_checkout_refuses(repo: Path, tmp_path: Path) -> None:
    """A worker deletes its checkout's `.git`; a prune drops the checkout's git dir, and a new checkout gets its name.
    The old pin does not send commands to the new checkout's git dir: it refuses."""
    base = git(repo, 'rev-parse', 'HEAD')
    t1, t2 = tmp_path / 'tasks' / 'T1', tmp_path / 'tasks' / 'T2'
    og.add_checkout(repo, t1, base)
    og.move_worktree(repo, t1, t2)   # through the pool: T2 keeps the git dir named T1
    (t2 / '.git').unlink()
    og.prune_worktrees(repo)
    og.add_checkout(repo, t1, base)
    assert git(t1, 'rev-parse', '--git-dir').endswith('worktrees/T1')
    write_files(t1, {'t1.txt': 'T1 at work\n'})
    git(t1, 'add', 't1.txt')
    with pytest.raises(GitError, match='not registered for it any more'):
        og.discard_changes(t2)
    assert git(t1, 'diff', '--cached', '--name-only') == 't1.txt'


def test_the_files_a_commit_records_are_the_ones_git_shows(repo: Path, tmp_path: Path) -> None:
    """commit_files of a commit made in this process comes from what was staged: the same as git's answer for an
    edit, a deletion, a rename, an undecodable name and a commit of some paths only."""
    co = tmp_path / 'co'
    og.snapshot_worktree(repo, co, 'main')
    steps = [lambda: (co / 'README.md').write_text('changed\n'),
             lambda: (co / 'src' / 'a.py').unlink(),
             lambda: (co / '.gitignore').rename(co / 'ignore-rules'),
             lambda: (co / os.fsdecode(b'caf\xe9.txt')).write_text('bytes\n')]
    for step in steps:
        step()
        sha = _committed(og.commit(co, message='step', trailers=TRAILERS))
        assert og.commit_files(co, sha) == _git_files(co, sha)
    write_files(co, {'one.txt': '1\n', 'two.txt': '2\n'})
    sha = _committed(og.commit(co, message='some', trailers=TRAILERS, paths=['one.txt']))
    assert og.commit_files(co, sha) == _git_files(co, sha) == ['one.txt']


def test_a_commit_keeps_its_parents_submodules_only_when_it_touched_none(repo: Path, tmp_path: Path) -> None:
    """The submodules of a commit codex-orch made are its parent's unless it removed one: a directory written where a
    removed submodule was is a plain directory, never reported as a filled submodule."""
    sub_sha = git(repo, 'rev-parse', 'HEAD')
    git(repo, 'update-index', '--add', '--cacheinfo', f'160000,{sub_sha},sub')
    git(repo, 'commit', '-q', '-m', 'a submodule')
    co = tmp_path / 'co'
    og.snapshot_worktree(repo, co, 'main')
    assert og.filled_submodules(co) == []
    write_files(co, {'README.md': 'edited\n'})
    _committed(og.commit(co, message='edit', trailers=TRAILERS))
    write_files(co, {'sub/inside.txt': 'x\n'})
    assert og.filled_submodules(co) == ['sub']   # still a submodule in the new commit
    shutil.rmtree(co / 'sub')
    _committed(og.commit(co, message='no submodule', trailers=TRAILERS))
    assert git(co, 'ls-tree', 'HEAD', 'sub') == ''
    write_files(co, {'sub/inside.txt': 'x\n'})
    assert og.filled_submodules(co) == []   # a plain directory now
    assert 'sub/inside.txt' in og.changed_paths(co)


def test_commit_files_root_and_merge_commits(repo: Path, wt: Path) -> None:
    root_sha = git(repo, 'rev-list', '--max-parents=0', 'HEAD')
    assert og.commit_files(repo, root_sha) == ['.gitignore', 'README.md', 'src/a.py']
    write_files(wt, {'w.txt': 'w\n'})
    og.commit(wt, message='w', trailers={})
    git(repo, 'branch', 'side', 'main')
    side = make_side_commit(repo, 'side', {'s.txt': 's\n'})
    assert og.merge_into_worktree(wt, ['side'], 'merge side') == []
    assert og.commit_files(wt, 'HEAD') == ['s.txt']
    assert og.commit_files(wt, side) == ['s.txt']


def make_side_commit(repo: Path, branch: str, files: dict[str, str]) -> str:
    """Commit `files` on `branch` without touching the main checkout (via a temporary worktree)."""
    tmp = repo.parent / f'tmp-{branch}'
    git(repo, 'worktree', 'add', '--quiet', str(tmp), branch)
    write_files(tmp, files)
    sha = commit_all(tmp, f'on {branch}')
    git(repo, 'worktree', 'remove', str(tmp))
    return sha


# --- history, merges and branches ---------------------------------------------------------------

def test_is_ancestor_and_unmerged_commits(repo: Path, wt: Path) -> None:
    assert og.unmerged_commits(repo, 'work', 'main') == 0
    for i in range(3):
        write_files(wt, {f'{i}.txt': 'x\n'})
        og.commit(wt, message=f'c{i}', trailers={})
    assert og.unmerged_commits(repo, 'work', 'main') == 3
    assert og.is_ancestor(repo, 'main', 'work')
    assert not og.is_ancestor(repo, 'work', 'main')
    with pytest.raises(GitError):
        og.is_ancestor(repo, 'main', 'no-such-branch')


def test_merge_into_worktree_merges_several_branches(repo: Path, wt: Path) -> None:
    git(repo, 'branch', 'b1', 'main')
    git(repo, 'branch', 'b2', 'main')
    make_side_commit(repo, 'b1', {'one.txt': '1\n'})
    make_side_commit(repo, 'b2', {'two.txt': '2\n'})
    assert og.merge_into_worktree(wt, ['b1', 'b2'], 'Merge dependencies of t3') == []
    assert (wt / 'one.txt').exists() and (wt / 'two.txt').exists()
    assert og.is_ancestor(repo, 'b1', 'work') and og.is_ancestor(repo, 'b2', 'work')
    assert git(wt, 'log', '-1', '--format=%s %P').startswith('Merge dependencies of t3 ')
    assert og.changed_paths(wt) == []


def test_merge_into_worktree_conflict_rolls_back(repo: Path, wt: Path) -> None:
    git(repo, 'branch', 'clean', 'main')
    git(repo, 'branch', 'clash', 'main')
    make_side_commit(repo, 'clean', {'fine.txt': 'f\n'})
    make_side_commit(repo, 'clash', {'src/a.py': 'theirs\n', 'README.md': 'theirs\n', 'added.txt': 'a\n'})
    write_files(wt, {'src/a.py': 'ours\n', 'README.md': 'ours\n'})
    og.commit(wt, message='ours', trailers={})
    head = og.rev_parse(wt, 'HEAD')
    conflicts = og.merge_into_worktree(wt, ['clean', 'clash'], 'merge deps')
    assert conflicts == ['README.md', 'src/a.py']
    assert og.rev_parse(wt, 'HEAD') == head  # the clean merge before the clash is undone too
    assert og.changed_paths(wt) == [] and not (wt / 'added.txt').exists()
    assert git(wt, 'status', '--porcelain') == ''
    assert not (wt / git(wt, 'rev-parse', '--git-path', 'MERGE_HEAD')).exists()  # no merge in progress


def test_merge_into_worktree_unknown_branch_and_dirty(repo: Path, wt: Path) -> None:
    head = og.rev_parse(wt, 'HEAD')
    with pytest.raises(GitError, match='Check that nope exists'):
        og.merge_into_worktree(wt, ['nope'], 'm')
    assert og.rev_parse(wt, 'HEAD') == head and og.changed_paths(wt) == []
    write_files(wt, {'dirty.txt': 'd\n'})
    with pytest.raises(GitError, match='uncommitted changes'):
        og.merge_into_worktree(wt, ['main'], 'm')
    assert og.changed_paths(wt) == ['dirty.txt']


def _advance(wt: Path, files: dict[str, str]) -> str:
    write_files(wt, files)
    return _committed(og.commit(wt, message='advance', trailers={}))


def test_fast_forward_branch_not_checked_out(repo: Path, wt: Path) -> None:
    git(repo, 'branch', 'base', 'main')
    target = _advance(wt, {'r.txt': 'r\n'})
    before = file_tree(repo)
    og.fast_forward(repo, 'base', target)
    assert og.rev_parse(repo, 'base') == target
    assert file_tree(repo) == before and og.current_branch(repo) == 'main'
    og.fast_forward(repo, 'base', target)  # already there: nothing to do


def test_fast_forward_updates_clean_checked_out_base(repo: Path, wt: Path) -> None:
    git(repo, 'config', 'user.useConfigOnly', 'true')
    target = _advance(wt, {'result.txt': 'r\n', 'src/a.py': 'a = 9\n'})
    og.fast_forward(repo, 'main', target)
    assert og.rev_parse(repo, 'HEAD') == target and og.current_branch(repo) == 'main'
    assert (repo / 'result.txt').read_text() == 'r\n'
    assert (repo / 'src/a.py').read_text() == 'a = 9\n'
    assert git(repo, 'status', '--porcelain') == ''


def test_fast_forward_refuses_dirty_checked_out_base(repo: Path, wt: Path) -> None:
    target = _advance(wt, {'result.txt': 'r\n'})
    write_files(repo, {'README.md': 'uncommitted user edit\n'})
    before, files = snapshot(repo), file_tree(repo)
    with pytest.raises(GitError) as info:
        og.fast_forward(repo, 'main', target)
    text = str(info.value)
    assert str(repo) in text and 'README.md' in text and 'uncommitted changes' in text
    assert snapshot(repo) == before and file_tree(repo) == files


def test_fast_forward_keeps_unrelated_untracked_files(repo: Path, wt: Path) -> None:
    target = _advance(wt, {'result.txt': 'r\n'})
    write_files(repo, {'notes.txt': 'mine\n'})
    og.fast_forward(repo, 'main', target)
    assert og.rev_parse(repo, 'HEAD') == target
    assert (repo / 'notes.txt').read_text() == 'mine\n' and (repo / 'result.txt').read_text() == 'r\n'


def test_fast_forward_refuses_untracked_file_it_would_overwrite(repo: Path, wt: Path) -> None:
    target = _advance(wt, {'result.txt': 'r\n'})
    write_files(repo, {'result.txt': 'mine\n'})
    before, files = snapshot(repo), file_tree(repo)
    with pytest.raises(GitError, match=r'untracked files the merge would overwrite.*result\.txt'):
        og.fast_forward(repo, 'main', target)
    assert snapshot(repo) == before and file_tree(repo) == files


def test_fast_forward_refuses_diverged_base(repo: Path, wt: Path) -> None:
    target = _advance(wt, {'result.txt': 'r\n'})
    git(repo, 'branch', 'base', 'main')
    make_side_commit(repo, 'base', {'elsewhere.txt': 'e\n'})
    before, files = snapshot(repo), file_tree(repo)
    with pytest.raises(GitError, match='the base has diverged'):
        og.fast_forward(repo, 'base', target)
    assert snapshot(repo) == before and file_tree(repo) == files


def test_fast_forward_refuses_diverged_checked_out_base(repo: Path, wt: Path) -> None:
    target = _advance(wt, {'result.txt': 'r\n'})
    write_files(repo, {'user.txt': 'u\n'})
    commit_all(repo, 'user commit on main')
    before, files = snapshot(repo), file_tree(repo)
    with pytest.raises(GitError, match=r'main has 1 commit\(s\) not in'):
        og.fast_forward(repo, 'main', target)
    assert snapshot(repo) == before and file_tree(repo) == files


def test_fast_forward_missing_branch(repo: Path) -> None:
    with pytest.raises(GitError, match='no such branch'):
        og.fast_forward(repo, 'nope', 'main')


def test_delete_branch(repo: Path, wt: Path) -> None:
    git(repo, 'branch', 'merged', 'main')
    assert og.delete_branch(repo, 'merged', base='main') is True
    assert git(repo, 'branch', '--list', 'merged') == ''
    assert og.delete_branch(repo, 'merged', base='main') is False  # already gone

    git(repo, 'branch', 'side', 'main')
    side = make_side_commit(repo, 'side', {'s.txt': 's\n'})
    assert og.delete_branch(repo, 'side', base='main') is False
    assert og.rev_parse(repo, 'side') == side
    assert og.delete_branch(repo, 'side', base=side) is True  # merged into that base

    git(repo, 'branch', 'side2', 'main')
    make_side_commit(repo, 'side2', {'s2.txt': 's\n'})
    assert og.delete_branch(repo, 'side2', base='main', force=True) is True


def test_delete_branch_never_deletes_checked_out_branches(repo: Path, wt: Path) -> None:
    _advance(wt, {'w.txt': 'w\n'})
    assert og.delete_branch(repo, 'work', base='main', force=True) is False
    assert og.delete_branch(repo, 'main', base='main', force=True) is False
    og.remove_worktree(repo, wt)
    assert og.delete_branch(repo, 'work', base='main') is False  # unmerged
    assert og.delete_branch(repo, 'work', base='main', force=True) is True


def test_worktree_inside_ignored_orchestrator_dir(tmp_path: Path) -> None:
    """The layout codex-orch uses: worktrees under the repository, ignored by it."""
    repo = make_repo(tmp_path, {'.gitignore': '/.orchestrator/worktrees/\n', 'a.txt': 'a\n'})
    path = repo / '.orchestrator' / 'worktrees' / 'run1'
    assert og.ensure_worktree(repo, path, 'orch/run1', og.rev_parse(repo, 'HEAD'))
    assert not og.is_dirty(repo)  # the nested worktree does not make the user's checkout dirty
    write_files(path, {'a.txt': 'b\n'})
    sha = _committed(og.commit(path, message='t', trailers={'Orch-Task': 't'}))
    assert og.repo_root(path) == repo
    og.fast_forward(repo, 'main', sha)
    assert (repo / 'a.txt').read_text() == 'b\n'
    with pytest.raises(GitError, match='main checkout'):
        og.discard_changes(repo / '.orchestrator')


# --- nothing a worker writes runs ----------------------------------------------------------------

HOOKS = ('pre-commit', 'prepare-commit-msg', 'commit-msg', 'post-commit', 'reference-transaction',
         'post-checkout', 'pre-merge-commit', 'post-merge', 'post-rewrite', 'pre-auto-gc', 'post-index-change')


def _write_hooks(where: Path, markers: Path) -> None:
    for name in HOOKS:
        hook = where / '.husky' / name
        hook.parent.mkdir(parents=True, exist_ok=True)
        hook.write_text(f'#!/bin/sh\ntouch "{markers}/{name}"\n')
        hook.chmod(0o755)


def test_no_hook_runs_for_any_git_operation(repo: Path, tmp_path: Path) -> None:
    """Hooks committed in the repository, live through a relative core.hooksPath (as husky sets it):
    none runs for worktree add, commit, discard, merge, fast-forward or branch deletion."""
    markers = tmp_path / 'markers'
    markers.mkdir()
    _write_hooks(repo, markers)
    commit_all(repo, 'hooks')
    git(repo, 'branch', 'spare', 'main')
    git(repo, 'config', 'core.hooksPath', '.husky')   # from here on, plain git would run them
    wt, side = tmp_path / 'wt', tmp_path / 'side'
    og.ensure_worktree(repo, wt, 'work', 'main')
    og.ensure_worktree(repo, side, 'side', 'main')
    write_files(wt, {'w.txt': 'w\n', 'junk.txt': 'j\n'})
    og.commit(wt, message='w', trailers=TRAILERS, paths=['w.txt'])
    og.discard_changes(wt)
    write_files(side, {'s.txt': 's\n'})
    og.commit(side, message='s', trailers=TRAILERS)
    assert og.merge_into_worktree(wt, ['side'], 'merge side') == []
    write_files(side, {'w.txt': 'conflict\n'})
    og.commit(side, message='conflict', trailers=TRAILERS)
    assert og.merge_into_worktree(wt, ['side'], 'merge side again') == ['w.txt']   # rolled back
    og.fast_forward(repo, 'spare', og.rev_parse(repo, 'work'))   # update-ref
    og.fast_forward(repo, 'main', og.rev_parse(repo, 'work'))    # merge --ff-only in the user's checkout
    assert og.delete_branch(repo, 'spare', base='main')
    og.remove_worktree(repo, side, force=True)
    assert sorted(p.name for p in markers.iterdir()) == []
    git(wt, 'commit', '--quiet', '--allow-empty', '-m', 'plain git')   # the control: the hooks are live
    assert {'post-commit', 'reference-transaction'} <= {p.name for p in markers.iterdir()}


def test_fsmonitor_and_external_diff_never_run(repo: Path, wt: Path, tmp_path: Path) -> None:
    marker = tmp_path / 'ran'
    script = tmp_path / 'tool.sh'
    script.write_text(f'#!/bin/sh\necho "$0" >> "{marker}"\n')
    script.chmod(0o755)
    git(repo, 'config', 'core.fsmonitor', str(script))
    git(repo, 'config', 'diff.external', str(script))
    write_files(wt, {'README.md': 'changed\n', 'new.txt': 'n\n'})
    assert og.changed_paths(wt) == ['README.md', 'new.txt']
    assert og.is_dirty(wt)
    sha = _committed(og.commit(wt, message='m', trailers=TRAILERS))
    og.checkout_blockers(repo, og.rev_parse(repo, 'main'), sha)
    assert not marker.exists()
    git(wt, 'status', '--porcelain')   # the control: plain git runs the fsmonitor hook
    assert marker.exists()


def test_head_state_and_commit_checks_branch_and_head(repo: Path, wt: Path) -> None:
    start = og.rev_parse(wt, 'HEAD')
    assert og.head_state(wt) == ('work', start)
    git(wt, 'switch', '--quiet', '-c', 'elsewhere')   # what a worker with full access could do
    write_files(wt, {'x.txt': 'x\n'})
    with pytest.raises(GitError, match=r'is on the branch elsewhere .*expected work.*Nothing was committed'):
        og.commit(wt, message='m', trailers=TRAILERS, expect_branch='work')
    git(wt, 'switch', '--quiet', '--detach')
    assert og.head_state(wt) == (None, start)
    with pytest.raises(GitError, match=r'is on a detached HEAD .*expected work'):
        og.commit(wt, message='m', trailers=TRAILERS, expect_branch='work')
    git(wt, 'switch', '--quiet', 'work')
    write_files(wt, {'y.txt': 'y\n'})
    git(wt, 'add', 'y.txt')
    git(wt, 'commit', '--quiet', '-m', 'a worker commits by itself')
    moved = git(wt, 'rev-parse', 'HEAD')
    with pytest.raises(GitError, match=rf'HEAD is at {moved[:12]}, expected {start[:12]}'):
        og.commit(wt, message='m', trailers=TRAILERS, expect_branch='work', expect_head=start)
    assert git(wt, 'rev-parse', 'HEAD') == moved and git(wt, 'diff', '--cached', '--name-only') == ''
    assert git(wt, 'status', '--porcelain') == '?? x.txt'   # the refusals staged nothing
    sha = _committed(og.commit(wt, message='m', trailers=TRAILERS, expect_branch='work', expect_head=moved))
    assert og.head_state(wt) == ('work', sha)


def test_contains(repo: Path, wt: Path) -> None:
    base = og.rev_parse(repo, 'main')
    ahead = _advance(wt, {'a.txt': 'a\n'})
    assert og.contains(repo, ahead, base) and og.contains(repo, ahead, ahead)
    assert not og.contains(repo, base, ahead)
    assert not og.contains(repo, ahead, 'f' * 40)   # not in the repository at all
