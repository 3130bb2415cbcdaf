"""Integration tests of the worker adapter against the fake codex (real subprocesses, no mocks)."""
from __future__ import annotations

import _thread
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from orch.adapters.codex_bin import INSTALL_HINT
from orch.adapters.worker import (
    build_argv,
    kill_all_workers,
    live_worker_pgids,
    reset_worker_shutdown,
    run_worker,
)
from orch.adapters.worker_types import USAGE_KEYS, WorkerResult, WorkerSpec
from tests.support.fake_codex import LOG_FILE, install_fake_codex, read_log, write_script

SCHEMA = {
    'type': 'object',
    'properties': {
        'status': {'enum': ['done', 'blocked']},
        'summary': {'type': 'string'},
        'decisions': {'type': 'array', 'items': {'type': 'string'}},
    },
    'required': ['status', 'summary', 'decisions'],
    'additionalProperties': False,
}
PROMPT = 'Implement the thing.\nTask id: T1\n'
FAKE_USAGE = {'input_tokens': 100, 'cached_input_tokens': 10, 'output_tokens': 20, 'reasoning_output_tokens': 5}


def validate(answer: object) -> list[str]:
    validator = jsonschema.Draft202012Validator(SCHEMA)
    return sorted(error.message for error in validator.iter_errors(answer))


@dataclass
class Harness:
    root: Path
    bin: Path
    workdir: Path
    schema: Path
    task_dir: Path

    def spec(self, **overrides: Any) -> WorkerSpec:
        base = WorkerSpec(codex=(str(self.bin / 'codex'),), workdir=self.workdir, sandbox='workspace-write',
                          model=None, schema_path=self.schema, retry_backoff=0.01)
        return replace(base, **overrides)

    def script(self, behaviour: dict[str, Any] | list[dict[str, Any]]) -> None:
        write_script(self.bin, {'tasks': {'T1': behaviour}})

    def run(self, behaviour: dict[str, Any] | list[dict[str, Any]] | None = None, **overrides: Any) -> WorkerResult:
        if behaviour is not None:
            self.script(behaviour)
        return run_worker(self.spec(**overrides), PROMPT, self.task_dir, validate)

    def log(self) -> list[dict[str, Any]]:
        return read_log(self.bin / LOG_FILE)


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    bin_dir = install_fake_codex(tmp_path / 'bin', None)
    workdir = tmp_path / 'wd'
    workdir.mkdir()
    schema = tmp_path / 'schema.json'
    schema.write_text(json.dumps(SCHEMA))
    return Harness(tmp_path, bin_dir, workdir, schema, tmp_path / 'tasks' / 'T1')


def _proc_state(pid: int) -> tuple[str, int] | None:
    """(state letter, pgid) from /proc, or None when the process does not exist."""
    try:
        raw = Path(f'/proc/{pid}/stat').read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = raw.rsplit(')', 1)[1].split()
    return fields[0], int(fields[2])


def _live_members(pgid: int) -> list[int]:
    """Non-zombie processes in a group (a zombie orphan waits for PID 1 to reap it; it runs nothing)."""
    members = []
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            state = _proc_state(int(entry))
            if state is not None and state[1] == pgid and state[0] != 'Z':
                members.append(int(entry))
    return members


