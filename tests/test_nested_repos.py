"""A worker never gets a git repository committed: not a nested one it made (`git init`, `git clone`),
not a host submodule it filled in or moved. codex-orch does not initialise submodules in its worktrees;
changes inside one fail the commit, naming it, and discarding a worktree empties it again.

Real repositories and real git, both through orch.adapters.git and end to end with a fake codex.
"""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from orch.adapters import git as og
from orch.errors import GitError
from tests.support.gitrepo import commit_all, git, isolate_git, make_repo, write_files
from tests.support.orchtest import Host, make_host

TRAILERS = {'Orch-Run': 'r1', 'Orch-Task': 't1'}
INIT_AND_COMMIT = ('git init -q {d} && cd {d} && echo x > x.txt && git add x.txt && '
                   'git -c user.name=w -c user.email=w@example.com commit -q -m inner')


@pytest.fixture(autouse=True)
def _isolated_git(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate_git(monkeypatch, tmp_path)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path, {'README.md': 'hello\n'})


@pytest.fixture
def wt(repo: Path, tmp_path: Path) -> Path:
    path = tmp_path / 'wt'
    og.ensure_worktree(repo, path, 'work', 'main')
    return path.resolve()


def _sh(cwd: Path, command: str) -> None:
    subprocess.run(['bash', '-c', command], cwd=cwd, check=True, capture_output=True)


def _nothing_staged_or_committed(wt: Path, head: str) -> None:
    assert git(wt, 'rev-parse', 'HEAD') == head
    assert git(wt, 'diff', '--cached', '--name-only') == ''


# --- nested repositories -------------------------------------------------------------------------

def test_nested_repositories_are_found_and_refused_by_name(repo: Path, wt: Path, tmp_path: Path) -> None:
    head = og.rev_parse(wt, 'HEAD')
    _sh(wt, INIT_AND_COMMIT.format(d='sub'))
    _sh(wt, 'git init -q empty')                           # no commit yet: `git add` would fail outright
    write_files(wt, {'pointer/.git': f'gitdir: {repo / ".git"}\n', 'a.txt': 'a\n'})  # a .git file
    assert og.nested_repositories(wt) == ['empty', 'pointer', 'sub']
    assert og.nested_repositories(wt, ['sub/x.txt', 'a.txt']) == ['sub']
    assert og.nested_repositories(wt, ['a.txt']) == []
    assert og.changed_paths(wt) == ['a.txt', 'empty/', 'pointer/', 'sub/']
    with pytest.raises(GitError, match=r'empty, pointer, sub are git repositories inside the worktree.*'
                                       r'Remove its \.git.*Nothing was committed'):
        og.commit(wt, message='m', trailers=TRAILERS)
    _nothing_staged_or_committed(wt, head)
    with pytest.raises(GitError, match=r'refusing to commit in .*: sub is a git repository'):
        og.commit(wt, message='m', trailers=TRAILERS, paths=['a.txt', 'sub/'])
    _nothing_staged_or_committed(wt, head)
    # A commit of other files only (a parallel task's) is not held up.
    sha = og.commit(wt, message='m', trailers=TRAILERS, paths=['a.txt'])
    assert sha is not None and og.commit_files(wt, sha) == ['a.txt']
    # Discarding removes them: they are a worker's leftovers.
    og.discard_changes(wt)
    assert og.nested_repositories(wt) == [] and og.changed_paths(wt) == []
    assert not (wt / 'sub').exists() and (repo / '.git' / 'HEAD').exists()


def test_discarding_only_some_paths_removes_a_nested_repository_among_them(wt: Path) -> None:
    _sh(wt, INIT_AND_COMMIT.format(d='mine') + ' && cd .. && ' + INIT_AND_COMMIT.format(d='theirs'))
    og.discard_changes(wt, [':(literal)mine/'])
    assert og.nested_repositories(wt) == ['theirs']


