"""Nothing is lost: SIGKILL codex-orch at any point of a run, resume, and the end state is a clean run's.

The narrow windows (after the worker answered, after pending.json, after the commit, while
result.json is written, while the report is written) are hit deterministically through
`ORCH_TEST_CRASH_AT` (orch/failpoints.py); the wide one (a worker running) by polling and kill -9.

A turn complete in its event stream is never paid again, whatever moment the kill lands: also after its
attempt ended (attempt.json) and before the round's record took it in, for every kind of turn (the first
answer, a schema retry, a repair round, a review fix, a review).
"""
from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from orch.runstate.lock import holder_pid
from orch.runstate.state import USAGE_KEYS, attempts_usage
from tests.support.fake_codex import DEFAULT_USAGE
from tests.support.gitrepo import git
from tests.support.orchtest import Host, cli_subprocess, make_host
from tests.support.orchtest import crashed_run as run_killed
from tests.support.procs import pgid_alive, wait_for

RUN = 'crash'
N = 4


def chain_plan() -> dict:
    return {'version': 1, 'title': 'Chain', 'tasks': [
        {'id': f'T{i}', 'role': 'implementer', 'title': f'Step {i}', 'description': f'Write f{i}.txt.',
         'depends_on': [f'T{i - 1}'] if i > 1 else [], 'paths': [f'f{i}.txt']} for i in range(1, N + 1)]}


DECISION = {'decision': 'Use plain text', 'rationale': 'Simplest thing.'}


def chain_script(sleepy: str | None = None) -> dict:
    tasks = {f'T{i}': {'edits': {f'f{i}.txt': f'content {i}\n'}} for i in range(1, N + 1)}
    tasks['T2']['decisions'] = [DECISION]
    if sleepy:
        tasks[sleepy]['sleep'] = 5
    return {'default': {'answer': 'auto'}, 'tasks': tasks}


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Host:
    monkeypatch.delenv('ORCH_TEST_CRASH_AT', raising=False)
    h = make_host(tmp_path, monkeypatch, capsys, chain_script())
    h.write_plan(chain_plan())
    return h


def crashed_run(host: Host, crash_at: str | None = None, *, kill_when: Callable[[], bool] | None = None) -> None:
    """`codex-orch run` in a subprocess that dies by SIGKILL (at a fault point, or when kill_when() holds)."""
    run_killed(host, RUN, crash_at, kill_when=kill_when, settle=0.2, timeout=60)


def run_dir(host: Host) -> Path:
    return host.repo / '.orchestrator' / 'runs' / RUN


def worktree(host: Host) -> Path:
    return host.repo / '.orchestrator' / 'worktrees' / RUN


def assert_clean_end_state(host: Host, base_tree: set[str]) -> None:
    assert host.statuses() == {f'T{i}': 'done' for i in range(1, N + 1)}
    branch = json.loads((run_dir(host) / 'run.json').read_text())['shared_branch']
    base = json.loads((run_dir(host) / 'run.json').read_text())['base_commit']
    subjects = git(host.repo, 'log', '--format=%s', f'{base}..{branch}').splitlines()
    assert sorted(subjects) == [f'T{i}: Step {i}' for i in range(1, N + 1)]   # each commit exactly once
    # the same files as an uninterrupted run, with the same contents
    tree = set(git(worktree(host), 'ls-tree', '-r', '--name-only', 'HEAD').splitlines())
    assert tree == base_tree | {f'f{i}.txt' for i in range(1, N + 1)} | {'docs/ai/decisions.md'}
    decisions = git(worktree(host), 'show', 'HEAD:docs/ai/decisions.md')
    assert decisions.count('## T2 (implementer): Step 2') == 1 and 'Use plain text' in decisions
    for i in range(1, N + 1):
        assert git(worktree(host), 'show', f'HEAD:f{i}.txt') == f'content {i}'
    assert git(worktree(host), 'status', '--porcelain') == ''
    # no orphan worker, no stale lock, no half-written file
    for entry in host.launches():
        wait_for(lambda pgid=entry['pgid']: not pgid_alive(pgid), timeout=10)
    assert holder_pid(run_dir(host)) is None
    assert host.status()['running'] is False
    leftovers = [p for root in (run_dir(host), worktree(host)) for p in root.rglob('*.tmp')]
    assert leftovers == []
    for path in run_dir(host).rglob('*.json'):
        json.loads(path.read_text())
    for name in ('report.md', 'summary.json', 'junit.xml'):
        assert (run_dir(host) / name).is_file()
    summary = json.loads((run_dir(host) / 'summary.json').read_text())
    assert summary['counts'] == {'done': N}
    assert not (run_dir(host) / 'tasks' / 'T2' / 'pending.json').exists()
    assert_paid_once(host, [f'T{i}' for i in range(1, N + 1)])