def _group_gone(pgid: int, timeout: float = 5.0) -> bool:
    """True once os.killpg(pgid, 0) raises ProcessLookupError (polling: orphans are reaped by PID 1)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def _vm_hwm_kb() -> int:
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith('VmHWM:'):
            return int(line.split()[1])
    raise AssertionError('no VmHWM in /proc/self/status')


# --- success and schema retries ------------------------------------------------------------------

def test_valid_answer_is_ok_in_one_attempt(h: Harness) -> None:
    events: list[dict] = []
    result = run_worker(h.spec(), PROMPT, h.task_dir, validate, on_event=events.append)
    assert result.outcome == 'ok' and result.error is None
    assert result.answer == {'status': 'done', 'summary': 'auto summary', 'decisions': []}
    assert len(result.attempts) == 1
    attempt = result.attempts[0]
    adir = h.task_dir / 'attempt-1'
    lines = (adir / 'events.jsonl').read_text().splitlines()
    assert len(lines) == attempt.events == len(events) >= 4
    assert json.loads(lines[0])['thread_id'] == result.thread_id == attempt.thread_id
    assert (adir / 'prompt.txt').read_text() == PROMPT
    assert json.loads((adir / 'last-message.txt').read_text()) == result.answer
    assert (adir / 'stderr.log').exists() and int((adir / 'pid').read_text()) == attempt.pid
    assert json.loads((adir / 'attempt.json').read_text())['outcome'] == 'ok'
    assert result.usage == FAKE_USAGE == attempt.usage
    assert attempt.exit_code == 0 and attempt.kind == 'initial'
    json.dumps(result.to_dict())   # JSON-ready


def test_argv_matches_the_cli_contract(h: Harness) -> None:
    spec = h.spec(model='gpt-test', extra_args=('-c', 'x=1'))
    first = build_argv(spec, h.root / 'last.txt', None)
    assert first[:3] == [str(h.bin / 'codex'), 'exec', '--json']
    assert first[first.index('-C') + 1] == str(h.workdir) and first[first.index('-m') + 1] == 'gpt-test'
    assert first[-3:] == ['-c', 'x=1', '-']
    again = build_argv(spec, h.root / 'last.txt', 'thread-1')
    assert again[-3:] == ['resume', 'thread-1', '-']
    assert again.index('-C') < again.index('resume') and again.index('--sandbox') < again.index('resume')
    assert again.index('-c') < again.index('resume') and '--output-schema' in again


def test_invalid_then_valid_resumes_same_thread_with_reminder(h: Harness) -> None:
    result = h.run([{'answer': {'status': 5, 'summary': 'x', 'decisions': []}}, {'answer': 'auto'}],
                   model='gpt-test')
    assert result.outcome == 'ok'
    first, second = result.attempts
    assert (first.outcome, first.kind, second.kind) == ('invalid-output', 'initial', 'schema-retry')
    assert first.validation_errors == ["5 is not one of ['done', 'blocked']"]
    assert second.argv[-3:] == ['resume', first.thread_id, '-'] and second.thread_id == first.thread_id
    reminder = (h.task_dir / 'attempt-2' / 'prompt.txt').read_text()
    assert "5 is not one of ['done', 'blocked']" in reminder and 'ONLY a JSON object' in reminder
    log = h.log()
    assert [entry['resume'] for entry in log] == [False, True] and log[1]['model'] == 'gpt-test'
    assert log[1]['workdir'] == str(h.workdir) and log[1]['sandbox'] == 'workspace-write'
    assert first.usage == FAKE_USAGE == second.usage
    assert second.usage_cumulative == {k: 2 * v for k, v in FAKE_USAGE.items()}
    assert result.usage == {k: 2 * v for k, v in FAKE_USAGE.items()}


def test_always_invalid_ends_invalid_output_after_schema_retries(h: Harness) -> None:
    result = h.run({'answer': 'I did it, trust me.'}, schema_retries=1, failure_retries=3)
    assert result.outcome == 'invalid-output' and result.answer is None
    assert [a.kind for a in result.attempts] == ['initial', 'schema-retry']
    assert result.error is not None and 'not JSON' in result.error
    assert 'not JSON' in (h.task_dir / 'attempt-2' / 'prompt.txt').read_text()


def test_fenced_answer_is_accepted(h: Harness) -> None:
    result = h.run({'answer': 'Done:\n```json\n{"status": "done", "summary": "s", "decisions": ["d"]}\n```'})
    assert result.outcome == 'ok' and result.answer == {'status': 'done', 'summary': 's', 'decisions': ['d']}


# --- failures and retries --------------------------------------------------------------------------

def test_turn_failed_reports_message(h: Harness) -> None:
    result = h.run({'fail': 'Incomplete response returned, reason: max_output_tokens'})
    assert result.outcome == 'turn-failed'
    assert result.error == 'Incomplete response returned, reason: max_output_tokens'
    assert len(result.attempts) == 1 and result.attempts[0].exit_code == 1


def test_quota_failure_is_deferred_and_not_retried(h: Harness) -> None:
    result = h.run({'fail': 'Quota exceeded. Check your plan and billing details.'}, failure_retries=3)
    assert result.outcome == 'deferred' and len(result.attempts) == 1
    assert 'Quota exceeded' in (result.error or '')


def test_exit_nonzero_is_retried_with_fresh_sessions(h: Harness) -> None:
    result = h.run({'exit': 3}, failure_retries=2)
    assert result.outcome == 'exit-nonzero' and 'rc 3' in (result.error or '')
    assert [a.kind for a in result.attempts] == ['initial', 'failure-retry', 'failure-retry']
    assert len({a.thread_id for a in result.attempts}) == 3
    assert not any(entry['resume'] for entry in h.log())


def test_exit_zero_without_turn_completed_is_a_failure(h: Harness) -> None:
    result = h.run({'no_turn_completed': True})
    assert result.outcome == 'exit-nonzero' and 'no turn.completed' in (result.error or '')
    assert result.answer is None


def test_transient_failure_then_success(h: Harness) -> None:
    result = h.run([{'hang': True}, {}], timeout_idle=0.5, failure_retries=1)
    assert result.outcome == 'ok'
    assert [(a.kind, a.outcome) for a in result.attempts] == [('initial', 'timeout'), ('failure-retry', 'ok')]
    assert result.attempts[0].thread_id != result.attempts[1].thread_id


def test_missing_binary_is_launch_error_with_install_hint(h: Harness) -> None:
    result = h.run(codex=(str(h.root / 'no-such-codex'),), failure_retries=2)
    assert result.outcome == 'launch-error' and len(result.attempts) == 1
    assert 'npm install -g @openai/codex@0.169.0' in (result.error or '') and 'codex.binary' in INSTALL_HINT
    assert json.loads((h.task_dir / 'attempt-1' / 'attempt.json').read_text())['outcome'] == 'launch-error'


def test_non_executable_binary_is_launch_error(h: Harness) -> None:
    plain = h.root / 'codex-not-executable'
    plain.write_text('#!/bin/sh\n')
    result = h.run(codex=(str(plain),))
    assert result.outcome == 'launch-error' and 'not executable' in (result.error or '')


def test_garbage_lines_are_counted(h: Harness) -> None:
    result = h.run({'garbage': 5, 'answer': 'no json here'}, schema_retries=0)
    assert result.outcome == 'invalid-output'
    assert result.attempts[0].garbage_lines == 5
    tolerant = h.run({'garbage': 2})
    assert tolerant.outcome == 'ok' and tolerant.attempts[0].garbage_lines == 2


# --- timeouts and process-group hygiene ------------------------------------------------------------

def test_hang_times_out_on_idle_and_kills_the_group(h: Harness) -> None:
    result = h.run({'hang': True}, timeout_idle=0.6, timeout_total=20)
    attempt = result.attempts[0]
    assert result.outcome == 'timeout' and attempt.timeout == 'idle' and 'idle' in (result.error or '')
    assert attempt.pid is not None and _group_gone(attempt.pid)
    assert attempt.duration < 4
    assert live_worker_pgids() == []


def test_silent_process_times_out_waiting_for_first_event(h: Harness) -> None:
    result = h.run({'silent': True}, timeout_first_event=0.6, timeout_idle=0.1)
    assert result.outcome == 'timeout' and result.attempts[0].timeout == 'first-event'
    assert result.attempts[0].pid is not None and _group_gone(result.attempts[0].pid)


def test_total_timeout(h: Harness) -> None:
    result = h.run({'sleep': 30}, timeout_total=0.8, timeout_idle=10)
    assert result.outcome == 'timeout' and result.attempts[0].timeout == 'total'


def test_leftover_child_is_killed_with_the_group(h: Harness) -> None:
    result = h.run({'child': True})
    assert result.outcome == 'ok'
    child_pid = h.log()[0]['child_pid']
    pgid = result.attempts[0].pid
    assert pgid is not None
    deadline = time.monotonic() + 5
    while _live_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _live_members(pgid) == []
    state = _proc_state(child_pid)
    assert state is None or state[0] == 'Z'


def test_cancel_event_interrupts_and_kills(h: Harness) -> None:
    h.script({'hang': True})
    cancel = threading.Event()
    timer = threading.Timer(0.4, cancel.set)
    timer.start()
    result = run_worker(h.spec(failure_retries=2, timeout_idle=30), PROMPT, h.task_dir, validate, cancel=cancel)
    assert result.outcome == 'interrupted' and len(result.attempts) == 1
    assert result.attempts[0].pid is not None and _group_gone(result.attempts[0].pid)


def test_keyboard_interrupt_kills_group_records_and_reraises(h: Harness) -> None:
    h.script({'hang': True})
    timer = threading.Timer(0.5, _thread.interrupt_main)
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        run_worker(h.spec(timeout_idle=30), PROMPT, h.task_dir, validate)
    record = json.loads((h.task_dir / 'attempt-1' / 'attempt.json').read_text())
    assert record['outcome'] == 'interrupted'
    assert _group_gone(record['pid'])
    assert live_worker_pgids() == []


def test_kill_all_workers_from_another_thread(h: Harness) -> None:
    h.script({'hang': True})
    results: list[WorkerResult] = []
    worker = threading.Thread(target=lambda: results.append(
        run_worker(h.spec(timeout_idle=30, failure_retries=2), PROMPT, h.task_dir, validate)))
    worker.start()
    try:
        deadline = time.monotonic() + 5
        while not live_worker_pgids() and time.monotonic() < deadline:
            time.sleep(0.02)
        pgids = live_worker_pgids()
        assert len(pgids) == 1
        assert kill_all_workers(grace=1.0) == 1
        worker.join(10)
    finally:
        reset_worker_shutdown()
    assert results[0].outcome == 'interrupted' and len(results[0].attempts) == 1
    assert _group_gone(pgids[0])


# --- streaming, memory, robustness ----------------------------------------------------------------

def test_flood_does_not_grow_memory(h: Harness) -> None:
    before = _vm_hwm_kb()
    result = h.run({'flood_mb': 50}, timeout_idle=10)
    after = _vm_hwm_kb()
    assert result.outcome == 'ok' and result.attempts[0].events > 6000
    assert (h.task_dir / 'attempt-1' / 'events.jsonl').stat().st_size > 50 * 1024 * 1024
    assert after - before < 20 * 1024, f'peak RSS grew by {after - before} kB'


def test_overlong_line_is_skipped_as_garbage(h: Harness) -> None:
    result = h.run({'huge_line_mb': 9})
    assert result.outcome == 'ok' and result.attempts[0].garbage_lines == 1


def test_large_prompt_does_not_deadlock(h: Harness) -> None:
    prompt = PROMPT + ('filler line\n' * 400_000)
    result = run_worker(h.spec(timeout_total=20), prompt, h.task_dir, validate)
    assert result.outcome == 'ok'
    assert (h.task_dir / 'attempt-1' / 'prompt.txt').read_text() == prompt
    assert h.log()[0]['prompt'] == prompt[:2000]


def test_on_event_exceptions_do_not_break_the_worker(h: Harness) -> None:
    def explode(event: dict) -> None:
        raise RuntimeError('display bug')
    result = run_worker(h.spec(), PROMPT, h.task_dir, validate, on_event=explode)
    assert result.outcome == 'ok'


def test_attempt_dirs_continue_numbering_across_runs(h: Harness) -> None:
    h.run({})
    h.run({})
    assert sorted(p.name for p in h.task_dir.iterdir()) == ['attempt-1', 'attempt-2']
    assert json.loads((h.task_dir / 'attempt-2' / 'attempt.json').read_text())['n'] == 2


def test_edits_land_in_the_workdir(h: Harness) -> None:
    result = h.run({'edits': {'src/a.py': 'print(1)\n'}, 'decisions': ['kept it small']})
    assert result.outcome == 'ok' and result.answer is not None
    assert (h.workdir / 'src' / 'a.py').read_text() == 'print(1)\n'
    assert result.answer['decisions'] == ['kept it small']   # type: ignore[index]
    assert result.attempts[0].last_activity == 'message'


def test_usage_keys_are_complete(h: Harness) -> None:
    result = h.run({'usage': {'input_tokens': 7}})
    assert set(result.usage) == set(USAGE_KEYS) and result.usage['input_tokens'] == 7


# --- the fake itself behaves like the CLI where the worker depends on it ----------------------------

def test_fake_rejects_cd_after_resume_and_reports_version(h: Harness) -> None:
    codex = str(h.bin / 'codex')
    version = subprocess.run([codex, '--version'], capture_output=True, text=True)
    assert version.stdout.strip() == 'codex-cli 0.169.0'
    bad = subprocess.run([codex, 'exec', '--json', 'resume', 'x', '-C', str(h.workdir), '-'],
                         input='hi', capture_output=True, text=True)
    assert bad.returncode == 2 and "unexpected argument '-C'" in bad.stderr
    unknown = subprocess.run([codex, 'exec', '--json', '--skip-git-repo-check', 'resume', 'nope', '-'],
                             input='hi', capture_output=True, text=True)
    assert unknown.returncode == 1 and unknown.stdout == '' and 'no rollout found' in unknown.stderr


# --- an attempt whose turn completed before codex-orch was killed is recovered, never paid again ----

def _killed_after_turn(h: Harness, n: int) -> None:
    """What a kill between turn.completed and codex's exit leaves: events.jsonl complete, no attempt.json."""
    (h.task_dir / f'attempt-{n}' / 'attempt.json').unlink()


