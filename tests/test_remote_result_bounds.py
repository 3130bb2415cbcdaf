"""A Dask worker's commit is bounded by what it unpacks to, not by its bundle's size, and may not plant symbolic
links out of the tree or over a tracked file (orch.adapters.git.unpacked_refusal, checked by
orch.steps.remote_work before anything is written into the task's checkout). Bundles crafted with git directly."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from orch.adapters import git as orch_git
from orch.core.config import ExecutorSettings
from tests.support.gitrepo import commit_all, git

_ENV = {'GIT_AUTHOR_NAME': 'a', 'GIT_AUTHOR_EMAIL': 'a@b', 'GIT_COMMITTER_NAME': 'a', 'GIT_COMMITTER_EMAIL': 'a@b'}


def _returned(tmp_path: Path, change: dict[str, bytes | tuple[str, str]]) -> tuple[Path, str, str, int]:
    """(the coordinator's repository, the snapshot, the worker's commit fetched from its bundle, the bundle's size).
    `change`: path -> content, or ('link', target) for a symbolic link (replacing whatever was there)."""
    coordinator = tmp_path / 'coordinator'
    coordinator.mkdir()
    git(coordinator, 'init', '-q')
    (coordinator / 'tracked.txt').write_text('x\n')
    commit_all(coordinator, 'base')
    snapshot = orch_git.snapshot_commit(coordinator, 'HEAD')
    worker = tmp_path / 'worker'
    orch_git.scratch_checkout(worker, orch_git.create_bundle(coordinator, snapshot, 'refs/orch/start'),
                              'refs/orch/start', snapshot, 'work')
    for rel, content in change.items():
        path = worker / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink() or path.exists():
            path.unlink()
        if isinstance(content, tuple):
            os.symlink(content[1], path)
        else:
            path.write_bytes(content)
    subprocess.run(['git', '-C', str(worker), 'add', '--all'], check=True, env={**os.environ, **_ENV})
    subprocess.run(['git', '-C', str(worker), 'commit', '-q', '-m', 'w'], check=True, env={**os.environ, **_ENV})
    bundle = orch_git.create_bundle(worker, 'HEAD', 'refs/orch/result', exclude=snapshot)
    commit = orch_git.fetch_bundle(coordinator, bundle, 'refs/orch/result', 'refs/orch-remote/r/T1/result')
    return coordinator, snapshot, commit, len(bundle)


def _refusal(repo: Path, a: str, b: str, **limits: int) -> str | None:
    settings = ExecutorSettings(**limits)   # the configured limits (defaults: 100 MB, 10000 files)
    return orch_git.unpacked_refusal(repo, a, b, max_bytes=settings.result_max_bytes,
                                     max_files=settings.result_max_files)


def test_a_small_bundle_that_unpacks_past_the_limit_is_refused(tmp_path: Path) -> None:
    repo, snapshot, commit, size = _returned(tmp_path, {'big.bin': b'\0' * 3_000_000})
    assert size < 50_000   # compressed: far below any limit on the bundle
    reason = _refusal(repo, snapshot, commit, result_max_bytes=1_000_000)
    assert reason is not None and 'unpacks to 3000000 bytes' in reason and 'result_max_bytes' in reason
    assert _refusal(repo, snapshot, commit) is None   # the default allows 3 MB


def test_too_many_files_are_refused(tmp_path: Path) -> None:
    repo, snapshot, commit, _ = _returned(tmp_path, {f'd/f{i}': b'x' for i in range(30)})
    reason = _refusal(repo, snapshot, commit, result_max_files=20)
    assert reason is not None and 'writes 30 files' in reason and 'result_max_files' in reason
    assert _refusal(repo, snapshot, commit, result_max_files=30) is None


def test_a_symbolic_link_replacing_a_tracked_file_is_refused(tmp_path: Path) -> None:
    repo, snapshot, commit, _ = _returned(tmp_path, {'tracked.txt': ('link', '/etc/shadow')})
    reason = _refusal(repo, snapshot, commit)
    assert reason == 'replaces the tracked file tracked.txt with a symbolic link'


@pytest.mark.parametrize('target', ['/etc/shadow', '../../outside', 'x/../../../outside', '../..'])
def test_a_symbolic_link_out_of_the_tree_is_refused(tmp_path: Path, target: str) -> None:
    repo, snapshot, commit, _ = _returned(tmp_path, {'a/link': ('link', target)})
    reason = _refusal(repo, snapshot, commit)
    assert reason is not None and reason.startswith('adds the symbolic link a/link pointing out of the tree')


def test_a_symbolic_link_inside_the_tree_is_kept(tmp_path: Path) -> None:
    repo, snapshot, commit, _ = _returned(tmp_path, {'a/link': ('link', '../tracked.txt'), 'b': b'y\n'})
    assert _refusal(repo, snapshot, commit) is None


def test_a_symbolic_link_through_another_link_out_of_the_tree_is_refused(tmp_path: Path) -> None:
    """`sub/b -> ..` stays inside, and `x -> sub/b/..` reads as inside lexically, but resolves through sub/b to the
    parent of the top: out of the tree."""
    repo, snapshot, commit, _ = _returned(tmp_path, {'sub/b': ('link', '..'), 'x': ('link', 'sub/b/..')})
    reason = _refusal(repo, snapshot, commit)
    assert reason is not None and reason.startswith('adds the symbolic link x pointing out of the tree'), reason
    (tmp_path / 'ok').mkdir()
    repo2, snapshot2, commit2, _ = _returned(tmp_path / 'ok', {'sub/b': ('link', '..'), 'x': ('link', 'sub/c/..'),
                                                               'sub/c/f': b'f\n'})
    assert _refusal(repo2, snapshot2, commit2) is None   # through directories only: inside
