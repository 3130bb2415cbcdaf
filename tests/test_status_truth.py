"""Issue 13 (first part): status is truthful after an edit, gives the same answer from any directory, and
read-only commands write nothing."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.orchtest import Host, edit_config, files_snapshot, host_after_a_run, three_task_plan


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Host:
    return host_after_a_run(tmp_path, monkeypatch, capsys)


def test_an_edited_plan_entry_is_stale_at_once_and_its_dependents_too(host: Host) -> None:
    plan = three_task_plan()
    plan['tasks'][0]['description'] = 'Create src/greet.py, and make it polite.'
    host.write_plan(plan)
    before = files_snapshot(host.repo / '.orchestrator')
    rows = {t['id']: t for t in host.status()['tasks']}
    assert (rows['T1']['status'], rows['T1']['reason']) == ('stale', 'description changed (+1 line, -1 line)')
    assert (rows['T2']['status'], rows['T2']['reason']) == ('stale', 'upstream T1 will run again')
    assert rows['T3']['status'] == 'stale'
    assert files_snapshot(host.repo / '.orchestrator') == before   # status wrote nothing
    rc, out, err = host.cli('merge', '--run-id', 'r1', '--allow-automerge')
    assert rc != 0 and 'T1 stale (description changed (+1 line, -1 line))' in err   # not shipped, and why


def test_status_is_the_same_from_a_subdirectory(host: Host) -> None:
    (host.repo / 'src').mkdir(exist_ok=True)
    top = subprocess.run([sys.executable, '-m', 'orch', 'status', '--json'], cwd=host.repo, capture_output=True,
                         text=True, check=True).stdout
    below = subprocess.run([sys.executable, '-m', 'orch', 'status', '--json'], cwd=host.repo / 'src',
                           capture_output=True, text=True, check=True).stdout
    assert top == below and '"stale"' not in below


def test_doit_list_and_info_write_nothing(host: Host) -> None:
    plan = three_task_plan()
    plan['tasks'][1]['description'] = 'Test it twice.'
    host.write_plan(plan)
    before = files_snapshot(host.repo / '.orchestrator')
    for args in (['list', '--all'], ['info', 'work:T2']):
        done = subprocess.run([sys.executable, '-m', 'doit', *args], cwd=host.repo, capture_output=True, text=True,
                              env=os.environ.copy(), timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
    assert files_snapshot(host.repo / '.orchestrator') == before


def test_every_reason_has_its_delta(host: Host) -> None:
    plan = three_task_plan()
    plan['tasks'][0]['description'] += '\nAlso handle empty names.'
    plan['tasks'][0]['acceptance'] = ["greet('') == 'Hello, '"]
    host.write_plan(plan)
    (host.repo / 'spec.md').write_text('# Spec\nGreet people warmly.\n')
    (host.repo / '.orchestrator' / 'prompts' / 'tester.md').write_text(
        (host.repo / '.orchestrator' / 'prompts' / 'tester.md').read_text() + '\nBe thorough.\n')
    schema = host.repo / '.orchestrator' / 'schemas' / 'reviewer.json'
    schema.write_text(schema.read_text().replace('"type": "object"', '"type": "object", "title": "Review"', 1))
    rows = {t['id']: t for t in host.status()['tasks']}
    assert rows['T1']['reason'].startswith('acceptance changed; description changed (+1 line)')
    assert 'spec.md changed' in rows['T1']['reason']
    assert '.orchestrator/prompts/tester.md changed' in rows['T2']['reason']
    assert '.orchestrator/schemas/reviewer.json changed' in rows['T3']['reason']


def test_status_json_carries_stable_reason_codes(host: Host) -> None:
    plan = three_task_plan()
    plan['tasks'][0]['description'] += '\nAlso handle empty names.'
    plan['tasks'].append({'id': 'T4', 'role': 'implementer', 'title': 'New', 'description': 'A new task.'})
    host.write_plan(plan)
    (host.repo / 'spec.md').write_text('# Spec\nGreet people warmly.\n')
    rows = {t['id']: t for t in host.status()['tasks']}
    assert [r['code'] for r in rows['T1']['reasons']] == ['plan_field_changed', 'input_changed']
    assert rows['T1']['reasons'][0]['detail'] == 'description changed (+1 line)'
    assert 'upstream_will_run' in [r['code'] for r in rows['T2']['reasons']]
    assert rows['T4']['reasons'] == [{'code': 'never_ran', 'detail': 'it never ran'}]
    assert rows['T3']['status'] == 'stale'


def test_a_task_removed_from_the_plan_is_shown_and_its_work_not_shipped(host: Host) -> None:
    plan = three_task_plan()
    plan['tasks'][2]['depends_on'] = ['T1']
    del plan['tasks'][1]                       # T2 (its commit is on the run's branch) is gone from the plan
    host.write_plan(plan)
    doc = host.status()
    assert [t['id'] for t in doc['tasks']] == ['T1', 'T3']
    assert [(t['id'], t['status']) for t in doc['removed']] == [('T2', 'removed')]
    assert "its commit" in doc['removed'][0]['reason']
    rc, out, err = host.cli('status')
    assert 'T2' in out and 'removed from the plan' in out
    assert host.cli('resume')[0] == 0
    rc, out, err = host.cli('merge', '--run-id', 'r1', '--allow-automerge')
    assert rc == 1 and 'T2' in err and 'the plan no longer has' in err


def test_a_config_value_is_named_with_before_and_now(host: Host) -> None:
    edit_config(host.repo, {'  model: null              # null': '  model: gpt-5             # null'})
    rows = {t['id']: t for t in host.status()['tasks']}
    for tid in ('T1', 'T2', 'T3'):
        assert {'code': 'params_changed', 'detail': 'model: null → gpt-5'} in rows[tid]['reasons'], rows[tid]
    rc, out, err = host.cli('resume', '--dry-run')
    assert rc == 1 and 'model: null → gpt-5' in out