def _recover(h: Harness, prompt: str = PROMPT, **overrides: Any) -> tuple[WorkerResult, list[str]]:
    fresh: list[str] = []
    result = run_worker(h.spec(**overrides), prompt, h.task_dir, validate, recover=True,
                        before_fresh_start=lambda: fresh.append('discard'))
    return result, fresh


def test_completed_turn_of_a_killed_run_is_recovered_without_launching(h: Harness) -> None:
    first = h.run({'edits': {'a.txt': 'a\n'}})
    _killed_after_turn(h, 1)
    h.script({'fail': 'a second launch must not happen'})
    result, fresh = _recover(h)
    assert len(h.log()) == 1 and fresh == []   # no model request, and the worker's edits are kept
    assert result.outcome == 'ok' and result.answer == first.answer
    assert result.thread_id == first.thread_id and result.usage == first.usage == FAKE_USAGE
    (attempt,) = result.attempts
    assert attempt.recovered and attempt.n == 1 and attempt.kind == 'initial' and attempt.exit_code is None
    recorded = json.loads((h.task_dir / 'attempt-1' / 'attempt.json').read_text())
    assert recorded['outcome'] == 'ok' and recorded['recovered'] is True and recorded['usage'] == FAKE_USAGE
    assert recorded['argv'] == first.attempts[0].argv and recorded['duration'] >= 0
    assert (h.workdir / 'a.txt').read_text() == 'a\n'
    # recovered once: the next call is an ordinary run
    h.script({})
    again, fresh = _recover(h)
    assert again.outcome == 'ok' and fresh == ['discard'] and len(h.log()) == 2