def assert_paid_once(host: Host, task_ids: list[str]) -> None:
    """Each task's result counts every turn it paid for (attempt.json), each once: none lost, none twice."""
    for task_id in task_ids:
        usage = host.result(task_id)['usage']
        assert {k: usage[k] for k in USAGE_KEYS} == attempts_usage(run_dir(host) / 'tasks' / task_id), task_id


def _resume(host: Host) -> None:
    rc, out, err = host.cli('resume', '--run-id', RUN)
    assert rc == 0, out + err


def _base_tree(host: Host) -> set[str]:
    return set(git(host.repo, 'ls-tree', '-r', '--name-only', 'HEAD').splitlines())


def test_uninterrupted_run_is_the_reference(host: Host) -> None:
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--run-id', RUN)
    assert rc == 0, out + err
    assert host.launched_tasks() == ['T1', 'T2', 'T3', 'T4']
    assert_clean_end_state(host, _base_tree(host))


# point -> tasks a resume must launch (every other task finished before the kill and is kept)
CRASH_POINTS = [
    ('after-attempt:T2/attempt-1', ['T3', 'T4']),  # attempt.json written, run_worker not returned yet
    ('after-answer:T2', ['T3', 'T4']),             # answer not recorded yet: taken from its ended attempt
    ('after-pending:T2', ['T3', 'T4']),            # answer recorded: committed from pending.json
    ('after-commit:T2', ['T3', 'T4']),             # committed: found by its Orch-Exec trailer
    ('before-result:T2', ['T3', 'T4']),
    ('after-execution:T2', ['T3', 'T4']),          # execution.json written, result.json not: it is ignored
    ('write:execution.json', ['T2', 'T3', 'T4']),  # T1's execution.json half-written
    ('write:result.json', ['T2', 'T3', 'T4']),     # T1's result.json half-written (temp file, no rename)
    ('write:state.json', ['T1', 'T2', 'T3', 'T4']),  # the very first state write
    ('write:decisions.md', ['T3', 'T4']),          # T2's decisions entry half-written in the worktree
    ('report', []),                                # every task done, report.md written, summary.json not
]


@pytest.mark.parametrize('point, relaunched', CRASH_POINTS, ids=[p for p, _ in CRASH_POINTS])
def test_kill_at_fault_point_then_resume(host: Host, point: str, relaunched: list[str]) -> None:
    base_tree = _base_tree(host)
    crashed_run(host, point)
    before = host.launches()
    host.clear_log()
    _resume(host)
    assert host.launched_tasks() == relaunched
    assert {e['task_id'] for e in before} | set(relaunched) == {f'T{i}' for i in range(1, N + 1)}
    assert_clean_end_state(host, base_tree)
    for entry in before:   # the workers of the killed run are gone too
        wait_for(lambda pgid=entry['pgid']: not pgid_alive(pgid), timeout=10)


def killed_resume(host: Host, point: str) -> None:
    proc = cli_subprocess(host.repo, 'resume', '--run-id', RUN, env={**os.environ, 'ORCH_TEST_CRASH_AT': point})
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, out + err


def test_killed_again_while_the_resume_takes_the_ended_answer(host: Host) -> None:
    """The resume that takes T2's ended answer is killed at the same point: the next one still takes it."""
    base_tree = _base_tree(host)
    crashed_run(host, 'after-answer:T2')
    killed_resume(host, 'after-answer:T2')
    assert host.launched_tasks() == ['T1', 'T2']   # the killed resume paid for nothing
    host.clear_log()
    _resume(host)
    assert host.launched_tasks() == ['T3', 'T4']
    assert len(list((run_dir(host) / 'tasks' / 'T2').glob('attempt-*'))) == 1   # paid once
    assert_clean_end_state(host, base_tree)


