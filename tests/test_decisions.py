"""The decisions log: one entry per task, replaced on re-execution, committed with the task's work."""
from __future__ import annotations

from pathlib import Path

import pytest

from orch.runstate import decisions
from tests.support.gitrepo import git
from tests.support.orchtest import THREE_TASK_SCRIPT, Host, make_host, three_task_plan

FIRST = [{'decision': 'Use f-strings', 'rationale': 'Readable.'}]
SECOND = [{'decision': 'Use str.format', 'rationale': 'Works with templates.'}]
DECISIONS_FILE = 'docs/ai/decisions.md'


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Host:
    t1 = THREE_TASK_SCRIPT['tasks']['T1']
    script = {**THREE_TASK_SCRIPT, 'tasks': {**THREE_TASK_SCRIPT['tasks'],
                                             'T1': [{**t1, 'decisions': FIRST}, {**t1, 'decisions': SECOND}]}}
    h = make_host(tmp_path, monkeypatch, capsys, script)
    h.write_plan(three_task_plan())
    return h


def marker(run_id: str, task_id: str) -> str:
    return f'<!-- codex-orch: run={run_id} task={task_id} -->'


def test_re_executed_task_has_exactly_one_entry_in_its_commit(host: Host) -> None:
    assert host.cli('run', '--plan-file', 'plan.json', '--run-id', 'r1')[0] == 0
    worktree = host.repo / '.orchestrator' / 'worktrees' / 'r1'
    first_commit = host.result('T1')['commit']
    assert 'Use f-strings' in git(host.repo, 'show', f'{first_commit}:{DECISIONS_FILE}')
    plan = three_task_plan()
    plan['tasks'][0]['description'] = 'Create src/greet.py, with a docstring.'
    host.write_plan(plan)
    rc, out, err = host.cli('resume')
    assert rc == 0, out + err
    assert host.launched_tasks().count('T1') == 2
    text = (worktree / DECISIONS_FILE).read_text()
    assert text.count(marker('r1', 'T1')) == 1
    assert 'Use str.format' in text and 'Use f-strings' not in text
    commit = host.result('T1')['commit']
    assert commit != first_commit
    assert DECISIONS_FILE in git(host.repo, 'show', '--format=', '--name-only', commit).splitlines()
    committed = git(host.repo, 'show', f'{commit}:{DECISIONS_FILE}')
    assert committed.count(marker('r1', 'T1')) == 1 and 'Use str.format' in committed
    assert git(worktree, 'status', '--porcelain') == ''


def test_parallel_tasks_each_commit_their_own_entry(host: Host) -> None:
    plan = {'version': 1, 'tasks': [
        {'id': tid, 'role': 'implementer', 'title': tid, 'description': f'Write {tid}.txt', 'paths': [f'{tid}.txt']}
        for tid in ('A', 'B')]}
    host.write_plan(plan, 'par.json')
    host.script({'default': {'answer': 'auto'}, 'tasks': {
        tid: {'edits': {f'{tid}.txt': 'x\n'}, 'sleep': 0.3,
              'decisions': [{'decision': f'{tid} decided', 'rationale': 'Because.'}]} for tid in ('A', 'B')}})
    rc, out, err = host.cli('run', '--plan-file', 'par.json', '--run-id', 'par', '-j', '2')
    assert rc == 0, out + err
    worktree = host.repo / '.orchestrator' / 'worktrees' / 'par'
    text = (worktree / DECISIONS_FILE).read_text()
    assert text.count(marker('par', 'A')) == 1 and text.count(marker('par', 'B')) == 1
    for tid in ('A', 'B'):
        commit = host.result(tid)['commit']
        diff = git(host.repo, 'show', '--format=', commit, '--', DECISIONS_FILE)
        assert f'+{marker("par", tid)}' in diff
        assert git(host.repo, 'show', '--format=', '--name-only', commit).splitlines() == sorted(
            [DECISIONS_FILE, f'{tid}.txt'])
    assert git(worktree, 'status', '--porcelain') == ''


def test_upsert_adds_replaces_and_removes(tmp_path: Path) -> None:
    path = tmp_path / 'decisions.md'
    assert decisions.upsert(path, 'r1', 'T1', 'implementer', 'One', FIRST)
    assert decisions.upsert(path, 'r1', 'T2', 'tester', 'Two', SECOND)
    assert decisions.upsert(path, 'r0', 'T1', 'implementer', 'Older run', FIRST)
    assert not decisions.upsert(path, 'r1', 'T1', 'implementer', 'One', FIRST)   # unchanged: not rewritten
    assert decisions.upsert(path, 'r1', 'T1', 'implementer', 'One', SECOND)
    text = path.read_text()
    assert text.startswith('# Decisions\n')
    assert text.count(marker('r1', 'T1')) == 1 and text.count(marker('r0', 'T1')) == 1
    t1 = text[text.index(marker('r1', 'T1')):text.index('<!-- /codex-orch: run=r1 task=T1 -->')]
    assert 'Use str.format' in t1 and 'Use f-strings' not in t1
    assert text.index(marker('r1', 'T1')) < text.index(marker('r1', 'T2'))   # replaced in place
    assert decisions.upsert(path, 'r1', 'T1', 'implementer', 'One', [])
    assert marker('r1', 'T1') not in path.read_text() and marker('r1', 'T2') in path.read_text()


def test_multi_line_text_stays_inside_its_list_item() -> None:
    entry = decisions.render_entry('r1', 'T1', 'implementer', 'One', [
        {'decision': 'Split\nthe module', 'rationale': 'It was too big.\nTests are faster.'}])
    assert '- **Split the module**\n  It was too big.\n  Tests are faster.\n' in entry