def test_a_gitlink_staged_by_hand_is_refused_and_unstaged(repo: Path, wt: Path) -> None:
    """A worker with full access could stage a gitlink itself; commit() looks at the index too."""
    head = og.rev_parse(wt, 'HEAD')
    _sh(wt, INIT_AND_COMMIT.format(d='sub') + ' && cd .. && git add sub 2>/dev/null')
    git(wt, 'update-index', '--add', '--cacheinfo', f'160000,{head},vendored')
    (wt / 'vendored').mkdir()   # as a checkout leaves an unpopulated submodule
    write_files(wt, {'a.txt': 'a\n'})
    assert og.nested_repositories(wt) == []   # staged, so not untracked: only the index shows them
    with pytest.raises(GitError, match=r'sub, vendored are git repositories inside the worktree'):
        og.commit(wt, message='m', trailers=TRAILERS)
    _nothing_staged_or_committed(wt, head)


# --- host submodules -----------------------------------------------------------------------------

@pytest.fixture
def sub_repo(tmp_path: Path) -> Path:
    """A host repository with the submodule `vendor/lib`."""
    source = make_repo(tmp_path, {'lib.c': 'int x;\n'}, name='libsource')
    host = make_repo(tmp_path, {'README.md': 'host\n'}, name='host')
    git(host, '-c', 'protocol.file.allow=always', 'submodule', 'add', '--quiet', str(source), 'vendor/lib')
    commit_all(host, 'add the submodule')
    return host


@pytest.fixture
def sub_wt(sub_repo: Path, tmp_path: Path) -> Path:
    path = tmp_path / 'sub-wt'
    og.ensure_worktree(sub_repo, path, 'work', 'main')
    return path.resolve()


def test_worktrees_leave_submodules_empty_and_a_clean_one_commits_normally(sub_wt: Path) -> None:
    assert (sub_wt / 'vendor' / 'lib').is_dir() and list((sub_wt / 'vendor' / 'lib').iterdir()) == []
    assert og.filled_submodules(sub_wt) == [] and og.changed_paths(sub_wt) == []
    write_files(sub_wt, {'src.c': 'int y;\n'})
    sha = og.commit(sub_wt, message='m', trailers=TRAILERS)
    assert sha is not None and og.commit_files(sub_wt, sha) == ['src.c']


def test_files_written_in_a_submodule_fail_the_commit_by_name(sub_wt: Path) -> None:
    head = og.rev_parse(sub_wt, 'HEAD')
    write_files(sub_wt, {'vendor/lib/new.c': 'lost?\n', 'src.c': 'int y;\n'})
    assert og.filled_submodules(sub_wt) == ['vendor/lib']
    assert og.changed_paths(sub_wt) == ['src.c', 'vendor/lib/']
    with pytest.raises(GitError, match=r'the submodule vendor/lib changed: codex-orch does not initialise '
                                       r'submodules in its worktrees'):
        og.commit(sub_wt, message='m', trailers=TRAILERS)
    _nothing_staged_or_committed(sub_wt, head)
    assert og.filled_submodules(sub_wt, ['src.c']) == []
    assert og.commit(sub_wt, message='m', trailers=TRAILERS, paths=['src.c']) is not None
    og.discard_changes(sub_wt)
    assert (sub_wt / 'vendor' / 'lib').is_dir() and list((sub_wt / 'vendor' / 'lib').iterdir()) == []
    assert og.changed_paths(sub_wt) == []


def test_a_moved_submodule_is_refused_and_git_never_runs_inside_it(sub_wt: Path, sub_repo: Path,
                                                                  tmp_path: Path) -> None:
    """A worker clones the submodule, commits in it and plants a clean filter: git status would run
    `git status` inside it, with the worker's config; codex-orch's git never looks inside."""
    head = og.rev_parse(sub_wt, 'HEAD')
    marker = tmp_path / 'filter-ran'
    lib = sub_wt / 'vendor' / 'lib'
    lib.rmdir()
    source = tmp_path / 'libsource'
    _sh(sub_wt, f'git -c protocol.file.allow=always clone -q {source} vendor/lib')
    _sh(lib, f'git config filter.evil.clean "touch {marker}; cat" && echo "* filter=evil" > .gitattributes && '
             'echo "int z;" >> lib.c && git add .gitattributes && '
             'git -c user.name=w -c user.email=w@example.com commit -q -m moved .gitattributes')
    assert marker.exists()   # the filter works: committing .gitattributes ran it
    marker.unlink()
    _sh(lib, 'touch -d "2001-01-01" lib.c')   # stat differs from the index: status must read the file
    assert og.changed_paths(sub_wt) == ['vendor/lib/']
    with pytest.raises(GitError, match=r'the submodule vendor/lib changed'):
        og.commit(sub_wt, message='m', trailers=TRAILERS)
    _nothing_staged_or_committed(sub_wt, head)
    og.discard_changes(sub_wt)
    assert not marker.exists()
    assert list(lib.iterdir()) == []


