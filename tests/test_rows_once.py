"""A run reads each task's status row once: the report's rows are the summary's, unless anything they are read from
changed in between (then they are read again, and the summary says what is true at the end)."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from orch.engine.inputs import open_run
from orch.runstate import fastpath, state, status
from orch.runstate.known_rows import KnownRows
from orch.runstate.lock import RunLock
from tests.support.orchtest import Host, host_after_a_run, three_task_plan


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Host:
    return host_after_a_run(tmp_path, monkeypatch, capsys)


def count_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    reads: list[int] = []
    real = status.task_rows

    def counted(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        reads.append(1)
        return real(*args, **kwargs)
    # wherever it was imported by name (the run has imported every module it uses)
    for module in [m for name, m in sys.modules.items() if name == 'orch' or name.startswith('orch.')]:
        if getattr(module, 'task_rows', None) is real:
            monkeypatch.setattr(module, 'task_rows', counted)
    return reads


def edit_first_task(host: Host) -> None:
    plan = three_task_plan()
    plan['tasks'][0]['description'] += ' Politely.'
    host.write_plan(plan)


def test_a_resume_after_an_edit_reads_the_rows_once(host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    edit_first_task(host)
    reads = count_reads(monkeypatch)
    monkeypatch.setenv('GITHUB_ACTIONS', 'true')   # its annotations come from the same rows
    rc, out, err = host.cli('resume', '--run-id', 'r1')
    assert rc == 0, out + err
    assert host.launched_tasks() == ['T1']
    assert 'run r1: 3 done' in out
    assert len(reads) == 1   # was 3: the report, the summary, the annotations
    summary = json.loads((host.run_dir('r1') / 'summary.json').read_text())
    assert summary['counts'] == {'done': 3} and summary['tasks'][0]['attempts'] == 2


def test_a_resume_redacts_the_rows_once_and_its_reports_and_manifest_hold_no_secret(
        host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    """The report step and the manifest's answers take the same redacted rows (KnownRows.redacted): the rows are
    redacted once a command, and a secret in a row (a task's title) is in neither the reports nor the manifest."""
    from orch.core import redact
    from orch.runstate import known_rows
    secret = 'hunter2-hunter2-hunter2'
    monkeypatch.setenv('ORCH_TEST_API_KEY', secret)
    plan = three_task_plan()
    plan['tasks'][2]['title'] = f'Review with {secret}'
    host.write_plan(plan)
    lists: list[int] = []
    real = known_rows.redact_shared

    def counted(obj: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(obj, list) and obj and isinstance(obj[0], dict) and 'status' in obj[0]:
            lists.append(id(obj))
        return real(obj, *args, **kwargs)
    monkeypatch.setattr(known_rows, 'redact_shared', counted)
    rc, out, err = host.cli('resume', '--run-id', 'r1')
    assert rc == 0, out + err
    assert len(lists) == 1, lists
    run_dir = host.run_dir('r1')
    assert (run_dir / 'noop-manifest.json').exists()
    for path in run_dir.iterdir():
        if path.is_file() and path.suffix in ('.json', '.md', '.xml', '.sarif'):
            assert secret not in path.read_text(errors='replace'), path.name
    assert redact.MARK in json.loads((run_dir / 'summary.json').read_text())['tasks'][2]['title']


def change_after_the_report(monkeypatch: pytest.MonkeyPatch, task: str) -> None:
    """Once the report step has read the rows and written the reports, `task`'s state says it failed."""
    from orch.steps import report as report_step
    real = report_step.write_reports

    def then_changed(rt: Any, rows: Any = None, **kwargs: Any) -> Any:
        written = real(rt, rows, **kwargs)
        state.update_state(rt.task_dir(task), status='failed', reason='changed after the report')
        return written
    monkeypatch.setattr(report_step, 'write_reports', then_changed)


def test_a_change_after_the_report_is_in_the_summary(host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    """Something that changes the state of a task the resume ran after the report read the rows: the run's last word
    is the truth."""
    change_after_the_report(monkeypatch, 'T1')
    edit_first_task(host)
    rc, out, err = host.cli('resume', '--run-id', 'r1')
    assert 'T1 failed: changed after the report' in out
    assert rc == 1, out + err


def test_a_change_after_the_report_in_a_task_the_resume_did_not_run_is_seen_by_the_next_command(
        host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    """T1 edited, answering as before: T2 and T3 below it are left as the old manifest found them
    (orch.engine.edit_waves), like the tasks outside the scope of any edit. A change in T3 after the report is not
    in this resume's rows, and no manifest vouches for it: the next status, fast or full, says T3 failed."""
    edit_first_task(host)
    with monkeypatch.context() as m:
        change_after_the_report(m, 'T3')
        rc, out, err = host.cli('resume', '--run-id', 'r1')
    assert rc == 0, out + err
    answers = []
    for full in ('', '1'):
        with monkeypatch.context() as m:
            m.setenv(fastpath.FULL_CHECK_ENV, full)
            answers.append(host.cli('status', '--run-id', 'r1', '--json'))
    assert answers[0] == answers[1]
    statuses = {t['id']: t['status'] for t in json.loads(answers[0][1])['tasks']}
    assert statuses['T3'] == 'failed', statuses


def rows_of(known: KnownRows, host: Host) -> tuple[list[dict[str, Any]], Any]:
    rt = open_run(host.repo, 'r1')
    return known.read(rt), rt


def test_rows_are_read_again_when_what_they_are_read_from_changed(host: Host) -> None:
    known = KnownRows()
    rt = open_run(host.repo, 'r1')
    first = known.read(rt)
    assert known.read(rt) is first   # nothing changed: the same rows
    assert known.read(open_run(host.repo, 'r1')) is not first   # other inputs: read for them
    first = known.read(rt)
    task_dir = rt.task_dir('T2')
    changes = [
        lambda: state.update_state(task_dir, reason='edited'),                      # state.json
        lambda: shutil.copytree(task_dir / 'attempt-1', task_dir / 'attempt-2'),    # a new attempt
        lambda: (task_dir / 'attempt-2' / 'launch.json').write_text('{"kind": "resume"}'),   # an attempt's launch
        lambda: shutil.rmtree(task_dir / 'attempt-2'),                              # an attempt gone
        lambda: (task_dir / 'execution.json').write_text((task_dir / 'execution.json').read_text()),
        lambda: (task_dir / 'result.json').unlink(),                                # its result gone
    ]
    for change in changes:
        change()
        again = known.read(rt)
        assert again is not first
        assert again == status.task_rows(rt)
        first = again
    assert [r['status'] for r in first] == ['done', 'pending', 'stale']


def test_rows_showing_a_task_running_are_not_kept(host: Host) -> None:
    known = KnownRows()
    rt = open_run(host.repo, 'r1')
    state.update_state(rt.task_dir('T2'), status='running')
    lock = RunLock(rt.run_dir)
    lock.acquire()   # as in a run: T2 is running
    try:
        rows = known.read(rt)
        assert rows[1]['status'] == 'running'
    finally:
        lock.release()   # the run ended without T2 ending: nobody runs it any more
    assert known.read(rt)[1]['status'] == 'pending'