def test_recover_completed_attempt_alone(h: Harness) -> None:
    from orch.adapters.worker_attempts import recover_completed_attempt
    assert recover_completed_attempt(h.spec(), PROMPT, h.task_dir, validate) is None   # nothing there yet
    first = h.run({})
    assert recover_completed_attempt(h.spec(), PROMPT, h.task_dir, validate) is None   # it ended: attempt.json
    _killed_after_turn(h, 1)
    result = recover_completed_attempt(h.spec(), PROMPT, h.task_dir, validate)
    assert result is not None and result.ok and result.answer == first.answer and len(h.log()) == 1


def test_a_turn_that_did_not_complete_is_not_recovered(h: Harness) -> None:
    h.run({'no_turn_completed': True}, failure_retries=0)
    _killed_after_turn(h, 1)
    h.script({})
    result, fresh = _recover(h)
    assert fresh == ['discard'] and len(h.log()) == 2
    assert result.outcome == 'ok' and [a.n for a in result.attempts] == [2] and not result.attempts[0].recovered


def test_a_truncated_event_log_is_not_recovered(h: Harness) -> None:
    h.run({})
    _killed_after_turn(h, 1)
    events = h.task_dir / 'attempt-1' / 'events.jsonl'
    lines = events.read_bytes().splitlines(keepends=True)
    assert b'turn.completed' in lines[-1]
    events.write_bytes(b''.join(lines[:-1]) + lines[-1][:20])   # killed while turn.completed was being written
    result, fresh = _recover(h)
    assert fresh == ['discard'] and len(h.log()) == 2 and not result.attempts[0].recovered


