"""The spine, end to end: a plan run by a fake codex, re-runs that redo exactly what an edit affects."""
from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from tests.support.gitrepo import git
from tests.support.orchtest import THREE_TASK_SCRIPT, Host, crashed_run, make_host, three_task_plan


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Host:
    h = make_host(tmp_path, monkeypatch, capsys, THREE_TASK_SCRIPT)
    h.write_plan(three_task_plan())
    return h


def run_plan(host: Host, *extra: str) -> tuple[int, str, str]:
    return host.cli('run', '--plan-file', 'plan.json', '--spec-file', 'spec.md', *extra)


def test_three_task_plan_runs_to_done(host: Host) -> None:
    main_head = git(host.repo, 'rev-parse', 'HEAD')
    main_status = git(host.repo, 'status', '--porcelain')
    rc, out, err = run_plan(host)
    assert rc == 0, out + err
    assert host.statuses() == {'T1': 'done', 'T2': 'done', 'T3': 'done'}
    run_dir = host.run_dir()
    for tid in ('T1', 'T2', 'T3'):
        result = host.result(tid)
        role = result['role']
        schema = json.loads((host.repo / '.orchestrator' / 'schemas' / f'{role}.json').read_text())
        jsonschema.validate(result['answer'], schema)
        attempts = sorted((run_dir / 'tasks' / tid).glob('attempt-*'))
        assert len(attempts) == 1 and (attempts[0] / 'events.jsonl').stat().st_size > 0
    # one commit per task that changed files; the reviewer changed nothing
    log = host.branch_log(host.shared_branch())
    assert log[:2] == ['T2: Test greet()', 'T1: Add greet()']
    assert host.result('T3')['commit'] is None
    body = git(host.repo, 'log', '-1', '--format=%B', host.result('T1')['commit'])
    assert 'Orch-Task: T1' in body and f'Orch-Run: {run_dir.name}' in body and 'Orch-Role: implementer' in body
    assert git(host.repo, 'show', '--format=', '--name-only', host.result('T1')['commit']) == 'src/greet.py'
    # the user's checkout is untouched
    assert git(host.repo, 'rev-parse', 'HEAD') == main_head
    assert git(host.repo, 'status', '--porcelain') == main_status
    assert not (host.repo / 'src').exists()


def test_rerun_launches_nothing(host: Host) -> None:
    assert run_plan(host)[0] == 0
    host.clear_log()
    rc, out, err = host.cli('resume')
    assert rc == 0, err
    assert host.launched_tasks() == []
    assert len(host.branch_log(host.shared_branch())) == 2 + 2   # initial, init, T1, T2


def _edit_and_resume(host: Host, edit) -> list[str]:
    assert run_plan(host)[0] == 0
    host.clear_log()
    edit()
    rc, out, err = host.cli('resume')
    assert rc == 0, out + err
    return host.launched_tasks()


def _edit_t2_description(host: Host) -> None:
    plan = three_task_plan()
    plan['tasks'][1]['description'] = 'Test greet() with two names.'
    host.write_plan(plan)


def test_edit_one_description_runs_it_and_dependents(host: Host) -> None:
    def edit() -> None:
        _edit_t2_description(host)
        # T2's worker does something else this time: its result changes, so T3 runs again too
        host.script({**THREE_TASK_SCRIPT, 'tasks': {**THREE_TASK_SCRIPT['tasks'], 'T2': {
            'edits': {'tests/test_greet.py': 'from src.greet import greet\n\n\ndef test_two(): pass\n'}}}})
    assert _edit_and_resume(host, edit) == ['T2', 'T3']


def test_a_rerun_with_the_same_answer_and_tree_stops_there(host: Host) -> None:
    """Early cut-off: T2 runs again, answers the same and changes nothing, so T3 is given nothing new."""
    assert run_plan(host)[0] == 0
    before = host.result('T2')
    result_file = host.run_dir() / 'tasks' / 'T2' / 'result.json'
    text, mtime = result_file.read_bytes(), result_file.stat().st_mtime_ns
    host.clear_log()
    _edit_t2_description(host)
    rc, out, err = host.cli('resume')
    assert rc == 0, out + err
    assert host.launched_tasks() == ['T2']
    after = host.result('T2')
    assert after['commit'] == before['commit'] and after['exec_id'] != before['exec_id']
    assert (result_file.read_bytes(), result_file.stat().st_mtime_ns) == (text, mtime)   # not even rewritten
    assert host.statuses() == {'T1': 'done', 'T2': 'done', 'T3': 'done'}
    host.clear_log()
    assert host.cli('resume')[0] == 0 and host.launched_tasks() == []


