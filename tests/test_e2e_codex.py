"""The real Codex CLI (pinned, installed by .ci/run) against the local model stand-in."""
from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from orch.standin.server import Standin
from tests.support.gitrepo import commit_all, git
from tests.support.orchtest import Host, make_host
from tests.support.realcodex import use_real_codex

pytestmark = pytest.mark.e2e

GREET = "def greet(name):\n    return f'Hello, {name}'\n"


def e2e_plan() -> dict:
    return {'version': 1, 'title': 'Greeting', 'tasks': [
        {'id': 'T1', 'role': 'implementer', 'title': 'Add greet()',
         'description': f'Create src/greet.py.\n[[standin: write src/greet.py]]\n```python\n{GREET}```\n',
         'paths': ['src/greet.py']},
        {'id': 'T2', 'role': 'tester', 'title': 'Test greet()', 'depends_on': ['T1'],
         'description': 'Add a test.\n[[standin: write tests/test_greet.py]]\n```python\nimport src.greet\n```\n',
         'paths': ['tests/test_greet.py']},
        {'id': 'T3', 'role': 'reviewer', 'title': 'Review', 'depends_on': ['T2'], 'description': 'Review.'},
    ]}


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
         standin: Standin) -> Host:
    h = make_host(tmp_path, monkeypatch, capsys)
    use_real_codex(h.repo)
    commit_all(h.repo, 'use the real codex')
    return h


def test_three_task_plan_with_real_codex(host: Host, standin: Standin) -> None:
    host.write_plan(e2e_plan())
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--spec-file', 'spec.md')
    assert rc == 0, out + err
    assert host.statuses() == {'T1': 'done', 'T2': 'done', 'T3': 'done'}
    for tid in ('T1', 'T2', 'T3'):
        result = host.result(tid)
        schema = json.loads((host.repo / '.orchestrator' / 'schemas' / f'{result["role"]}.json').read_text())
        jsonschema.validate(result['answer'], schema)
    assert host.result('T1')['files_changed'] == ['src/greet.py']
    assert git(host.repo, 'show', f'{host.result("T1")["commit"]}:src/greet.py') + '\n' == GREET
    assert host.branch_log(host.shared_branch())[:2] == ['T2: Test greet()', 'T1: Add greet()']
    # usage recorded equals what the stand-in reported, per task
    reported = sum(r['usage']['input_tokens'] for r in standin.requests if r.get('usage'))
    recorded = sum(host.result(t)['usage']['input_tokens'] for t in ('T1', 'T2', 'T3'))
    assert recorded == reported
    # a second run launches no worker
    before = len(standin.requests)
    rc, out, err = host.cli('resume')
    assert rc == 0, err
    assert len(standin.requests) == before


def test_an_identical_rerun_stops_there_and_every_token_is_counted(host: Host, standin: Standin) -> None:
    """Early cut-off, counted at the model: T1 runs again after an edit, writes the same file and answers the
    same, so T2 and T3 make no request; usage_total is what the stand-in reported, over both executions."""
    host.write_plan(e2e_plan())
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--spec-file', 'spec.md')
    assert rc == 0, out + err
    first = {t: host.result(t) for t in ('T1', 'T2', 'T3')}
    before = len(standin.requests)
    plan = e2e_plan()
    plan['tasks'][0]['description'] = 'Please ' + plan['tasks'][0]['description']
    host.write_plan(plan)
    rc, out, err = host.cli('resume', '--dry-run')
    assert rc == 1 and len(standin.requests) == before            # the dry run asked the model nothing
    rc, out, err = host.cli('resume')
    assert rc == 0, out + err
    again = standin.requests[before:]
    t1 = host.result('T1')
    assert again and {r.get('thread') for r in again} == {t1['thread_id']}   # only T1's worker asked
    assert t1['exec_id'] != first['T1']['exec_id'] and t1['commit'] == first['T1']['commit']
    for tid in ('T2', 'T3'):
        assert host.result(tid)['exec_id'] == first[tid]['exec_id']          # not run again
    summary = json.loads((host.run_dir() / 'summary.json').read_text())
    reported = {key: sum(r['usage'][key] for r in standin.requests if r.get('usage'))
                for key in ('input_tokens', 'output_tokens')}
    assert {k: summary['usage_total'][k] for k in reported} == reported
    assert summary['usage']['input_tokens'] < summary['usage_total']['input_tokens']   # T1's first execution
