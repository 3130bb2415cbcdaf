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


def test_a_parallel_wave_cannot_pass_the_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    host = make(tmp_path, monkeypatch, capsys, {'default': {'answer': 'auto'}}, wave_plan(), 2 * COST)
    edit_config(host.repo, {'reserve_per_task: 50000': f'reserve_per_task: {COST}'})
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '-j', '4')
    assert rc == 75, out + err
    statuses = host.statuses()
    assert sorted(statuses.values()) == ['deferred', 'deferred', 'done', 'done'], statuses
    assert len(host.launches()) == 2 and 'token budget of 240 exhausted' in out
    # a resume with a larger budget runs the rest, and only the rest: nothing is paid twice
    set_budget(host, 10 * COST)
    host.clear_log()
    rc, out, err = host.cli('resume')
    assert rc == 0, out + err
    assert set(host.statuses().values()) == {'done'}
    assert sorted(host.launched_tasks()) == sorted(t for t, s in statuses.items() if s == 'deferred')


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