def test_an_ended_answer_is_taken_only_after_a_kill(host: Host) -> None:
    """The state must show the execution a kill interrupted ('running'): after anything else (here an execution
    recorded as interrupted, whose prompt is the same) the latest attempt, though ok and unrecorded, is paid again."""
    crashed_run(host, 'after-answer:T2')
    task_dir = run_dir(host) / 'tasks' / 'T2'
    st = json.loads((task_dir / 'state.json').read_text())
    assert st['status'] == 'running'
    (task_dir / 'state.json').write_text(json.dumps({**st, 'status': 'pending'}))
    host.clear_log()
    rc, out, err = host.cli('resume', '--run-id', RUN, '--discard-changes')   # its edits: not known as codex-orch's
    assert rc == 0, out + err
    assert host.launched_tasks() == ['T2', 'T3', 'T4']
    assert host.statuses() == {f'T{i}': 'done' for i in range(1, N + 1)}


def test_kill_while_run_json_is_first_written(host: Host) -> None:
    """The very first write of a new run: the same `run` command again simply starts it."""
    base_tree = _base_tree(host)
    crashed_run(host, 'write:run.json')
    assert not (run_dir(host) / 'run.json').exists()
    assert list(run_dir(host).glob('.run.json.*.tmp'))   # what the kill left behind
    rc, out, err = host.cli('resume', '--run-id', RUN)
    assert rc == 2 and f"run '{RUN}' does not exist" in err
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--run-id', RUN)
    assert rc == 0, out + err
    assert host.launched_tasks() == ['T1', 'T2', 'T3', 'T4']
    assert_clean_end_state(host, base_tree)


def test_kill_while_a_worker_runs_then_resume(host: Host) -> None:
    host.script(chain_script(sleepy='T3'))
    base_tree = _base_tree(host)
    tasks = run_dir(host) / 'tasks'
    events = tasks / 'T3' / 'attempt-1' / 'events.jsonl'   # written once the worker is up and printing
    crashed_run(host, kill_when=lambda: events.exists() and events.stat().st_size > 0)
    # the worker was told to stop when codex-orch died: it is gone, and no commit of T3 exists
    wait_for(lambda: 'T3' in host.launched_tasks(), timeout=10)
    killed = [e for e in host.launches() if e['task_id'] == 'T3']
    assert killed and killed[0].get('signal') == signal.SIGTERM
    host.clear_log()
    host.script(chain_script())
    _resume(host)
    assert host.launched_tasks() == ['T3', 'T4']
    assert_clean_end_state(host, base_tree)
    for entry in killed:
        wait_for(lambda pgid=entry['pgid']: not pgid_alive(pgid), timeout=10)


def test_kill_during_commit_leaves_no_index_lock(host: Host) -> None:
    """A kill right after the commit of T1 (index written, result.json not): the resume commits nothing twice."""
    base_tree = _base_tree(host)
    crashed_run(host, 'after-commit:T1')
    assert not list((host.repo / '.git').rglob('index.lock'))
    host.clear_log()
    _resume(host)
    assert host.launched_tasks() == ['T2', 'T3', 'T4']
    assert_clean_end_state(host, base_tree)


def test_git_killed_mid_commit_leaves_locks_that_resume_clears(host: Host) -> None:
    """A SIGKILL of the whole process group kills git mid-commit too: its index.lock and ref lock stay behind."""
    base_tree = _base_tree(host)
    crashed_run(host, 'after-pending:T2')
    gitdir = Path((worktree(host) / '.git').read_text().split(': ', 1)[1].strip())
    branch = json.loads((run_dir(host) / 'run.json').read_text())['shared_branch']
    for lock in (gitdir / 'index.lock', host.repo / '.git' / 'refs' / 'heads' / f'{branch}.lock'):
        lock.write_text('')
    host.clear_log()
    _resume(host)
    assert host.launched_tasks() == ['T3', 'T4']
    assert_clean_end_state(host, base_tree)
    assert not (gitdir / 'index.lock').exists()


