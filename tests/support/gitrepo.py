"""Real temporary git repositories for tests, built with plain `git` (independent of orch.adapters.git)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

TEST_IDENTITY = ('Test Author', 'test@example.com')
# Variables that would point git at another repository; never inherited by a test.
_LOCATING_VARS = ('GIT_DIR', 'GIT_WORK_TREE', 'GIT_INDEX_FILE', 'GIT_OBJECT_DIRECTORY',
                  'GIT_ALTERNATE_OBJECT_DIRECTORIES', 'GIT_COMMON_DIR', 'GIT_NAMESPACE', 'GIT_PREFIX')


def isolate_git(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Make git ignore the machine's configuration and use a fixed identity."""
    config = tmp_path / 'empty.gitconfig'
    config.write_text('')
    monkeypatch.setenv('GIT_CONFIG_GLOBAL', str(config))
    monkeypatch.setenv('GIT_CONFIG_NOSYSTEM', '1')
    for role in ('AUTHOR', 'COMMITTER'):
        monkeypatch.setenv(f'GIT_{role}_NAME', TEST_IDENTITY[0])
        monkeypatch.setenv(f'GIT_{role}_EMAIL', TEST_IDENTITY[1])
    for name in _LOCATING_VARS:
        monkeypatch.delenv(name, raising=False)


def git(path: Path, *args: str) -> str:
    """Run git in `path`; return stdout without the trailing newline; fail the test on error."""
    res = subprocess.run(['git', '-C', str(path), *args], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise AssertionError(f'git {" ".join(args)} failed in {path}:\n{res.stderr}')
    return res.stdout.rstrip('\n')


def write_files(root: Path, files: dict[str, str]) -> None:
    for rel, content in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content, encoding='utf-8')


def commit_all(path: Path, msg: str) -> str:
    """Stage everything in `path` and commit it; return the new sha."""
    git(path, 'add', '--all')
    git(path, 'commit', '--quiet', '--allow-empty', '-m', msg)
    return git(path, 'rev-parse', 'HEAD')


def make_repo(tmp_path: Path, files: dict[str, str] | None = None, *, name: str = 'repo',
              branch: str = 'main') -> Path:
    """A new repository under `tmp_path/name` with one commit holding `files`."""
    root = tmp_path / name
    root.mkdir(parents=True)
    git(root, 'init', '--quiet', f'--initial-branch={branch}')
    write_files(root, files if files is not None else {'README.md': 'hello\n'})
    commit_all(root, 'initial')
    return root.resolve()


def bare_origin(repo: Path, tmp_path: Path) -> Path:
    """A bare repository at tmp_path/remote.git, added to `repo` as `origin`, with the current HEAD pushed as main."""
    remote = tmp_path / 'remote.git'
    subprocess.run(['git', 'init', '--quiet', '--bare', str(remote)], check=True)
    git(repo, 'remote', 'add', 'origin', str(remote))
    git(repo, 'push', '--quiet', 'origin', 'HEAD:refs/heads/main')
    return remote


def snapshot(path: Path) -> dict[str, str]:
    """Refs, HEAD and status of a checkout, to prove an operation changed nothing."""
    return {
        'refs': git(path, 'for-each-ref', '--format=%(refname) %(objectname)'),
        'head': git(path, 'rev-parse', 'HEAD'),
        'symbolic_head': git(path, 'symbolic-ref', '--quiet', 'HEAD'),
        'status': git(path, 'status', '--porcelain', '--untracked-files=all'),
        'worktrees': git(path, 'worktree', 'list', '--porcelain'),
    }


def file_tree(path: Path) -> dict[str, str]:
    """Every file under `path` except .git, with its content."""
    result = {}
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = [d for d in dirnames if d != '.git']
        for name in filenames:
            full = Path(dirpath) / name
            if name != '.git':
                result[full.relative_to(path).as_posix()] = full.read_text(encoding='utf-8', errors='replace')
    return result
