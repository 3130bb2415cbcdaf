"""Issue 20: usage split as a bill shows it (billed input, cached input, output, reasoning) and turned into money by
the config's price table wherever a person or a machine looks; a budget given in money (`cost_budget`); bad
prices are refused before anything runs."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orch.core.config import load_config
from orch.errors import ConfigError
from tests.support.gitrepo import commit_all
from tests.support.orchtest import Host, edit_config, make_host
from tests.test_budgets import COST, wave_plan

# The fake's usage per turn: 100 input (10 of it cached), 20 output (5 of it reasoning).
PRICES = 'prices: {default: {input: 1.25, cached_input: 0.125, output: 10.0}}\n'
TURN_COST = (90 * 1.25 + 10 * 0.125 + 20 * 10.0) / 1e6


def host_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any, config: str, tasks: int = 1) -> Host:
    host = make_host(tmp_path, monkeypatch, capsys, {'default': {'answer': 'auto'}})
    path = host.repo / '.orchestrator' / 'orchestrator.yaml'
    path.write_text(path.read_text() + config)
    host.write_plan(wave_plan(tasks))
    commit_all(host.repo, 'plan')
    return host


def test_status_report_and_summary_split_usage_and_price_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: Any) -> None:
    host = host_with(tmp_path, monkeypatch, capsys, PRICES)
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 0, out + err
    split = {'input_tokens': 100, 'billed_input_tokens': 90, 'cached_input_tokens': 10, 'output_tokens': 20,
             'reasoning_output_tokens': 5}
    row = host.status()['tasks'][0]
    assert row['usage_total'] == split and row['cost'] == pytest.approx(TURN_COST)
    summary = json.loads((host.run_dir() / 'summary.json').read_text())
    assert summary['usage_total'] == split and summary['tasks'][0]['usage'] == split
    assert summary['cost'] == pytest.approx(TURN_COST) and summary['tasks'][0]['cost'] == pytest.approx(TURN_COST)
    report = (host.run_dir() / 'report.md').read_text()
    assert 'Tokens: 90 billed input, 10 cached input, 20 output (5 of it reasoning)' in report
    assert f'cost {TURN_COST:.4f}' in report
    rc, out, err = host.cli('status')
    assert rc == 0 and f'90 billed input, 10 cached input, 20 output (5 of it reasoning); cost {TURN_COST:.4f}' in out
    # the dry run prices what would run by what it cost last time
    plan = wave_plan(1)
    plan['tasks'][0]['description'] = 'changed'
    host.write_plan(plan)
    commit_all(host.repo, 'edit')
    rc, out, err = host.cli('resume', '--dry-run')
    assert rc == 1 and f'about {TURN_COST:.4f} by the price table' in out, out + err


def test_without_a_price_table_there_is_no_cost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    host = host_with(tmp_path, monkeypatch, capsys, '')
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 0, out + err
    summary = json.loads((host.run_dir() / 'summary.json').read_text())
    assert summary['cost'] is None and summary['usage_total']['billed_input_tokens'] == 90


def test_a_cost_budget_binds_like_a_token_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: Any) -> None:
    # 1000 per 1M tokens of any kind: a turn costs 0.12, and a reservation of 120 tokens as much
    config = 'prices: {default: {input: 1000, output: 1000}}\ncost_budget: 0.23\n'
    host = host_with(tmp_path, monkeypatch, capsys, config, tasks=4)
    edit_config(host.repo, {'reserve_per_task: 50000': f'reserve_per_task: {COST}'})
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '-j', '4')
    assert rc == 75, out + err
    statuses = host.statuses()
    assert sorted(statuses.values()) == ['deferred', 'deferred', 'done', 'done'], statuses
    assert 'cost budget of 0.2300 exhausted' in out
    summary = json.loads((host.run_dir() / 'summary.json').read_text())
    assert summary['cost'] <= 0.23 + 0.12   # the budget, plus at most one task's reservation
    rc, out, err = host.cli('resume', '--dry-run')
    assert 'cost budget of 0.2300: the run has spent 0.2400, 0.00 left' in out, out + err
    edit_config(host.repo, {'cost_budget: 0.23': 'cost_budget: 10'})
    host.clear_log()
    rc, out, err = host.cli('resume')
    assert rc == 0, out + err
    assert sorted(host.launched_tasks()) == sorted(t for t, s in statuses.items() if s == 'deferred')


@pytest.mark.parametrize('config, key', [
    ('prices: {default: {input: -1, output: 1}}', 'prices.default.input'),
    ('prices: {m: {input: 1, output: 1, reasoning: 2}}', 'prices.m.reasoning: unknown key'),
    ('prices: {m: {input: 1}}', 'prices.m.output: required key is missing'),
    ('cost_budget: 5', "cost_budget: role implementer's model default has no price"),
    ('prices: {default: {input: 1, output: 1}}\ntoken_budget: 5\ncost_budget: 5', 'not both'),
    ('prices: {gpt-x: {input: 1, output: 1}}\ndefaults: {model: gpt-y}\ncost_budget: 5', 'model gpt-y has no price'),
])
def test_bad_prices_are_a_config_error(tmp_path: Path, config: str, key: str) -> None:
    path = tmp_path / 'orchestrator.yaml'
    path.write_text(config + '\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(path) in str(caught.value) and key in str(caught.value), caught.value


def test_a_bad_price_stops_the_run_before_anything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: Any) -> None:
    host = host_with(tmp_path, monkeypatch, capsys, 'prices: {default: {input: -1, output: 1}}\n')
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 2 and 'orchestrator.yaml' in err and 'prices.default.input' in err, out + err
    assert host.launches() == []


def test_a_priced_cost_budget_loads(tmp_path: Path) -> None:
    path = tmp_path / 'orchestrator.yaml'
    path.write_text('prices: {gpt-x: {input: 1, output: 2}}\ndefaults: {model: gpt-x}\ncost_budget: 5\n')
    config = load_config(path)
    assert config.cost_budget == 5 and config.prices['gpt-x'].output == 2
