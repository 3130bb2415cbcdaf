"""Issue 20: a lost thread is not a model failure. A round whose Codex thread is gone (`codex exec resume`
exits 1: "no rollout found") goes on once in a fresh thread, given the task's prompt and the round's."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.support.fake_codex import STATE_DIR
from tests.support.gitrepo import commit_all
from tests.support.orchtest import Host, edit_config, make_host

CHECK = 'grep -q fixed src/x.py'


def plan() -> dict[str, Any]:
    return {'version': 1, 'title': 'Fix', 'tasks': [
        {'id': 'T1', 'role': 'implementer', 'title': 'Fix x', 'description': 'Make x work.', 'paths': ['src/*'],
         'checks': [CHECK]}]}


def set_budget(host: Host, budget: int) -> None:
    path = host.repo / '.orchestrator' / 'orchestrator.yaml'
    lines = [f'token_budget: {budget}' if line.startswith('token_budget:') else line
             for line in path.read_text().splitlines()]
    path.write_text('\n'.join(lines) + '\n')


def deferred_before_its_repair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any,
                               script: dict[str, Any]) -> Host:
    """T1's first answer fails its check; the budget (100 tokens, the first turn costs 120) defers the repair."""
    host = make_host(tmp_path, monkeypatch, capsys, script)
    set_budget(host, 100)
    host.write_plan(plan())
    commit_all(host.repo, 'plan')
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 75, out + err
    set_budget(host, 10_000)
    shutil.rmtree(host.bin / STATE_DIR / 'threads')   # codex lost the thread meanwhile
    return host


def test_a_lost_thread_goes_on_in_a_fresh_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    script = {'tasks': {'T1': [{'edits': {'src/x.py': 'broken\n'}}, {'edits': {'src/x.py': 'fixed\n'}}]}}
    host = deferred_before_its_repair(tmp_path, monkeypatch, capsys, script)
    rc, out, err = host.cli('resume')
    assert rc == 0, out + err
    first, lost, fresh = host.launches()
    assert lost['argv'][-3:] == ['resume', first['thread_id'], '-'] and lost['rc'] == 1
    assert not fresh['resume'] and fresh['thread_id'] != first['thread_id']
    # the fresh thread gets the task's prompt, then the round's (the failed check)
    attempts = host.run_dir() / 'tasks' / 'T1'
    prompt = (attempts / 'attempt-3' / 'prompt.txt').read_text()
    assert 'Task id: T1' in prompt and CHECK in prompt and prompt.index('Task id: T1') < prompt.index(CHECK)
    assert (attempts / 'attempt-3' / 'launch.json').read_text().count('fresh-thread') == 1
    row = host.status()['tasks'][0]
    assert row['status'] == 'done'
    state = host.run_dir() / 'tasks' / 'T1' / 'state.json'
    assert 'no rollout found' in state.read_text() and fresh['thread_id'] in state.read_text()
    assert host.result('T1')['thread_id'] == fresh['thread_id']


def test_a_fresh_thread_is_tried_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    # the fresh thread fails too (a failed turn, no failure retries): no second fresh thread, the task fails
    script = {'tasks': {'T1': [{'edits': {'src/x.py': 'broken\n'}}, {'fail': 'model overloaded'}]}}
    host = deferred_before_its_repair(tmp_path, monkeypatch, capsys, script)
    edit_config(host.repo, {'failure_retries: 1 ': 'failure_retries: 0 '})
    host.clear_log()
    rc, out, err = host.cli('resume')
    assert rc == 1, out + err
    lost, fresh = host.launches()
    assert 'resume' in lost['argv'] and lost['rc'] == 1 and not fresh['resume'] and fresh['rc'] == 1
    row = host.status()['tasks'][0]
    assert row['status'] == 'failed' and 'model overloaded' in row['reason'], row
