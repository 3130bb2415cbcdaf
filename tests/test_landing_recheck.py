"""A task's work replayed onto a tip that moved lands only once its checks passed there: a kill while they run (or
before they start) leaves that to the resume, which runs them again before the branch moves."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.gitrepo import commit_all, git
from tests.support.orchtest import Host, crashed_run, edit_config, make_host

RUN = 'recheck'


def task(tid: str, paths: list[str], **extra: Any) -> dict[str, Any]:
    return {'id': tid, 'role': 'implementer', 'title': f'Task {tid}', 'description': f'Do {tid}.',
            'depends_on': [], 'paths': paths, **extra}


def make(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> Host:
    """X removes what Y's check needs; Y answers only once X's result is there (X lands first), so Y's work is
    replayed onto X's and its check fails on that tip."""
    y_started = tmp_path / 'y-started'   # X answers only once Y's turn began (its checkout made at the base)
    x_result = tmp_path / 'repo' / '.orchestrator' / 'runs' / RUN / 'tasks' / 'X' / 'result.json'
    script = {'default': {'answer': 'auto'}, 'tasks': {
        'X': {'edits': {'README.md': 'bye\n'}, 'wait_for': str(y_started), 'wait_timeout': 60},
        'Y': [{'edits': {'y.txt': 'hello\n'}, 'touch': str(y_started),
               'wait_for': str(x_result), 'wait_timeout': 60},
              {'edits': {'README.md': 'bye\nhello\n'}}]}}
    host = make_host(tmp_path, monkeypatch, capsys, script, files={'README.md': 'hello\n'})
    assert host.repo == tmp_path / 'repo'
    host.write_plan({'version': 1, 'title': 'Recheck', 'tasks': [
        task('X', ['README.md']), task('Y', ['y.txt'], checks=['grep -q hello README.md'])]})
    edit_config(host.repo, {'jobs: 1 ': 'jobs: 2 '})   # both at once: Y waits for X inside its turn
    commit_all(host.repo, 'plan')
    return host


@pytest.mark.parametrize('point', ['after-replay:Y', 'before-recheck:Y'])
def test_killed_before_its_checks_passed_on_the_new_tip_it_is_not_landed_unchecked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any, point: str) -> None:
    """Killed right after the replay (nothing recorded yet) or right after it was recorded, before its checks
    ran there: the resume runs them, they fail on X's work, and Y gets its conflict round before it lands."""
    host = make(tmp_path, monkeypatch, capsys)
    crashed_run(host, RUN, point, timeout=60)
    assert host.statuses(RUN)['X'] == 'done'
    host.clear_log()
    rc, out, err = host.cli('resume', '--run-id', RUN, '-j', '2')
    assert rc == 0, out + err
    calls = [e for e in host.launches() if e['task_id'] == 'Y']
    assert len(calls) == 1 and 'grep -q hello README.md' in calls[0]['prompt'], calls   # a round on the new tip
    assert host.statuses(RUN) == {'X': 'done', 'Y': 'done'}
    assert git(host.repo, 'show', f'{host.shared_branch()}:README.md') == 'bye\nhello'
    y = host.result('Y')
    assert any(c['command'] == 'grep -q hello README.md' and c['passed'] for c in y['checks'])
