"""Per-task mode: a task that depends on several tasks whose work conflicts gets the same landing discipline as
the shared mode: its own worker resolves the merge (a conflict round in its thread if markers remain, bounded),
and its commit concludes the merge, so its branch holds every dependency's work."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.gitrepo import commit_all, git
from tests.support.orchtest import Host, make_host

RESOLVED = 'from A\nfrom B\n'


def make(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any, c_behaviour: Any,
         extra_config: str = '') -> Host:
    script = {'default': {'answer': 'auto'}, 'tasks': {
        'A': {'edits': {'shared.txt': 'from A\n'}}, 'B': {'edits': {'shared.txt': 'from B\n'}}, 'C': c_behaviour}}
    host = make_host(tmp_path, monkeypatch, capsys, script, files={'README.md': 'hi\n', 'shared.txt': 'base\n'})
    config = host.repo / '.orchestrator' / 'orchestrator.yaml'
    text = config.read_text().replace('use_single_workspace: true', 'use_single_workspace: false')
    config.write_text(text.replace('conflict_rounds: 2 ', f'conflict_rounds: 2 {extra_config}'))
    host.write_plan({'version': 1, 'title': 'Merge', 'tasks': [
        {'id': t, 'role': 'implementer', 'title': f'Task {t}', 'description': f'Do {t}.', 'depends_on': deps,
         'paths': paths}
        for t, deps, paths in (('A', [], ['shared.txt']), ('B', [], ['b/*']), ('C', ['A', 'B'], ['c/*']))]})
    commit_all(host.repo, 'plan')
    return host


def c_branch(host: Host) -> str:
    return git(host.repo, 'for-each-ref', '--format=%(refname:short)', 'refs/heads/orch/*/C')


def test_the_dependent_s_worker_resolves_the_merge_and_its_commit_concludes_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    host = make(tmp_path, monkeypatch, capsys, {'edits': {'shared.txt': RESOLVED, 'c/c.txt': 'c\n'}})
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 0, out + err
    prompt = (host.run_dir() / 'tasks' / 'C' / 'attempt-1' / 'prompt.txt').read_text()
    assert 'a merge to finish' in prompt and 'shared.txt' in prompt
    c = host.result('C')
    assert len(git(host.repo, 'rev-list', '--parents', '-n', '1', c['commit']).split()) == 3   # a merge commit
    for dep in ('A', 'B'):
        assert git(host.repo, 'merge-base', '--is-ancestor', host.result(dep)['commit'], c['commit']) == ''
    assert git(host.repo, 'show', f'{c["commit"]}:shared.txt') == RESOLVED.rstrip('\n')


def test_markers_left_get_a_conflict_round_then_it_lands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: Any) -> None:
    host = make(tmp_path, monkeypatch, capsys, [{'edits': {'c/c.txt': 'c\n'}}, {'edits': {'shared.txt': RESOLVED}}])
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 0, out + err
    calls = [e for e in host.launches() if e['task_id'] == 'C']
    assert len(calls) == 2 and calls[1]['resume'] and 'shared.txt' in calls[1]['prompt']
    c = host.result('C')
    assert c['conflict_rounds'] == 1
    assert git(host.repo, 'show', f'{c["commit"]}:shared.txt') == RESOLVED.rstrip('\n')


def test_a_merge_never_resolved_fails_the_task_naming_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: Any) -> None:
    host = make(tmp_path, monkeypatch, capsys, {'edits': {'c/c.txt': 'c\n'}})
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 1
    row = {t['id']: t for t in host.status()['tasks']}['C']
    assert row['status'] == 'failed' and 'shared.txt' in row['reason'] and 'merging the work of B' in row['reason']
    assert host.cli('merge', '--run-id', host.run_dir().name, '--allow-automerge')[0] != 0
