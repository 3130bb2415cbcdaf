"""Issue 20: budgets that bind. A task's launch reserves its expected cost, so a parallel wave cannot pass the
run's token_budget; a task past the budget is stopped before its next turn and deferred (exit 75), and a resume
with a larger budget goes on without paying twice; a task's own max_tokens fails it; workers get no sub-agents."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orch.adapters.worker_env import worker_codex_args
from orch.core.config import CodexSettings, Config
from orch.standin.server import Standin
from tests.support.gitrepo import commit_all
from tests.support.orchtest import Host, edit_config, make_host
from tests.support.realcodex import use_real_codex

COST = 120   # the fake codex's default usage per turn: 100 input + 20 output
CHECK = 'grep -q fixed src/x.py'


def wave_plan(n: int = 4) -> dict[str, Any]:
    return {'version': 1, 'title': 'Wave', 'tasks': [
        {'id': f'T{i}', 'role': 'implementer', 'title': f'Step {i}', 'description': 'x', 'paths': [f'src/t{i}.py']}
        for i in range(1, n + 1)]}


def fix_plan(**extra: Any) -> dict[str, Any]:
    return {'version': 1, 'title': 'Fix', 'tasks': [
        {'id': 'T1', 'role': 'implementer', 'title': 'Fix x', 'description': 'Make x work.', 'paths': ['src/*'],
         'checks': [CHECK], **extra}]}


def make(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any, script: dict[str, Any],
         plan: dict[str, Any], budget: int | None) -> Host:
    host = make_host(tmp_path, monkeypatch, capsys, script)
    if budget is not None:
        set_budget(host, budget)
    host.write_plan(plan)
    commit_all(host.repo, 'plan')
    return host


def set_budget(host: Host, budget: int) -> None:
    path = host.repo / '.orchestrator' / 'orchestrator.yaml'
    lines = [f'token_budget: {budget}' if line.startswith('token_budget:') else line
             for line in path.read_text().splitlines()]
    path.write_text('\n'.join(lines) + '\n')


def spent(host: Host) -> int:
    """Tokens the run paid, every attempt counted (status --json)."""
    return sum(t['usage_total']['input_tokens'] + t['usage_total']['output_tokens'] for t in host.status()['tasks'])


@pytest.mark.parametrize('jobs', ['2', '4'])
def test_a_parallel_wave_cannot_pass_the_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any,
                                                jobs: str) -> None:
    host = make(tmp_path, monkeypatch, capsys, {'default': {'answer': 'auto'}}, wave_plan(), 2 * COST)
    edit_config(host.repo, {'reserve_per_task: 50000': f'reserve_per_task: {COST}'})
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '-j', jobs)
    assert rc == 75, out + err
    statuses = host.statuses()
    # the rest deferred (with -j 2 the wave's last may not even be tried: the run stops at the first deferral)
    assert list(statuses.values()).count('done') == 2 and 'deferred' in statuses.values(), statuses
    assert set(statuses.values()) <= {'deferred', 'done', 'pending'}, statuses
    assert len(host.launches()) == 2 and 'token budget of 240 exhausted' in out
    assert spent(host) <= 2 * COST + COST   # the budget, plus at most one task's reservation
    # a resume with a larger budget runs the rest, and only the rest: nothing is paid twice
    set_budget(host, 10 * COST)
    host.clear_log()
    rc, out, err = host.cli('resume')
    assert rc == 0, out + err
    assert set(host.statuses().values()) == {'done'}
    assert sorted(host.launched_tasks()) == sorted(t for t, s in statuses.items() if s != 'done')


def test_a_task_past_the_budget_is_deferred_before_its_next_turn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: Any) -> None:
    script = {'tasks': {'T1': [{'edits': {'src/x.py': 'broken\n'}}, {'edits': {'src/x.py': 'fixed\n'}}]}}
    host = make(tmp_path, monkeypatch, capsys, script, fix_plan(), COST - 20)
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 75, out + err
    row = host.status()['tasks'][0]
    assert row['status'] == 'deferred' and 'stopped before its next turn' in row['reason']
    assert len(host.launches()) == 1   # the repair round was not started
    set_budget(host, 10 * COST)
    rc, out, err = host.cli('resume')
    assert rc == 0, out + err
    first, repair = host.launches()
    assert repair['resume'] and repair['thread_id'] == first['thread_id']   # the first answer was not paid again


def test_a_turn_under_way_is_stopped_when_another_spends_the_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: Any) -> None:
    """T1's turn spends the whole budget while T2's turn is under way (T1 ends only once T2 started, T2 would go on
    only once the test lets it, which it never does): T2 is stopped at once, deferred, and a resume finishes it."""
    started, never = tmp_path / 't2-started', tmp_path / 'never'
    script = {'tasks': {'T1': {'wait_for': str(started)},
                        'T2': [{'touch': str(started), 'wait_for': str(never), 'wait_timeout': 60}, {}]}}
    host = make(tmp_path, monkeypatch, capsys, script, wave_plan(2), COST)
    edit_config(host.repo, {'reserve_per_task: 50000': 'reserve_per_task: 1'})
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '-j', '2')
    assert rc == 75, out + err
    assert host.statuses() == {'T1': 'done', 'T2': 'deferred'}
    row = host.status()['tasks'][1]
    assert 'token budget of 120 exhausted' in row['reason'] and 'its turn under way was stopped' in row['reason']
    attempt = json.loads((host.run_dir() / 'tasks' / 'T2' / 'attempt-1' / 'attempt.json').read_text())
    assert attempt['outcome'] == 'budget-stopped'
    set_budget(host, 10 * COST)
    host.clear_log()
    rc, out, err = host.cli('resume')
    assert rc == 0, out + err
    assert host.launched_tasks() == ['T2']   # T1's paid turn is not paid again


def test_a_repair_round_stopped_mid_turn_keeps_the_answer_before_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: Any) -> None:
    """T1's repair round is under way when T2's turn spends the budget: stopped, deferred, and the resume goes on
    with the repair round in T1's thread: its first answer is not paid again."""
    started, never = tmp_path / 'repair-started', tmp_path / 'never'
    plan = wave_plan(2)
    plan['tasks'][0].update(paths=['src/x.py'], checks=[CHECK])
    script = {'tasks': {'T1': [{'edits': {'src/x.py': 'broken\n'}},
                               {'touch': str(started), 'wait_for': str(never), 'wait_timeout': 60},
                               {'edits': {'src/x.py': 'fixed\n'}}],
                        'T2': {'wait_for': str(started)}}}
    host = make(tmp_path, monkeypatch, capsys, script, plan, 2 * COST)
    edit_config(host.repo, {'reserve_per_task: 50000': 'reserve_per_task: 1'})
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '-j', '2')
    assert rc == 75, out + err
    assert host.statuses() == {'T1': 'deferred', 'T2': 'done'}
    assert 'its turn under way was stopped' in host.status()['tasks'][0]['reason']
    first = next(e for e in host.launches() if e['task_id'] == 'T1' and not e['resume'])
    set_budget(host, 10 * COST)
    host.clear_log()
    rc, out, err = host.cli('resume')
    assert rc == 0, out + err
    assert [(e['task_id'], e['resume'], e['thread_id']) for e in host.launches()] == [('T1', True, first['thread_id'])]


