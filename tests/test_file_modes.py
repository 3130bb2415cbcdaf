"""Files codex-orch writes follow the umask, like any program's: the user's dodo.py and .orchestrator/ are
readable by the group and others under the usual umask 022, and private under 077."""
from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.orchtest import THREE_TASK_SCRIPT, Host, make_host, three_task_plan


@pytest.fixture(params=[0o022, 0o077, 0o002], ids=lambda m: f'umask-{m:03o}')
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    # Set before the host is made, so `init` and the run both write under it; restored for the next test.
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


@pytest.fixture
def host(umask: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Host:
    h = make_host(tmp_path, monkeypatch, capsys, THREE_TASK_SCRIPT)
    h.write_plan(three_task_plan())
    return h


def modes(root: Path) -> dict[str, int]:
    """The permission bits of every regular file under root, worktrees aside (git and the worker write those)."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != 'worktrees']
        for name in filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            if stat.S_ISREG(st.st_mode):
                found[path.relative_to(root).as_posix()] = stat.S_IMODE(st.st_mode)
    return found


def test_init_and_run_files_follow_the_umask(host: Host, umask: int) -> None:
    expected = 0o666 & ~umask
    written_by_init = modes(host.repo / '.orchestrator')
    assert 'orchestrator.yaml' in written_by_init and '.gitignore' in written_by_init
    assert {**written_by_init, 'dodo.py': stat.S_IMODE((host.repo / 'dodo.py').stat().st_mode)} == \
        dict.fromkeys([*written_by_init, 'dodo.py'], expected)

    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--spec-file', 'spec.md')
    assert rc == 0, out + err
    run_files = modes(host.run_dir())
    for must in ('run.json', 'lock', 'tasks/T1/state.json', 'tasks/T1/result.json', 'tasks/T1/attempt-1/prompt.txt'):
        assert must in run_files, sorted(run_files)
    # SQLite creates doit.db itself, with its compiled-in 0644 & ~umask: not a file codex-orch writes.
    sqlite = 0o644 & ~umask
    assert {p: oct(m) for p, m in run_files.items()
            if m != (sqlite if p.startswith('doit.db') else expected)} == {}
