"""`codex-orch redo TASK...`: a task executed again in a fresh Codex thread although nothing it is made from changed,
its previous result kept; its dependents follow by the normal rules (early cut-off included). Real temporary
repositories, a fake codex."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from orch.runstate.lock import RunLock
from orch.runstate.state import file_digest, read_json, read_state
from tests.support.gitrepo import commit_all, git
from tests.support.orchtest import (
    THREE_TASK_SCRIPT,
    Host,
    cli_subprocess,
    crashed_run,
    files_snapshot,
    host_after_a_run,
    make_host,
    three_task_plan,
)
from tests.support.procs import pgid_alive, wait_for

# T2's worker writes something else this time: a new commit, so a new result.
T2_CHANGES = {**THREE_TASK_SCRIPT, 'tasks': {**THREE_TASK_SCRIPT['tasks'], 'T2': {
    'edits': {'tests/test_greet.py': 'from src.greet import greet\n\n\ndef test_greet(): assert greet("x")\n'}}}}


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Host:
    monkeypatch.delenv('ORCH_TEST_CRASH_AT', raising=False)
    return host_after_a_run(tmp_path, monkeypatch, capsys)


def task_dir(host: Host, tid: str) -> Path:
    return host.run_dir() / 'tasks' / tid


def kept_records(host: Host, tid: str) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((task_dir(host, tid) / 'executions').glob('*.json'))]


def launches_of(host: Host, tid: str) -> list[dict[str, Any]]:
    return [entry for entry in host.launches() if entry['task_id'] == tid]


def killed_redo(host: Host, crash_at: str, *tasks: str) -> None:
    """`codex-orch redo TASKS` in its own process, killed by SIGKILL at the fault point `crash_at`."""
    proc = cli_subprocess(host.repo, 'redo', *tasks, env={**os.environ, 'ORCH_TEST_CRASH_AT': crash_at})
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, f'redo was not killed (rc {proc.returncode}):\n{out}\n{err}'


def test_redo_runs_the_task_once_in_a_fresh_thread_and_an_identical_result_stops_there(host: Host) -> None:
    before = host.result('T2')
    result_file = task_dir(host, 'T2') / 'result.json'
    text, mtime = result_file.read_bytes(), result_file.stat().st_mtime_ns
    rc, out, err = host.cli('redo', 'T2')
    assert rc == 0, out + err
    assert 'redo T2: it runs again in a fresh Codex thread' in out
    # exactly one launch, of T2, in a new thread (not a resumed one, not the recorded one)
    assert host.launched_tasks() == ['T2']
    (launch,) = host.launches()
    assert not launch['resume'] and launch['thread_id'] != before['thread_id']
    after = host.result('T2')
    assert after['thread_id'] == launch['thread_id'] and after['exec_id'] != before['exec_id']
    # the worker is told why it runs and that its earlier work is there
    prompt = (sorted(task_dir(host, 'T2').glob('attempt-*'))[-1] / 'prompt.txt').read_text()
    assert '`codex-orch redo`' in prompt and f'commit {before["commit"][:12]}' in prompt
    # same answer, nothing changed: result.json is not even rewritten, so T3 was given nothing new
    assert after['commit'] == before['commit']
    assert (result_file.read_bytes(), result_file.stat().st_mtime_ns) == (text, mtime)
    # the execution it replaced is kept, with what it cost
    (kept,) = kept_records(host, 'T2')
    assert kept['why'] == 'redo' and kept['result']['commit'] == before['commit']
    assert kept['execution']['thread_id'] == before['thread_id'] and kept['execution']['exec_id'] == before['exec_id']
    # done: the mark is gone, and nothing runs again
    assert read_state(task_dir(host, 'T2')).get('redo') is None
    assert host.statuses() == {'T1': 'done', 'T2': 'done', 'T3': 'done'}
    host.clear_log()
    assert host.cli('resume')[0] == 0 and host.launched_tasks() == []


def test_a_redo_with_a_new_result_runs_its_dependents(host: Host) -> None:
    before = host.result('T2')
    digest_before = file_digest(task_dir(host, 'T2') / 'result.json')
    assert digest_before is not None and host.result('T3')['upstream']['T2'] == digest_before
    host.script(T2_CHANGES)
    rc, out, err = host.cli('redo', 'T2')
    assert rc == 0, out + err
    assert host.launched_tasks() == ['T2', 'T3']   # T1 is upstream: untouched
    after = host.result('T2')
    assert after['commit'] != before['commit']
    assert host.branch_log(host.shared_branch())[:3] == ['T2: Test greet()', 'T2: Test greet()', 'T1: Add greet()']
    # T3 was made again from T2's new result: not the one from before the redo
    assert host.result('T3')['upstream']['T2'] == file_digest(task_dir(host, 'T2') / 'result.json') != digest_before
    assert [k['result']['commit'] for k in kept_records(host, 'T2')] == [before['commit']]
    assert host.statuses() == {'T1': 'done', 'T2': 'done', 'T3': 'done'}


def test_several_tasks_each_run_once_in_plan_order(host: Host) -> None:
    threads = {tid: host.result(tid)['thread_id'] for tid in ('T1', 'T3')}
    rc, out, err = host.cli('redo', 'T3', 'T1', 'T3', '-j', '2')
    assert rc == 0, out + err
    # T1 answers the same on the same code: T2 is cut off; T3 runs because it was named
    assert host.launched_tasks() == ['T1', 'T3']
    for tid in ('T1', 'T3'):
        (launch,) = launches_of(host, tid)
        assert not launch['resume'] and launch['thread_id'] != threads[tid]
        assert len(kept_records(host, tid)) == 1
    assert not (task_dir(host, 'T2') / 'executions').exists()
    assert host.statuses() == {'T1': 'done', 'T2': 'done', 'T3': 'done'}


@pytest.mark.parametrize('args, says', [
    (['T9'], ["unknown task 'T9' in run r1", 'T1, T2, T3']),
    (['T2', 'T9', 'T8'], ["unknown tasks 'T9', 'T8' in run r1", 'T1, T2, T3']),
    (['T2', '--run-id', 'nope'], ["run 'nope' does not exist", 'r1']),
    (['T2', '-j', '0'], ['-j 0']),
])
def test_bad_input_exits_2_and_writes_nothing(host: Host, args: list[str], says: list[str]) -> None:
    before = files_snapshot(host.repo / '.orchestrator')
    rc, out, err = host.cli('redo', *args)
    assert rc == 2, out + err
    assert len(err.strip().splitlines()) == 1 and all(s in err for s in says), err
    assert host.launches() == []
    assert files_snapshot(host.repo / '.orchestrator') == before


def test_a_run_in_use_is_refused_and_nothing_is_written(host: Host) -> None:
    with RunLock(host.run_dir()):   # another codex-orch holds the run
        before = files_snapshot(host.repo / '.orchestrator')
        rc, out, err = host.cli('redo', 'T2')
        assert rc == 2 and 'run r1 is in use by another codex-orch' in err, out + err
        assert files_snapshot(host.repo / '.orchestrator') == before
    assert host.launches() == []


def test_status_and_dry_run_say_redo_requested_and_resume_finishes_it(host: Host) -> None:
    """A redo killed right after it marked its tasks: status and the dry run agree why they will run; resume
    finishes the redo."""
    threads = {tid: host.result(tid)['thread_id'] for tid in ('T2', 'T3')}
    killed_redo(host, 'after-redo-mark', 'T2')
    assert host.launches() == []
    before = files_snapshot(host.repo / '.orchestrator')
    rows = {t['id']: t for t in host.status()['tasks']}
    assert (rows['T1']['status'], rows['T1']['reasons']) == ('done', [])
    assert (rows['T2']['status'], rows['T2']['reason']) == ('stale', 'redo requested')
    assert rows['T2']['reasons'] == [{'code': 'redo_requested', 'detail': 'redo requested'}]
    assert (rows['T3']['status'], [r['code'] for r in rows['T3']['reasons']]) == ('stale', ['upstream_will_run'])
    rc, out, err = host.cli('status')
    assert rc == 0 and any(line.split()[:3] == ['T2', 'tester', 'stale'] and 'redo requested' in line
                           for line in out.splitlines()), out
    rc, out, err = host.cli('resume', '--dry-run')
    assert rc == 1, out + err
    assert 'run r1: 2 of 3 task(s) would run' in out and 'redo requested' in out
    assert 'T3: only if a task they depend on ends with a different answer' in out
    assert files_snapshot(host.repo / '.orchestrator') == before   # status and the dry run wrote nothing
    rc, out, err = host.cli('resume')
    assert rc == 0, out + err
    assert host.launched_tasks() == ['T2']   # the redo, and T3 cut off
    assert host.result('T2')['thread_id'] not in threads.values()
    assert read_state(task_dir(host, 'T2')).get('redo') is None
    assert host.statuses() == {'T1': 'done', 'T2': 'done', 'T3': 'done'}


def test_a_redo_killed_after_its_paid_turn_is_finished_by_resume_without_paying_again(host: Host) -> None:
    host.script(T2_CHANGES)
    killed_redo(host, 'after-turn:T2', 'T2')
    # The killed redo's one turn, complete in its event stream (read there: the fake codex logs its launch only
    # when it exits, which a kill of codex-orch's process group may cut short).
    attempts = sorted(task_dir(host, 'T2').glob('attempt-*'), key=lambda p: int(p.name.split('-')[1]))
    events = [json.loads(line) for line in (attempts[-1] / 'events.jsonl').read_text().splitlines() if line]
    paid = {'thread_id': next(e['thread_id'] for e in events if e.get('type') == 'thread.started')}
    assert any(e.get('type') == 'turn.completed' for e in events)
    # the killed run's worker may still be exiting: its launch is logged when it ends, not in the resume's log
    pgid = int((attempts[-1] / 'pid').read_text())
    wait_for(lambda: not pgid_alive(pgid), timeout=30)
    host.clear_log()
    rows = {t['id']: t for t in host.status()['tasks']}
    assert [r['code'] for r in rows['T2']['reasons']] == ['interrupted', 'redo_requested']
    rc, out, err = host.cli('resume')
    assert rc == 0, out + err
    assert host.launched_tasks() == ['T3']   # T2's answer recovered, not paid again; its new result runs T3
    assert host.result('T2')['thread_id'] == paid['thread_id']
    assert read_state(task_dir(host, 'T2')).get('redo') is None
    assert host.statuses() == {'T1': 'done', 'T2': 'done', 'T3': 'done'}


def test_a_redo_killed_after_its_commit_is_finished_by_resume(host: Host) -> None:
    before = host.result('T2')
    host.script(T2_CHANGES)
    killed_redo(host, 'after-commit:T2', 'T2')
    host.clear_log()
    rc, out, err = host.cli('redo', 'T2')   # the same redo again: it goes on with the one under way
    assert rc == 0, out + err
    assert 'asked for already and not finished' in out
    assert host.launched_tasks() == ['T3']
    after = host.result('T2')
    assert after['commit'] != before['commit']
    assert host.branch_log(host.shared_branch()).count('T2: Test greet()') == 2   # committed once, not twice
    assert len(kept_records(host, 'T2')) == 1
    assert read_state(task_dir(host, 'T2')).get('redo') is None


def test_a_task_with_unrecorded_work_is_refused_until_resume_records_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv('ORCH_TEST_CRASH_AT', raising=False)
    host = make_host(tmp_path, monkeypatch, capsys, THREE_TASK_SCRIPT)
    host.write_plan(three_task_plan())
    crashed_run(host, 'r1', crash_at='after-commit:T2')   # T2's answer paid and committed, no result yet
    host.clear_log()
    before = files_snapshot(host.repo / '.orchestrator')
    rc, out, err = host.cli('redo', 'T2')
    assert rc == 2 and 'redo T2: its last execution was interrupted' in err and 'codex-orch resume' in err, err
    assert files_snapshot(host.repo / '.orchestrator') == before
    assert host.cli('resume')[0] == 0
    assert host.launched_tasks() == ['T3']   # T2 finished from what it had paid for
    host.clear_log()
    rc, out, err = host.cli('redo', 'T2')
    assert rc == 0, out + err
    assert host.launched_tasks() == ['T2']


def test_a_failed_redo_keeps_its_mark_and_resume_tries_again(host: Host) -> None:
    before = host.result('T2')
    host.script({**THREE_TASK_SCRIPT, 'tasks': {**THREE_TASK_SCRIPT['tasks'], 'T2': {'fail': 'model overloaded'}}})
    rc, out, err = host.cli('redo', 'T2')
    assert rc == 1, out + err
    rows = {t['id']: t for t in host.status()['tasks']}
    assert rows['T2']['status'] == 'failed' and rows['T2']['reasons'][-1]['code'] == 'redo_requested'
    assert host.result('T2')['commit'] == before['commit']   # the earlier result stays until one replaces it
    host.script(T2_CHANGES)
    host.clear_log()
    rc, out, err = host.cli('resume')
    assert rc == 0, out + err
    # not the earlier result taken back as if nothing were asked: a fresh execution, then T3 on its result
    assert host.launched_tasks() == ['T2', 'T3']
    assert host.result('T2')['commit'] != before['commit']
    assert len(kept_records(host, 'T2')) == 1


def per_task_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> Host:
    host = make_host(tmp_path, monkeypatch, capsys, THREE_TASK_SCRIPT)
    config = host.repo / '.orchestrator' / 'orchestrator.yaml'
    config.write_text(config.read_text().replace('use_single_workspace: true', 'use_single_workspace: false'))
    host.write_plan(three_task_plan())
    commit_all(host.repo, 'per-task config and plan')
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--run-id', 'r1')
    assert rc == 0, out + err
    host.clear_log()
    return host


def test_redo_in_per_task_workspaces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv('ORCH_TEST_CRASH_AT', raising=False)
    host = per_task_host(tmp_path, monkeypatch, capsys)
    info = json.loads((host.run_dir() / 'run.json').read_text())

    def branch(tid: str) -> str:
        return info['task_branch_template'].format(date=info['date'], run_id='r1', task_id=tid)

    before = host.result('T2')
    rc, out, err = host.cli('redo', 'T2')
    assert rc == 0, out + err
    assert host.launched_tasks() == ['T2']   # the same result: T3 stays as it was
    (launch,) = host.launches()
    assert not launch['resume'] and launch['thread_id'] != before['thread_id']
    assert host.result('T2')['commit'] == before['commit']
    host.clear_log()
    host.script(T2_CHANGES)
    rc, out, err = host.cli('redo', 'T2')
    assert rc == 0, out + err
    assert host.launched_tasks() == ['T2', 'T3']
    new = host.result('T2')['commit']
    assert new != before['commit'] and git(host.repo, 'rev-parse', branch('T2')) == new
    git(host.repo, 'merge-base', '--is-ancestor', new, branch('T3'))   # T3 started afresh from the new tip
    assert len(kept_records(host, 'T2')) == 2
    assert read_json(task_dir(host, 'T2') / 'state.json').get('redo') is None
    assert host.statuses() == {'T1': 'done', 'T2': 'done', 'T3': 'done'}