def test_a_review_fix_turn_is_not_started_past_the_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: Any) -> None:
    review = {'answer': {'status': 'done', 'summary': 'r', 'verdict': 'request_changes', 'files_changed': [],
                         'findings': [{'severity': 'major', 'file': 'src/x.py', 'line': 3, 'message': 'fix it'}],
                         'decisions': [], 'follow_ups': []}}
    approve = {'answer': {**review['answer'], 'verdict': 'approve', 'findings': []}}
    script = {'tasks': {'T1': [{'edits': {'src/x.py': 'v1\n'}}, {'edits': {'src/x.py': 'v2\n'}}],
                        'T3': [review, approve]}}
    plan = {'version': 1, 'title': 'Review', 'tasks': [
        {'id': 'T1', 'role': 'implementer', 'title': 'Write x', 'description': 'x', 'paths': ['src/*']},
        {'id': 'T3', 'role': 'reviewer', 'title': 'Review x', 'description': 'r', 'depends_on': ['T1']}]}
    host = make(tmp_path, monkeypatch, capsys, script, plan, 2 * COST)
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 75, out + err
    assert host.statuses() == {'T1': 'done', 'T3': 'deferred'}
    assert [(e['task_id'], e['resume']) for e in host.launches()] == [('T1', False), ('T3', False)]
    set_budget(host, 10 * COST)
    host.clear_log()
    rc, out, err = host.cli('resume')
    assert rc == 0, out + err
    # the fix in T1's thread, then the reviewer looks again in its own: its first review is not paid again
    assert [(e['task_id'], e['resume']) for e in host.launches()] == [('T1', True), ('T3', True)]


def test_max_tokens_fails_a_task_that_spent_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    script = {'tasks': {'T1': [{'edits': {'src/x.py': 'broken\n'}}, {'edits': {'src/x.py': 'fixed\n'}}]}}
    host = make(tmp_path, monkeypatch, capsys, script, fix_plan(max_tokens=COST - 20), None)
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 1, out + err
    row = host.status()['tasks'][0]
    assert row['status'] == 'failed' and row['reason'].startswith('max-tokens:'), row
    assert len(host.launches()) == 1


def test_max_tokens_must_be_a_positive_integer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    host = make(tmp_path, monkeypatch, capsys, {}, fix_plan(max_tokens=0), None)
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 2 and 'max_tokens' in out + err
    assert host.launches() == []


def test_workers_get_no_sub_agents_unless_the_config_says_so() -> None:
    args = worker_codex_args(Config(), {})
    assert '--disable=multi_agent' in args and '--disable=multi_agent_v2' in args
    assert '--trust' not in args
    allowed = worker_codex_args(Config(codex=CodexSettings(sub_agents=True)), {})
    assert not any(a.startswith('--disable') for a in allowed)


def test_every_codex_call_disables_sub_agents(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    script = {'tasks': {'T1': [{'edits': {'src/x.py': 'broken\n'}}, {'edits': {'src/x.py': 'fixed\n'}}]}}
    host = make(tmp_path, monkeypatch, capsys, script, fix_plan(), None)
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 0, out + err
    launches = host.launches()
    assert len(launches) == 2   # the first turn and the repair round (a resume restores no settings)
    for launch in launches:
        assert '--disable=multi_agent' in launch['argv'] and '--trust' not in launch['argv']


def test_the_real_codex_cli_takes_workers_without_sub_agents(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: Any, standin: Standin) -> None:
    host = make_host(tmp_path, monkeypatch, capsys)
    use_real_codex(host.repo, '')
    host.write_plan({'version': 1, 'tasks': [
        {'id': 'T1', 'role': 'implementer', 'title': 'Step', 'description': 'x'}]})
    commit_all(host.repo, 'plan')
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 0, out + err
    launch = json.loads((host.run_dir() / 'tasks' / 'T1' / 'attempt-1' / 'launch.json').read_text())
    assert '--disable=multi_agent' in launch['argv'] and '--disable=multi_agent_v2' in launch['argv']
    assert len([r for r in standin.requests if r.get('usage')]) == 1