def test_an_attempt_for_another_prompt_or_spec_is_not_recovered(h: Harness) -> None:
    h.run({})
    _killed_after_turn(h, 1)
    result, fresh = _recover(h, PROMPT + 'The spec changed.\n')
    assert fresh == ['discard'] and len(h.log()) == 2 and not result.attempts[0].recovered
    _killed_after_turn(h, 2)
    result, fresh = _recover(h, PROMPT + 'The spec changed.\n', model='another-model')
    assert fresh == ['discard'] and len(h.log()) == 3
    _killed_after_turn(h, 3)
    h.schema.write_text(json.dumps({**SCHEMA, 'description': 'edited'}))
    result, fresh = _recover(h, PROMPT + 'The spec changed.\n', model='another-model')
    assert fresh == ['discard'] and len(h.log()) == 4


def test_only_the_latest_attempt_is_recovered(h: Harness) -> None:
    h.run({})
    h.run({})
    _killed_after_turn(h, 1)   # an old one (its run went on afterwards), not the latest
    result, fresh = _recover(h)
    assert fresh == ['discard'] and len(h.log()) == 3 and result.attempts[0].n == 3


def test_without_recover_nothing_is_recovered(h: Harness) -> None:
    h.run({})
    _killed_after_turn(h, 1)
    result = h.run({})
    assert len(h.log()) == 2 and not result.attempts[0].recovered


