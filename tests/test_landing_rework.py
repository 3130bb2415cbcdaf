"""A conflict's resolution, once paid for and committed, is what lands: a kill that left the rework's record behind
does not make the landing put the old conflict back."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.gitrepo import commit_all, git
from tests.support.orchtest import crashed_run, edit_config, make_host

RUN = 'rework'


def test_a_stale_rework_record_does_not_throw_the_resolution_away(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    """X and Y both change shared.txt; X lands first (Y answers only once X's result is there, X only once Y's turn
    began). Killed after Y's conflict round was recorded, before the rework's record was cleared: the resume runs
    the one conflict round allowed, commits it and lands it."""
    y_started = tmp_path / 'y-started'
    x_result = tmp_path / 'repo' / '.orchestrator' / 'runs' / RUN / 'tasks' / 'X' / 'result.json'
    script = {'default': {'answer': 'auto'}, 'tasks': {
        'X': {'edits': {'x.txt': 'x\n', 'shared.txt': 'theirs\n'}, 'wait_for': str(y_started), 'wait_timeout': 60},
        'Y': [{'edits': {'y.txt': 'y\n', 'shared.txt': 'mine\n'}, 'touch': str(y_started),
               'wait_for': str(x_result), 'wait_timeout': 60},
              {'edits': {'shared.txt': 'theirs\nmine\n'}}]}}
    host = make_host(tmp_path, monkeypatch, capsys, script, files={'README.md': 'hello\n', 'shared.txt': 'base\n'})
    assert host.repo == tmp_path / 'repo'
    edit_config(host.repo, {'jobs: 1 ': 'jobs: 2 ', 'conflict_rounds: 2 ': 'conflict_rounds: 1 '})
    host.write_plan({'version': 1, 'title': 'Rework', 'tasks': [
        {'id': t, 'role': 'implementer', 'title': f'Task {t}', 'description': f'Do {t}.', 'depends_on': [],
         'paths': [f'{t.lower()}.txt']} for t in ('X', 'Y')]})
    commit_all(host.repo, 'plan')
    crashed_run(host, RUN, 'after-rework-pending:Y', timeout=60)
    assert host.statuses(RUN)['X'] == 'done'
    host.clear_log()
    rc, out, err = host.cli('resume', '--run-id', RUN, '-j', '2')
    assert rc == 0, out + err
    calls = [e for e in host.launches() if e['task_id'] == 'Y']
    assert len(calls) == 1 and 'conflict round 1 of 1' in calls[0]['prompt'], calls   # paid once, not redone
    assert host.statuses(RUN) == {'X': 'done', 'Y': 'done'}
    assert host.result('Y')['conflict_rounds'] == 1
    assert git(host.repo, 'show', f'{host.shared_branch()}:shared.txt') == 'theirs\nmine'
