"""State survives `kill -9`: finished tasks are neither re-run nor committed twice."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from tests.support.gitrepo import git
from tests.support.orchtest import Host, cli_subprocess, make_host
from tests.support.procs import pgid_alive, wait_for


def chain_plan(n: int) -> dict:
    return {'version': 1, 'tasks': [
        {'id': f'T{i}', 'role': 'implementer', 'title': f'Step {i}', 'description': f'Write f{i}.txt',
         'depends_on': [f'T{i - 1}'] if i > 1 else [], 'paths': [f'f{i}.txt']} for i in range(1, n + 1)]}


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Host:
    script = {'default': {'answer': 'auto'},
              'tasks': {f'T{i}': {'edits': {f'f{i}.txt': f'{i}\n'}, 'sleep': 0.3 if i != 3 else 3}
                        for i in range(1, 5)}}
    h = make_host(tmp_path, monkeypatch, capsys, script)
    h.write_plan(chain_plan(4))
    return h


def test_kill_9_mid_run_then_resume(host: Host) -> None:
    proc = cli_subprocess(host.repo, 'run', '--plan-file', 'plan.json', '--run-id', 'killed')
    tasks = host.repo / '.orchestrator' / 'runs' / 'killed' / 'tasks'
    # T3's worker sleeps 3 s: kill codex-orch while it runs, after T1 and T2 finished. Its first event
    # on disk means the (fake) worker is up, with the handler that logs its SIGTERM installed.
    events = tasks / 'T3' / 'attempt-1' / 'events.jsonl'
    wait_for(lambda: (tasks / 'T2' / 'result.json').exists() and events.exists() and events.stat().st_size > 0)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # the running worker is told to stop when its parent dies (PR_SET_PDEATHSIG): no orphan
    wait_for(lambda: 'T3' in host.launched_tasks(), timeout=10)
    for entry in host.launches():
        wait_for(lambda pgid=entry['pgid']: not pgid_alive(pgid), timeout=10)
    host.clear_log()
    rc, out, err = host.cli('resume', '--run-id', 'killed')
    assert rc == 0, out + err
    assert host.launched_tasks() == ['T3', 'T4']
    subjects = git(host.repo, 'log', '--format=%s', json.loads(
        (host.repo / '.orchestrator' / 'runs' / 'killed' / 'run.json').read_text())['shared_branch']).splitlines()
    assert subjects[:4] == ['T4: Step 4', 'T3: Step 3', 'T2: Step 2', 'T1: Step 1']
    assert len(subjects) == len(set(subjects))


def test_interrupted_commit_is_finished_not_redone(host: Host) -> None:
    """A kill between the worker's answer and result.json: resume commits once, launches nothing."""
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--run-id', 'r1')
    assert rc == 0, err
    task_dir = host.repo / '.orchestrator' / 'runs' / 'r1' / 'tasks' / 'T4'
    result = host.result('T4')
    # Simulate the kill window: the answer was recorded (pending.json) and committed, result.json not written.
    pending = {'inputs_digest': result['inputs_digest'], 'exec_id': result['exec_id'],
               'answer': result['answer'], 'worker': {'usage': result['usage'], 'thread_id': result['thread_id']},
               'started_at': result['started_at']}
    (task_dir / 'pending.json').write_text(json.dumps(pending))
    (task_dir / 'result.json').unlink()
    db = host.repo / '.orchestrator' / 'runs' / 'r1' / 'doit.db'
    db.unlink()   # and doit's records are gone too
    host.clear_log()
    rc, out, err = host.cli('resume', '--run-id', 'r1')
    assert rc == 0, out + err
    assert host.launched_tasks() == []
    branch = json.loads((host.repo / '.orchestrator' / 'runs' / 'r1' / 'run.json').read_text())['shared_branch']
    subjects = git(host.repo, 'log', '--format=%s', branch).splitlines()
    assert subjects.count('T4: Step 4') == 1
    assert json.loads((task_dir / 'result.json').read_text())['commit'] == result['commit']
