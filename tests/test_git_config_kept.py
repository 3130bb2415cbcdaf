"""The repository's driver overrides (orch.adapters.git.drivers) are listed once while its config files are as they
were; a driver planted since, wherever git would read it from, still never runs."""
from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orch.adapters import git as og
from orch.adapters.git import drivers
from orch.adapters.git import run as git_run
from tests.support.gitrepo import git, isolate_git, make_repo

FILTER = '[filter "evil"]\n\tclean = touch {marker}\n\tsmudge = touch {marker}\n'


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    isolate_git(monkeypatch, tmp_path)
    drivers._overrides.clear()
    yield
    drivers._overrides.clear()


@pytest.fixture
def wt(tmp_path: Path) -> Path:
    repo = make_repo(tmp_path, {'README.md': 'hello\n', '.gitattributes': '*.txt filter=evil\n'})
    path = tmp_path / 'wt'
    og.ensure_worktree(repo, path, 'work', 'main')
    return path.resolve()


def settle() -> None:
    """Wait until the config files were written over a second ago: a listing read from a file written within the
    last second is not kept (its stat may not tell a second write in the same clock tick)."""
    time.sleep(1.1)


def config_files(wt: Path) -> list[Path]:
    git_dir = wt / git(wt, 'rev-parse', '--git-dir').strip()
    common = wt / git(wt, 'rev-parse', '--git-common-dir').strip()
    return [wt / '.git', git_dir / 'commondir', git_dir / 'config.worktree', git_dir / 'HEAD', common / 'config']


def kept(wt: Path) -> bool:
    """Whether a listing for the checkout at `wt` is kept (per git dir)."""
    return str(config_files(wt)[1].parent) in drivers._overrides


def listings(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    count = [0]
    execute = git_run._execute

    def counting(argv: list[str], *args: object, **kwargs: object) -> object:
        if 'config' in argv and '--list' in argv:
            count[0] += 1
        return execute(argv, *args, **kwargs)   # type: ignore[arg-type]
    monkeypatch.setattr(git_run, '_execute', counting)
    return count


def add_a_file(wt: Path, name: str) -> None:
    (wt / name).write_text('x\n')
    git_run.run(wt, 'add', '--', name)


def test_a_steady_config_is_listed_once(wt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settle()
    count = listings(monkeypatch)
    for _ in range(3):
        git_run.run(wt, 'status', '--porcelain')
    assert count[0] == 1


def test_a_config_whose_stat_cannot_tell_its_content_is_listed_every_time(wt: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    count = listings(monkeypatch)
    common_config = config_files(wt)[-1]
    whole_second = (int(time.time()) - 5) * 1_000_000_000   # a coarse filesystem's time: racy however old
    os.utime(common_config, ns=(whole_second, whole_second))
    settle()   # utime sets the ctime to now: only the whole second may make it racy
    for _ in range(3):
        git_run.run(wt, 'status', '--porcelain')
    assert count[0] == 3


@pytest.mark.parametrize('where', ['common config', 'worktree config', 'included file', 'new include',
                                   'include of an include', 'branch include', 'include through a symlink'])
def test_a_driver_planted_after_a_listing_never_runs(wt: Path, tmp_path: Path, where: str) -> None:
    marker = tmp_path / 'ran'
    files = config_files(wt)
    common_config = files[-1]
    git_dir = files[1].parent
    included = tmp_path / 'included.cfg'
    if where in ('included file', 'include of an include'):
        git(wt, 'config', '--local', 'include.path', str(included))   # names a file not there yet
    if where == 'worktree config':
        git(wt, 'config', '--local', 'extensions.worktreeConfig', 'true')
    if where == 'branch include':
        git(wt, 'config', '--local', 'includeIf.onbranch:other.path', str(included))
        included.write_text(FILTER.format(marker=marker))   # not read on `work`
    if where == 'include through a symlink':   # `link/../x` is where the symlink leads, not beside it
        deep = tmp_path / 'elsewhere' / 'deep'
        deep.mkdir(parents=True)
        (common_config.parent / 'link').symlink_to(deep)
        git(wt, 'config', '--local', 'include.path', 'link/../evil.inc')
        included = tmp_path / 'elsewhere' / 'evil.inc'
    settle()
    add_a_file(wt, 'a.txt')
    assert kept(wt) and not marker.exists()   # the listing is kept
    if where == 'common config':
        with common_config.open('a') as f:
            f.write(FILTER.format(marker=marker))
    elif where == 'worktree config':
        (git_dir / 'config.worktree').write_text(FILTER.format(marker=marker))
    elif where in ('included file', 'include through a symlink'):
        included.write_text(FILTER.format(marker=marker))
    elif where == 'new include':
        included.write_text(FILTER.format(marker=marker))
        git(wt, 'config', '--local', 'include.path', str(included))
    elif where == 'include of an include':
        second = tmp_path / 'second.cfg'
        included.write_text(f'[include]\n\tpath = {second}\n')
        settle()
        add_a_file(wt, 'b.txt')
        second.write_text(FILTER.format(marker=marker))
    elif where == 'branch include':
        git(wt, 'checkout', '-q', '-b', 'other')
    add_a_file(wt, 'c.txt')
    git_run.run(wt, 'checkout', '--', '.')
    assert not marker.exists(), f'a filter planted in the {where} ran'


def test_a_checkout_made_just_now_keeps_its_listing(wt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """codex-orch writes a checkout's `.git` and its git dir's `commondir` whenever it makes one: they are compared by
    content, so a config that is steady is listed once however fresh those pointers are."""
    settle()
    fresh = tmp_path / 'fresh'
    og.ensure_worktree(tmp_path / 'repo', fresh, 'other', 'main')
    count = listings(monkeypatch)
    for _ in range(3):
        git_run.run(fresh, 'status', '--porcelain')
    assert count[0] == 1


def test_a_git_pointer_turned_to_another_repository_is_listed_again(wt: Path, tmp_path: Path) -> None:
    marker = tmp_path / 'ran'
    evil = make_repo(tmp_path / 'evil', {'a.txt': 'x\n', '.gitattributes': '*.txt filter=evil\n'})
    with (evil / '.git' / 'config').open('a') as f:
        f.write(FILTER.format(marker=marker))
    settle()
    add_a_file(wt, 'a.txt')
    assert kept(wt) and not marker.exists()   # the listing is kept
    (wt / '.git').write_text(f'gitdir: {evil / ".git"}\n')
    git_run.run(wt, 'checkout', '--', '.')
    git_run.run(wt, 'status', '--porcelain')
    assert not marker.exists(), 'a filter of the repository a rewritten .git points at ran'


def test_a_checkout_moved_keeps_its_listing(wt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A task's checkout taken from the pool is a moved worktree: its repository config is the one it had."""
    settle()
    git_run.run(wt, 'status', '--porcelain')
    moved = tmp_path / 'moved'
    og.move_worktree(tmp_path / 'repo', wt, moved)
    count = listings(monkeypatch)
    git_run.run(moved, 'status', '--porcelain')
    assert count[0] == 0
