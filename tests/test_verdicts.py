"""Issue 19: verdicts count, for any role. A role schema's `x-codex-orch-verdict` names the field of its answer that
judges other work and the value that passes; a failing verdict goes back to the judged task like a reviewer's
request_changes (bounded rounds, its own thread, its checks, its fix commit), and one still failing fails its task."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from orch.core.schema_lint import strict_problems
from orch.core.verdict import VERDICT_KEY, fails, verdict_of
from orch.standin.server import Standin
from tests.support.gitrepo import commit_all, git
from tests.support.orchtest import Host, make_host
from tests.support.realcodex import use_real_codex

SCHEMAS = Path(__file__).resolve().parents[1] / '.orchestrator' / 'schemas'
FIX_SUBJECT = 'T1: Write x (review round 1 by T2)'


def answer_of_tester(passed: bool, summary: str = 'ran the tests') -> dict[str, Any]:
    return {'answer': {'status': 'done', 'summary': summary, 'files_changed': [], 'tests_added': [],
                       'test_command': 'python -m pytest -q tests/test_x.py', 'tests_passed': passed,
                       'decisions': [], 'follow_ups': []}}


def make(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any, script: dict[str, Any],
         depends_on: list[str] | None = None) -> Host:
    host = make_host(tmp_path, monkeypatch, capsys, script)
    host.write_plan({'version': 1, 'title': 'Verdicts', 'tasks': [
        {'id': 'T1', 'role': 'implementer', 'title': 'Write x', 'description': 'Write src/x.py.',
         'paths': ['src/*'], 'checks': ['test -s src/x.py']},
        {'id': 'T2', 'role': 'tester', 'title': 'Test x', 'description': 'Test it.', 'paths': ['tests/*'],
         'depends_on': ['T1'] if depends_on is None else depends_on}]})
    commit_all(host.repo, 'plan')
    return host


def fix_commits(host: Host) -> list[str]:
    return [s for s in host.branch_log(host.shared_branch()) if 'review round' in s]


def test_shipped_schemas_declare_their_verdicts() -> None:
    tester_schema = json.loads((SCHEMAS / 'tester.json').read_text())
    reviewer_schema = json.loads((SCHEMAS / 'reviewer.json').read_text())
    assert tester_schema[VERDICT_KEY] == {'field': 'tests_passed', 'pass': True}
    assert reviewer_schema[VERDICT_KEY] == {'field': 'verdict', 'pass': 'approve'}
    assert fails({'tests_passed': False}, tester_schema) and not fails({'tests_passed': True}, tester_schema)
    assert fails({'verdict': 'request_changes'}, reviewer_schema) and not fails({'verdict': 'approve'}, reviewer_schema)
    implementer = json.loads((SCHEMAS / 'implementer.json').read_text())
    assert not fails({'tests_passed': False}, implementer)      # no annotation: only request_changes fails
    assert fails({'verdict': 'request_changes'}, implementer)
    assert verdict_of(tester_schema).fails({'tests_passed': 1})   # the declared value, not a look-alike


@pytest.mark.parametrize('answer', [None, [], 'tests_passed', True, ['tests_passed', True]])
def test_a_declared_verdict_that_is_no_object_fails(answer: Any) -> None:
    tester_schema = json.loads((SCHEMAS / 'tester.json').read_text())
    assert verdict_of(tester_schema).fails(answer) and fails(answer, tester_schema)
    implementer = json.loads((SCHEMAS / 'implementer.json').read_text())
    assert not fails(answer, implementer)   # no verdict declared: nothing to fail


@pytest.mark.parametrize('note, problem', [
    ('yes', 'must be {"field": "<top-level property>", "pass": <the value that passes>}'),
    ({'field': 'ok'}, 'must be {"field": "<top-level property>", "pass": <the value that passes>}'),
    ({'field': 'nope', 'pass': True}, '"field" must name a top-level property of the schema, got "nope"'),
    ({'field': 'ok', 'pass': None}, '"pass" must be a string, a boolean or a number, got null'),
    ({'field': 'ok', 'pass': [1]}, '"pass" must be a string, a boolean or a number, got [1]'),
    ({'field': 'v', 'pass': 'yes'}, '"pass" "yes" is not one of the enum of "v"'),
    ({'field': 'n', 'pass': True}, '"pass" true is not one of the enum of "n"'),   # true == 1 in Python
    ({'field': 'n', 'pass': 1.0}, '"pass" 1.0 is not one of the enum of "n"'),
])
def test_a_bad_annotation_is_a_schema_problem(note: Any, problem: str) -> None:
    schema = {'type': 'object', 'additionalProperties': False, 'required': ['ok', 'v', 'n'],
              'properties': {'ok': {'type': 'boolean'}, 'v': {'type': 'string', 'enum': ['approve', 'no']},
                             'n': {'type': 'integer', 'enum': [0, 1]}}}
    assert strict_problems({**schema, VERDICT_KEY: {'field': 'ok', 'pass': True}}) == []
    assert strict_problems({**schema, VERDICT_KEY: note}) == [f'"{VERDICT_KEY}": {problem}']


def test_a_bad_annotation_stops_the_run_before_any_worker(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    host = make(tmp_path, monkeypatch, capsys, {'tasks': {}})
    path = host.repo / '.orchestrator' / 'schemas' / 'tester.json'
    path.write_text(json.dumps({**json.loads(path.read_text()), VERDICT_KEY: {'field': 'passed', 'pass': True}}))
    commit_all(host.repo, 'bad annotation')
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 2 and 'tester.json' in err and '"field" must name a top-level property' in err, out + err
    assert host.launches() == []


def test_tests_failing_once_go_back_to_the_implementer_then_pass(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    host = make(tmp_path, monkeypatch, capsys, {'tasks': {
        'T1': [{'edits': {'src/x.py': 'v1\n'}}, {'edits': {'src/x.py': 'v2, empty input handled\n'}}],
        'T2': [answer_of_tester(False, 'test_empty fails: x() raises on empty input'), answer_of_tester(True)]}})
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 0, out + err
    launches = host.launches()
    assert [(e['task_id'], e['resume']) for e in launches] == [('T1', False), ('T2', False), ('T1', True),
                                                               ('T2', True)]
    assert launches[2]['thread_id'] == launches[0]['thread_id']   # the implementer's own thread
    assert launches[3]['thread_id'] == launches[1]['thread_id']   # the tester looks again in its own
    fix_prompt = launches[2]['prompt']
    assert 'x() raises on empty input' in fix_prompt and '`tests_passed` false' in fix_prompt
    assert 'python -m pytest -q tests/test_x.py' in fix_prompt
    assert '`tests_passed` true' in launches[3]['prompt']
    assert fix_commits(host) == [FIX_SUBJECT]
    fix = git(host.repo, 'log', '--format=%B', '-1', '--grep=review round 1', host.shared_branch())
    assert 'Orch-Task: T1' in fix and 'Orch-Review: T2 round 1' in fix
    assert git(host.repo, 'show', f'{host.shared_branch()}:src/x.py') == 'v2, empty input handled'
    result = host.result('T2')
    assert result['review_rounds'] == 1 and result['answer']['tests_passed'] is True
    assert host.statuses() == {'T1': 'done', 'T2': 'done'}
    # codex is given the schema without codex-orch's annotation (strict structured output refuses unknown keys)
    for launch in launches:
        argv = launch['argv']
        given = json.loads(Path(argv[argv.index('--output-schema') + 1]).read_text())
        assert VERDICT_KEY not in given and given['type'] == 'object'


def test_tests_always_failing_fail_the_tester_and_block_merge(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    host = make(tmp_path, monkeypatch, capsys, {'tasks': {
        'T1': [{'edits': {'src/x.py': 'v1\n'}}, {'edits': {'src/x.py': 'v2\n'}}, {'edits': {'src/x.py': 'v3\n'}}],
        'T2': [answer_of_tester(False, 'test_empty still fails')]}})
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 1, out + err
    assert len(host.launches()) == 6   # T1, then (test, fix) twice, and the last test
    assert len(git(host.repo, 'log', '--all', '--format=%s', '--grep=review round').splitlines()) == 2
    row = {t['id']: t for t in host.status()['tasks']}['T2']
    assert row['status'] == 'failed'
    assert row['reason'] == 'changes requested: `tests_passed` false, not `tests_passed` true, after 2 review rounds'
    assert 'changes requested' in (host.run_dir() / 'report.md').read_text()
    cases = {c.get('name'): c for c in ET.parse(host.run_dir() / 'junit.xml').getroot().iter('testcase')}
    failed = [name for name, case in cases.items() if case.find('failure') is not None]
    assert len(failed) == 1 and 'T2' in failed[0]
    assert json.loads((host.run_dir() / 'summary.json').read_text())['counts'] == {'done': 1, 'failed': 1}
    base = git(host.repo, 'rev-parse', 'HEAD')
    rc, out, err = host.cli('merge', '--run-id', host.run_dir().name, '--allow-automerge')
    assert rc != 0 and 'T2' in out + err
    assert git(host.repo, 'rev-parse', 'HEAD') == base


def test_a_failing_verdict_with_nothing_to_judge_fails_at_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    host = make(tmp_path, monkeypatch, capsys, {'tasks': {'T1': [{'edits': {'src/x.py': 'v1\n'}}],
                                                          'T2': [answer_of_tester(False)]}}, depends_on=[])
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 1, out + err
    assert sorted(e['task_id'] for e in host.launches()) == ['T1', 'T2']   # no round, nobody resumed
    row = {t['id']: t for t in host.status()['tasks']}['T2']
    assert row['status'] == 'failed' and row['reason'].endswith('no task to send them to')


def test_a_schema_without_the_annotation_has_no_verdict(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    host = make(tmp_path, monkeypatch, capsys, {'tasks': {'T1': [{'edits': {'src/x.py': 'v1\n'}}],
                                                          'T2': [answer_of_tester(False)]}})
    path = host.repo / '.orchestrator' / 'schemas' / 'tester.json'
    schema = json.loads(path.read_text())
    del schema[VERDICT_KEY]
    path.write_text(json.dumps(schema))
    commit_all(host.repo, 'tester schema without a verdict')
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 0, out + err
    assert [e['task_id'] for e in host.launches()] == ['T1', 'T2']
    assert host.statuses() == {'T1': 'done', 'T2': 'done'} and fix_commits(host) == []


@pytest.mark.e2e
def test_real_codex_tester_failing_sends_its_summary_to_the_implementer_and_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any, standin: Standin) -> None:
    host = make_host(tmp_path, monkeypatch, capsys)
    use_real_codex(host.repo, '  review_rounds: 1\n')
    failing = json.dumps(answer_of_tester(False, 'test_x fails: x is empty')['answer'])
    host.write_plan({'version': 1, 'title': 'Verdicts', 'tasks': [
        {'id': 'T1', 'role': 'implementer', 'title': 'Write x', 'paths': ['src/x.py'],
         'description': 'Write src/x.py.\n[[standin: write src/x.py]]\n```python\nX = 1\n```\n'},
        {'id': 'T2', 'role': 'tester', 'title': 'Test x', 'depends_on': ['T1'],
         'description': f'Test it.\n[[standin: answer {failing}]]\n'}]})
    commit_all(host.repo, 'plan')
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 1, out + err
    row = {t['id']: t for t in host.status()['tasks']}['T2']
    assert row['status'] == 'failed'
    assert row['reason'] == 'changes requested: `tests_passed` false, not `tests_passed` true, after 1 review round'
    assert host.statuses()['T1'] == 'done'
    t1_thread = host.result('T1')['thread_id']
    fix_prompts = [r['prompt'] for r in standin.requests if r.get('thread') == t1_thread and r.get('prompts', 0) > 1]
    assert any('test_x fails: x is empty' in (p or '') for p in fix_prompts)   # the implementer's own thread, resumed


FAILING_TEST = 'def test_x():\n    assert False\n'


def test_a_fix_that_rewrites_the_testers_test_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    """The tester's test is its evidence, still uncommitted while its verdict rounds go on: the judged task's fix
    may not rewrite it (turning `assert False` into `pass` would forge the tester's next verdict)."""
    host = make(tmp_path, monkeypatch, capsys, {'tasks': {
        'T1': [{'edits': {'src/x.py': 'v1\n'}},
               {'edits': {'src/x.py': 'v2\n', 'tests/test_x.py': 'def test_x():\n    pass\n'}}],
        'T2': [{**answer_of_tester(False, 'test_x fails'), 'edits': {'tests/test_x.py': FAILING_TEST}},
               answer_of_tester(True)]}})
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 1, out + err
    row = {t['id']: t for t in host.status()['tasks']}['T2']
    assert row['status'] == 'failed'
    assert row['reason'] == ('review round 1: the fix by T1 changed files of T2, the task judging it: tests/test_x.py; '
                             'nothing was committed (the judged work may not change the evidence that judges it)')
    assert [(e['task_id'], e['resume']) for e in host.launches()] == [('T1', False), ('T2', False), ('T1', True)]
    assert fix_commits(host) == []
    assert 'def test_x():\n    pass' not in git(host.repo, 'log', '-p', '--all')


def test_a_fix_commits_only_its_own_files_and_the_tester_commits_its_test(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    host = make(tmp_path, monkeypatch, capsys, {'tasks': {
        'T1': [{'edits': {'src/x.py': 'v1\n'}}, {'edits': {'src/x.py': 'v2\n'}}],
        'T2': [{**answer_of_tester(False, 'test_x fails'), 'edits': {'tests/test_x.py': FAILING_TEST}},
               answer_of_tester(True)]}})
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 0, out + err
    assert host.statuses() == {'T1': 'done', 'T2': 'done'}
    branch = host.shared_branch()
    assert fix_commits(host) == [FIX_SUBJECT]
    fix = git(host.repo, 'log', '-1', '--format=%H', '--grep=review round 1', branch)
    assert git(host.repo, 'show', '--format=', '--name-only', fix) == 'src/x.py'
    assert host.result('T2')['review_rounds'] == 1
    tester = host.result('T2')['commit']
    assert git(host.repo, 'show', '--format=%s', '--name-only', tester).splitlines()[-1] == 'tests/test_x.py'
    assert git(host.repo, 'show', f'{branch}:tests/test_x.py') == FAILING_TEST.strip()
