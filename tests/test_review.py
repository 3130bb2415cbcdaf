"""Issue 12: reviewer rounds. request_changes sends the findings back to the reviewed task's own thread;
its fix is committed as its own commit; the reviewer looks again; bounded by review_rounds."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.gitrepo import commit_all, git
from tests.support.orchtest import Host, make_host


def review(verdict: str, *findings: str) -> dict[str, Any]:
    return {'answer': {'status': 'done', 'summary': f'review: {verdict}', 'verdict': verdict,
                       'findings': [{'severity': 'major', 'file': 'src/x.py', 'line': None, 'message': m}
                                    for m in findings],
                       'files_changed': [], 'decisions': [], 'follow_ups': []}}


def make(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any, script: dict[str, Any]) -> Host:
    host = make_host(tmp_path, monkeypatch, capsys, script)
    host.write_plan({'version': 1, 'title': 'Review', 'tasks': [
        {'id': 'T1', 'role': 'implementer', 'title': 'Write x', 'description': 'Write src/x.py.',
         'paths': ['src/*'], 'checks': ['test -s src/x.py']},
        {'id': 'T3', 'role': 'reviewer', 'title': 'Review x', 'description': 'Review it.', 'depends_on': ['T1']}]})
    commit_all(host.repo, 'plan')
    return host


def subjects(host: Host) -> list[str]:
    return [s for s in host.branch_log(host.shared_branch()) if s.startswith('T')]


def test_changes_requested_once_then_approved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    host = make(tmp_path, monkeypatch, capsys, {'tasks': {
        'T1': [{'edits': {'src/x.py': 'v1\n'}}, {'edits': {'src/x.py': 'v2, with the finding fixed\n'}}],
        'T3': [review('request_changes', 'x must handle empty input'), review('approve')]}})
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 0, out + err
    launches = host.launches()
    assert [(e['task_id'], e['resume']) for e in launches] == [('T1', False), ('T3', False), ('T1', True),
                                                               ('T3', True)]
    assert launches[2]['thread_id'] == launches[0]['thread_id']   # the implementer's own thread
    assert launches[3]['thread_id'] == launches[1]['thread_id']   # the reviewer looks again in its own
    assert 'x must handle empty input' in launches[2]['prompt']
    # newest first: the reviewer's own commit (its decisions entry, if any) may follow the fix
    assert 'T1: Write x (review round 1 by T3)' in subjects(host) and subjects(host)[-1] == 'T1: Write x'
    fix = git(host.repo, 'log', '--format=%B', '-1', '--grep=review round 1', host.shared_branch())
    assert 'Orch-Task: T1' in fix and 'Orch-Review: T3 round 1' in fix
    assert git(host.repo, 'show', f'{host.shared_branch()}:src/x.py') == 'v2, with the finding fixed'
    result = host.result('T3')
    assert result['review_rounds'] == 1 and result['answer']['verdict'] == 'approve'
    assert [f['task'] for f in result['fixes']] == ['T1']
    assert host.statuses() == {'T1': 'done', 'T3': 'done'}


def test_changes_always_requested_fails_the_reviewer_and_blocks_merge(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    host = make(tmp_path, monkeypatch, capsys, {'tasks': {
        'T1': [{'edits': {'src/x.py': 'v1\n'}}, {'edits': {'src/x.py': 'v2\n'}}, {'edits': {'src/x.py': 'v3\n'}}],
        'T3': [review('request_changes', 'still wrong')]}})
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 1, out + err
    assert len(host.launches()) == 6   # T1, then (review, fix) twice, and the last review
    row = {t['id']: t for t in host.status()['tasks']}['T3']
    assert row['status'] == 'failed'
    assert row['reason'] == 'changes requested: 1 finding after 2 review rounds'
    report = (host.run_dir() / 'report.md').read_text()
    assert 'still wrong' in report and 'changes requested' in report
    assert json.loads((host.run_dir() / 'summary.json').read_text())['counts'] == {'done': 1, 'failed': 1}
    base = git(host.repo, 'rev-parse', 'HEAD')
    rc, out, err = host.cli('merge', '--run-id', host.run_dir().name, '--allow-automerge')
    assert rc != 0 and 'T3' in out + err
    assert git(host.repo, 'rev-parse', 'HEAD') == base


def test_the_fix_runs_the_reviewed_task_s_gate_where_its_rule_says(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    """The gate of the reviewed task runs on the fix as it ran on its work: in the rule's `cwd` (here src/ of the
    checkout), not at the checkout's top."""
    host = make(tmp_path, monkeypatch, capsys, {'tasks': {
        'T1': [{'edits': {'src/x.py': 'v1\n'}}, {'edits': {'src/x.py': 'v2\n'}}],
        'T3': [review('request_changes', 'x must handle empty input'), review('approve')]}})
    rules = host.repo / '.orchestrator' / 'rules'
    rules.mkdir(exist_ok=True)
    (rules / 'gate.yaml').write_text('name: in_src\nscope: task\nroles: [implementer]\n'
                                     'output: "{task_dir}/in_src.json"\n'
                                     'action:\n  cwd: "{worktree}/src"\n  shell: "test -s x.py"\n')
    commit_all(host.repo, 'gate')
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 0, out + err
    assert host.statuses() == {'T1': 'done', 'T3': 'done'}
    assert git(host.repo, 'show', f'{host.shared_branch()}:src/x.py') == 'v2'
    logs = list((host.run_dir() / 'tasks' / 'T3' / 'checks' / 'review-1').glob('gate-in_src.log'))
    assert len(logs) == 1
