"""A task's attempts (how many, their tokens, their kinds) kept in attempts.json beside them, never wrong:
an attempt is taken from the summary only while its files are exactly as the summary recorded them."""
from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest

from orch.runstate import attempts
from orch.runstate.state import attempt_count, attempt_kinds, attempts_usage
from tests.support.orchtest import (
    THREE_TASK_SCRIPT,
    Host,
    cli_subprocess,
    files_snapshot,
    host_after_a_run,
    three_task_plan,
)
from tests.support.procs import wait_for

pytestmark = pytest.mark.unit

REAL_RACY = attempts.sig_is_racy
USAGE = {'input_tokens': 100, 'cached_input_tokens': 10, 'output_tokens': 20, 'reasoning_output_tokens': 5}


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with nothing kept in memory (as a new command does), and with no file taken as racy:
    a test writes its files a moment before it reads them (one test checks racy files with the real rule)."""
    monkeypatch.setattr(attempts, '_known', {})
    monkeypatch.setattr(attempts, 'sig_is_racy', lambda now, sig: False)


def forget() -> None:
    """What a new command starts with: only the files."""
    attempts._known.clear()


def attempt(task_dir: Path, n: int, *, kind: str | None = 'initial', usage: dict[str, Any] | None = None,
            ended: bool = True) -> Path:
    adir = task_dir / f'attempt-{n}'
    adir.mkdir(parents=True, exist_ok=True)
    if kind is not None:
        (adir / 'launch.json').write_text(json.dumps({'n': n, 'kind': kind}))
    if ended:
        (adir / 'attempt.json').write_text(json.dumps({'n': n, 'usage': usage or USAGE}))
    return adir


def read_from_files(task_dir: Path) -> tuple[int, dict[str, int], dict[str, int]]:
    """What the task's attempt files say, read the way codex-orch always read them (the reference)."""
    total = dict.fromkeys(attempts.USAGE_KEYS, 0)
    kinds: dict[str, int] = {}
    count = sum(1 for p in task_dir.glob('attempt-*') if p.is_dir())
    for record in task_dir.glob('attempt-*/attempt.json'):
        usage = json.loads(record.read_text()).get('usage') or {}
        for key in attempts.USAGE_KEYS:
            total[key] += int(usage.get(key) or 0)
    for launch in task_dir.glob('attempt-*/launch.json'):
        kind = json.loads(launch.read_text()).get('kind') or 'initial'
        kinds[kind] = kinds.get(kind, 0) + 1
    return count, total, dict(sorted(kinds.items()))


def known(task_dir: Path) -> tuple[int, dict[str, int], dict[str, int]]:
    return attempt_count(task_dir), attempts_usage(task_dir), attempt_kinds(task_dir)


def summarized(task_dir: Path) -> tuple[int, dict[str, int], dict[str, int]]:
    """Refreshed by a command that may write, then read afresh by a new command."""
    with attempts.writing():
        known(task_dir)
    forget()
    return known(task_dir)


def no_file_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    reads: list[str] = []
    real = attempts._read

    def counted(task_dir: Path, name: str, sigs: Any) -> Any:
        reads.append(name)
        return real(task_dir, name, sigs)
    monkeypatch.setattr(attempts, '_read', counted)
    return reads


