"""Per-task workspaces (`use_single_workspace: false`): one worktree and branch per task, each started
from the tip of what it depends on, on real temporary repositories with a fake codex."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.support.gitrepo import commit_all, git
from tests.support.orchtest import Host, cli_subprocess, make_host
from tests.support.usercheckout import orch_branches, user_view, worktree_paths


def per_task_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any, script: dict[str, Any],
                  plan: dict[str, Any]) -> Host:
    host = make_host(tmp_path, monkeypatch, capsys, script)
    config = host.repo / '.orchestrator' / 'orchestrator.yaml'
    text = config.read_text()
    assert 'use_single_workspace: true' in text
    config.write_text(text.replace('use_single_workspace: true', 'use_single_workspace: false'))
    host.write_plan(plan)
    commit_all(host.repo, 'per-task config and plan')
    return host


def task(tid: str, deps: list[str], paths: list[str]) -> dict[str, Any]:
    return {'id': tid, 'role': 'implementer', 'title': f'Task {tid}', 'description': f'Do {tid}.',
            'depends_on': deps, 'paths': paths}


DIAMOND = {'version': 1, 'title': 'Diamond', 'tasks': [
    task('A', [], ['a.txt']), task('B', ['A'], ['b.txt']), task('C', ['A'], ['c.txt']),
    task('D', ['B', 'C'], ['d.txt'])]}
DIAMOND_SCRIPT = {'default': {'answer': 'auto'}, 'tasks': {
    tid: {'edits': {f'{tid.lower()}.txt': f'{tid}\n'}} for tid in 'ABCD'}}
# Every task also reports a decision: B and C both append to docs/ai/decisions.md.
DECIDING_SCRIPT = {'default': {'answer': 'auto'}, 'tasks': {
    tid: {'edits': {f'{tid.lower()}.txt': f'{tid}\n'}, 'decisions': [{'decision': f'{tid} decided', 'rationale': 'r'}]}
    for tid in 'ABCD'}}


def subjects(repo: Path, *args: str) -> list[str]:
    return git(repo, 'log', '--format=%s', *args).splitlines()


def run_id_of(host: Host) -> str:
    return host.run_dir().name


def branch(host: Host, tid: str) -> str:
    info = json.loads((host.run_dir() / 'run.json').read_text())
    return info['task_branch_template'].format(date=info['date'], run_id=info['run_id'], task_id=tid)


def test_diamond_gets_four_branches_and_d_starts_from_the_merge_of_b_and_c(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    host = per_task_host(tmp_path, monkeypatch, capsys, DECIDING_SCRIPT, DIAMOND)
    before = user_view(host.repo)
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 0, out + err
    assert host.statuses() == dict.fromkeys('ABCD', 'done')
    run_id = run_id_of(host)
    assert orch_branches(host.repo) == sorted(branch(host, t) for t in 'ABCD')
    assert branch(host, 'D').endswith(f'/run-{run_id}/D')
    # every task ran in its own worktree, on its own branch
    cwds = {e['task_id']: Path(e['workdir']) for e in host.launches()}
    for tid in 'ABCD':
        wt = host.repo / '.orchestrator' / 'worktrees' / run_id / tid
        assert cwds[tid] == wt.resolve()
        assert git(wt, 'symbolic-ref', '--short', 'HEAD') == branch(host, tid)
    assert sorted(worktree_paths(host.repo)) == sorted(
        (host.repo / '.orchestrator' / 'worktrees' / run_id / t).resolve() for t in 'ABCD')
    a, b, c, d = (host.result(t)['commit'] for t in 'ABCD')
    # B and C start from A's tip; each holds only its own file besides A's
    for tid, sha in (('B', b), ('C', c)):
        assert git(host.repo, 'rev-parse', f'{sha}^') == a
        assert git(host.repo, 'rev-parse', branch(host, tid)) == sha
        assert sorted(git(host.repo, 'show', '--format=', '--name-only', sha).splitlines()) == [
            f'{tid.lower()}.txt', 'docs/ai/decisions.md']
    assert git(host.repo, 'ls-tree', '--name-only', branch(host, 'B'), 'c.txt') == ''
    # D: its parent is the merge of B and C (first parent B), so it has every task's commit
    merge = git(host.repo, 'rev-parse', f'{d}^')
    assert git(host.repo, 'rev-parse', f'{merge}^1', f'{merge}^2').splitlines() == [b, c]
    assert subjects(host.repo, '--first-parent', branch(host, 'D'))[:4] == [
        'D: Task D', 'Merge C into D', 'B: Task B', 'A: Task A']
    assert {'A: Task A', 'B: Task B', 'C: Task C', 'D: Task D'} <= set(subjects(host.repo, branch(host, 'D')))
    tree = set(git(host.repo, 'ls-tree', '--name-only', branch(host, 'D')).splitlines())
    assert {'a.txt', 'b.txt', 'c.txt', 'd.txt'} <= tree
    # the decisions log both B and C appended to was merged by keeping both entries, once each
    decisions = git(host.repo, 'show', f'{branch(host, "D")}:docs/ai/decisions.md')
    assert [decisions.count(f'**{t} decided**') for t in 'ABCD'] == [1, 1, 1, 1]
    assert '<<<<<<<' not in decisions and '>>>>>>>' not in decisions
    assert git(host.repo, 'log', '-1', '--format=%B', merge).startswith('Merge C into D\n\nOrch-Run: ')
    body = git(host.repo, 'log', '-1', '--format=%B', d)
    assert f'Orch-Run: {run_id}' in body and 'Orch-Task: D' in body and 'Orch-Role: implementer' in body
    assert git(host.repo, 'log', '-1', '--format=%an <%ae>', d) == 'Test Author <test@example.com>'   # git's own
    # a re-run does nothing
    host.clear_log()
    assert host.cli('resume')[0] == 0
    assert host.launched_tasks() == []
    assert user_view(host.repo) == before


def test_a_dependency_contained_in_another_needs_no_merge(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    plan = {'version': 1, 'title': 'Chain', 'tasks': [
        task('A', [], ['a.txt']), task('B', ['A'], ['b.txt']), task('C', ['A', 'B'], ['c.txt'])]}
    host = per_task_host(tmp_path, monkeypatch, capsys, DIAMOND_SCRIPT, plan)
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 0, out + err
    # C starts from B's tip (which contains A's): a straight line, no merge commit
    assert subjects(host.repo, branch(host, 'C'))[:3] == ['C: Task C', 'B: Task B', 'A: Task A']


def test_conflicting_dependencies_go_to_the_dependent_s_worker_then_fail_naming_the_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    """B's and C's work conflict in shared.txt: D's own worker is asked to resolve the merge (then conflict rounds
    in its thread); a worker that never does leaves D failed, naming the file, and nothing of it merged."""
    script = {'default': {'answer': 'auto'}, 'tasks': {
        'A': {'edits': {'a.txt': 'A\n'}},
        'B': {'edits': {'shared.txt': 'from B\n', 'b.txt': 'B\n'}},
        'C': {'edits': {'shared.txt': 'from C\n', 'c.txt': 'C\n'}},
        'D': {'edits': {'d.txt': 'D\n'}}}}
    host = per_task_host(tmp_path, monkeypatch, capsys, script, DIAMOND)
    before = user_view(host.repo)
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--continue')
    assert rc == 1, out + err
    rows = {t['id']: t for t in host.status()['tasks']}
    assert {t: rows[t]['status'] for t in 'ABCD'} == {'A': 'done', 'B': 'done', 'C': 'done', 'D': 'failed'}
    assert 'shared.txt' in rows['D']['reason'] and 'conflict' in rows['D']['reason']
    assert 'b.txt' not in rows['D']['reason']
    assert host.launched_tasks().count('D') == 3   # its first answer and two conflict rounds
    assert "shared.txt" in out + err
    d_tip = git(host.repo, 'rev-parse', branch(host, 'D'))
    assert 'D: ' not in git(host.repo, 'log', '-1', '--format=%s', d_tip)   # nothing of D was committed
    assert host.cli('merge', '--run-id', run_id_of(host), '--allow-automerge')[0] != 0
    assert user_view(host.repo) == before


def test_rerun_of_an_upstream_task_restarts_downstream_branches_from_the_new_tips(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    host = per_task_host(tmp_path, monkeypatch, capsys, DIAMOND_SCRIPT, DIAMOND)
    assert host.cli('run', '--plan-file', 'plan.json')[0] == 0
    old_a, old_d = host.result('A')['commit'], host.result('D')['commit']
    plan = json.loads(json.dumps(DIAMOND))
    plan['tasks'][0]['description'] = 'Do A, better.'
    host.write_plan(plan)
    commit_all(host.repo, 'plan v2')
    before = user_view(host.repo)
    host.script({'default': {'answer': 'auto'}, 'tasks': {
        'A': {'edits': {'a.txt': 'A v2\n'}}, 'B': {'edits': {'b.txt': 'B\n'}},
        'C': {'edits': {'c.txt': 'C\n'}}, 'D': {'edits': {'d.txt': 'D\n'}}}})
    host.clear_log()
    rc, out, err = host.cli('resume')
    assert rc == 0, out + err
    assert sorted(host.launched_tasks()) == ['A', 'B', 'C', 'D']
    new_a, new_d = host.result('A')['commit'], host.result('D')['commit']
    assert new_a != old_a and new_d != old_d
    # A's branch grew (its worktree kept its history); D's was rebuilt from the new B and C
    assert git(host.repo, 'rev-parse', f'{new_a}^') == old_a
    d_log = subjects(host.repo, branch(host, 'D'))
    assert d_log.count('D: Task D') == 1 and d_log.count('B: Task B') == 1 and d_log.count('C: Task C') == 1
    assert git(host.repo, 'merge-base', '--is-ancestor', new_a, branch(host, 'D')) == ''
    assert git(host.repo, 'show', f'{branch(host, "D")}:a.txt') == 'A v2'
    assert user_view(host.repo) == before


def test_rerun_after_a_kill_between_commit_and_result_commits_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    plan = {'version': 1, 'title': 'Two', 'tasks': [task('A', [], ['a.txt']), task('B', ['A'], ['b.txt'])]}
    host = per_task_host(tmp_path, monkeypatch, capsys, DIAMOND_SCRIPT, plan)
    before = user_view(host.repo)
    env = {**os.environ, 'ORCH_TEST_CRASH_AT': 'after-commit:B'}
    proc = cli_subprocess(host.repo, 'run', '--plan-file', 'plan.json', '--run-id', 'r1', env=env)
    proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert subjects(host.repo, branch(host, 'B'))[:1] == ['B: Task B']
    assert not (host.run_dir('r1') / 'tasks' / 'B' / 'result.json').exists()
    host.clear_log()
    rc, out, err = host.cli('resume', '--run-id', 'r1')
    assert rc == 0, out + err
    assert host.launched_tasks() == []
    assert subjects(host.repo, branch(host, 'B')).count('B: Task B') == 1
    assert host.result('B')['commit'] == git(host.repo, 'rev-parse', branch(host, 'B'))
    assert user_view(host.repo) == before


def test_parallel_tasks_in_their_own_worktrees_commit_as_the_configured_author(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    script = json.loads(json.dumps(DECIDING_SCRIPT))
    for tid in 'BC':
        script['tasks'][tid]['sleep'] = 1
    host = per_task_host(tmp_path, monkeypatch, capsys, script, DIAMOND)
    config = host.repo / '.orchestrator' / 'orchestrator.yaml'
    config.write_text(config.read_text().replace('author: null', 'author: "Orch Bot <bot@example.com>"'))
    commit_all(host.repo, 'author')
    before = user_view(host.repo)
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '-j', '2')
    assert rc == 0, out + err
    spans = {e['task_id']: (e['started_at'], e['ended_at']) for e in host.launches()}
    assert spans['B'][0] < spans['C'][1] and spans['C'][0] < spans['B'][1], spans
    for tid in 'ABCD':
        sha = host.result(tid)['commit']
        assert git(host.repo, 'log', '-1', '--format=%an <%ae>|%cn <%ce>|%s', sha) == \
            f'Orch Bot <bot@example.com>|Orch Bot <bot@example.com>|{tid}: Task {tid}'
    assert {'a.txt', 'b.txt', 'c.txt', 'd.txt'} <= set(
        git(host.repo, 'ls-tree', '--name-only', branch(host, 'D')).splitlines())
    assert user_view(host.repo) == before
