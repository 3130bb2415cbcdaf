"""No git command codex-orch runs executes a program a worker could have configured: filter, merge and diff
drivers in the repository's config named by `.gitattributes` are switched off on every command (orch.adapters.git.
run), and a worker's sandbox never has /tmp or $TMPDIR as a writable root (orch.adapters.worker_env)."""
from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from orch.standin.server import Standin
from tests.support.gitrepo import git
from tests.support.orchtest import Host, make_host
from tests.support.realcodex import use_real_codex


def _plant(repo: Path, marker: Path) -> list[str]:
    """The drivers a worker under /tmp could write into the repository's config (each touches `marker`)."""
    return [f"git -C {repo} config filter.x.clean 'touch {marker}; cat'",
            f"git -C {repo} config filter.x.smudge 'touch {marker}; cat'",
            f"git -C {repo} config merge.evil.driver 'touch {marker}; false'",
            f"git -C {repo} config diff.x.textconv 'touch {marker}; cat'"]


ATTRIBUTES = '* filter=x merge=evil diff=x\n'
PLAN = {'version': 1, 'tasks': [{'id': 'T1', 'role': 'implementer', 'title': 'X', 'description': 'x',
                                 'paths': ['src/x.py', 'README.md', '.gitattributes']}]}


def test_drivers_a_worker_planted_never_run_in_status_resume_clean_prune(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / 'PWNED'
    host = make_host(tmp_path, monkeypatch, capsys)
    host.script({'tasks': {'T1': {'edits': {'src/x.py': 'x = 1\n', '.gitattributes': ATTRIBUTES},
                                  'commands': _plant(host.repo, marker)}}})
    host.write_plan(PLAN)
    assert host.cli('run', '--plan-file', 'plan.json', '--run-id', 'r1')[0] == 1   # the seal refuses the task
    assert not marker.exists()
    for args in (('status',), ('status', '--json'), ('resume',), ('prune',), ('clean', '--run-id', 'r1', '--force')):
        host.cli(*args)
        assert not marker.exists(), args
    assert git(host.repo, 'config', 'filter.x.clean')   # still there: codex-orch switched it off, did not delete it


def test_drivers_planted_after_a_run_never_run_in_merge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / 'PWNED'
    host: Host = make_host(tmp_path, monkeypatch, capsys)
    host.script({'tasks': {'T1': {'edits': {'src/x.py': 'x = 1\n', '.gitattributes': ATTRIBUTES,
                                            'README.md': 'hello\nfrom the run\n'}}}})
    host.write_plan(PLAN)
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--run-id', 'r1')
    assert rc == 0, out + err
    for command in _plant(host.repo, marker):   # as a worker that could write the repository's .git would have
        git(host.repo, *shlex.split(command)[3:])
    for args in (('status',), ('doctor',), ('merge', '--run-id', 'r1', '--allow-automerge'), ('prune',)):
        rc, out, err = host.cli(*args)
        assert not marker.exists(), args
        assert args[0] != 'merge' or rc == 0, out + err
    assert (host.repo / 'src' / 'x.py').read_text() == 'x = 1\n'   # merged: the base branch has the run's work


def test_a_real_worker_cannot_write_under_tmp_outside_its_checkout(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], standin: Standin) -> None:
    """pytest's tmp_path is under /tmp, a writable root of Codex's sandbox unless excluded: the worker's
    apply_patch to the repository's own .git/config and to a file beside the repository fails."""
    outside = tmp_path / 'outside.txt'
    host = make_host(tmp_path, monkeypatch, capsys)
    use_real_codex(host.repo)
    config = host.repo / '.git' / 'config'
    before = config.read_bytes()
    up = '../' * 40   # from wherever the checkout is, to / (apply_patch takes relative paths only)
    host.write_plan({'version': 1, 'tasks': [{'id': 'T1', 'role': 'implementer', 'title': 'X', 'paths': ['x.txt'],
                                              'description': f'[[standin: write {up}{str(outside)[1:]}]]\n'
                                                             '```\npwned\n```\n'
                                                             f'[[standin: write {up}{str(config)[1:]}]]\n'
                                                             '```\n[x]\n```\n'}]})
    host.cli('run', '--plan-file', 'plan.json', '--run-id', 'r1')
    assert standin.requests, 'the worker never asked the stand-in'
    assert not outside.exists()
    assert config.read_bytes() == before
