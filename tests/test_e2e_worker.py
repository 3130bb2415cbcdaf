"""Workers that never hang, never lie, never waste a token: the real Codex CLI against the stand-in."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orch.runstate.state import read_result
from orch.standin.server import Standin, write_codex_home
from tests.support.gitrepo import commit_all
from tests.support.orchtest import Host, make_host
from tests.support.realcodex import use_real_codex

pytestmark = pytest.mark.e2e


def one_task(description: str, task_id: str = 'T1') -> dict:
    return {'version': 1, 'tasks': [{'id': task_id, 'role': 'implementer', 'title': 'Do it',
                                     'description': description, 'paths': ['out.txt']}]}


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
         standin: Standin) -> Host:
    h = make_host(tmp_path, monkeypatch, capsys)
    use_real_codex(h.repo, 'roles:\n  implementer:\n    timeout_idle: 3\n    failure_retries: 0\n')
    commit_all(h.repo, 'use the real codex')
    return h


def attempts(host: Host, task_id: str = 'T1') -> list[dict]:
    task_dir = host.run_dir() / 'tasks' / task_id
    return [json.loads((d / 'attempt.json').read_text()) for d in sorted(task_dir.glob('attempt-*'))]


def codex_processes(marker: str) -> list[str]:
    """Live processes whose command line or cwd mentions `marker` (the test's tmp dir)."""
    found = []
    for proc in Path('/proc').iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / 'cmdline').read_bytes().replace(b'\0', b' ').decode(errors='replace')
            cwd = os.readlink(proc / 'cwd')
        except OSError:
            continue
        if 'codex' in cmd and (marker in cmd or marker in cwd):
            found.append(f'{proc.name}: {cmd}')
    return found


def test_prose_first_is_fixed_by_one_resume_in_the_same_thread(host: Host, standin: Standin) -> None:
    host.write_plan(one_task('Answer.\n[[standin: prose-first]]'))
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 0, out + err
    first, second = attempts(host)
    assert first['outcome'] == 'invalid-output' and second['outcome'] == 'ok'
    assert second['kind'] == 'schema-retry' and first['thread_id'] == second['thread_id']
    reminder = (host.run_dir() / 'tasks' / 'T1' / 'attempt-2' / 'prompt.txt').read_text()
    assert first['validation_errors'] and first['validation_errors'][0] in reminder
    assert 'not JSON' in reminder
    # usage: recorded per task equals the sum the stand-in reported, despite cumulative totals on resume
    reported = [r['usage'] for r in standin.requests if r.get('usage')]
    result = host.result('T1')
    assert result['usage']['input_tokens'] == sum(u['input_tokens'] for u in reported)
    assert result['usage']['output_tokens'] == sum(u['output_tokens'] for u in reported)
    status = {t['id']: t for t in host.status()['tasks']}
    billed = result['usage']['input_tokens'] - result['usage']['cached_input_tokens']
    assert status['T1']['usage'] == {**result['usage'], 'billed_input_tokens': billed}   # status adds the split


def test_server_that_never_answers_times_out_and_leaves_no_process(host: Host, tmp_path: Path) -> None:
    host.write_plan(one_task('Hang.\n[[standin: hang-headers]]'))
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 1
    (only,) = attempts(host)
    assert only['outcome'] == 'timeout' and only['timeout'] == 'idle'
    assert 2.5 <= only['duration'] < 15
    assert codex_processes(str(tmp_path)) == []
    assert 'timeout' in {t['id']: t for t in host.status()['tasks']}['T1']['reason']


def test_http_500_once_then_ok(host: Host, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               standin: Standin) -> None:
    # codex's own request retry absorbs a single 500
    env = write_codex_home(tmp_path / 'codex-home', standin.base_url, request_max_retries=1)
    monkeypatch.setenv('CODEX_HOME', env['CODEX_HOME'])
    host.write_plan(one_task('Flaky.\n[[standin: http500-once]]'))
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 0, out + err
    assert [r['status'] for r in standin.requests][:2] == [500, 200]


