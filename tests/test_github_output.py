"""Issue 21: GitHub-native output. Under GITHUB_ACTIONS=true a run ends with workflow annotations for each failed
task (with the failing file and line where its output names one the task changed), failing gate and outstanding
reviewer finding; every run writes findings.sarif, valid SARIF 2.1.0, with the reviewers' findings and failures."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from orch.core.github import annotation_commands, sarif
from tests.support.gitrepo import commit_all
from tests.support.orchtest import make_host

ROOT = Path(__file__).resolve().parent.parent
SARIF_SCHEMA = ROOT / 'tools' / 'sarif-schema' / 'node_modules' / '@microsoft' / 'jest-sarif' / 'lib' / 'schemas' / \
    'sarif-2.1.0-rtm.5.json'
CHECK = 'grep -q ok src/x.py || { echo "src/x.py:2: expected ok, 100% sure"; exit 1; }'


def sarif_schema() -> dict[str, Any]:
    assert SARIF_SCHEMA.is_file(), 'the SARIF schema is missing: run bash scripts/setup.sh'
    return json.loads(SARIF_SCHEMA.read_text())


def review(verdict: str, *findings: dict[str, Any]) -> dict[str, Any]:
    return {'answer': {'status': 'done', 'summary': f'review: {verdict}', 'verdict': verdict,
                       'findings': list(findings), 'files_changed': [], 'decisions': [], 'follow_ups': []}}


def test_a_failed_task_and_a_standing_finding_are_annotated_and_in_the_sarif_log(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    finding = {'severity': 'major', 'file': 'src/y.py', 'line': 7, 'message': 'y must\nhandle empty input'}
    forged = {'severity': 'critical', 'file': '../../etc/passwd', 'line': 0, 'message': 'not a place in the tree'}
    host = make_host(tmp_path, monkeypatch, capsys, {'tasks': {
        'T1': [{'edits': {'src/x.py': 'bad\n'}}] * 3,
        'T2': [{'edits': {'src/y.py': 'v1\n'}}] * 3,
        'T3': [review('request_changes', finding, forged)]}})
    host.write_plan({'version': 1, 'title': 'GitHub', 'tasks': [
        {'id': 'T1', 'role': 'implementer', 'title': 'Write x', 'description': 'Write x.', 'paths': ['src/x.py'],
         'checks': [CHECK]},
        {'id': 'T2', 'role': 'implementer', 'title': 'Write y', 'description': 'Write y.', 'paths': ['src/y.py']},
        {'id': 'T3', 'role': 'reviewer', 'title': 'Review y', 'description': 'Review.', 'depends_on': ['T2']}]})
    commit_all(host.repo, 'plan')
    monkeypatch.setenv('GITHUB_ACTIONS', 'true')
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--continue')
    assert rc == 1, out + err
    commands = [line for line in out.splitlines() if line.startswith('::')]
    # what the run printed (it may quote a worker) is where the runner takes no command; its annotations follow
    assert commands[0].startswith('::stop-commands::') and len(commands[0]) == len('::stop-commands::') + 32
    assert commands[1] == f'::{commands[0].split("::")[2]}::'
    assert out.index(commands[1]) < out.index('::error ')
    commands = commands[2:]
    t1 = next(c for c in commands if 'T1 failed' in c)
    assert t1.startswith('::error file=src/x.py,line=2,title=codex-orch%3A T1 failed::')
    assert '::error file=src/y.py,line=7,title=codex-orch%3A T3%3A major::y must%0Ahandle empty input' in commands
    forged_line = next(c for c in commands if 'not a place in the tree' in c)
    assert 'file=' not in forged_line.split('::')[1]            # a worker's path out of the tree is no location
    assert next(c for c in commands if 'T3 failed' in c).startswith('::error title=')

    log = json.loads((host.run_dir() / 'findings.sarif').read_text())
    jsonschema.validate(log, sarif_schema())
    results = log['runs'][0]['results']
    review_results = [r for r in results if r['ruleId'] == 'codex-orch/review-finding']
    assert [r['message']['text'] for r in review_results] == ['y must\nhandle empty input', 'not a place in the tree']
    assert review_results[0]['locations'][0]['physicalLocation'] == {'artifactLocation': {'uri': 'src/y.py'},
                                                                     'region': {'startLine': 7}}
    assert review_results[1]['locations'][0]['physicalLocation'] == {'artifactLocation': {'uri': 'plan.json'}}
    assert {r['properties']['task'] for r in results if r['ruleId'] == 'codex-orch/task-failed'} == {'T1', 'T3'}


def test_no_annotations_outside_github_actions_and_an_empty_log_when_all_is_well(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    monkeypatch.delenv('GITHUB_ACTIONS', raising=False)
    host = make_host(tmp_path, monkeypatch, capsys, {'tasks': {'T1': {'edits': {'src/x.py': 'bad\n'}}}})
    host.write_plan({'version': 1, 'title': 'Quiet', 'tasks': [
        {'id': 'T1', 'role': 'implementer', 'title': 'Write x', 'description': 'Write x.', 'paths': ['src/x.py'],
         'checks': ['false']}]})
    commit_all(host.repo, 'plan')
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 1 and '::error' not in out + err, out + err
    ok = {'run': {'run_id': 'r', 'plan_file': 'plan.json'}, 'tasks': [{'id': 'T1', 'status': 'done'}]}
    log = sarif(ok, '0.1.0')
    jsonschema.validate(log, sarif_schema())
    assert log['runs'][0]['results'] == [] and annotation_commands(ok) == []


def test_a_finding_s_text_cannot_break_out_of_its_annotation() -> None:
    summary = {'run': {'run_id': 'r', 'plan_file': 'p.json'}, 'tasks': [{'id': 'T1', 'status': 'done', 'findings': [
        {'severity': 'minor', 'file': 'a,b:c.py', 'line': True, 'message': 'x\r\n::error::forged 50%'}]}]}
    assert annotation_commands(summary) == [
        '::warning file=a%2Cb%3Ac.py,title=codex-orch%3A T1%3A minor::x%0D%0A::error::forged 50%25']
