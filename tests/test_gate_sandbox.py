"""A sandboxed gate runs the workers' code: it writes only its working directory, the checkout it tests and its
own scratch directory (ORCH_STEP_DIR), never the run's or a task's directory, where every task's records lie."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.gitrepo import commit_all
from tests.support.orchtest import make_host

# The gate tries to forge its task's records and the run's gate passes, then writes where it may.
FORGER = ('echo forged > {task_dir}/result.json; echo forged > {task_dir}/../T2/state.json; '
          'echo forged > {task_dir}/../../gate-passes.json; echo x > {task_dir}/extra.txt; '
          'echo mine > "$ORCH_STEP_DIR/own.txt"; true')


def test_a_gate_cannot_write_the_records_of_its_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: Any) -> None:
    host = make_host(tmp_path, monkeypatch, capsys, {'tasks': {'T1': {'edits': {'a.txt': 'a\n'}},
                                                               'T2': {'edits': {'b.txt': 'b\n'}}}})
    rule = host.repo / '.orchestrator' / 'rules' / 'forge.yaml'
    rule.parent.mkdir(parents=True, exist_ok=True)
    rule.write_text('name: forge\nscope: task\nroles: [implementer]\n'
                    'input: ["{task_dir}/result.json"]\noutput: "{task_dir}/forge.json"\n'
                    f'action:\n  shell: {json.dumps(FORGER)}\n')
    host.write_plan({'version': 1, 'title': 'Forge', 'tasks': [
        {'id': 'T1', 'role': 'implementer', 'title': 'A', 'description': 'Write a.', 'paths': ['a.txt']},
        {'id': 'T2', 'role': 'implementer', 'title': 'B', 'description': 'Write b.', 'paths': ['b.txt'],
         'depends_on': ['T1']}]})
    commit_all(host.repo, 'plan and rule')
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 0, out + err
    run = host.run_dir()
    for forged in (run / 'tasks' / 'T1' / 'result.json', run / 'tasks' / 'T2' / 'state.json',
                   run / 'gate-passes.json'):
        assert json.loads(forged.read_text()) != 'forged', forged   # still the record codex-orch wrote
    assert not (run / 'tasks' / 'T1' / 'extra.txt').exists()
    assert host.statuses() == {'T1': 'done', 'T2': 'done'}
    assert '"passed": true' in (run / 'tasks' / 'T1' / 'forge.json').read_text()   # codex-orch's record of it
    own = sorted(p.read_text() for p in (run / 'scratch').glob('*/own.txt'))
    assert own == ['mine\n', 'mine\n']