def test_a_recovered_invalid_answer_is_resumed_by_a_schema_retry(h: Harness) -> None:
    first = h.run({'answer': {'status': 'maybe', 'summary': 'x', 'decisions': []}}, schema_retries=0)
    assert first.outcome == 'invalid-output'
    _killed_after_turn(h, 1)
    h.script({'answer': 'auto'})
    result, fresh = _recover(h)
    assert fresh == []   # the worker's edits stay for its own thread
    assert [a.outcome for a in result.attempts] == ['invalid-output', 'ok']
    assert result.attempts[0].recovered and result.attempts[1].kind == 'schema-retry'
    assert result.attempts[1].argv[-3:] == ['resume', first.thread_id, '-']
    assert [entry['resume'] for entry in h.log()] == [False, True]
    assert result.usage == {k: 2 * v for k, v in FAKE_USAGE.items()}   # each turn counted once
    # with no schema retry left, it is simply the invalid-output attempt
    _killed_after_turn(h, 2)
    h.script({'answer': 'still not JSON'})
    (h.task_dir / 'attempt-3').mkdir()
    assert _recover(h, schema_retries=0)[0].attempts[0].n == 4


def test_recovery_continues_the_killed_runs_schema_retry_chain(h: Harness) -> None:
    """attempt-1 invalid, attempt-2 (its schema retry) killed after its turn: both count, like an unkilled run."""
    h.run([{'answer': 'prose'}, {'answer': 'auto'}])
    _killed_after_turn(h, 2)
    result, fresh = _recover(h)
    assert len(h.log()) == 2 and fresh == []
    assert [(a.n, a.outcome) for a in result.attempts] == [(1, 'invalid-output'), (2, 'ok')]
    assert result.attempts[1].recovered and result.attempts[1].usage == FAKE_USAGE   # its own turn only
    assert result.usage == {k: 2 * v for k, v in FAKE_USAGE.items()}


def test_the_schema_retry_budget_is_not_renewed_by_recovery(h: Harness) -> None:
    h.run([{'answer': 'prose'}, {'answer': 'more prose'}], schema_retries=1)
    _killed_after_turn(h, 2)   # the killed run had used its one schema retry on attempt-2
    result, _ = _recover(h, schema_retries=1)
    assert len(h.log()) == 2 and result.outcome == 'invalid-output'
    assert [a.n for a in result.attempts] == [1, 2]


_CRASH_AFTER_TURN = '''
import json, sys
from pathlib import Path
from orch.adapters.worker import run_worker
from orch.adapters.worker_types import WorkerSpec
root = Path(sys.argv[1])
spec = WorkerSpec(codex=(str(root / 'bin' / 'codex'),), workdir=root / 'wd', sandbox='workspace-write',
                  model=None, schema_path=root / 'schema.json')
run_worker(spec, sys.argv[2], root / 'tasks' / 'T1', lambda answer: [])
print('not killed')
'''