def test_http_500_always_fails_with_the_message_and_bounded_retries(host: Host, standin: Standin) -> None:
    use_real_codex(host.repo, 'defaults:\n  failure_retries: 2\n  retry_backoff: 0.1\n')
    host.write_plan(one_task('Broken.\n[[standin: http500-always]]'))
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 1
    runs = attempts(host)
    assert [a['outcome'] for a in runs] == ['turn-failed'] * 3
    row = {t['id']: t for t in host.status()['tasks']}['T1']
    assert row['status'] == 'failed' and 'high demand' in row['reason']
    assert len(standin.requests) == 3


def test_quota_defers_and_a_later_resume_finishes(host: Host, standin: Standin) -> None:
    host.write_plan(one_task('Write it.'))
    standin.forced = '[[standin: quota]]'
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 75, out + err
    row = {t['id']: t for t in host.status()['tasks']}['T1']
    assert row['status'] == 'deferred' and 'quota' in row['reason'].lower()
    assert len(attempts(host)) == 1          # deferred work is not retried now
    standin.forced = ''
    rc, out, err = host.cli('resume')
    assert rc == 0, out + err
    assert host.statuses() == {'T1': 'done'}


def test_budget_stops_before_the_last_task(host: Host, standin: Standin) -> None:
    # each task costs 150 tokens (120 in + 30 out) with the stand-in's default usage
    use_real_codex(host.repo, 'token_budget: 250\n')
    plan = {'version': 1, 'tasks': [
        {'id': f'T{i}', 'role': 'implementer', 'title': f'Step {i}', 'description': 'x',
         'depends_on': [f'T{i - 1}'] if i > 1 else []} for i in (1, 2, 3)]}
    host.write_plan(plan)
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 75
    assert host.statuses() == {'T1': 'done', 'T2': 'done', 'T3': 'deferred'}
    assert 'token budget of 250 exhausted' in out
    assert sum(1 for r in standin.requests if r.get('usage')) == 2
    # the budget is the run's: a resume does not start counting from zero again
    rc, out, err = host.cli('resume')
    assert rc == 75 and 'token budget of 250 exhausted (300 spent in this run)' in out
    assert sum(1 for r in standin.requests if r.get('usage')) == 2
    # and every paid request is in the totals, report and summary alike
    reported = sum(r['usage']['input_tokens'] for r in standin.requests if r.get('usage'))
    summary = json.loads((host.run_dir() / 'summary.json').read_text())
    assert summary['usage_total']['input_tokens'] == reported


def test_demo_runs_on_a_fresh_directory(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, '-m', 'orch', 'demo', '--dir', str(tmp_path / 'demo')],
                          capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'report: ' in proc.stdout and 'model requests during the second run: 0' in proc.stdout
    run = tmp_path / 'demo' / 'greeting' / '.orchestrator' / 'runs' / 'demo'
    assert (run / 'report.md').exists()
    # the loop, with the real Codex CLI: T1's check fails once and a repair round in its own thread fixes
    # it; the reviewer requests one change, which goes back to T1's thread and is committed as T1's
    t1, t3 = read_result(run / 'tasks' / 'T1'), read_result(run / 'tasks' / 'T3')
    assert t1 is not None and t3 is not None
    assert t1['repair_rounds'] == 1 and [c['passed'] for c in t1['checks']] == [True]
    assert t3['review_rounds'] == 1 and t3['answer']['verdict'] == 'approve'
    assert [f['task'] for f in t3['fixes']] == ['T1'] and t3['fixes'][0]['commit']
    assert '(1 repair round)' in proc.stdout and 'T1: Add greet() (review round 1 by T3)' in proc.stdout


def test_doctor_reports_a_missing_codex(host: Host) -> None:
    (host.repo / '.orchestrator' / 'orchestrator.yaml').write_text('codex:\n  binary: /nonexistent/codex\n')
    rc, out, err = host.cli('doctor')
    assert rc == 1
    assert 'FAIL  codex' in out and 'npm install -g @openai/codex@0.169.0' in out
    assert 'ok    schemas and prompts' in out
