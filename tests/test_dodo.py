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


def test_groups_are_not_perpetually_out_of_date(host: Host) -> None:
    assert host.cli('run', '--plan-file', 'plan.json', '--spec-file', 'spec.md')[0] == 0
    listed = doit(host, 'list', '--status', '--all')
    assert listed.returncode == 0, listed.stderr
    status = {line.split()[1]: line.split()[0] for line in listed.stdout.splitlines()}
    assert status['work'] == status['prompt'] == 'U' and status['work:T2'] == 'U'
    # a group being up to date by itself still runs whichever of its tasks are not
    plan = three_task_plan()
    plan['tasks'][2]['description'] = 'Review harder.'
    host.write_plan(plan)
    host.clear_log()
    ran = doit(host, 'run', 'prompt', 'work')
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert host.launched_tasks() == ['T3']


def test_a_dodo_can_target_a_run_other_than_the_latest(host: Host) -> None:
    assert host.cli('run', '--plan-file', 'plan.json', '--spec-file', 'spec.md', '--run-id', 'first')[0] == 0
    plan = three_task_plan()
    plan['tasks'] = plan['tasks'][:1]
    host.write_plan(plan, 'small.json')
    assert host.cli('run', '--plan-file', 'small.json', '--run-id', 'second')[0] == 0
    latest = doit(host, 'list', '--all')
    assert 'work:T1' in latest.stdout and 'work:T2' not in latest.stdout        # the latest: second
    by_var = doit(host, 'run_id=first', 'list', '--all')
    assert by_var.returncode == 0 and 'work:T2' in by_var.stdout and 'run first' in by_var.stdout
    by_env = subprocess.run([sys.executable, '-m', 'doit', 'list', '--all'], cwd=host.repo, capture_output=True,
                            text=True, env={**os.environ, 'CODEX_ORCH_RUN_ID': 'first'}, timeout=120)
    assert by_env.returncode == 0 and 'work:T2' in by_env.stdout
    # a run asked for by name that does not exist is an error, never an empty (green) build
    typo = doit(host, 'run_id=frist', 'run')
    assert typo.returncode == 3 and "run 'frist' does not exist" in typo.stdout + typo.stderr
