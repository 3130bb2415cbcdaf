"""Issue 12: done means verified. Checks with repair rounds in the worker's own thread, gates that fail
their task, blocked as its own outcome: bounded, resumable, and a failure everywhere a user or CI looks."""
from __future__ import annotations

import json
import signal
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from tests.support.gitrepo import commit_all, git
from tests.support.orchtest import Host, cli_subprocess, edit_config, make_host
from tests.support.procs import pgid_alive, wait_for

CHECK = "grep -q fixed src/x.py || { echo \"src/x.py is still broken: $(cat src/x.py)\"; exit 3; }"


def plan(checks: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    task = {'id': 'T1', 'role': 'implementer', 'title': 'Fix x', 'description': 'Make x work.',
            'paths': ['src/*'], 'checks': [CHECK] if checks is None else checks, **extra}
    return {'version': 1, 'title': 'Checks', 'tasks': [task]}


def make(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any, script: dict[str, Any],
         the_plan: dict[str, Any] | None = None, config: dict[str, str] | None = None) -> Host:
    host = make_host(tmp_path, monkeypatch, capsys, script)
    edit_config(host.repo, config)
    host.write_plan(the_plan or plan())
    commit_all(host.repo, 'plan')
    return host


def edit(content: str, **more: Any) -> dict[str, Any]:
    return {'edits': {'src/x.py': content}, **more}


def task_commits(host: Host) -> list[str]:
    return [s for s in host.branch_log(host.shared_branch()) if s.startswith('T1:')]


def junit(host: Host) -> ET.Element:
    return ET.parse(host.run_dir() / 'junit.xml').getroot()


def test_a_check_failing_once_is_repaired_in_the_same_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: Any) -> None:
    host = make(tmp_path, monkeypatch, capsys, {'tasks': {'T1': [edit('broken\n'), edit('fixed\n')]}})
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 0, out + err
    first, repair = host.launches()
    assert not first['resume'] and repair['resume'] and repair['thread_id'] == first['thread_id']
    # the repair prompt carries the evidence: command, how it ended, its output
    assert CHECK in repair['prompt'] and 'exit 3' in repair['prompt']
    assert 'src/x.py is still broken: broken' in repair['prompt']
    assert task_commits(host) == ['T1: Fix x']   # one commit, holding only the verified work
    assert git(host.repo, 'show', f'{host.shared_branch()}:src/x.py') == 'fixed'
    result = host.result('T1')
    assert result['repair_rounds'] == 1 and [c['passed'] for c in result['checks']] == [True]
    assert result['usage']['input_tokens'] == 200   # both rounds are paid for and counted
    logs = sorted(p.relative_to(host.run_dir()).as_posix() for p in host.run_dir().rglob('check-*.log'))
    assert logs == ['tasks/T1/checks/round-0/check-1.log', 'tasks/T1/checks/round-1/check-1.log']
    assert host.statuses() == {'T1': 'done'}


