"""`codex-orch task --role R "prompt"`: a one-task run through the whole pipeline."""
from __future__ import annotations

import io
import json
from pathlib import Path

import jsonschema
import pytest

from orch.runstate.lock import RunLock
from tests.support.gitrepo import git
from tests.support.orchtest import Host, make_host

EDIT = {'default': {'answer': 'auto'},
        'tasks': {'task': {'edits': {'src/fix.py': 'FIXED = True\n'},
                           'decisions': [{'decision': 'Use a flag', 'rationale': 'Simplest.'}]}}}


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Host:
    return make_host(tmp_path, monkeypatch, capsys, EDIT)


def test_task_edits_commits_and_prints_the_validated_answer(host: Host) -> None:
    head = git(host.repo, 'rev-parse', 'HEAD')
    rc, out, err = host.cli('task', '--role', 'implementer', 'Fix the bug\nIt is in src/fix.py.',
                            '--spec-file', 'spec.md', '--run-id', 'fix-1')
    assert rc == 0, err
    answer = json.loads(out)   # stdout is the answer alone; progress went to stderr
    schema = json.loads((host.repo / '.orchestrator/schemas/implementer.json').read_text())
    jsonschema.validate(answer, schema)
    assert answer['decisions'] == [{'decision': 'Use a flag', 'rationale': 'Simplest.'}]
    assert 'work:task' in err
    run_dir = host.run_dir('fix-1')
    info = json.loads((run_dir / 'run.json').read_text())
    assert info['kind'] == 'task' and info['spec_file'] == 'spec.md'
    plan = json.loads((run_dir / 'plan.json').read_text())
    assert plan['tasks'] == [{'id': 'task', 'role': 'implementer', 'title': 'Fix the bug',
                              'description': 'Fix the bug\nIt is in src/fix.py.', 'depends_on': [],
                              'paths': [], 'acceptance': []}]
    result = host.result('task')
    assert result['answer'] == answer
    assert git(host.repo, 'show', '--format=%s', '--name-only', result['commit']).splitlines() == [
        'task: Fix the bug', '', 'docs/ai/decisions.md', 'src/fix.py']
    assert host.launches()[0]['prompt'].count('It is in src/fix.py.') == 1
    assert git(host.repo, 'rev-parse', 'HEAD') == head   # the user's checkout is untouched
    assert host.statuses('fix-1') == {'task': 'done'}   # by name: a one-task run is never the latest


def test_long_first_line_is_truncated_into_the_title(host: Host) -> None:
    prompt = 'Refactor ' + 'everything ' * 20
    rc, out, err = host.cli('task', '--role', 'reviewer', prompt)
    assert rc == 0, err
    title = host.result('task')['title']
    assert len(title) == 72 and title.endswith('…') and title.startswith('Refactor everything')


def test_failed_task_prints_no_answer_and_exits_1(host: Host) -> None:
    host.script({'tasks': {'task': {'answer': {'status': 'done', 'summary': 'missing fields'}}}})
    rc, out, err = host.cli('task', '--role', 'implementer', 'Fix it')
    assert rc == 1
    assert out == ''
    assert "task failed: invalid-output" in err and "'files_changed' is a required property" in err


@pytest.mark.parametrize('args, fragment', [
    (['--role', 'wizard', 'Fix it'], "--role wizard: unknown role"),
    (['--role', 'implementer', '  \n '], 'the prompt is empty'),
    (['--role', 'implementer', 'Fix it', '--spec-file', 'nope.md'], '--spec-file nope.md: file not found'),
    (['--role', 'implementer', 'Fix it', '--run-id', '../x'], "--run-id '../x'"),
])
def test_bad_input_exits_2_and_leaves_no_run(host: Host, args: list[str], fragment: str) -> None:
    rc, out, err = host.cli('task', *args)
    assert rc == 2 and fragment in err
    runs = host.repo / '.orchestrator' / 'runs'
    assert not runs.exists() or list(runs.iterdir()) == []
    assert host.launches() == []


def test_a_plan_runs_id_is_refused(host: Host) -> None:
    host.write_plan({'version': 1, 'tasks': [{'id': 'T1', 'role': 'reviewer', 'title': 't', 'description': 'd'}]})
    assert host.cli('run', '--plan-file', 'plan.json', '--run-id', 'p1')[0] == 0
    rc, out, err = host.cli('task', '--role', 'implementer', 'Fix it', '--run-id', 'p1')
    assert rc == 2 and 'a plan run' in err
    assert not (host.run_dir('p1') / 'plan.json').exists()


def test_a_task_run_in_progress_is_refused_untouched(host: Host) -> None:
    assert host.cli('task', '--role', 'reviewer', 'Look', '--run-id', 't1')[0] == 0
    plan = (host.run_dir('t1') / 'plan.json').read_bytes()
    with RunLock(host.run_dir('t1')):
        rc, out, err = host.cli('task', '--role', 'reviewer', 'Look again', '--run-id', 't1')
    assert rc == 2 and 'in use by another codex-orch' in err
    assert (host.run_dir('t1') / 'plan.json').read_bytes() == plan


def test_continuing_a_task_run_with_the_same_prompt_runs_nothing(host: Host) -> None:
    assert host.cli('task', '--role', 'reviewer', 'Look', '--run-id', 't1')[0] == 0
    host.clear_log()
    rc, out, err = host.cli('task', '--role', 'reviewer', 'Look', '--run-id', 't1')
    assert rc == 0, err
    assert host.launches() == [] and json.loads(out)['status'] == 'done'


def test_prompt_from_stdin(host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr('sys.stdin', io.StringIO('Review the README\nBe brief.\n'))
    rc, out, err = host.cli('task', '--role', 'reviewer', '-')
    assert rc == 0, err
    assert host.result('task')['title'] == 'Review the README'
    assert 'Be brief.' in host.launches()[0]['prompt']
