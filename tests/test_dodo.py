"""Plain doit in a host repository works on its latest run, through the dodo.py that init wrote."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.orchtest import THREE_TASK_SCRIPT, Host, make_host, three_task_plan


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Host:
    h = make_host(tmp_path, monkeypatch, capsys, THREE_TASK_SCRIPT)
    h.write_plan(three_task_plan())
    return h


def doit(host: Host, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, '-m', 'doit', *args], cwd=host.repo, capture_output=True, text=True,
                          env=os.environ.copy(), timeout=120)


def test_init_writes_a_dodo(host: Host) -> None:
    assert 'dodo_namespace' in (host.repo / 'dodo.py').read_text()


def test_doit_list_info_and_run(host: Host) -> None:
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--spec-file', 'spec.md')
    assert rc == 0, err
    listed = doit(host, 'list', '--all')
    assert listed.returncode == 0, listed.stderr
    for name in ('work:T1', 'prompt:T2', 'work:T3', 'worktree', 'report'):
        assert name in listed.stdout
    info = doit(host, 'info', 'work:T2')
    assert info.returncode == 0, info.stdout + info.stderr
    assert 'tasks/T1/result.json' in info.stdout and 'prompt.md' in info.stdout
    # up to date: plain doit launches no worker
    host.clear_log()
    used = (host.run_dir() / 'used.json').read_text()
    ran = doit(host, 'run')
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert host.launched_tasks() == []
    assert (host.run_dir() / 'used.json').read_text() != used   # a plain doit run is a use of the run
    # an edit re-executes exactly the affected tasks, through plain doit too
    plan = three_task_plan()
    plan['tasks'][2]['description'] = 'Review harder.'
    host.write_plan(plan)
    ran = doit(host, 'run')
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert host.launched_tasks() == ['T3']
    assert host.statuses() == {'T1': 'done', 'T2': 'done', 'T3': 'done'}


def test_doit_without_runs_lists_nothing(host: Host) -> None:
    listed = doit(host, 'list')
    assert listed.returncode == 0
    assert 'no run' in listed.stderr


def test_plain_doit_run_says_what_ran_and_what_failed(host: Host) -> None:
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--spec-file', 'spec.md')
    assert rc == 0, err
    plan = three_task_plan()
    plan['tasks'][0]['description'] = 'Create src/greet.py, politely.'
    host.write_plan(plan)
    host.script({'default': {'answer': 'auto'}, 'tasks': {'T1': {'answer': {'status': 'done'}}}})
    ran = doit(host, 'run')
    assert ran.returncode != 0
    assert 'start  work:T1' in ran.stdout and 'FAILED work:T1' in ran.stdout
    assert 'T1 failed: invalid-output' in ran.stdout and '1 failed, 2 stale' in ran.stdout