def test_failpoint_after_turn_then_recover(h: Harness) -> None:
    """SIGKILL right after turn.completed reached events.jsonl (ORCH_TEST_CRASH_AT=after-turn:T1)."""
    h.script({'edits': {'b.txt': 'b\n'}})
    env = {**os.environ, 'ORCH_TEST_CRASH_AT': 'after-turn:T1'}
    done = subprocess.run([sys.executable, '-c', _CRASH_AFTER_TURN, str(h.root), PROMPT], env=env,
                          capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == -9, done.stdout + done.stderr
    adir = h.task_dir / 'attempt-1'
    assert b'turn.completed' in (adir / 'events.jsonl').read_bytes() and not (adir / 'attempt.json').exists()
    h.script({'fail': 'a second launch must not happen'})
    result, fresh = _recover(h)
    assert result.outcome == 'ok' and result.attempts[0].recovered and fresh == []
    assert len(h.log()) <= 1 and not any(entry.get('resume') for entry in h.log())
    assert (h.workdir / 'b.txt').read_text() == 'b\n'


# --- an attempt that ended before codex-orch was killed, its answer never recorded, is taken as it is -------

ZERO_USAGE = dict.fromkeys(USAGE_KEYS, 0)


def _reuse(h: Harness, since: float | None, prompt: str = PROMPT, **overrides: Any) -> tuple[WorkerResult, list[str]]:
    fresh: list[str] = []
    result = run_worker(h.spec(**overrides), prompt, h.task_dir, validate, recover=True,
                        before_fresh_start=lambda: fresh.append('discard'), reuse_since=since)
    return result, fresh


def _started(h: Harness, n: int) -> float:
    return float(json.loads((h.task_dir / f'attempt-{n}' / 'attempt.json').read_text())['started_at'])


def test_an_ended_attempt_is_taken_when_its_caller_vouches_no_record_took_it(h: Harness) -> None:
    since = time.time()
    first = h.run({'edits': {'a.txt': 'a\n'}})
    recorded = (h.task_dir / 'attempt-1' / 'attempt.json').read_bytes()
    h.script({'fail': 'a second launch must not happen'})
    result, fresh = _reuse(h, since)
    assert len(h.log()) == 1 and fresh == []   # no model request, and the worker's edits are kept
    assert result.ok and result.answer == first.answer and result.thread_id == first.thread_id
    assert result.usage == FAKE_USAGE and result.usage_cumulative == FAKE_USAGE   # what the round counts, once
    assert result.new_usage == ZERO_USAGE and result.spent_now == ZERO_USAGE   # the run's budget holds it already
    (attempt,) = result.attempts
    assert attempt.n == 1 and attempt.outcome == 'ok' and not attempt.recovered
    assert (h.task_dir / 'attempt-1' / 'attempt.json').read_bytes() == recorded   # kept as it was
    assert (h.workdir / 'a.txt').read_text() == 'a\n'


def test_an_ended_attempt_is_not_taken_unless_vouched_for_since_its_launch(h: Harness) -> None:
    h.run({})
    h.script({})
    result, fresh = _reuse(h, None)   # no caller's word: an ended attempt may have been recorded
    assert fresh == ['discard'] and len(h.log()) == 2 and [a.n for a in result.attempts] == [2]
    result, fresh = _reuse(h, _started(h, 2) + 0.001)   # launched before the caller's turn began
    assert fresh == ['discard'] and len(h.log()) == 3 and [a.n for a in result.attempts] == [3]
    assert result.spent_now == FAKE_USAGE


def test_an_ended_attempt_for_another_prompt_or_spec_is_not_taken(h: Harness) -> None:
    since = time.time()
    h.run({})
    result, fresh = _reuse(h, since, PROMPT + 'The spec changed.\n')
    assert fresh == ['discard'] and len(h.log()) == 2
    result, fresh = _reuse(h, since, PROMPT + 'The spec changed.\n', model='another-model')
    assert fresh == ['discard'] and len(h.log()) == 3


def test_an_ended_failure_is_not_taken(h: Harness) -> None:
    since = time.time()
    failed = h.run({'exit': 1}, failure_retries=0)   # the turn completed, codex failed: a retry's matter
    assert failed.outcome == 'exit-nonzero'
    h.script({})
    result, fresh = _reuse(h, since, failure_retries=0)
    assert fresh == ['discard'] and len(h.log()) == 2 and result.ok and [a.n for a in result.attempts] == [2]


def test_an_ended_attempt_whose_events_no_longer_judge_the_same_is_not_taken(h: Harness) -> None:
    since = time.time()
    h.run({})
    events = h.task_dir / 'attempt-1' / 'events.jsonl'
    events.write_bytes(events.read_bytes().replace(b'turn.completed', b'turn.cancelled'))
    result, fresh = _reuse(h, since)
    assert fresh == ['discard'] and len(h.log()) == 2 and [a.n for a in result.attempts] == [2]


def test_an_ended_schema_retry_is_taken_with_its_call_s_earlier_attempts(h: Harness) -> None:
    since = time.time()
    h.run([{'answer': 'prose'}, {'answer': 'auto'}])
    result, fresh = _reuse(h, since)
    assert len(h.log()) == 2 and fresh == []
    assert [(a.n, a.kind, a.outcome) for a in result.attempts] == [(1, 'initial', 'invalid-output'),
                                                                  (2, 'schema-retry', 'ok')]
    assert result.usage == {k: 2 * v for k, v in FAKE_USAGE.items()} and result.new_usage == ZERO_USAGE
    # the call's first attempt was launched before the caller's turn: the whole call is another turn's
    h.script({})
    result, fresh = _reuse(h, _started(h, 2))
    assert fresh == ['discard'] and len(h.log()) == 3


def test_an_ended_invalid_answer_is_resumed_by_its_schema_retry(h: Harness) -> None:
    """Killed after the invalid answer's attempt.json, before its schema retry: the retry, not a fresh turn."""
    since = time.time()
    first = h.run({'answer': 'prose'}, schema_retries=0)
    assert first.outcome == 'invalid-output'
    h.script({'answer': 'auto'})
    result, fresh = _reuse(h, since)
    assert fresh == [] and [entry['resume'] for entry in h.log()] == [False, True]
    assert [(a.n, a.kind, a.outcome) for a in result.attempts] == [(1, 'initial', 'invalid-output'),
                                                                  (2, 'schema-retry', 'ok')]
    assert result.usage == {k: 2 * v for k, v in FAKE_USAGE.items()} and result.new_usage == FAKE_USAGE


def test_failpoint_after_attempt_then_reuse(h: Harness) -> None:
    """SIGKILL right after attempt.json (ORCH_TEST_CRASH_AT=after-attempt:T1/attempt-1)."""
    since = time.time()
    h.script({'edits': {'c.txt': 'c\n'}})
    env = {**os.environ, 'ORCH_TEST_CRASH_AT': 'after-attempt:T1/attempt-1'}
    done = subprocess.run([sys.executable, '-c', _CRASH_AFTER_TURN, str(h.root), PROMPT], env=env,
                          capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == -9, done.stdout + done.stderr
    assert json.loads((h.task_dir / 'attempt-1' / 'attempt.json').read_text())['outcome'] == 'ok'
    h.script({'fail': 'a second launch must not happen'})
    result, fresh = _reuse(h, since)
    assert result.ok and fresh == [] and len(h.log()) == 1 and result.usage == FAKE_USAGE
    assert (h.workdir / 'c.txt').read_text() == 'c\n'


# --- answers no encoder likes ---------------------------------------------------------------------

def test_an_answer_with_a_lone_surrogate_is_recorded_with_a_replacement(h: Harness) -> None:
    result = h.run({'answer': '{"status": "done", "summary": "bad \\ud800 half \\udcff", "decisions": ["\\udfff"]}'})
    assert result.outcome == 'ok'
    assert result.answer == {'status': 'done', 'summary': 'bad \ufffd half \ufffd', 'decisions': ['\ufffd']}
    assert json.loads((h.task_dir / 'attempt-1' / 'attempt.json').read_text())['outcome'] == 'ok'



def test_fake_codex_logs_its_end_when_a_sigterm_lands_while_it_logs(tmp_path: Path) -> None:
    """The tests read the fake's launch log as the truth about who ran: a SIGTERM arriving while the fake writes its
    line (codex-orch killed just as the fake ends by itself) must not leave the line unwritten."""
    log_path = tmp_path / LOG_FILE
    code = (
        'import json, os, signal, sys\n'
        'from tests.support import fake_codex\n'
        'log = fake_codex.Log(["exec"])\n'
        'fake_codex._install_signal_handlers(log)\n'
        'dumps = json.dumps\n'
        'def dumps_then_signal(*a, **k):\n'
        '    os.kill(os.getpid(), signal.SIGTERM)   # lands between the log\'s "written" flag and its write\n'
        '    return dumps(*a, **k)\n'
        'fake_codex.json.dumps = dumps_then_signal\n'
        'sys.exit(log.done(0))\n')
    env = {**os.environ, 'FAKE_CODEX_LOG': str(log_path), 'PYTHONPATH': str(Path(__file__).parent.parent)}
    proc = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == -15, proc.stderr   # it still dies by the signal, as the real CLI does
    (entry,) = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert entry['rc'] == 0
