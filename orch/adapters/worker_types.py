"""The worker's data: what to run (WorkerSpec), what one attempt is to run (Plan) and did
(AttemptRecord), and what a `run_worker` call returns (WorkerResult), with the usage arithmetic.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

USAGE_KEYS = ('input_tokens', 'cached_input_tokens', 'output_tokens', 'reasoning_output_tokens')


@dataclass(frozen=True)
class WorkerSpec:
    codex: tuple[str, ...]
    workdir: Path
    sandbox: str
    model: str | None
    schema_path: Path
    extra_args: tuple[str, ...] = ()
    env: Mapping[str, str] | None = None
    timeout_total: float | None = None
    timeout_idle: float | None = None
    timeout_first_event: float | None = None
    schema_retries: int = 1
    failure_retries: int = 0
    retry_backoff: float = 2.0
    # CODEX_HOME, where the worker's sub-agents leave their rollouts: their tokens are counted from there
    # (orch.adapters.subagent_usage); None: not counted
    rollouts_home: Path | None = None


@dataclass
class AttemptRecord:
    n: int
    kind: str                      # 'initial' | 'schema-retry' | 'failure-retry'
    argv: list[str]
    thread_id: str | None = None
    exit_code: int | None = None
    started_at: float = 0.0
    ended_at: float = 0.0
    duration: float = 0.0
    outcome: str = 'interrupted'
    error: str | None = None
    usage: dict[str, int] = field(default_factory=dict)              # this turn only
    usage_cumulative: dict[str, int] | None = None                   # as reported (thread total)
    validation_errors: list[str] = field(default_factory=list)
    events: int = 0
    garbage_lines: int = 0
    pid: int | None = None
    timeout: str | None = None     # which limit fired: 'total' | 'idle' | 'first-event'
    last_activity: str | None = None
    recovered: bool = False        # finished by a later run from events.jsonl (codex-orch was killed)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class WorkerResult:
    outcome: str
    answer: object | None
    error: str | None
    thread_id: str | None
    attempts: list[AttemptRecord]
    usage: dict[str, int]
    duration: float
    # The part of `usage` this call put on record (the attempts whose attempt.json it wrote). The rest was on
    # record before: attempts a killed run had ended, taken as they were, which a run's budget (counted from the
    # attempts on record when it started) already holds. None: all of `usage`.
    new_usage: dict[str, int] | None = None

    @property
    def spent_now(self) -> dict[str, int]:
        """What this call adds to what the run spent (see new_usage)."""
        return self.usage if self.new_usage is None else self.new_usage

    @property
    def ok(self) -> bool:
        return self.outcome == 'ok'

    @property
    def usage_cumulative(self) -> dict[str, int] | None:
        """The thread's usage so far, as its last attempt reported it (what a next round counts from)."""
        return next((a.usage_cumulative for a in reversed(self.attempts) if a.usage_cumulative), None)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data['attempts'] = [a.to_dict() for a in self.attempts]
        return data


def zero_usage() -> dict[str, int]:
    return dict.fromkeys(USAGE_KEYS, 0)


@dataclass
class Plan:
    """What the next attempt runs."""
    kind: str
    prompt: str
    resume_thread: str | None = None
    prev_cumulative: dict[str, int] | None = None
    call: str = ''   # the run_worker call the attempt belongs to (in launch.json: what recovery continues)


def worker_result(attempts: list[AttemptRecord], answer: object | None, duration: float,
                  recorded: int = 0) -> WorkerResult:
    """recorded: how many of the attempts (the first ones) were on record before this call."""
    last = attempts[-1]
    thread_id = next((a.thread_id for a in reversed(attempts) if a.thread_id), None)
    return WorkerResult(outcome=last.outcome, answer=answer if last.outcome == 'ok' else None,
                        error=last.error, thread_id=thread_id, attempts=attempts,
                        usage=_sum_usage(a.usage for a in attempts), duration=round(duration, 3),
                        new_usage=_sum_usage(a.usage for a in attempts[recorded:]))


def _sum_usage(usages: Iterable[dict[str, int]]) -> dict[str, int]:
    total = zero_usage()
    for usage in usages:
        for key in USAGE_KEYS:
            total[key] += int(usage.get(key, 0) or 0)
    return total