def test_discard_never_follows_a_symlink_a_worker_put_in_place_of_a_submodule(
        sub_wt: Path, tmp_path: Path) -> None:
    outside = tmp_path / 'precious'
    write_files(outside, {'lib/keep.txt': 'keep\n', 'keep.txt': 'keep\n'})
    vendor = sub_wt / 'vendor'
    (vendor / 'lib').rmdir()
    vendor.rmdir()
    vendor.symlink_to(outside)        # vendor/lib now resolves to precious/lib
    assert og.filled_submodules(sub_wt) == []
    og.discard_changes(sub_wt)
    og.discard_changes(sub_wt, [':(literal)vendor/lib/'])
    assert (outside / 'lib' / 'keep.txt').read_text() == 'keep\n' and (outside / 'keep.txt').exists()


def test_discarding_some_paths_empties_a_filled_submodule_among_them(sub_wt: Path) -> None:
    write_files(sub_wt, {'vendor/lib/a/b.c': 'x\n', 'other.txt': 'o\n'})
    og.discard_changes(sub_wt, [':(literal)other.txt'])
    assert og.filled_submodules(sub_wt) == ['vendor/lib']
    og.discard_changes(sub_wt, [':(literal)vendor/lib/'])
    assert og.filled_submodules(sub_wt) == []


# --- end to end ----------------------------------------------------------------------------------

def _host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any, script: dict[str, Any],
          *, per_task: bool = False) -> Host:
    host = make_host(tmp_path, monkeypatch, capsys, script)
    cfg = host.repo / '.orchestrator' / 'orchestrator.yaml'
    text = cfg.read_text().replace('failure_retries: 1 ', 'failure_retries: 0 ')
    if per_task:
        text = text.replace('use_single_workspace: true', 'use_single_workspace: false')
    cfg.write_text(text)
    host.write_plan({'version': 1, 'title': 'Nested', 'tasks': [
        {'id': 'T1', 'role': 'implementer', 'title': 'Vendor a library', 'description': 'Add it.',
         'depends_on': [], 'paths': ['vendor/**', 'a.txt']}]})
    commit_all(host.repo, 'plan')
    return host


@pytest.mark.parametrize('per_task', [False, True], ids=['shared', 'per-task'])
def test_a_worker_that_makes_a_nested_repository_fails_its_task_naming_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any, per_task: bool) -> None:
    script = {'default': {'answer': 'auto'}, 'tasks': {
        'T1': {'commands': [INIT_AND_COMMIT.format(d='vendor/thing')], 'edits': {'a.txt': 'a\n'}}}}
    host = _host(tmp_path, monkeypatch, capsys, script, per_task=per_task)
    base = git(host.repo, 'rev-parse', 'HEAD')
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--run-id', 'r1')
    assert rc == 1, out + err
    row = host.status()['tasks'][0]
    assert row['status'] == 'failed'
    assert 'vendor/thing is a git repository inside the worktree' in row['reason']
    branches = git(host.repo, 'for-each-ref', '--format=%(refname:short)', 'refs/heads/orch/').splitlines()
    assert branches and all(git(host.repo, 'rev-parse', b) == base for b in branches)   # nothing committed


def test_a_worker_that_writes_into_a_host_submodule_fails_its_task_naming_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    script = {'default': {'answer': 'auto'}, 'tasks': {
        'T1': {'edits': {'vendor/lib/patch.c': 'int patched;\n', 'a.txt': 'a\n'}}}}
    host = _host(tmp_path, monkeypatch, capsys, script)
    source = make_repo(tmp_path, {'lib.c': 'int x;\n'}, name='libsource')
    git(host.repo, '-c', 'protocol.file.allow=always', 'submodule', 'add', '--quiet', str(source), 'vendor/lib')
    commit_all(host.repo, 'add the submodule')
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--run-id', 'r1')
    assert rc == 1, out + err
    row = host.status()['tasks'][0]
    assert row['status'] == 'failed' and 'the submodule vendor/lib changed' in row['reason']