def test_edit_spec_runs_everything(host: Host) -> None:
    assert _edit_and_resume(host, lambda: (host.repo / 'spec.md').write_text('# Spec v2\n')) == ['T1', 'T2', 'T3']


def test_edit_tester_template_runs_tester_and_dependents_whose_input_changed(host: Host) -> None:
    template = host.repo / '.orchestrator' / 'prompts' / 'tester.md'
    assert _edit_and_resume(host, lambda: template.write_text(template.read_text() + '\nBe thorough.\n')) \
        == ['T2']   # T2 answered the same and changed nothing: T3 is given nothing new
    host.clear_log()
    host.script({**THREE_TASK_SCRIPT, 'tasks': {**THREE_TASK_SCRIPT['tasks'], 'T2': {
        'edits': {'tests/test_greet.py': 'from src.greet import greet  # thoroughly\n'}}}})
    template.write_text(template.read_text() + '\nReally.\n')
    assert host.cli('resume')[0] == 0
    assert host.launched_tasks() == ['T2', 'T3']   # new work: its dependent runs


def test_edit_role_schema_runs_that_role_and_dependents(host: Host) -> None:
    schema_path = host.repo / '.orchestrator' / 'schemas' / 'reviewer.json'

    def edit() -> None:
        schema = json.loads(schema_path.read_text())
        schema['properties']['summary']['description'] = 'Two sentences at most.'
        schema_path.write_text(json.dumps(schema, indent=2))
    assert _edit_and_resume(host, edit) == ['T3']


def test_touching_files_without_changing_them_runs_nothing(host: Host) -> None:
    def touch() -> None:
        for p in [host.repo / 'spec.md', *(host.repo / '.orchestrator').rglob('*.md')]:
            p.write_bytes(p.read_bytes())
    assert _edit_and_resume(host, touch) == []


def test_invalid_worker_fails_task_and_continue_finishes_independent(host: Host) -> None:
    plan = three_task_plan()
    plan['tasks'].append({'id': 'T4', 'role': 'implementer', 'title': 'Independent', 'description': 'x',
                          'paths': ['other.txt']})
    host.write_plan(plan)
    host.script({'default': {'answer': 'auto'}, 'tasks': {
        'T1': {'answer': {'status': 'done', 'summary': 'missing fields'}},
        'T4': {'edits': {'other.txt': 'x\n'}}}})
    rc, out, err = run_plan(host, '--continue')
    assert rc == 1
    rows = {t['id']: t for t in host.status()['tasks']}
    assert rows['T1']['status'] == 'failed'
    assert rows['T1']['attempts'] == 2           # the answer, then one schema retry
    assert "'files_changed' is a required property" in rows['T1']['reason']
    assert rows['T4']['status'] == 'done'
    assert rows['T2']['status'] == 'pending' and rows['T3']['status'] == 'pending'
    assert 'T1 failed' in out or 'T1 failed:' in out
    # fix the worker; resume runs only the failed task and its dependents
    host.script(THREE_TASK_SCRIPT)
    host.clear_log()
    rc, out, err = host.cli('resume')
    assert rc == 0, out + err
    assert host.launched_tasks() == ['T1', 'T2', 'T3']


def test_without_continue_stops_at_first_failure(host: Host) -> None:
    host.script({'default': {'answer': 'auto'}, 'tasks': {'T1': {'fail': 'model exploded'}}})
    rc, out, err = run_plan(host)
    assert rc == 1
    rows = {t['id']: t for t in host.status()['tasks']}
    assert rows['T1']['status'] == 'failed' and 'model exploded' in rows['T1']['reason']
    assert host.launched_tasks().count('T2') == 0


