"""`codex-orch plan --spec-file S`: the navigator's plan, checked, retried with its problems, written."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.orchtest import Host, make_host


def navigator_answer(tasks: list[dict[str, Any]]) -> dict[str, Any]:
    return {'status': 'done', 'summary': 'planned', 'files_changed': [], 'decisions': [], 'follow_ups': [],
            'plan': {'version': 1, 'title': 'Greeting', 'tasks': tasks}}


def entry(tid: str, role: str, depends_on: list[str], paths: list[str]) -> dict[str, Any]:
    return {'id': tid, 'role': role, 'title': f'{tid} title', 'description': f'Do {tid}.',
            'depends_on': depends_on, 'paths': paths, 'acceptance': []}


CYCLIC = navigator_answer([entry('A', 'implementer', ['B'], ['a.txt']), entry('B', 'tester', ['A'], ['b.txt'])])
VALID = navigator_answer([entry('A', 'implementer', [], ['a.txt']), entry('B', 'tester', ['A'], ['b.txt'])])
WORK = {'A': {'edits': {'a.txt': 'a\n'}}, 'B': {'edits': {'b.txt': 'b\n'}}}


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Host:
    script = {'default': {'answer': 'auto'}, 'tasks': {'task': [{'answer': CYCLIC}, {'answer': VALID}], **WORK}}
    return make_host(tmp_path, monkeypatch, capsys, script)


def test_cyclic_plan_is_sent_back_then_the_valid_one_is_written_and_runs(host: Host) -> None:
    rc, out, err = host.cli('plan', '--spec-file', 'spec.md')
    assert rc == 0, err
    written = host.repo / 'specs' / 'spec_implementation_plan.json'
    assert out.strip() == 'specs/spec_implementation_plan.json'
    assert json.loads(written.read_text()) == VALID['plan']
    assert 'dependency cycle A -> B -> A' in err and 'rejected' in err
    prompts = [launch['prompt'] for launch in host.launches()]
    assert len(prompts) == 2
    assert 'rejected' not in prompts[0]
    assert 'Your previous plan was rejected' in prompts[1] and 'dependency cycle A -> B -> A' in prompts[1]
    assert '# Spec' in prompts[0]   # the navigator sees the spec
    host.clear_log()
    rc, out, err = host.cli('run', '--plan-file', out.strip())
    assert rc == 0, out + err
    assert host.launched_tasks() == ['A', 'B']
    assert host.statuses() == {'A': 'done', 'B': 'done'}


def test_gives_up_after_tries_and_writes_nothing(host: Host) -> None:
    host.script({'tasks': {'task': {'answer': CYCLIC}}})
    rc, out, err = host.cli('plan', '--spec-file', 'spec.md', '--tries', '2', '-o', 'out.json')
    assert rc == 1
    assert not (host.repo / 'out.json').exists()
    assert 'no valid plan after 2 tries' in err
    assert len(host.launches()) == 2
    rejected = sorted(p.name for p in host.run_dir().glob('rejected-plan-*.json'))
    assert rejected == ['rejected-plan-1.json', 'rejected-plan-2.json']


def test_schema_problems_are_reported_with_their_place(host: Host) -> None:
    bad = navigator_answer([entry('A', 'implementer', ['Z'], ['/etc/passwd'])])
    host.script({'tasks': {'task': [{'answer': bad}, {'answer': VALID}]}})
    rc, out, err = host.cli('plan', '--spec-file', 'spec.md', '-o', 'p.json')
    assert rc == 0, err
    assert "tasks[0].depends_on[0]: unknown task 'Z'" in err
    assert "tasks[0].paths[0]: '/etc/passwd' must be relative" in err


def test_refuses_to_overwrite_without_force(host: Host) -> None:
    (host.repo / 'p.json').write_text('{"mine": true}\n')
    rc, out, err = host.cli('plan', '--spec-file', 'spec.md', '-o', 'p.json')
    assert rc == 2
    assert 'p.json: already exists' in err and '--force' in err
    assert host.launches() == []
    assert json.loads((host.repo / 'p.json').read_text()) == {'mine': True}
    host.script({'tasks': {'task': {'answer': VALID}}})
    rc, out, err = host.cli('plan', '--spec-file', 'spec.md', '-o', 'p.json', '--force')
    assert rc == 0, err
    assert json.loads((host.repo / 'p.json').read_text()) == VALID['plan']


def test_blocked_navigator_writes_nothing(host: Host) -> None:
    host.script({'tasks': {'task': {'answer': {**VALID, 'status': 'blocked', 'summary': 'spec is unclear'}}}})
    rc, out, err = host.cli('plan', '--spec-file', 'spec.md')
    assert rc == 1
    assert 'spec is unclear' in err and 'no plan was written' in err
    assert not (host.repo / 'specs').exists()


@pytest.mark.parametrize('args, fragment', [
    (['--spec-file', 'nope.md'], '--spec-file nope.md: file not found'),
    (['--spec-file', 'spec.md', '--tries', '0'], '--tries 0'),
])
def test_bad_input_exits_2(host: Host, args: list[str], fragment: str) -> None:
    rc, out, err = host.cli('plan', *args)
    assert rc == 2 and fragment in err
    assert host.launches() == []