def test_a_git_failure_is_recorded_not_left_running(host: Host) -> None:
    """A commit that git refuses fails the task with git's message (it does not stay 'running')."""
    crashed_run(host, 'after-pending:T2')
    gitdir = Path((worktree(host) / '.git').read_text().split(': ', 1)[1].strip())
    (gitdir / 'index.lock').mkdir()   # a directory is no stale lock file: git cannot lock the index
    try:
        rc, out, err = host.cli('resume', '--run-id', RUN)
    finally:
        (gitdir / 'index.lock').rmdir()
    assert rc == 1
    row = {t['id']: t for t in host.status()['tasks']}['T2']
    assert row['status'] == 'failed' and 'git failed' in row['reason'] and 'index.lock' in row['reason']
    host.clear_log()
    _resume(host)
    assert host.launched_tasks() == ['T3', 'T4']


# --- every kind of turn, killed after its attempt ended and before its round recorded it ---------------------

def usage_of(turns: int) -> dict[str, int]:
    return {k: turns * v for k, v in DEFAULT_USAGE.items()}


def attempts_of(host: Host, task_id: str) -> list[dict]:
    found = sorted((run_dir(host) / 'tasks' / task_id).glob('attempt-*/attempt.json'),
                   key=lambda p: int(p.parent.name.removeprefix('attempt-')))
    return [json.loads(p.read_text()) for p in found]


def killed_then_resumed(host: Host, point: str) -> list[tuple[str, bool]]:
    """Kill the run at `point`, resume it; the launches of the resume, as (task, resumed a thread)."""
    crashed_run(host, point)
    host.clear_log()
    _resume(host)
    return [(e['task_id'], e['resume']) for e in host.launches()]


@pytest.mark.parametrize('point, relaunched', [
    ('after-attempt:T2/attempt-2', []),                # the schema retry ended: nothing to pay again
    ('after-attempt:T2/attempt-1', [('T2', True)]),    # the invalid answer ended: its schema retry, no fresh turn
])
def test_kill_after_a_schema_retry_s_turns(host: Host, point: str, relaunched: list[tuple[str, bool]]) -> None:
    script = chain_script()
    script['tasks']['T2'] = [{'answer': 'not JSON at all'}, script['tasks']['T2']]
    host.script(script)
    base_tree = _base_tree(host)
    assert killed_then_resumed(host, point) == [*relaunched, ('T3', False), ('T4', False)]
    assert_clean_end_state(host, base_tree)
    assert [(a['kind'], a['outcome']) for a in attempts_of(host, 'T2')] == [('initial', 'invalid-output'),
                                                                            ('schema-retry', 'ok')]
    assert {k: host.result('T2')['usage'][k] for k in USAGE_KEYS} == usage_of(2)


CHECK = 'grep -q fixed src/x.py'


def single_task_host(host: Host, tasks: list[dict], script: dict) -> None:
    host.write_plan({'version': 1, 'title': 'Rounds', 'tasks': tasks})
    host.script(script)


@pytest.mark.parametrize('point, twice', [('after-attempt:T1/attempt-2', False), ('after-repair-answer:T1', False),
                                         ('after-repair-answer:T1', True)])
def test_kill_after_a_repair_round_s_turn(host: Host, point: str, twice: bool) -> None:
    single_task_host(host, [{'id': 'T1', 'role': 'implementer', 'title': 'Fix x', 'description': 'Make x work.',
                             'paths': ['src/*'], 'checks': [CHECK]}],
                     {'tasks': {'T1': [{'edits': {'src/x.py': 'broken\n'}}, {'edits': {'src/x.py': 'fixed\n'}}]}})
    crashed_run(host, point)
    rounds = json.loads((run_dir(host) / 'tasks' / 'T1' / 'rounds.json').read_text())
    assert rounds['phase'] == 'repairing' and rounds['usage'] == usage_of(1)   # the repair's turn not recorded
    assert [a['outcome'] for a in attempts_of(host, 'T1')] == ['ok', 'ok']
    if twice:   # the resume taking that turn is killed in the same place
        host.clear_log()
        killed_resume(host, point)
        assert host.launches() == []
    host.clear_log()
    _resume(host)
    assert host.launches() == []   # the repair's turn is not paid again
    assert host.statuses() == {'T1': 'done'}
    result = host.result('T1')
    assert result['repair_rounds'] == 1 and [c['passed'] for c in result['checks']] == [True]
    assert git(worktree(host), 'show', f'{result["commit"]}:src/x.py') == 'fixed'
    assert {k: result['usage'][k] for k in USAGE_KEYS} == usage_of(2)
    assert_paid_once(host, ['T1'])


