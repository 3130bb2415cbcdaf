"""A gate blames the task that broke it (shared mode): the failing commit is found by bisecting the commits landed
since the gate last passed; that task fails with the gate's evidence, the gate's own task waits, and once the
culprit ran again one resume finishes everything."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.gitrepo import commit_all
from tests.support.orchtest import Host, make_host

GATE = ('name: tests_gate\nscope: task\nroles: [implementer]\noutput: "{task_dir}/tests_gate.json"\n'
        'action:\n  shell: "if test -e broken.txt; then echo broken.txt is there; exit 1; fi"\n')


def make(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any, tasks: list[dict[str, Any]],
         script: dict[str, Any], gate: str = GATE) -> Host:
    host = make_host(tmp_path, monkeypatch, capsys, script)
    (host.repo / '.orchestrator' / 'rules').mkdir()
    (host.repo / '.orchestrator' / 'rules' / 'gate.yaml').write_text(gate)
    host.write_plan({'version': 1, 'title': 'Blame', 'tasks': tasks})
    commit_all(host.repo, 'plan and gate')
    return host


def task(tid: str, role: str, description: str = '', deps: list[str] | None = None) -> dict[str, Any]:
    return {'id': tid, 'role': role, 'title': f'Task {tid}', 'description': description or f'Do {tid}.',
            'depends_on': deps or [], 'paths': [f'{tid.lower()}/*']}


def rows(host: Host) -> dict[str, dict[str, Any]]:
    return {t['id']: t for t in host.status()['tasks']}


def test_a_gate_blames_the_tester_that_broke_it_not_the_innocent_implementer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    script = {'default': {'answer': 'auto'}, 'tasks': {
        'T1': [{'edits': {'t1/test_x.py': 'x\n', 'broken.txt': 'oops\n'}},
               {'edits': {'t1/test_x.py': 'y\n', 'broken.txt': None}}],
        'T2': {'edits': {'t2/docs.md': 'docs\n'}}}}
    host = make(tmp_path, monkeypatch, capsys, [task('T1', 'tester'), task('T2', 'implementer')], script)
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--run-id', 'b')
    assert rc == 1, out + err
    r = rows(host)
    assert r['T1']['status'] == 'failed' and 'gate tests_gate (run for T2)' in r['T1']['reason'], r['T1']
    assert r['T2']['status'] == 'pending' and r['T2']['reason'] == 'waiting: gate tests_gate broken by T1'
    assert [c['code'] for c in r['T2']['reasons']] == ['gate_waiting']
    kept = list((host.run_dir() / 'tasks' / 'T1' / 'executions').glob('*.json'))
    assert len(kept) == 1   # the culprit's paid result is kept
    junit = (host.run_dir() / 'junit.xml').read_text()
    assert 'broken.txt is there' in junit or 'tests_gate' in junit

    # the description fixed: the dry run names what the resume will do; one resume finishes every task
    plan = host.repo / 'plan.json'
    plan.write_text(plan.read_text().replace('Do T1.', 'Do T1, without breaking the gate.'))
    host.clear_log()
    rc, out, err = host.cli('resume', '--run-id', 'b', '--dry-run')
    assert rc == 1 and host.launches() == []
    table = {line.split()[0]: line for line in out.splitlines() if line[:2] in ('T1', 'T2')}
    assert set(table) == {'T1', 'T2'}, out
    assert 'no model call (its gates only)' in table['T2'] and 'in /' in table['T1']
    assert 'these cost 120 tokens' in out   # T1's only: T2's worker does not run
    rc, out, err = host.cli('resume', '--run-id', 'b')
    assert rc == 0, out + err
    assert host.launched_tasks() == ['T1']
    r = rows(host)
    assert {t: r[t]['status'] for t in r} == {'T1': 'done', 'T2': 'done'}
    assert r['T2']['gates'][0]['passed']
    attempts = sorted((host.run_dir() / 'tasks' / 'T1').glob('attempt-*'), key=lambda p: int(p.name.split('-')[1]))
    prompt = (attempts[-1] / 'prompt.txt').read_text()   # the worker was told why it runs again
    assert 'breaks the gate' in prompt and 'broken.txt is there' in prompt
    # nothing changed: a resume repeats no gate and asks nothing
    host.clear_log()
    rc, out, err = host.cli('resume', '--run-id', 'b')
    assert rc == 0 and host.launches() == [] and 'tests_gate' not in out


def test_bisection_finds_the_first_breaking_commit_among_several(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    script = {'default': {'answer': 'auto'}, 'tasks': {
        'T1': {'edits': {'t1/a.txt': 'a\n'}},
        'T2': {'edits': {'t2/b.txt': 'b\n', 'broken.txt': 'oops\n'}},
        'T3': {'edits': {'t3/c.txt': 'c\n'}},
        'T4': {'edits': {'t4/d.txt': 'd\n'}},
        'T5': {'edits': {'t5/e.txt': 'e\n'}}}}
    tasks = [task('T1', 'tester'), task('T2', 'tester'), task('T3', 'tester'), task('T4', 'tester'),
             task('T5', 'implementer')]
    host = make(tmp_path, monkeypatch, capsys, tasks, script)
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 1, out + err
    r = rows(host)
    assert r['T2']['status'] == 'failed' and 'run for T5' in r['T2']['reason']
    assert all(r[t]['status'] == 'done' for t in ('T1', 'T3', 'T4'))
    assert r['T5']['reason'] == 'waiting: gate tests_gate broken by T2'
    blame = r['T5']['gates'][0]['blame']
    assert blame['task'] == 'T2' and blame['probes'] >= 2


def test_one_task_s_gate_passing_says_nothing_of_another_task_s(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    """The gate's command names its task: Z breaks B's gate only. A's gate passes at A's commit, after Z's; B's
    fails there already. The bisection for B starts from where B's own gate passed (the base), not from A's pass,
    so it finds Z, never the innocent C that landed between A and B."""
    gate = GATE.replace('test -e broken.txt', 'test -e broken-{task_id}.txt').replace('echo broken.txt is there',
                                                                                      'echo broken for {task_id}')
    script = {'default': {'answer': 'auto'}, 'tasks': {
        'Z': {'edits': {'z/a.txt': 'z\n', 'broken-B.txt': 'oops\n'}},
        'A': {'edits': {'a/a.txt': 'a\n'}},
        'C': {'edits': {'c/c.txt': 'c\n'}},
        'B': {'edits': {'b/b.txt': 'b\n'}}}}
    tasks = [task('Z', 'tester'), task('A', 'implementer'), task('C', 'tester'), task('B', 'implementer')]
    host = make(tmp_path, monkeypatch, capsys, tasks, script, gate)
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 1, out + err
    r = rows(host)
    assert r['A']['status'] == 'done' and r['A']['gates'][0]['passed']
    assert r['C']['status'] == 'done', r['C']
    landed = host.branch_log(host.shared_branch())
    assert [s.split(':')[0] for s in landed[:4]] == ['B', 'C', 'A', 'Z'], landed   # in this order
    assert r['Z']['status'] == 'failed' and 'gate tests_gate (run for B)' in r['Z']['reason'], r['Z']
    assert r['B']['reason'] == 'waiting: gate tests_gate broken by Z'
    assert r['B']['gates'][0]['blame']['task'] == 'Z'


def test_an_implementer_that_breaks_its_own_gate_is_blamed_itself(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    script = {'default': {'answer': 'auto'}, 'tasks': {
        'T1': {'edits': {'t1/a.txt': 'a\n'}},
        'T2': {'edits': {'t2/b.txt': 'b\n', 'broken.txt': 'mine\n'}}}}
    host = make(tmp_path, monkeypatch, capsys, [task('T1', 'tester'), task('T2', 'implementer')], script)
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 1
    r = rows(host)
    assert r['T1']['status'] == 'done'
    assert r['T2']['status'] == 'failed' and r['T2']['reason'].startswith('gate tests_gate failed')


def test_a_task_that_broke_its_own_gate_runs_again_told_why_and_the_gate_only_after(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    """Its gate failing on its own commit is a failure of its work, like a failing check: the next resume runs it
    again in a fresh execution told the gate's output; the gate runs again on its new result only."""
    script = {'default': {'answer': 'auto'}, 'tasks': {
        'T1': [{'edits': {'t1/a.txt': 'a\n', 'broken.txt': 'mine\n'}},
               {'edits': {'t1/a.txt': 'a2\n', 'broken.txt': None}}]}}
    host = make(tmp_path, monkeypatch, capsys, [task('T1', 'implementer')], script)
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 1
    host.clear_log()
    rc, out, err = host.cli('resume')
    assert rc == 0, out + err
    assert host.launched_tasks() == ['T1']
    assert 'broken.txt is there' in host.launches()[0]['prompt'] or 'breaks the gate' in _last_prompt(host, 'T1')
    assert rows(host)['T1']['status'] == 'done' and rows(host)['T1']['gates'][0]['passed']
    assert len(list((host.run_dir() / 'tasks' / 'T1' / 'executions').glob('*.json'))) == 1


def _last_prompt(host: Host, tid: str) -> str:
    attempts = sorted((host.run_dir() / 'tasks' / tid).glob('attempt-*'), key=lambda p: int(p.name.split('-')[1]))
    return (attempts[-1] / 'prompt.txt').read_text()
