"""Issue 13: `resume --dry-run` / `run --dry-run` say what would run, why and what it cost last time, and spend
and write nothing."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.gitrepo import git, make_repo
from tests.support.orchtest import THREE_TASK_SCRIPT, Host, files_snapshot, host_after_a_run, three_task_plan


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Host:
    return host_after_a_run(tmp_path, monkeypatch, capsys)


def lines_of(out: str) -> dict[str, str]:
    """The table's rows by task id."""
    return {line.split()[0]: line for line in out.splitlines() if line.split()[0] in ('T1', 'T2', 'T3', 'T4')}


def test_an_edit_lists_exactly_what_would_run_and_spends_nothing(host: Host) -> None:
    plan = three_task_plan()
    plan['tasks'][1]['description'] = 'Test greet() with two names.'
    host.write_plan(plan)
    before = files_snapshot(host.repo / '.orchestrator')
    rc, out, err = host.cli('resume', '--dry-run')
    assert rc == 1, out + err
    rows = lines_of(out)
    assert sorted(rows) == ['T2', 'T3']
    assert 'description changed (+1 line, -1 line)' in rows['T2']
    assert 'upstream T2 will run again' in rows['T3']
    usage = host.result('T2')['usage']
    assert f'{usage["input_tokens"]:,} in / {usage["output_tokens"]:,} out' in rows['T2']   # its cost last time
    assert '2 of 3 task(s) would run' in out and 'To do it: codex-orch resume --run-id r1' in out
    assert 'T3: only if a task they depend on ends with a different answer' in out
    assert host.launched_tasks() == []                                   # no worker, no model request
    assert files_snapshot(host.repo / '.orchestrator') == before               # nothing written, not even a lock
    # what it said is what resume does (the worker answers differently this time, so T3 runs too)
    host.script({**THREE_TASK_SCRIPT, 'tasks': {**THREE_TASK_SCRIPT['tasks'], 'T2': {
        'edits': {'tests/test_greet.py': 'from src.greet import greet  # two names\n'}}}})
    assert host.cli('resume')[0] == 0
    assert host.launched_tasks() == ['T2', 'T3']
    rc, out, _ = host.cli('resume', '--dry-run')
    assert rc == 0 and 'nothing would run' in out


def test_nothing_to_do_exits_0(host: Host) -> None:
    rc, out, err = host.cli('resume', '--dry-run', '--run-id', 'r1')
    assert (rc, err) == (0, '') and 'nothing would run: all 3 task(s) are done and up to date' in out


def test_spec_and_failed_tasks_are_named(host: Host) -> None:
    (host.repo / 'spec2.md').write_text('# Spec v2\nGreet warmly.\n')
    git(host.repo, 'add', 'spec2.md')
    git(host.repo, 'commit', '-qm', 'spec v2')
    rc, out, err = host.cli('resume', '--dry-run', '--spec-file', 'spec2.md')
    assert rc == 1, out + err
    assert sorted(lines_of(out)) == ['T1', 'T2', 'T3'] and 'spec2.md' in lines_of(out)['T1']
    assert 'To do it: codex-orch resume --run-id r1 --spec-file spec2.md' in out
    assert json.loads((host.run_dir('r1') / 'run.json').read_text())['spec_file'] == 'spec.md'   # not recorded


def test_a_new_run_lists_every_task_and_creates_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    repo = make_repo(tmp_path / 'fresh')
    (repo / 'plan.json').write_text(json.dumps(three_task_plan()))
    monkeypatch.chdir(repo)
    from orch.main import main
    rc = main(['run', '--dry-run', '--plan-file', 'plan.json'])
    out = capsys.readouterr().out
    assert rc == 1
    assert sorted(lines_of(out)) == ['T1', 'T2', 'T3'] and 'it never ran' in lines_of(out)['T1']
    assert '.orchestrator/ would be created' in out
    assert not (repo / '.orchestrator').exists() and not (repo / 'dodo.py').exists()


def test_a_bad_plan_is_bad_input_in_a_dry_run_too(host: Host) -> None:
    (host.repo / 'bad.json').write_text('{"version": 1, "tasks": [{"id": "T1"}]}')
    rc, out, err = host.cli('run', '--dry-run', '--plan-file', 'bad.json')
    assert rc == 2 and 'bad.json' in err and 'Traceback' not in err
