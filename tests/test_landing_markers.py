"""A conflict on a moved tip stays a conflict until the worker resolved it, whatever the repository's attributes
make of git's markers: longer markers (`conflict-marker-size`) are still markers, and a file git merges without
any (`-merge`, `merge=binary`) is unresolved while it holds only the tip's version."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orch.adapters import git as og
from orch.steps.landing import marked_files, unresolved
from tests.support.gitrepo import commit_all, git, isolate_git, make_repo
from tests.support.orchtest import Host, edit_config, make_host

RUN = 'markers'


def _host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any, attributes: str,
          resolution: dict[str, Any]) -> Host:
    """X and Y both change shared.txt; Y answers only once X's result is there, so X lands first and Y's change
    conflicts on its tip (their paths do not say they share it: they run at once)."""
    y_started = tmp_path / 'y-started'   # X answers only once Y's turn began (its checkout made at the base)
    x_result = tmp_path / 'repo' / '.orchestrator' / 'runs' / RUN / 'tasks' / 'X' / 'result.json'
    script = {'default': {'answer': 'auto'}, 'tasks': {
        'X': {'edits': {'x.txt': 'x\n', 'shared.txt': 'theirs\n'}, 'wait_for': str(y_started), 'wait_timeout': 60},
        'Y': [{'edits': {'y.txt': 'y\n', 'shared.txt': 'mine\n'}, 'touch': str(y_started),
               'wait_for': str(x_result), 'wait_timeout': 60},
              resolution]}}
    host = make_host(tmp_path, monkeypatch, capsys, script,
                     files={'README.md': 'hello\n', 'shared.txt': 'base\n', '.gitattributes': attributes})
    assert host.repo == tmp_path / 'repo'
    edit_config(host.repo, {'jobs: 1 ': 'jobs: 2 ', 'conflict_rounds: 2 ': 'conflict_rounds: 1 '})
    host.write_plan({'version': 1, 'title': 'Markers', 'tasks': [
        {'id': t, 'role': 'implementer', 'title': f'Task {t}', 'description': f'Do {t}.', 'depends_on': [],
         'paths': [f'{t.lower()}.txt']} for t in ('X', 'Y')]})   # shared.txt: a wrong guess
    commit_all(host.repo, 'plan')
    return host


@pytest.mark.parametrize('attributes', ['* conflict-marker-size=12\n', 'shared.txt -merge\n',
                                        'shared.txt merge=binary\n'])
def test_an_unresolved_conflict_is_never_landed_whatever_the_attributes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any, attributes: str) -> None:
    host = _host(tmp_path, monkeypatch, capsys, attributes, {'edits': {'y.txt': 'y2\n'}})
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--run-id', RUN)
    assert rc == 1, out + err
    assert host.statuses(RUN) == {'X': 'done', 'Y': 'failed'}
    row = {t['id']: t for t in host.status(RUN)['tasks']}['Y']
    assert 'shared.txt' in row['reason'] and 'after 1 conflict round' in row['reason'], row['reason']
    branch = host.shared_branch()
    assert git(host.repo, 'show', f'{branch}:shared.txt') == 'theirs'   # nothing half-landed
    assert 'y.txt' not in git(host.repo, 'ls-tree', '-r', '--name-only', branch)


def test_a_conflict_git_merged_without_markers_lands_once_the_worker_made_its_change_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    host = _host(tmp_path, monkeypatch, capsys, 'shared.txt -merge\n', {'edits': {'shared.txt': 'theirs\nmine\n'}})
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--run-id', RUN)
    assert rc == 0, out + err
    calls = [e for e in host.launches() if e['task_id'] == 'Y']
    assert len(calls) == 2 and 'without your change' in calls[1]['prompt'] and 'shared.txt' in calls[1]['prompt']
    assert git(host.repo, 'show', f'{host.shared_branch()}:shared.txt') == 'theirs\nmine'


def test_longer_markers_are_markers(tmp_path: Path) -> None:
    work = tmp_path / 'co'
    work.mkdir()
    (work / 'long.txt').write_text('a\n<<<<<<<<<<<< HEAD\nb\n============\nc\n>>>>>>>>>>>> task\n')
    (work / 'crlf.txt').write_bytes(b'a\r\n>>>>>>>\r\n')
    (work / 'prose.txt').write_text('<<<<<< six\n>>>>>>>>no space\n a <<<<<<< not at the start\n')
    assert marked_files(work, ['long.txt', 'crlf.txt', 'prose.txt']) == ['long.txt', 'crlf.txt']


def test_a_binary_conflict_stays_unresolved_while_it_holds_the_tip_s_version(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    isolate_git(monkeypatch, tmp_path)
    repo = make_repo(tmp_path, {'a.bin': 'base\n', 'gone.txt': 'base\n', '.gitattributes': '*.bin binary\n'})
    base = git(repo, 'rev-parse', 'HEAD')
    one, two = tmp_path / 'one', tmp_path / 'two'
    og.add_checkout(repo, one, base)
    og.add_checkout(repo, two, base)
    (one / 'a.bin').write_text('theirs\n')
    (one / 'gone.txt').write_text('theirs\n')
    landed = commit_all(one, 'one')
    (two / 'a.bin').write_text('mine\n')
    (two / 'gone.txt').unlink()            # the task deleted what the tip changed
    head = commit_all(two, 'two')
    conflicts = og.squash_onto(two, landed, head)
    assert conflicts == ['a.bin', 'gone.txt']
    assert marked_files(two, conflicts) == []                       # no markers anywhere
    assert og.same_as_commit(two, landed, conflicts) == ['a.bin', 'gone.txt']
    conflict = {'onto': landed, 'files': conflicts, 'dropped': conflicts}
    assert unresolved(two, conflict) == ['a.bin', 'gone.txt']
    (two / 'a.bin').write_text('theirs\nmine\n')
    (two / 'gone.txt').unlink()
    assert unresolved(two, conflict) == []