def review(verdict: str) -> dict:
    findings = [{'severity': 'major', 'file': 'src/x.py', 'line': 1, 'message': 'x must say v2'}] \
        if verdict != 'approve' else []
    return {'answer': {'status': 'done', 'summary': f'review: {verdict}', 'verdict': verdict, 'findings': findings,
                       'files_changed': [], 'decisions': [], 'follow_ups': []}}


# The reviewer's task directory holds its first answer (attempt-1), the reviewed task's fix (attempt-2) and its
# second look (attempt-3). Killed after the fix, the resume pays for the second look only: it never was asked.
@pytest.mark.parametrize('point, phase, relaunched', [
    ('after-attempt:T3/attempt-2', 'fixing', [('T3', True)]), ('after-fix-answer:T3', 'fixing', [('T3', True)]),
    ('after-attempt:T3/attempt-3', 'reviewing', []), ('after-review-answer:T3', 'reviewing', [])])
def test_kill_after_a_review_round_s_turn(host: Host, point: str, phase: str,
                                          relaunched: list[tuple[str, bool]]) -> None:
    single_task_host(host, [
        {'id': 'T1', 'role': 'implementer', 'title': 'Write x', 'description': 'Write src/x.py.', 'paths': ['src/*']},
        {'id': 'T3', 'role': 'reviewer', 'title': 'Review x', 'description': 'Review it.', 'depends_on': ['T1']}],
        {'tasks': {'T1': [{'edits': {'src/x.py': 'v1\n'}}, {'edits': {'src/x.py': 'v2\n'}}],
                   'T3': [review('request_changes'), review('approve')]}})
    crashed_run(host, point)
    rounds = json.loads((run_dir(host) / 'tasks' / 'T3' / 'rounds.json').read_text())
    recorded = 1 if phase == 'fixing' else 2   # the reviewer's first answer (and the fix): not the turn killed
    assert (rounds['reviews'], rounds['review_phase'], rounds['usage']) == (1, phase, usage_of(recorded))
    host.clear_log()
    _resume(host)
    assert [(e['task_id'], e['resume']) for e in host.launches()] == relaunched   # no turn paid again
    assert host.statuses() == {'T1': 'done', 'T3': 'done'}
    assert len(attempts_of(host, 'T3')) == 3
    result = host.result('T3')
    assert result['review_rounds'] == 1 and result['answer']['verdict'] == 'approve'
    assert [f['task'] for f in result['fixes']] == ['T1']
    branch = json.loads((run_dir(host) / 'run.json').read_text())['shared_branch']
    fixes = git(host.repo, 'log', '--format=%s', '--grep=review round 1', branch).splitlines()
    assert fixes == ['T1: Write x (review round 1 by T3)']   # committed once
    assert git(host.repo, 'show', f'{branch}:src/x.py') == 'v2'
    assert {k: result['usage'][k] for k in USAGE_KEYS} == usage_of(3)   # its look, the fix, its second look
    assert_paid_once(host, ['T1', 'T3'])


def test_a_resume_scoped_after_an_edit_clears_the_locks_where_it_commits(host: Host,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A git killed outside a run (its lock files stay, the run's no-op manifest with them) and then an edit of the
    leaf: the resume looks only at the leaf's steps, and still clears the locks of the run's branch and worktree."""
    from orch.runstate import fastpath
    monkeypatch.delenv(fastpath.FULL_CHECK_ENV, raising=False)
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--spec-file', 'spec.md', '--run-id', RUN)
    assert rc == 0, out + err
    gitdir = Path((worktree(host) / '.git').read_text().split(': ', 1)[1].strip())
    branch = json.loads((run_dir(host) / 'run.json').read_text())['shared_branch']
    locks = (gitdir / 'index.lock', host.repo / '.git' / 'refs' / 'heads' / f'{branch}.lock')
    for lock in locks:
        lock.write_text('')
    plan = chain_plan()
    plan['tasks'][-1]['description'] += ' Twice.'
    host.write_plan(plan)
    host.clear_log()
    _resume(host)
    assert host.launched_tasks() == [f'T{N}']   # the scope: the leaf alone
    assert not any(lock.exists() for lock in locks)
