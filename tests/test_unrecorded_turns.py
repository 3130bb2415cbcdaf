"""Who may take an ended attempt's answer instead of paying again (run_worker's reuse_since): only the execution
a kill interrupted before any of its records took that answer in (orch.steps.rounds)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from orch.runstate import state
from orch.steps.rounds import ROUNDS_FILE, Rounds, killed_midway, unrecorded_since

STARTED = 1_000_000.0
NOT_US = os.getpid() + 1   # the pid of a codex-orch that is gone (the run's lock lets no other one run)
KILLED = {'status': 'running', 'pid': NOT_US, 'started_at': STARTED}


def test_only_a_running_execution_of_another_process_was_killed_midway() -> None:
    assert killed_midway(KILLED)
    assert not killed_midway({**KILLED, 'pid': os.getpid()})   # this process's own execution
    for status in ('done', 'failed', 'blocked', 'deferred', 'pending', None):
        assert not killed_midway({**KILLED, 'status': status})


@pytest.mark.parametrize('status', ['done', 'failed', 'blocked', 'deferred', 'pending', None])
def test_a_finished_or_fresh_execution_vouches_for_nothing(tmp_path: Path, status: str | None) -> None:
    assert unrecorded_since(tmp_path, KILLED) == STARTED
    assert unrecorded_since(tmp_path, {**KILLED, 'status': status}) is None
    assert unrecorded_since(tmp_path, {}) is None
    assert unrecorded_since(tmp_path, {**KILLED, 'started_at': None}) is None


@pytest.mark.parametrize('record', [ROUNDS_FILE, 'pending.json', 'execution.json'])
def test_a_record_of_the_killed_execution_holds_its_answer(tmp_path: Path, record: str) -> None:
    (tmp_path / record).write_text(json.dumps({'started_at': STARTED - 60}))   # an earlier execution's
    assert unrecorded_since(tmp_path, KILLED) == STARTED
    (tmp_path / record).write_text(json.dumps({'started_at': STARTED}))        # its own: the answer is taken in
    assert unrecorded_since(tmp_path, KILLED) is None


def _rounds() -> Rounds:
    return Rounds(inputs_digest='d', thread_id='th', answer={}, usage={'input_tokens': 1}, cumulative=None,
                  started_at=STARTED)


def test_a_turn_mark_is_saved_before_the_turn_and_cleared_with_its_answer(tmp_path: Path) -> None:
    rounds = _rounds()
    rounds.begin_turn(tmp_path)
    mark = rounds.turn_since
    assert mark is not None and json.loads((tmp_path / ROUNDS_FILE).read_text())['turn_since'] == mark
    rounds.begin_turn(tmp_path)   # the same turn, resumed: its mark stays
    assert rounds.turn_since == mark
    rounds.end_turn({'input_tokens': 5})
    assert rounds.turn_since is None and rounds.usage == {'input_tokens': 6}


@pytest.mark.parametrize('status, whose, kept', [
    ('running', 'gone', True),          # killed: its turn's ended attempts are taken
    ('running', 'ours', False),
    ('failed', 'gone', False), ('pending', 'gone', False), ('done', 'gone', False), ('blocked', 'gone', False)])
def test_a_turn_mark_survives_only_a_kill(tmp_path: Path, status: str, whose: str, kept: bool) -> None:
    rounds = _rounds()
    rounds.begin_turn(tmp_path)
    state.update_state(tmp_path, status=status, pid=os.getpid() if whose == 'ours' else NOT_US, started_at=STARTED)
    loaded = Rounds.load(tmp_path, 'd')
    assert loaded is not None and (loaded.turn_since == rounds.turn_since if kept else loaded.turn_since is None)
    assert Rounds.load(tmp_path, 'another digest') is None
