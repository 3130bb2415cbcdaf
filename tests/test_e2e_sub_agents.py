"""Codex sub-agents with the real Codex CLI (pinned) against the local stand-in. codex-orch passes the CLI's
switches that turn them off (unless `codex.sub_agents: true`), but codex 0.169.0 still offers and runs
`collaboration.spawn_agent`; either way a sub-agent's tokens, missing from the parent's turn.completed, are
counted from its own rollout, in the task's usage and so in every budget."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orch.standin.server import Standin
from tests.support.gitrepo import commit_all
from tests.support.orchtest import Host, make_host
from tests.support.realcodex import use_real_codex

pytestmark = pytest.mark.e2e

SPAWNING = {'version': 1, 'tasks': [{'id': 'T1', 'role': 'implementer', 'title': 'Delegate',
                                     'description': 'Ask a helper.\n[[standin: spawn-agent Reply with one word.]]\n'}]}


def is_child(request: dict[str, Any]) -> bool:
    """A request of the sub-agent: none of the parent's prompt (and its directive) is in it."""
    return request.get('scenario') != 'spawn-agent'


def host_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any, sub_agents: bool) -> Host:
    host = make_host(tmp_path, monkeypatch, capsys)
    use_real_codex(host.repo)
    if sub_agents:
        config = host.repo / '.orchestrator' / 'orchestrator.yaml'
        config.write_text(config.read_text().replace('codex:\n', 'codex:\n  sub_agents: true\n', 1))
    host.write_plan(SPAWNING)
    commit_all(host.repo, 'plan')
    return host


@pytest.mark.parametrize('sub_agents', [False, True])
def test_a_sub_agent_s_tokens_are_in_the_task_s_usage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: Any, standin: Standin, sub_agents: bool) -> None:
    host = host_with(tmp_path, monkeypatch, capsys, sub_agents)
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 0, out + err
    argv = json.loads((host.run_dir() / 'tasks' / 'T1' / 'attempt-1' / 'launch.json').read_text())['argv']
    assert ('--disable=multi_agent' in argv) is not sub_agents
    assert [r for r in standin.requests if is_child(r) and r.get('usage')], standin.requests   # it ran
    paid = [r['usage'] for r in standin.requests if r.get('usage')]
    usage = host.result('T1')['usage']
    # every request the stand-in answered, the sub-agent's included, is in the task's usage
    assert usage['input_tokens'] == sum(u['input_tokens'] for u in paid)
    assert usage['output_tokens'] == sum(u['output_tokens'] for u in paid)
    assert host.status()['tasks'][0]['usage_total']['input_tokens'] == usage['input_tokens']
