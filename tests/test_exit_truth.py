"""A failed step never exits 0, and a finished run is never stale for ever.

- The run's spec, edited into a binary file after a good run: `resume` refuses it as a bad `--spec-file`
  is refused before a run (exit 2, the file named, nothing run), instead of a failed prompt step and exit 0.
- A lone surrogate in a task's title: task.json stores it as UTF-8 can hold it (U+FFFD) and the plan entry
  is compared in that same form, so the run is done, not stale for ever.
- Should a task still be stale after a run that did all it could, the run says why and does not exit 0.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import orch.engine.doit_runner as doit_runner
from tests.support.orchtest import files_snapshot, host_after_a_run, make_host


@pytest.mark.parametrize('content, fragment', [(b'\x00\xff\xfe binary', 'byte 0 is NUL'),
                                               (b'# Spec\n\xff\xfe', 'no longer UTF-8')])
def test_a_spec_made_binary_after_a_run_is_refused_by_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: Any, content: bytes, fragment: str) -> None:
    host = host_after_a_run(tmp_path, monkeypatch, capsys)
    (host.repo / 'spec.md').write_bytes(content)
    run_dir = host.run_dir()
    before = {k: v for k, v in files_snapshot(run_dir).items() if k != 'lock'}
    rc, out, err = host.cli('resume')
    assert rc == 2, out + err
    assert 'spec.md' in err and fragment in err and 'FAILED' not in out + err
    after = {k: v for k, v in files_snapshot(run_dir).items() if k != 'lock'}
    assert host.launches() == [] and after == before   # nothing ran, nothing written
    (host.repo / 'spec.md').write_text('# Spec\nGreet people.\n')          # restored: the run is done again
    assert host.cli('resume')[0] == 0 and host.launches() == []


SURROGATE_PLAN = ('{"version": 1, "title": "Plan \\ud800", "tasks": [{"id": "T1", "role": "implementer", '
                  '"title": "Odd \\ud800 title", "description": "Do it \\udcff.", "paths": ["a.txt"]}]}')


def test_a_lone_surrogate_in_a_title_does_not_keep_the_run_stale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: Any) -> None:
    host = make_host(tmp_path, monkeypatch, capsys, {'default': {'edits': {'a.txt': 'a\n'}}})
    (host.repo / 'plan.json').write_text(SURROGATE_PLAN)
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 0, out + err
    entry = json.loads((host.run_dir() / 'tasks' / 'T1' / 'task.json').read_text())
    assert entry['title'] == 'Odd \ufffd title'   # stored as UTF-8 can hold it
    host.clear_log()
    for _ in range(2):
        rc, out, err = host.cli('resume')
        assert rc == 0, out + err
        assert host.launches() == []
    assert host.statuses() == {'T1': 'done'}


def test_a_task_still_stale_after_a_run_is_said_and_never_exits_0(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: Any) -> None:
    host = host_after_a_run(tmp_path, monkeypatch, capsys)
    stored = doit_runner.stored_task_entry

    def compared_otherwise(rt: Any, task: Any) -> dict[str, Any]:   # a comparison that disagrees with the store
        entry = stored(rt, task)
        return {**entry, 'title': entry['title'] + ' (as compared)'} if task.id == 'T2' else entry

    monkeypatch.setattr(doit_runner, 'stored_task_entry', compared_otherwise)
    monkeypatch.setenv('CODEX_ORCH_FULL_CHECK', '1')
    rc, out, err = host.cli('resume')
    assert rc != 0, out + err
    assert 'STALE T2: still stale after this run' in err and 'title changed' in err
