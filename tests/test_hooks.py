"""A worker is untrusted code: git hooks it writes in its worktree never run through codex-orch's git.

The host repository uses a relative `core.hooksPath` (`.husky`, as husky sets it), so hooks a worker
writes in its worktree are live for every git command run there, and once merged, in the user's
checkout too. Real repositories, a fake codex, real hooks that leave a marker outside the worktree.
"""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest

from tests.support.gitrepo import commit_all, git
from tests.support.orchtest import Host, make_host

# Every hook git runs for what codex-orch does: commit (--no-verify skips only pre-commit and
# commit-msg), update-ref, worktree add, merge, reset, gc --auto.
HOOKS = ('pre-commit', 'prepare-commit-msg', 'commit-msg', 'post-commit', 'reference-transaction',
         'post-checkout', 'pre-merge-commit', 'post-merge', 'post-rewrite', 'pre-auto-gc', 'post-index-change')


def write_hooks_command(markers: Path) -> str:
    """A worker's shell command: executable hooks in .husky/, each touching markers/<hook name>."""
    parts = ['mkdir -p .husky']
    for name in HOOKS:
        body = f'#!/bin/sh\ntouch {shlex.quote(str(markers / name))}\n'
        parts.append(f'printf %s {shlex.quote(body)} > .husky/{name} && chmod +x .husky/{name}')
    return ' && '.join(parts)


def implementer(tid: str, deps: list[str], paths: list[str]) -> dict[str, Any]:
    return {'id': tid, 'role': 'implementer', 'title': f'Task {tid}', 'description': f'Do {tid}.',
            'depends_on': deps, 'paths': paths}


def husky_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any, plan: dict[str, Any],
               script: dict[str, Any], *, per_task: bool) -> Host:
    host = make_host(tmp_path, monkeypatch, capsys, script)
    git(host.repo, 'config', 'core.hooksPath', '.husky')   # relative: resolved in each worktree
    cfg = host.repo / '.orchestrator' / 'orchestrator.yaml'
    if per_task:
        cfg.write_text(cfg.read_text().replace('use_single_workspace: true', 'use_single_workspace: false'))
    host.write_plan(plan)
    commit_all(host.repo, 'plan')
    return host


def assert_no_hook_ran_then_prove_they_were_live(host: Host, markers: Path) -> None:
    assert sorted(p.name for p in markers.iterdir()) == []
    # The control: the hooks merged into main are real, executable and live for the user's own git.
    assert (host.repo / '.husky' / 'post-commit').exists()
    git(host.repo, 'commit', '--quiet', '--allow-empty', '-m', 'the user commits')
    assert (markers / 'post-commit').exists()


def test_hooks_a_worker_writes_never_run_in_a_shared_run_nor_on_merge(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    markers = tmp_path / 'markers'
    markers.mkdir()
    plan = {'version': 1, 'title': 'Hooks', 'tasks': [
        implementer('T1', [], ['.husky/**', 'a.txt']), implementer('T2', ['T1'], ['b.txt'])]}
    script = {'default': {'answer': 'auto'}, 'tasks': {
        'T1': {'commands': [write_hooks_command(markers)], 'edits': {'a.txt': 'a\n'}},
        'T2': {'edits': {'b.txt': 'b\n'}}}}
    host = husky_host(tmp_path, monkeypatch, capsys, plan, script, per_task=False)
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--run-id', 'r1')
    assert rc == 0, out + err
    assert host.statuses() == {'T1': 'done', 'T2': 'done'}
    assert host.branch_log(host.shared_branch())[:2] == ['T2: Task T2', 'T1: Task T1']
    assert sorted(p.name for p in markers.iterdir()) == []
    rc, out, err = host.cli('merge', '--run-id', 'r1', '--allow-automerge')
    assert rc == 0, out + err
    assert_no_hook_ran_then_prove_they_were_live(host, markers)


def test_hooks_a_worker_writes_never_run_in_per_task_worktrees_merges_and_commits(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    markers = tmp_path / 'markers'
    markers.mkdir()
    # B and C start from A's branch (worktree add: post-checkout), D from a merge of B and C.
    plan = {'version': 1, 'title': 'Hooks', 'tasks': [
        implementer('A', [], ['.husky/**', 'a.txt']), implementer('B', ['A'], ['b.txt']),
        implementer('C', ['A'], ['c.txt']), implementer('D', ['B', 'C'], ['d.txt'])]}
    script = {'default': {'answer': 'auto'}, 'tasks': {
        'A': {'commands': [write_hooks_command(markers)], 'edits': {'a.txt': 'a\n'}},
        **{tid: {'edits': {f'{tid.lower()}.txt': f'{tid}\n'}} for tid in 'BCD'}}}
    host = husky_host(tmp_path, monkeypatch, capsys, plan, script, per_task=True)
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--run-id', 'r1')
    assert rc == 0, out + err
    assert host.statuses() == dict.fromkeys('ABCD', 'done')
    assert sorted(p.name for p in markers.iterdir()) == []
    rc, out, err = host.cli('merge', '--run-id', 'r1', '--allow-automerge')
    assert rc == 0, out + err
    assert_no_hook_ran_then_prove_they_were_live(host, markers)
