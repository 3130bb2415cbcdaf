"""Broken workers: each failure is recorded with the right class, nothing leaks, and the run goes on.

Small limits in orchestrator.yaml `defaults:` keep hangs short. Every broken behaviour of the fake
codex runs in one plan with `--continue`; a good task after each must still finish.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.gitrepo import git, snapshot
from tests.support.orchtest import Host, make_host
from tests.support.procs import pgid_alive, pid_alive, sleeping, unique_nap, wait_for

FAST = """defaults:
  timeout_total: 30
  timeout_idle: 1
  timeout_first_event: 1.5
  schema_retries: 0
  failure_retries: 0
  retry_backoff: 0
"""


def checkout(repo: Path) -> dict[str, str]:
    """The user's own checkout: its HEAD, branch, status and main branch tip (the run's refs may change)."""
    snap = snapshot(repo)
    return {k: snap[k] for k in ('head', 'symbolic_head', 'status')} | {'main': git(repo, 'rev-parse', 'main')}


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Host:
    h = make_host(tmp_path, monkeypatch, capsys, {'default': {'answer': 'auto'}})
    (h.repo / '.orchestrator' / 'orchestrator.yaml').write_text(FAST)
    git(h.repo, 'commit', '-qam', 'fast limits')
    return h


def _task(tid: str, **extra: object) -> dict:
    return {'id': tid, 'role': 'implementer', 'title': f'Task {tid}', 'description': f'Do {tid}.',
            'paths': [f'{tid.lower()}.txt'], **extra}


def _state(host: Host, tid: str) -> dict:
    return json.loads((host.run_dir() / 'tasks' / tid / 'state.json').read_text())


def _attempt(host: Host, tid: str, n: int = 1) -> dict:
    return json.loads((host.run_dir() / 'tasks' / tid / f'attempt-{n}' / 'attempt.json').read_text())


# task id -> (fake behaviour, expected status, expected outcome in state.json, fragment of the reason)
BROKEN = {
    'FAILTURN': ({'fail': 'model exploded'}, 'failed', 'turn-failed', 'turn-failed: model exploded'),
    'EXIT3': ({'exit': 3}, 'failed', 'exit-nonzero', 'exit-nonzero: codex exited with rc 3'),
    'GARBAGE': ({'garbage': 5}, 'done', 'ok', None),
    'HANG': ({'hang': True}, 'failed', 'timeout', 'timeout: idle timeout: no output for 1 s'),
    'SILENT': ({'silent': True}, 'failed', 'timeout', 'timeout: first-event timeout: no output within 1.5 s'),
    'NOTURN': ({'no_turn_completed': True}, 'failed', 'exit-nonzero', 'emitted no turn.completed'),
    'INVALID': ({'answer': {'status': 'done'}}, 'failed', 'invalid-output', "'summary' is a required property"),
    'NOTJSON': ({'answer': 'Sure! Here is what I did.'}, 'failed', 'invalid-output', 'invalid answer'),
    'LIMIT': ({'fail': "You've hit your usage limit. Try again later."}, 'deferred', 'deferred', 'usage limit'),
    'CHILD': ({'child': True}, 'done', 'ok', None),
    'DELETE': ({'delete_workdir': True}, 'failed', 'workspace-lost', 'deleted or broke its worktree'),
}


def test_broken_workers_fail_cleanly_and_the_run_goes_on(host: Host, tmp_path: Path) -> None:
    outside = tmp_path / 'elsewhere' / 'outside.txt'
    script: dict = {'default': {'answer': 'auto'}, 'tasks': {}}
    tasks = []
    for tid, (behaviour, *_rest) in BROKEN.items():
        tasks.append(_task(tid))
        script['tasks'][tid] = behaviour
        ok = f'OK{len(tasks)}'   # a good, independent task after every broken one
        tasks.append(_task(ok))
        script['tasks'][ok] = {'edits': {f'{ok.lower()}.txt': f'{ok}\n'}}
    tasks.append(_task('OUTSIDE'))
    script['tasks']['OUTSIDE'] = {'write_outside': str(outside), 'edits': {'outside.txt': 'inside\n'}}
    host.write_plan({'version': 1, 'tasks': tasks})
    host.script(script)
    user_before = checkout(host.repo)
    user_files = sorted(p.name for p in host.repo.iterdir())

    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--continue')
    assert rc == 1, out + err   # a task failed
    assert 'Traceback' not in out + err

    doc = host.status()
    rows = {t['id']: t for t in doc['tasks']}
    for tid, (_b, status, outcome, reason) in BROKEN.items():
        assert rows[tid]['status'] == status, (tid, rows[tid])
        assert _state(host, tid)['outcome'] == outcome, (tid, _state(host, tid))
        if reason:
            assert reason in rows[tid]['reason'], (tid, rows[tid]['reason'])
    oks = [t['id'] for t in tasks if t['id'].startswith('OK')]
    assert all(rows[ok]['status'] == 'done' for ok in oks), {ok: rows[ok] for ok in oks}
    assert rows['OUTSIDE']['status'] == 'done'

    # garbage lines are counted, not fatal
    assert _attempt(host, 'GARBAGE')['garbage_lines'] == 5
    # timeouts say which limit fired
    assert _attempt(host, 'HANG')['timeout'] == 'idle' and _attempt(host, 'SILENT')['timeout'] == 'first-event'
    # nothing the fakes started is still running: hung workers, the orphaned child
    for entry in host.launches():
        assert wait_for(lambda pgid=entry['pgid']: not pgid_alive(pgid)), entry
    child = next(e for e in host.launches() if e['task_id'] == 'CHILD')
    assert child['child_pid'] and wait_for(lambda: not pid_alive(child['child_pid']))
    # a write outside the worktree is not committed; the user's checkout is untouched
    assert outside.read_text() == 'written outside the workspace\n'
    commit = host.result('OUTSIDE')['commit']
    assert git(host.repo, 'show', '--format=', '--name-only', commit) == 'outside.txt'
    assert checkout(host.repo) == user_before
    assert sorted(p.name for p in host.repo.iterdir()) == user_files
    # one commit per finished task that changed files, none for the failed ones
    subjects = host.branch_log(host.shared_branch())
    for tid, (_b, status, *_x) in BROKEN.items():
        assert (f'{tid}: Task {tid}' in subjects) == (status == 'done' and tid not in ('GARBAGE', 'CHILD'))
    assert all(f'{ok}: Task {ok}' in subjects for ok in oks)

    # fix the workers: a resume runs exactly the unfinished tasks, in a recreated worktree where needed
    host.script({'default': {'answer': 'auto'}})
    host.clear_log()
    rc, out, err = host.cli('resume')
    assert rc == 0, out + err
    unfinished = sorted(tid for tid, (_b, status, *_x) in BROKEN.items() if status != 'done')
    assert sorted(host.launched_tasks()) == unfinished
    assert set(host.statuses().values()) == {'done'}
    wt = host.repo / '.orchestrator' / 'worktrees' / host.run_dir().name
    assert git(wt, 'status', '--porcelain') == ''
    assert checkout(host.repo) == user_before


def test_worker_deleting_its_worktree_then_resume_recreates_it(host: Host) -> None:
    host.write_plan({'version': 1, 'tasks': [_task('A'), _task('B', depends_on=['A'])]})
    host.script({'default': {'answer': 'auto'}, 'tasks': {
        'A': [{'edits': {'a.txt': 'a\n'}, 'delete_workdir': True}, {'edits': {'a.txt': 'a\n'}}],
        'B': {'edits': {'b.txt': 'b\n'}}}})
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 1
    row = {t['id']: t for t in host.status()['tasks']}['A']
    assert row['status'] == 'failed' and 'workspace-lost' in row['reason'] and 'resume' in row['reason']
    checkout = host.repo / '.orchestrator' / 'worktrees' / f'{host.run_dir().name}.tasks' / 'A'
    assert not checkout.exists()   # its own checkout: the run's worktree and every other task's are untouched
    assert (host.repo / '.orchestrator' / 'worktrees' / host.run_dir().name).is_dir()
    rc, out, err = host.cli('resume')
    assert rc == 0, out + err
    assert host.statuses() == {'A': 'done', 'B': 'done'}
    wt = host.repo / '.orchestrator' / 'worktrees' / host.run_dir().name
    assert git(wt, 'log', '--format=%s', '-2').splitlines() == ['B: Task B', 'A: Task A']


def _script_codex(host: Host, body: str) -> None:
    """A stand-in codex that is not the fake: configured through codex.binary."""
    path = host.repo.parent / 'bin' / 'broken-codex'
    path.write_text('#!/bin/sh\n' + body)
    path.chmod(0o755)
    cfg = host.repo / '.orchestrator' / 'orchestrator.yaml'
    cfg.write_text(FAST + f'codex:\n  binary: {path}\n')


@pytest.mark.parametrize('body, outcome, fragment', [
    ('echo "error: not logged in (run codex login)" >&2\nexit 7\n', 'exit-nonzero',
     'codex exited with rc 7: error: not logged in'),
    ('cat >/dev/null\nprintf "this is not json\\n{broken\\n"\nexit 0\n', 'exit-nonzero', 'no turn.completed'),
    ('kill -9 $$\n', 'exit-nonzero', 'rc -9'),
], ids=['exit-at-once', 'garbage-only', 'killed'])
def test_codex_that_is_not_codex(host: Host, body: str, outcome: str, fragment: str) -> None:
    _script_codex(host, body)
    host.write_plan({'version': 1, 'tasks': [_task('A'), _task('B')]})
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--continue')
    assert rc == 1
    rows = {t['id']: t for t in host.status()['tasks']}
    for tid in ('A', 'B'):   # both ran and failed the same way: one bad worker does not stop the run
        assert rows[tid]['status'] == 'failed'
        assert fragment in rows[tid]['reason'], rows[tid]
        assert _state(host, tid)['outcome'] == outcome


def test_missing_codex_binary_is_refused_before_the_run_starts(host: Host) -> None:
    cfg = host.repo / '.orchestrator' / 'orchestrator.yaml'
    cfg.write_text(FAST + 'codex:\n  binary: /nonexistent/codex\n')
    host.write_plan({'version': 1, 'tasks': [_task('A')]})
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 2
    assert "codex executable '/nonexistent/codex' not found" in err and 'npm install -g @openai/codex@0.169.0' in err
    assert not (host.repo / '.orchestrator' / 'runs').exists()


def test_codex_gone_mid_run_is_a_launch_error(host: Host) -> None:
    fake = host.repo.parent / 'gone' / 'codex'
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\nexit 0\n')
    fake.chmod(0o755)
    cfg = host.repo / '.orchestrator' / 'orchestrator.yaml'
    cfg.write_text(FAST + f'codex:\n  binary: {fake}\n')
    host.write_plan({'version': 1, 'tasks': [_task('A')]})
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--run-id', 'r1')
    assert rc == 1                      # the stub exits without any event
    fake.unlink()
    rc, out, err = host.cli('resume', '--run-id', 'r1')
    assert rc == 1
    row = host.status()['tasks'][0]
    assert row['status'] == 'failed' and 'launch-error' in row['reason'] and 'not found' in row['reason']


def test_flood_of_200_mb_keeps_memory_flat(host: Host) -> None:
    """A 200 MB event stream goes to events.jsonl as it arrives; codex-orch's peak RSS stays small."""
    host.write_plan({'version': 1, 'tasks': [_task('FLOOD')]})
    host.script({'default': {'answer': 'auto'}, 'tasks': {'FLOOD': {'flood_mb': 200, 'edits': {'flood.txt': 'x\n'}}}})
    proc = subprocess.Popen([sys.executable, '-m', 'orch', 'run', '--plan-file', 'plan.json', '--run-id', 'flood'],
                            cwd=host.repo, env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    peak_kb = 0
    status = Path(f'/proc/{proc.pid}/status')
    while proc.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith('VmHWM:'):
                    peak_kb = max(peak_kb, int(line.split()[1]))
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    out, err = proc.communicate()
    assert proc.returncode == 0, out + err
    events = host.repo / '.orchestrator' / 'runs' / 'flood' / 'tasks' / 'FLOOD' / 'attempt-1' / 'events.jsonl'
    assert events.stat().st_size > 200 * 10**6
    print(f'peak RSS {peak_kb // 1024} MB')
    assert peak_kb and peak_kb < 150 * 1024, f'peak RSS {peak_kb // 1024} MB'
    attempt = json.loads(events.with_name('attempt.json').read_text())
    assert attempt['outcome'] == 'ok' and attempt['events'] > 20000


@pytest.mark.parametrize('command, timeout, status_fragment', [
    ('sleep {nap} & true', None, None),                 # leaves a background process
    ('sleep {nap}', 0.5, 'timed out'),                  # never ends
], ids=['background-leftover', 'timeout'])
def test_shell_gate_leaves_no_process_behind(host: Host, command: str, timeout: float | None,
                                             status_fragment: str | None) -> None:
    rule = {'name': 'gate', 'scope': 'task', 'input': ['{task_dir}/result.json'], 'output': '{task_dir}/gate.json',
            'action': {'shell': command.format(nap=(nap := unique_nap())), **({'timeout': timeout} if timeout else {})}}
    rules = host.repo / '.orchestrator' / 'rules'
    rules.mkdir(exist_ok=True)
    (rules / 'gate.yaml').write_text(json.dumps(rule))   # JSON is YAML
    host.write_plan({'version': 1, 'tasks': [_task('A'), _task('B', depends_on=['A'])]})
    started = time.monotonic()
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert time.monotonic() - started < 15
    # the gate runs in the Codex sandbox, in a PID namespace of its own: its child is found by its command line
    assert wait_for(lambda: not sleeping(nap)), 'the gate left a process behind'
    if status_fragment:
        assert rc == 1 and status_fragment in out, out
        assert host.statuses()['B'] == 'pending'   # a failed gate stops the dependents
    else:
        assert rc == 0, out + err
