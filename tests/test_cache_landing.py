"""A cache hit whose work no longer lands as it was — a sibling landed a conflicting change while the hit's checks
ran — is a miss after all: its worker runs from the new tip, with its budget reservation, instead of a conflict
round in a thread the cache never had."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.gitrepo import commit_all, git
from tests.support.orchtest import edit_config, make_host


def plan(s_description: str, check: str) -> dict[str, Any]:
    return {'version': 1, 'title': 'Fit', 'tasks': [
        {'id': 'H', 'role': 'implementer', 'title': 'H', 'description': 'Write h.', 'paths': ['src/h.py'],
         'checks': [check]},
        {'id': 'S', 'role': 'implementer', 'title': 'S', 'description': s_description, 'paths': ['src/s.py']}]}


def test_a_hit_that_no_longer_lands_as_it_was_is_a_miss(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: Any) -> None:
    flag, mark = tmp_path / 'second-run', tmp_path / 'h-checking'
    s_landed = tmp_path / 'repo' / '.orchestrator' / 'runs' / 'rb' / 'tasks' / 'S' / 'result.json'
    # H's check, in the second run only: say it runs, then wait until S landed (bounded)
    check = (f'if [ -f {flag} ]; then touch {mark}; i=0; while [ ! -f {s_landed} ] && [ $i -lt 600 ]; '
             'do sleep 0.1; i=$((i+1)); done; fi; true')
    host = make_host(tmp_path, monkeypatch, capsys, {'tasks': {
        'H': {'edits': {'src/h.py': 'h\n', 'shared.txt': 'h\n'}},
        'S': {'edits': {'src/s.py': 's\n'}}}})
    monkeypatch.setenv('CODEX_API_KEY', 'sk-test')
    edit_config(host.repo, {'check_sandbox: role': 'check_sandbox: none'})   # it writes outside its checkout
    config = host.repo / '.orchestrator' / 'orchestrator.yaml'
    config.write_text(config.read_text() + 'cache: {local: false}\n')
    host.write_plan(plan('Write s.', check))
    commit_all(host.repo, 'plan')
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--run-id', 'ra')
    assert rc == 0, out + err

    # S edited (it pays again, and this time lands a conflicting shared.txt while H's cached work is checked)
    flag.touch()
    host.write_plan(plan('Write s, and shared.txt.', check))
    commit_all(host.repo, 'edit S')
    host.script({'tasks': {
        'H': {'edits': {'src/h.py': 'h\n', 'shared.txt': 's\nh\n'}},
        'S': {'wait_for': str(mark), 'wait_timeout': 60, 'edits': {'src/s.py': 's\n', 'shared.txt': 's\n'}}}})
    host.clear_log()
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--run-id', 'rb', '-j', '2')
    assert rc == 0, out + err
    assert 'warning: H: the cached result is not used: it conflicts in shared.txt' in err
    assert sorted(host.launched_tasks()) == ['H', 'S']          # H's worker ran, afresh
    assert not any(e['resume'] for e in host.launches())        # no round in a thread the cache never had
    result = host.result('H')
    assert 'cache' not in result and result['conflict_rounds'] == 0
    assert git(host.repo, 'show', f'{host.shared_branch()}:shared.txt') == 's\nh'
