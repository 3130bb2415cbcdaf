"""The last paid window: codex-orch killed after the worker's turn completed (the answer is in events.jsonl)
but before codex exited and the attempt was recorded. The resume takes that answer from the events: no model
request for the task, and the task ends done with the worker's edits committed.

Real Codex CLI against the stand-in (which counts requests), and the fake codex for a chain of tasks.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from orch.standin.server import Standin
from tests.support.gitrepo import commit_all, git
from tests.support.orchtest import Host, make_host
from tests.support.orchtest import crashed_run as run_killed
from tests.support.procs import pgid_alive, wait_for
from tests.support.realcodex import use_real_codex

RUN = 'killed'

def crashed_run(host: Host, *, crash_at: str | None = None, kill_when: Callable[[], bool] | None = None) -> None:
    run_killed(host, RUN, crash_at, kill_when=kill_when)


def task_dir(host: Host, task_id: str) -> Path:
    return host.repo / '.orchestrator' / 'runs' / RUN / 'tasks' / task_id


def turn_completed(host: Host, task_id: str) -> bool:
    for events in task_dir(host, task_id).glob('attempt-*/events.jsonl'):
        try:
            if b'"turn.completed"' in events.read_bytes():
                return True
        except OSError:
            pass
    return False


def attempts(host: Host, task_id: str) -> list[dict]:
    """The recorded attempts (attempt.json) of a task, in order."""
    found = sorted(task_dir(host, task_id).glob('attempt-*/attempt.json'), key=lambda p: int(p.parent.name[8:]))
    return [json.loads(path.read_text()) for path in found]


def worktree(host: Host) -> Path:
    return host.repo / '.orchestrator' / 'worktrees' / RUN


# --- the real Codex CLI -------------------------------------------------------------------------------

WRITE_TASK = {'version': 1, 'tasks': [{
    'id': 'T1', 'role': 'implementer', 'title': 'Write out.txt', 'paths': ['out.txt'],
    'description': 'Write it.\n[[standin: write out.txt]]\n```\nwritten by the worker\n```\n'}]}


@pytest.fixture
def real(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
         standin: Standin) -> Host:
    monkeypatch.delenv('ORCH_TEST_CRASH_AT', raising=False)
    h = make_host(tmp_path, monkeypatch, capsys)
    use_real_codex(h.repo, 'roles:\n  implementer:\n    failure_retries: 0\n')
    commit_all(h.repo, 'use the real codex')
    h.write_plan(WRITE_TASK)
    return h


def _assert_finished_without_paying(host: Host, standin: Standin) -> None:
    paid = len(standin.requests)
    assert paid >= 2   # the turn: the edit's tool call, then the answer
    rc, out, err = host.cli('resume', '--run-id', RUN)
    assert rc == 0, out + err
    assert len(standin.requests) == paid, 'the resume asked the model again'
    assert host.statuses() == {'T1': 'done'}
    result = host.result('T1')
    assert result['files_changed'] == ['out.txt']
    assert git(worktree(host), 'show', f'{result["commit"]}:out.txt') == 'written by the worker'
    assert git(worktree(host), 'status', '--porcelain') == ''
    assert sum(u['input_tokens'] for u in (r.get('usage') for r in standin.requests) if u) == \
        result['usage']['input_tokens']   # the paid turn is counted once, not lost and not twice
    rc, out, err = host.cli('resume', '--run-id', RUN)
    assert rc == 0 and len(standin.requests) == paid


@pytest.mark.e2e
def test_real_codex_failpoint_after_turn_completed(real: Host, standin: Standin) -> None:
    crashed_run(real, crash_at='after-turn:T1')
    assert turn_completed(real, 'T1') and not list(task_dir(real, 'T1').glob('attempt-*/attempt.json'))
    _assert_finished_without_paying(real, standin)
    (attempt,) = attempts(real, 'T1')
    assert attempt['recovered'] is True and attempt['outcome'] == 'ok'


@pytest.mark.e2e
def test_real_codex_sigkill_once_events_show_turn_completed(real: Host, standin: Standin) -> None:
    crashed_run(real, kill_when=lambda: turn_completed(real, 'T1'))
    _assert_finished_without_paying(real, standin)
    (attempt,) = attempts(real, 'T1')   # recovered, or (kill just too late) ended by itself: never a second one
    assert attempt['outcome'] == 'ok'


# --- the fake codex: a chain, killed right after T2's turn completed ------------------------------------

N = 4


def chain_plan() -> dict:
    return {'version': 1, 'tasks': [
        {'id': f'T{i}', 'role': 'implementer', 'title': f'Step {i}', 'description': f'Write f{i}.txt.',
         'depends_on': [f'T{i - 1}'] if i > 1 else [], 'paths': [f'f{i}.txt']} for i in range(1, N + 1)]}


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Host:
    monkeypatch.delenv('ORCH_TEST_CRASH_AT', raising=False)
    script = {'default': {'answer': 'auto'},
              'tasks': {f'T{i}': {'edits': {f'f{i}.txt': f'content {i}\n'}} for i in range(1, N + 1)}}
    h = make_host(tmp_path, monkeypatch, capsys, script)
    h.write_plan(chain_plan())
    return h


def test_fake_codex_chain_killed_after_a_completed_turn(fake: Host) -> None:
    crashed_run(fake, crash_at='after-turn:T2')
    # The killed run's worker logs its launch only as its parent-death signal ends it: on a busy machine after
    # codex-orch's own death, so the log is waited for, not read at once.
    wait_for(lambda: 'T2' in fake.launched_tasks(), timeout=30)
    before = fake.launched_tasks()
    assert before.count('T2') == 1
    for entry in fake.launches():
        wait_for(lambda pgid=entry['pgid']: not pgid_alive(pgid), timeout=10)
    fake.clear_log()
    rc, out, err = fake.cli('resume', '--run-id', RUN)
    assert rc == 0, out + err
    assert fake.launched_tasks() == ['T3', 'T4']   # T2 is not paid again
    assert fake.statuses() == {f'T{i}': 'done' for i in range(1, N + 1)}
    base = json.loads((fake.run_dir(RUN) / 'run.json').read_text())['base_commit']
    subjects = git(worktree(fake), 'log', '--format=%s', f'{base}..HEAD').splitlines()
    assert sorted(subjects) == [f'T{i}: Step {i}' for i in range(1, N + 1)]
    assert git(worktree(fake), 'show', 'HEAD:f2.txt') == 'content 2'
    assert git(worktree(fake), 'status', '--porcelain') == ''
    (attempt,) = attempts(fake, 'T2')
    assert attempt['recovered'] is True and fake.result('T2')['usage'] == attempt['usage']


def test_fake_codex_kill_before_the_turn_completed_still_pays_again(fake: Host) -> None:
    """The other side of the line: a turn that had not completed is lost, as before, and run again."""
    fake.script({'default': {'answer': 'auto'}, 'tasks': {'T1': {'edits': {'f1.txt': 'content 1\n'}, 'sleep': 5},
                                                          **{f'T{i}': {'edits': {f'f{i}.txt': f'content {i}\n'}}
                                                             for i in range(2, N + 1)}}})
    events = task_dir(fake, 'T1') / 'attempt-1' / 'events.jsonl'
    crashed_run(fake, kill_when=lambda: events.exists() and b'turn.started' in events.read_bytes())
    time.sleep(0.2)
    fake.clear_log()
    fake.script({'default': {'answer': 'auto'},
                 'tasks': {f'T{i}': {'edits': {f'f{i}.txt': f'content {i}\n'}} for i in range(1, N + 1)}})
    rc, out, err = fake.cli('resume', '--run-id', RUN)
    assert rc == 0, out + err
    assert fake.launched_tasks() == ['T1', 'T2', 'T3', 'T4']
    assert [a.get('recovered', False) for a in attempts(fake, 'T1')] == [False]