def test_a_check_that_never_passes_fails_the_task_with_its_evidence_everywhere(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    host = make(tmp_path, monkeypatch, capsys,
                {'tasks': {'T1': [edit('broken one\n'), edit('broken two\n'), edit('broken three\n')]}})
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 1, out + err
    assert len(host.launches()) == 3   # the first answer and repair_rounds (2) repairs, no more
    row = host.status()['tasks'][0]
    assert row['status'] == 'failed'
    assert row['reason'] == f'checks failed: {CHECK} (exit 3); after 2 repair rounds'
    assert 'broken three' in row['checks'][0]['tail']
    assert task_commits(host) == []   # unverified work is never committed
    report = (host.run_dir() / 'report.md').read_text()
    assert '## Failures' in report and 'src/x.py is still broken: broken three' in report
    summary = json.loads((host.run_dir() / 'summary.json').read_text())
    assert summary['counts'] == {'failed': 1}
    suite = junit(host).find('testsuite')
    assert suite is not None and suite.get('failures') == '1'
    failure = suite.find('testcase/failure')
    assert failure is not None and 'src/x.py is still broken: broken three' in (failure.text or '')
    assert 'T1 failed: checks failed' in out


def test_a_repair_that_changes_nothing_or_fails_the_same_way_stops_early(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    host = make(tmp_path, monkeypatch, capsys, {'tasks': {'T1': [edit('broken\n'), {'answer': 'auto'}]}},
                config={'failure_retries: 1 ': 'repair_rounds: 5\n  failure_retries: 1 '})
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 1, out + err
    assert len(host.launches()) == 2
    assert host.status()['tasks'][0]['reason'].endswith('the repair round changed nothing')

    other = make(tmp_path / 'same', monkeypatch, capsys,
                 {'tasks': {'T1': [edit('broken 1\n'), edit('broken 2\n'), edit('broken 3\n')]}},
                 config={'failure_retries: 1 ': 'repair_rounds: 5\n  failure_retries: 1 '})
    rc, out, err = other.cli('run', '--plan-file', 'plan.json')
    assert rc == 1, out + err
    assert len(other.launches()) == 2   # 'broken 1' and 'broken 2' fail alike, numbers aside
    assert other.status()['tasks'][0]['reason'].endswith('the same failure again after a repair round')


def test_config_checks_for_every_task_and_per_role(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: Any) -> None:
    host = make(tmp_path, monkeypatch, capsys, {'tasks': {'T1': [edit('fixed\n')]}}, plan(checks=[]),
                config={'  checks: []  ': '  checks: ["test -f src/x.py"]  ',
                        '  implementer: {}': '  implementer: {checks: ["echo role-check > role.txt"]}'})
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 0, out + err
    assert [c['command'] for c in host.result('T1')['checks']] == ['test -f src/x.py', 'echo role-check > role.txt']
    entry = json.loads((host.run_dir() / 'tasks' / 'T1' / 'task.json').read_text())
    assert entry['checks'] == ['test -f src/x.py', 'echo role-check > role.txt']   # editing them re-runs the task


def test_kill_during_a_repair_round_resumes_that_round(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: Any) -> None:
    host = make(tmp_path, monkeypatch, capsys,
                {'tasks': {'T1': [edit('broken\n'), edit('fixed\n', sleep=30), edit('fixed\n')]}})
    proc = cli_subprocess(host.repo, 'run', '--plan-file', 'plan.json')
    rounds = host.repo / '.orchestrator' / 'runs'
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:   # wait until the repair round's worker runs
        found = list(rounds.glob('*/tasks/T1/rounds.json'))
        if found and json.loads(found[0].read_text()).get('phase') == 'repairing' and \
                len(list(found[0].parent.glob('attempt-*/events.jsonl'))) >= 2:
            break
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail('the repair round never started')
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    # the killed run's worker dies of its parent-death signal and logs its launch as it exits: wait for that
    attempt = sorted(found[0].parent.glob('attempt-*'))[-1]
    wait_for(lambda: (attempt / 'pid').exists(), timeout=30)
    pgid = int((attempt / 'pid').read_text())
    wait_for(lambda: not pgid_alive(pgid), timeout=30)
    host.script({'tasks': {'T1': [edit('fixed\n')]}})   # the fake counts a call when it ends: no second sleep
    first_paid = len(host.launches())
    rc, out, err = host.cli('resume')
    assert rc == 0, out + err
    launches = host.launches()
    # the first answer is not paid again: the resume goes straight to the repair round, in the same thread
    assert [e['resume'] for e in launches[first_paid:]] == [True]
    assert launches[-1]['thread_id'] == launches[0]['thread_id']
    assert task_commits(host) == ['T1: Fix x']
    assert host.statuses() == {'T1': 'done'}


def test_blocked_is_its_own_outcome(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    the_plan = plan(checks=[])
    the_plan['tasks'].append({'id': 'T2', 'role': 'tester', 'title': 'Test x', 'description': 'Test.',
                              'depends_on': ['T1']})
    answer = {'status': 'blocked', 'summary': 'the API key for the service is missing', 'files_changed': [],
              'decisions': [], 'follow_ups': []}
    host = make(tmp_path, monkeypatch, capsys, {'tasks': {'T1': [{'answer': answer}]}}, the_plan)
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 1, out + err
    rows = {t['id']: t for t in host.status()['tasks']}
    assert rows['T1']['status'] == 'blocked'
    assert rows['T1']['reason'] == 'blocked: the API key for the service is missing'
    assert rows['T2']['status'] == 'pending' and host.launched_tasks() == ['T1']
    summary = json.loads((host.run_dir() / 'summary.json').read_text())
    assert summary['counts'] == {'blocked': 1, 'pending': 1}
    failure = junit(host).find('testsuite/testcase/failure')
    assert failure is not None and failure.get('type') == 'blocked'


GATE = """name: tests_gate
scope: task
roles: [implementer]
output: "{task_dir}/tests_gate.json"
action:
  shell: "grep -q good src/x.py"
"""


def test_a_failing_gate_on_a_leaf_task_fails_the_run_and_blocks_merge(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: Any) -> None:
    host = make(tmp_path, monkeypatch, capsys, {'tasks': {'T1': [edit('bad\n')]}}, plan(checks=[]))
    (host.repo / '.orchestrator' / 'rules').mkdir()
    (host.repo / '.orchestrator' / 'rules' / 'gate.yaml').write_text(GATE)
    commit_all(host.repo, 'gate')
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 1, out + err
    row = host.status()['tasks'][0]
    assert row['status'] == 'failed'
    assert row['reason'] == 'gate tests_gate failed: grep -q good src/x.py (exit 1)'
    assert row['gates'][0]['passed'] is False and row['gates'][0]['duration'] >= 0
    suite = junit(host).find('testsuite')
    assert suite is not None and suite.get('failures') == '2'   # the task, and the gate's own test case
    names = [c.get('name') for c in suite.findall('testcase')]
    assert names == ['T1', 'T1 tests_gate']
    summary = json.loads((host.run_dir() / 'summary.json').read_text())
    assert summary['counts'] == {'failed': 1}
    base = git(host.repo, 'rev-parse', 'HEAD')
    rc, out, err = host.cli('merge', '--run-id', host.run_dir().name, '--allow-automerge')
    assert rc != 0 and 'T1' in out + err
    assert git(host.repo, 'rev-parse', 'HEAD') == base


def test_in_a_parallel_shared_run_a_gate_tests_its_own_task_s_work(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: Any) -> None:
    """A's gate runs while B is still working: it must see A's landed commit, not B's files."""
    host = make(tmp_path, monkeypatch, capsys, {'tasks': {
        'A': [{'edits': {'a/one.txt': 'A\n'}}],
        'B': [{'edits': {'b/two.txt': 'B\n'}, 'sleep': 3}]}},
        {'version': 1, 'title': 'Gates', 'tasks': [
            {'id': 'A', 'role': 'implementer', 'title': 'A', 'description': 'a', 'paths': ['a/*']},
            {'id': 'B', 'role': 'implementer', 'title': 'B', 'description': 'b', 'paths': ['b/*']}]})
    (host.repo / '.orchestrator' / 'rules').mkdir()
    (host.repo / '.orchestrator' / 'rules' / 'gate.yaml').write_text(
        'name: own_work\nscope: task\nroles: [implementer]\noutput: "{task_dir}/own_work.json"\n'
        'action:\n  shell: \'test "$ORCH_TASK_ID" = B || ! test -e b/two.txt\'\n')
    commit_all(host.repo, 'gate')
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '-j', '2')
    assert rc == 0, out + err
    gates = {t['id']: t['gates'][0] for t in host.status()['tasks']}
    assert gates['A']['passed'] and gates['A']['snapshot'] is True   # B was working: a snapshot of A's commit
    worktrees = host.repo / '.orchestrator' / 'worktrees'
    assert not list(worktrees.glob(f'{host.run_dir().name}.gate.*'))   # and it is gone afterwards


def test_a_gate_that_changed_shows_runs_alone_and_cuts_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: Any) -> None:
    """A gate's command edited: status names it, the dry run says no model call, resume runs only the gate,
    and its passing again (a target without times) runs nothing after it. A task that runs again to the same
    result needs no new gate run to count as verified."""
    the_plan = plan(checks=[])
    the_plan['tasks'].append({'id': 'T2', 'role': 'tester', 'title': 'Test x', 'description': 'Test it.',
                              'depends_on': ['T1'], 'paths': ['tests/*']})
    host = make(tmp_path, monkeypatch, capsys, {'tasks': {'T1': edit('good\n')}}, the_plan)
    rules = host.repo / '.orchestrator' / 'rules'
    rules.mkdir()
    (rules / 'gate.yaml').write_text(GATE)
    commit_all(host.repo, 'gate')
    assert host.cli('run', '--plan-file', 'plan.json')[0] == 0
    gate_log = host.run_dir() / 'tasks' / 'T1' / 'tests_gate.log'
    (rules / 'gate.yaml').write_text(GATE.replace('grep -q good', 'grep -q goo'))
    rows = {t['id']: t for t in host.status()['tasks']}
    assert rows['T1']['status'] == 'stale'
    assert rows['T1']['reasons'] == [{'code': 'gate_will_run', 'detail': 'gate tests_gate will run again: command '
                                      'grep -q good src/x.py → grep -q goo src/x.py'}]
    rc, out, err = host.cli('resume', '--dry-run')
    assert rc == 1 and 'no model call (its gates only)' in out
    host.clear_log()
    assert host.cli('resume')[0] == 0
    assert host.launched_tasks() == []                        # the gate ran again; no worker did
    assert host.statuses() == {'T1': 'done', 'T2': 'done'}
    assert host.status()['tasks'][0]['gates'][0]['command'] == 'grep -q goo src/x.py'
    # T1 runs again after an edit and ends the same: verified still, its gate and T2 not run again
    the_plan['tasks'][0]['description'] = 'Make x work, please.'
    host.write_plan(the_plan)
    gate_ran = gate_log.stat().st_mtime_ns if gate_log.exists() else None
    rc, out, err = host.cli('resume')
    assert rc == 0, out + err
    assert host.launched_tasks() == ['T1']
    assert host.statuses() == {'T1': 'done', 'T2': 'done'}
    if gate_ran is not None:
        assert gate_log.stat().st_mtime_ns == gate_ran