@pytest.mark.parametrize('plan, fragment', [
    ('{"tasks": [', 'not valid JSON'),
    ('{"tasks": [{"id": "T1", "role": "implementer", "title": "t", "description": "d", "depends_on": ["T9"]}]}',
     "tasks[0].depends_on[0]: unknown task 'T9'"),
    ('{"tasks": [{"id": "A", "role": "implementer", "title": "t", "description": "d", "depends_on": ["B"]},'
     '{"id": "B", "role": "implementer", "title": "t", "description": "d", "depends_on": ["A"]}]}',
     'dependency cycle A -> B -> A'),
    ('{"tasks": [{"id": "T1", "role": "wizard", "title": "t", "description": "d"}]}', "unknown role 'wizard'"),
])
def test_bad_plan_exits_2_and_creates_nothing(host: Host, plan: str, fragment: str) -> None:
    (host.repo / 'plan.json').write_text(plan)
    rc, out, err = run_plan(host)
    assert rc == 2
    assert 'plan.json' in err and fragment in err
    assert not (host.repo / '.orchestrator' / 'runs').exists()
    assert host.launches() == []


def test_bad_config_exits_2(host: Host) -> None:
    (host.repo / '.orchestrator' / 'orchestrator.yaml').write_text('jobs: many\nunknown_key: 1\n')
    rc, out, err = run_plan(host)
    assert rc == 2
    assert 'orchestrator.yaml' in err and 'jobs' in err and 'unknown_key: unknown key' in err
    assert not (host.repo / '.orchestrator' / 'runs').exists()


@pytest.mark.parametrize('content, fragment', [(b'\xff\xfe bad', 'not UTF-8'), (b'a\x00b', 'binary')])
def test_bad_spec_exits_2(host: Host, content: bytes, fragment: str) -> None:
    (host.repo / 'spec.md').write_bytes(content)
    rc, out, err = run_plan(host)
    assert rc == 2 and 'spec' in err and fragment in err
    assert not (host.repo / '.orchestrator' / 'runs').exists()


def test_missing_spec_exits_2(host: Host) -> None:
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--spec-file', 'nope.md')
    assert rc == 2 and 'nope.md' in err and 'not found' in err


def test_an_identical_answer_on_changed_code_is_a_new_result(host: Host) -> None:
    """A reviewer between two tasks answers the same about new code: the task after it still runs (its
    result records what it was made from), so nothing after changed code is skipped."""
    plan = {'version': 1, 'title': 'Review in the middle', 'tasks': [
        {'id': 'T1', 'role': 'implementer', 'title': 'Add greet()', 'description': 'Create src/greet.py.',
         'paths': ['src/greet.py']},
        {'id': 'T2', 'role': 'reviewer', 'title': 'Review', 'description': 'Review it.', 'depends_on': ['T1']},
        {'id': 'T3', 'role': 'tester', 'title': 'Test', 'description': 'Test it.', 'depends_on': ['T2'],
         'paths': ['tests/test_greet.py']}]}
    host.write_plan(plan)
    assert run_plan(host)[0] == 0
    host.clear_log()
    plan['tasks'][0]['description'] = 'Create src/greet.py, shouting.'
    host.write_plan(plan)
    host.script({**THREE_TASK_SCRIPT, 'tasks': {**THREE_TASK_SCRIPT['tasks'], 'T1': {
        'edits': {'src/greet.py': "def greet(name):\n    return f'HELLO, {name}'\n"}}}})
    assert host.cli('resume')[0] == 0
    assert host.launched_tasks() == ['T1', 'T2', 'T3']


def test_a_killed_rerun_whose_edit_is_undone_is_done_again_without_a_model_call(host: Host) -> None:
    for run_id, point in (('r1', 'after-answer:T2'), ('r2', 'after-execution:T2')):
        host.write_plan(three_task_plan())
        assert host.cli('run', '--plan-file', 'plan.json', '--spec-file', 'spec.md', '--run-id', run_id)[0] == 0
        _edit_t2_description(host)
        crashed_run(host, run_id, point)
        host.write_plan(three_task_plan())   # the edit undone: T2's inputs are those of its result again
        host.clear_log()
        rc, out, err = host.cli('resume', '--run-id', run_id)
        assert rc == 0, out + err
        assert host.launched_tasks() == [], point
        assert host.statuses(run_id) == {'T1': 'done', 'T2': 'done', 'T3': 'done'}