def test_the_summary_says_what_the_files_say_and_spares_reading_them(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    task = tmp_path / 'T1'
    attempt(task, 1)
    attempt(task, 2, kind='schema-retry', usage={**USAGE, 'output_tokens': 7})
    attempt(task, 3, kind='resume', usage={'input_tokens': 1.5, 'output_tokens': True})   # odd values: as before
    (task / 'state.json').write_text('{}')
    assert summarized(task) == read_from_files(task) == (
        3, {'input_tokens': 201, 'cached_input_tokens': 20, 'output_tokens': 28, 'reasoning_output_tokens': 10},
        {'initial': 1, 'resume': 1, 'schema-retry': 1})
    forget()
    reads = no_file_reads(monkeypatch)
    assert known(task) == read_from_files(task)
    assert reads == []   # every attempt from attempts.json


def test_only_a_command_that_may_write_refreshes_it(tmp_path: Path) -> None:
    task = tmp_path / 'T1'
    attempt(task, 1)
    known(task)
    assert not (task / attempts.SUMMARY_FILE).exists()   # status, dry-run ...: read-only, nothing written
    with attempts.writing():
        known(task)
    assert (task / attempts.SUMMARY_FILE).is_file()
    before = (task / attempts.SUMMARY_FILE).stat()
    with attempts.writing():
        forget()
        known(task)
    assert (task / attempts.SUMMARY_FILE).stat().st_ino == before.st_ino   # up to date: not written again
    empty = tmp_path / 'T2'
    empty.mkdir()
    with attempts.writing():
        assert known(empty) == (0, dict.fromkeys(attempts.USAGE_KEYS, 0), {})
    assert list(empty.iterdir()) == []   # a task with no attempt gets no summary


def test_an_attempt_killed_before_it_ended_is_counted_as_launched_and_paid_once_it_ends(tmp_path: Path) -> None:
    task = tmp_path / 'T1'
    attempt(task, 1)
    adir = attempt(task, 2, kind='resume', ended=False)   # killed mid-attempt: launch.json, no attempt.json
    assert summarized(task) == read_from_files(task) == (2, USAGE, {'initial': 1, 'resume': 1})
    # a later run recovers it (its attempt.json, written after the summary was): it is paid from then on
    (adir / 'attempt.json').write_text(json.dumps({'usage': USAGE}))
    forget()
    assert known(task) == read_from_files(task) == (2, {k: 2 * v for k, v in USAGE.items()},
                                                    {'initial': 1, 'resume': 1})
    # a new attempt launched after the summary, before any summary could take it in (a kill in between)
    attempt(task, 3, kind='failure-retry', ended=False)
    forget()
    assert known(task) == read_from_files(task)
    assert known(task)[0] == 3 and known(task)[2]['failure-retry'] == 1


def test_a_hand_deleted_or_edited_attempt_is_seen(tmp_path: Path) -> None:
    task = tmp_path / 'T1'
    for n in (1, 2, 3):
        attempt(task, n)
    assert summarized(task)[0] == 3
    shutil.rmtree(task / 'attempt-2')
    forget()
    assert known(task) == read_from_files(task) == (2, {k: 2 * v for k, v in USAGE.items()}, {'initial': 2})
    # edited in place, same size, its mtime put back: its ctime still tells
    record = task / 'attempt-3' / 'attempt.json'
    st = record.stat()
    text = record.read_text()
    record.write_text(text.replace('"input_tokens": 100', '"input_tokens": 900'))
    os.utime(record, ns=(st.st_atime_ns, st.st_mtime_ns))
    forget()
    assert known(task) == read_from_files(task)
    assert known(task)[1]['input_tokens'] == 1000
    # an attempt directory replaced by another of the same name
    shutil.rmtree(task / 'attempt-1')
    attempt(task, 1, kind='fresh-thread', usage={**USAGE, 'input_tokens': 1})
    forget()
    assert known(task) == read_from_files(task)


@pytest.mark.parametrize('text', ['', '{', '[]', '{"format": 99, "attempts": {}}',
                                  '{"format": 1, "attempts": {"attempt-1": {"attempt": [1, 2, 3, 4], "launch": null,'
                                  ' "usage": {"input_tokens": "many"}, "kind": null}}}',
                                  '{"format": 1, "attempts": {"attempt-1": 7}}'])
def test_a_malformed_summary_is_ignored(tmp_path: Path, text: str) -> None:
    task = tmp_path / 'T1'
    attempt(task, 1)
    attempt(task, 2, kind='resume')
    (task / attempts.SUMMARY_FILE).write_text(text)
    assert known(task) == read_from_files(task)
    assert summarized(task) == read_from_files(task)
    assert json.loads((task / attempts.SUMMARY_FILE).read_text())['format'] == attempts.FORMAT   # rewritten


def test_an_attempt_written_a_moment_ago_is_not_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a file written in the last second: its tick may not be over
    monkeypatch.setattr(attempts, 'sig_is_racy', REAL_RACY)
    task = tmp_path / 'T1'
    old = attempt(task, 1)
    for path in old.iterdir():
        os.utime(path, ns=(1_500_000_000_123_456_789, 1_500_000_000_123_456_789))
    # (its ctime is now; the entry is kept once that is a second ago)
    attempt(task, 2)
    with attempts.writing():
        assert known(task) == read_from_files(task)
    written = json.loads((task / attempts.SUMMARY_FILE).read_text()) \
        if (task / attempts.SUMMARY_FILE).exists() else {'attempts': {}}
    assert 'attempt-2' not in written['attempts']


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Host:
    return host_after_a_run(tmp_path, monkeypatch, capsys)


def test_a_run_keeps_them_and_status_only_reads_them(host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    tasks = host.run_dir('r1') / 'tasks'
    assert all((tasks / t / attempts.SUMMARY_FILE).is_file() for t in ('T1', 'T2', 'T3'))   # the run's report
    expected = host.status()
    # what status says is what the files say, with or without the summaries (gone, or lying about a file's
    # usage: a summary entry whose file changed is not taken)
    for task_id in ('T1', 'T2', 'T3'):
        (tasks / task_id / attempts.SUMMARY_FILE).unlink()
    forget()
    before = files_snapshot(host.repo)
    assert host.status() == expected
    rc, out, err = host.cli('resume', '--dry-run', '--run-id', 'r1')
    assert rc == 0, out + err
    assert files_snapshot(host.repo) == before   # read-only: no summary written back
    assert not any((tasks / t / attempts.SUMMARY_FILE).exists() for t in ('T1', 'T2', 'T3'))
    rc, out, err = host.cli('report', '--run-id', 'r1')   # a command that writes: the summaries are back
    assert rc == 0, out + err
    assert all((tasks / t / attempts.SUMMARY_FILE).is_file() for t in ('T1', 'T2', 'T3'))
    record = tasks / 'T1' / 'attempt-1' / 'attempt.json'
    data = json.loads(record.read_text())
    data['usage']['output_tokens'] += 1000
    record.write_text(json.dumps(data))   # edited by hand after the summary
    forget()
    rows = {t['id']: t for t in host.status()['tasks']}
    assert rows['T1']['usage_total']['output_tokens'] == \
        {t['id']: t for t in expected['tasks']}['T1']['usage_total']['output_tokens'] + 1000


def snapshot(host: Host) -> dict[str, str]:
    """Every file under .orchestrator but SQLite's shared-memory index of doit's database, which SQLite itself
    rebuilds when a reader opens the database after a writer was killed (not codex-orch's writing)."""
    return {k: v for k, v in files_snapshot(host.repo / '.orchestrator').items() if not k.endswith('.db-shm')}


def test_a_resume_killed_mid_attempt_is_counted_from_its_files(host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    """The summaries a run wrote, then a resume SIGKILLed while T1's worker runs (its attempt launched, never
    ended, after the summary): status reads it from its files and writes nothing; the next resume counts it."""
    tasks = host.run_dir('r1') / 'tasks'
    assert (tasks / 'T1' / attempts.SUMMARY_FILE).is_file()
    host.script({**THREE_TASK_SCRIPT, 'tasks': {**THREE_TASK_SCRIPT['tasks'],
                                                'T1': {**THREE_TASK_SCRIPT['tasks']['T1'], 'sleep': 30}}})
    plan = three_task_plan()
    plan['tasks'][0]['description'] += ' Politely.'
    host.write_plan(plan)
    proc = cli_subprocess(host.repo, 'resume', '--run-id', 'r1')
    try:
        wait_for(lambda: (tasks / 'T1' / 'attempt-2' / 'process.json').is_file(), timeout=60)   # its worker runs
        os.kill(proc.pid, signal.SIGKILL)   # (the worker, orphaned, is killed by the next resume)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    forget()
    before = snapshot(host)
    row = {t['id']: t for t in host.status()['tasks']}['T1']
    assert snapshot(host) == before   # status wrote nothing
    count, usage, kinds = read_from_files(tasks / 'T1')
    assert count == 2 and (row['attempts'], row['attempt_kinds']) == (count, kinds)
    assert {k: row['usage_total'][k] for k in attempts.USAGE_KEYS} == usage
    host.script(THREE_TASK_SCRIPT)
    rc, out, err = host.cli('resume', '--run-id', 'r1')
    assert rc == 0, out + err
    forget()
    row = {t['id']: t for t in host.status()['tasks']}['T1']
    count, usage, kinds = read_from_files(tasks / 'T1')
    assert (row['attempts'], row['attempt_kinds']) == (count, kinds)
    assert {k: row['usage_total'][k] for k in attempts.USAGE_KEYS} == usage
    summary = json.loads((tasks / 'T1' / attempts.SUMMARY_FILE).read_text())
    assert set(summary['attempts']) == {f'attempt-{n}' for n in range(1, count + 1)}   # refreshed by the resume
