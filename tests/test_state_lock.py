"""state.json is read, changed and written by several threads of one run (a task's own steps, a gate that blames it):
no update is lost, whatever the interleaving."""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from orch.runstate import atomic, state


def test_an_update_from_another_thread_is_never_written_over(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The gate thread's `status: failed` is made while the task's own thread is between reading state.json and
    writing it back: it must not be lost. (Without a lock the other update lands in that window and is lost;
    with one it waits — the window is held open up to a second, which costs time, never a wrong result.)"""
    task_dir = tmp_path / 'T1'
    task_dir.mkdir()
    state.update_state(task_dir, status='done')
    real_write = atomic.write_json
    other_done = threading.Event()
    errors: list[BaseException] = []

    def other() -> None:
        try:
            state.update_state(task_dir, status='failed', reason='gate broken')
        except BaseException as exc:   # pragma: no cover - reported below
            errors.append(exc)
        finally:
            other_done.set()

    started: list[threading.Thread] = []

    def write_json(path: Path, data: Any, *args: Any, **kwargs: Any) -> None:
        if not started and threading.current_thread() is threading.main_thread():
            thread = threading.Thread(target=other)
            started.append(thread)
            thread.start()
            other_done.wait(timeout=1.0)   # its update, if it can happen now, happens here
        real_write(path, data, *args, **kwargs)

    monkeypatch.setattr(atomic, 'write_json', write_json)
    state.update_state(task_dir, gates={'lint': {'passed': True}})
    started[0].join(timeout=30)
    assert not errors
    final = state.read_state(task_dir)
    assert final['status'] == 'failed' and final['reason'] == 'gate broken'
    assert final['gates'] == {'lint': {'passed': True}}
