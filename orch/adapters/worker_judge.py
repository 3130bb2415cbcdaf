"""Judging an ended attempt: its outcome from how codex ended and what it answered, and its usage.

Everything here sets fields of an AttemptRecord from the attempt's EventStream (and its
stderr.log); `orch.adapters.worker` decides, with cancel and timeouts, which of it applies.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from orch.adapters.events import EventStream, classify_failure, parse_answer
from orch.adapters.subagent_usage import descendants_usage
from orch.adapters.worker_types import USAGE_KEYS, AttemptRecord, WorkerSpec, zero_usage

STDERR_TAIL = 4096


def take_usage(record: AttemptRecord, stream: EventStream, prev: dict[str, int] | None,
               rollouts_home: Path | None = None) -> None:
    """turn.completed usage is cumulative over the thread: the attempt's own cost is the difference. With
    `rollouts_home` (CODEX_HOME) the running totals of the thread's sub-agents are in the cumulative usage too."""
    if stream.usage is None:
        return
    cumulative = {key: int(stream.usage.get(key, 0) or 0) for key in USAGE_KEYS}
    thread = stream.thread_id or record.thread_id
    if rollouts_home is not None and thread:
        children = descendants_usage(rollouts_home, thread)
        cumulative = {key: cumulative[key] + children[key] for key in USAGE_KEYS}
    base = prev or zero_usage()
    record.usage_cumulative = cumulative
    record.usage = {key: max(cumulative[key] - base.get(key, 0), 0) for key in USAGE_KEYS}


def judge_process(record: AttemptRecord, stream: EventStream, adir: Path) -> bool:
    """Outcome from how the process ended; False when it ended well enough to judge the answer."""
    if stream.turn_failed_message is not None:
        texts = [stream.turn_failed_message, *stream.error_messages]
        _set_failure(record, 'turn-failed', stream.turn_failed_message, texts)
        return True
    if record.exit_code != 0:
        tail = _stderr_tail(adir)
        detail = (stream.error_messages[-1:] or [_last_line(tail)])[0]
        message = f'codex exited with rc {record.exit_code}' + (f': {detail}' if detail else '')
        _set_failure(record, 'exit-nonzero', message, [*stream.error_messages, tail])
        return True
    if not stream.turn_completed:
        set_outcome(record, 'exit-nonzero', 'codex exited 0 but emitted no turn.completed')
        return True
    return False


def judge_answer(record: AttemptRecord, stream: EventStream,
                 validate: Callable[[object], list[str]]) -> object | None:
    text = stream.final_answer()
    if text is None:
        _invalid(record, ['the completed turn has no agent message (no final answer)'])
        return None
    try:
        answer = parse_answer(text)
    except ValueError as exc:
        _invalid(record, [str(exc)])
        return None
    problems = list(validate(answer))
    if problems:
        _invalid(record, problems)
        return None
    set_outcome(record, 'ok', None)
    return answer


def _invalid(record: AttemptRecord, problems: list[str]) -> None:
    record.validation_errors = problems
    set_outcome(record, 'invalid-output', 'invalid answer: ' + '; '.join(problems))


def _set_failure(record: AttemptRecord, outcome: str, message: str, texts: list[str]) -> None:
    deferred = any(classify_failure(t) == 'deferred' for t in texts)
    lost = outcome == 'exit-nonzero' and any(t and THREAD_LOST in t for t in texts)
    set_outcome(record, 'deferred' if deferred else 'thread-lost' if lost else outcome, message)


# What codex 0.169.0 says (rc 1) when `exec resume <thread>` names a thread it no longer has: not the model's
# failure, and resuming it again cannot help (orch.adapters.worker starts a fresh thread once).
THREAD_LOST = 'no rollout found'


def set_timeout(record: AttemptRecord, limit: str, stream: EventStream, spec: WorkerSpec) -> None:
    record.timeout = limit
    seconds = {'total': spec.timeout_total, 'idle': spec.timeout_idle,
               'first-event': spec.timeout_first_event}.get(limit)
    what = {'total': f'total timeout: still running after {seconds:g} s',
            'idle': f'idle timeout: no output for {seconds:g} s',
            'first-event': f'first-event timeout: no output within {seconds:g} s of start'}[limit]
    doing = f' (last activity: {stream.last_activity})' if stream.last_activity else ''
    set_outcome(record, 'timeout', f'{what}{doing}')


def set_outcome(record: AttemptRecord, outcome: str, error: str | None) -> None:
    record.outcome = outcome
    record.error = error


def _stderr_tail(adir: Path) -> str:
    try:
        with open(adir / 'stderr.log', 'rb') as f:
            f.seek(max(f.seek(0, os.SEEK_END) - STDERR_TAIL, 0))
            return f.read().decode('utf-8', 'replace')
    except OSError:
        return ''


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ''
