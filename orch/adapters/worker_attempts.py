"""An attempt's directory on disk, and what a later run does with the attempts a killed one left.

`task_dir/attempt-<n>` holds prompt.txt, events.jsonl, stderr.log, last-message.txt (all redacted), launch.json
(from before the process starts), pid and process.json (while it runs) and attempt.json (once it
ended); see orch.adapters.worker. This module makes the directories, writes launch.json and
attempt.json, kills the process groups of attempts that never ended, and recovers the attempts a killed
codex-orch left after a turn had completed: one that never ended, finished from its events, or one that
ended but whose answer its caller never recorded (reuse_since).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orch.adapters import procgroup_identity
from orch.adapters.events import EventStream
from orch.adapters.worker_judge import judge_answer, take_usage
from orch.adapters.worker_stream import MAX_LINE_BYTES, READ_CHUNK, LineSplitter, consume_lines
from orch.adapters.worker_types import (
    USAGE_KEYS,
    AttemptRecord,
    Plan,
    WorkerResult,
    WorkerSpec,
    worker_result,
    zero_usage,
)
from orch.runstate.atomic import redact_file, write_json

PROCESS_FILE = 'process.json'      # in an attempt directory while its process runs
LAUNCH_FILE = 'launch.json'        # in an attempt directory from before its process starts
ATTEMPT_FILE = 'attempt.json'      # in an attempt directory once it ended


# ---------------------------------------------------------------------------------------------
# Attempt directories

def next_attempt_dir(task_dir: Path) -> tuple[int, Path]:
    """`attempt-<n>` with n one above the highest existing one (earlier runs are kept)."""
    highest = 0
    if task_dir.is_dir():
        for entry in task_dir.iterdir():
            suffix = entry.name.removeprefix('attempt-')
            if entry.name.startswith('attempt-') and suffix.isdigit():
                highest = max(highest, int(suffix))
    for n in range(highest + 1, highest + 1000):
        path = task_dir / f'attempt-{n}'
        try:
            path.mkdir(parents=True)   # exclusive: two workers never share a directory
            return n, path
        except FileExistsError:
            continue
    raise RuntimeError(f'cannot create an attempt directory under {task_dir}')


def kill_stale_attempts(task_dir: Path) -> int:
    """Kill process groups of attempts that never finished (a previous codex-orch was killed).

    An attempt records its leader's identity in `attempt-<n>/process.json` at launch and writes
    `attempt.json` at the end; without attempt.json the group may be an orphan. It is killed only
    when its leader still has the recorded start time: a pid alone may have been reused by anyone
    since, so an attempt from before process.json existed (only `pid`) is left alone. Returns how
    many groups were killed.
    """
    killed = 0
    for adir in Path(task_dir).glob('attempt-*'):
        if (adir / ATTEMPT_FILE).exists():
            continue
        identity = procgroup_identity.load_identity(adir / PROCESS_FILE)
        if identity is not None and procgroup_identity.kill_stale(identity):
            killed += 1
        redact_logs(adir)   # its codex is gone: what it wrote is redacted as an ended one's is
    return killed


def redact_logs(adir: Path) -> None:
    """The logs codex itself wrote in an attempt directory, redacted once it ended (events.jsonl was, line by
    line, as it came)."""
    for name in ('stderr.log', 'last-message.txt'):
        redact_file(adir / name)


def finish_record(record: AttemptRecord, stream: EventStream, adir: Path, ended_at: float | None = None) -> None:
    record.ended_at = time.time() if ended_at is None else ended_at
    record.duration = round(record.ended_at - record.started_at, 3)
    record.events = stream.events
    record.garbage_lines = stream.garbage_lines
    record.thread_id = stream.thread_id or record.thread_id
    record.last_activity = stream.last_activity
    redact_logs(adir)
    write_json(adir / ATTEMPT_FILE, record.to_dict())


# ---------------------------------------------------------------------------------------------
# Recovering an attempt that a killed codex-orch left after its turn had completed

def launch_fingerprint(spec: WorkerSpec, prompt: str) -> str:
    """What an attempt's answer depends on: the prompt, the schema's content and how codex is launched.

    An attempt is recovered only for a run_worker call with the same fingerprint, so an answer is
    never taken for a prompt, schema, model, sandbox or worktree it was not given.
    """
    try:
        schema = hashlib.sha256(Path(spec.schema_path).read_bytes()).hexdigest()
    except OSError:
        schema = None
    data = {'prompt': prompt, 'schema': schema, 'codex': list(spec.codex),
            'workdir': str(Path(spec.workdir).absolute()), 'sandbox': spec.sandbox, 'model': spec.model,
            'extra_args': list(spec.extra_args)}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode('ascii')).hexdigest()


def save_launch(adir: Path, plan: Plan, record: AttemptRecord, fingerprint: str) -> None:
    write_json(adir / LAUNCH_FILE, {
        'n': record.n, 'kind': plan.kind, 'argv': record.argv, 'call': plan.call, 'fingerprint': fingerprint,
        'resume_thread': plan.resume_thread, 'prev_cumulative': plan.prev_cumulative,
        'started_at': record.started_at})


def recover_completed_attempt(spec: WorkerSpec, prompt: str, task_dir: Path,
                              validate: Callable[[object], list[str]],
                              reuse_since: float | None = None) -> WorkerResult | None:
    """Finish the attempt a killed codex-orch left after its worker's turn had completed, or None.

    The attempt must be the task's latest (`attempt-<n>` with the highest n), have no attempt.json (it
    never ended), have been launched for this prompt and spec (launch.json's fingerprint), and its
    events.jsonl must hold a completed turn (turn.completed, no turn.failed). Its process group is
    killed if it still lives; its answer (the last agent_message of that turn) is parsed and validated,
    its usage taken, and its attempt.json written with `recovered: true`, exactly as if it had ended by
    itself. The result has the outcome 'ok' with the answer, or 'invalid-output' (`run_worker` with
    `recover=True` then resumes its thread with a schema retry); the attempts the same killed run made
    before it are included, so usage and attempts add up as in an uninterrupted run.

    reuse_since: the latest attempt may also be one that ended, taken as it is (see `run_worker`).
    """
    started = time.monotonic()
    found = recover_attempts(spec, prompt, Path(task_dir), validate, reuse_since)
    if found is None:
        return None
    return worker_result(found.attempts, found.answer, time.monotonic() - started, found.recorded)


@dataclass
class Found:
    """What a killed run left of a run_worker call: its attempts, the taken one last."""
    attempts: list[AttemptRecord]
    answer: object | None          # the last attempt's answer, when valid
    plan: Plan                    # how the last attempt was launched (what a retry continues)
    recorded: int                  # how many of the attempts were on record (attempt.json) before


def recover_attempts(spec: WorkerSpec, prompt: str, task_dir: Path, validate: Callable[[object], list[str]],
                     reuse_since: float | None = None) -> Found | None:
    """The killed run's attempts of a call for this prompt and spec, ending with a completed turn, or None."""
    latest = _latest_attempt_dir(task_dir)
    if latest is None:
        return None
    ended = (latest / ATTEMPT_FILE).exists()
    if ended and reuse_since is None:
        return None
    launch = _read_json(latest / LAUNCH_FILE)
    if launch is None or launch.get('fingerprint') != launch_fingerprint(spec, prompt):
        return None
    if ended:
        assert reuse_since is not None
        return _reuse_ended(task_dir, latest, launch, validate, reuse_since)
    identity = procgroup_identity.load_identity(latest / PROCESS_FILE)
    if identity is not None:
        procgroup_identity.kill_stale(identity)   # between turn.completed and its exit: nothing more will come
    stream = _read_events(latest / 'events.jsonl')
    if not stream.turn_completed or stream.turn_failed_message is not None:
        return None   # not paid for, or failed: the attempt is simply lost, as before
    plan = _launch_plan(latest, launch)
    record = AttemptRecord(n=_attempt_number(latest), kind=plan.kind, argv=_str_list(launch.get('argv')),
                           thread_id=plan.resume_thread, usage=zero_usage(), recovered=True,
                           started_at=float(launch.get('started_at') or 0.0))
    pid = _read_text(latest / 'pid').strip()
    record.pid = int(pid) if pid.isdigit() else None
    take_usage(record, stream, plan.prev_cumulative, spec.rollouts_home)
    record.thread_id = stream.thread_id or record.thread_id
    answer = judge_answer(record, stream, validate)
    try:   # it ended with its last event, not with this recovery
        ended_at: float | None = max((latest / 'events.jsonl').stat().st_mtime, record.started_at)
    except OSError:
        ended_at = None
    finish_record(record, stream, latest, ended_at)
    earlier = _earlier_attempts(task_dir, plan.call, record.n)
    return Found([*earlier, record], answer, plan, recorded=len(earlier))


# Outcomes of an ended attempt that a resume takes instead of paying again: an answer (valid, or not, which a
# schema retry resumes). Any other outcome is what an uninterrupted run would have retried or failed on.
_REUSABLE = ('ok', 'invalid-output')


def _reuse_ended(task_dir: Path, latest: Path, launch: dict[str, Any], validate: Callable[[object], list[str]],
                 since: float) -> Found | None:
    """The ended attempt `latest` (launched for this fingerprint) and its call's earlier ones, taken as they are
    recorded, when they all were launched since `since` and its completed turn still judges as it was recorded."""
    record = _load_record(latest)
    if record is None or record.outcome not in _REUSABLE:
        return None
    plan = _launch_plan(latest, launch)
    attempts = [*_earlier_attempts(task_dir, plan.call, record.n), record]
    if any(a.started_at < since for a in attempts):
        return None   # its call began before the caller's turn did: another turn's, which a record may hold
    stream = _read_events(latest / 'events.jsonl')
    if not stream.turn_completed or stream.turn_failed_message is not None:
        return None
    judged = AttemptRecord(n=record.n, kind=record.kind, argv=[])
    answer = judge_answer(judged, stream, validate)
    if judged.outcome != record.outcome:
        return None   # an answer this validation judges otherwise is not taken for this call
    return Found(attempts, answer, plan, recorded=len(attempts))


def _launch_plan(adir: Path, launch: dict[str, Any]) -> Plan:
    """How the attempt in `adir` was launched, from its launch.json."""
    return Plan(str(launch.get('kind') or 'initial'), _read_text(adir / 'prompt.txt'),
                 _str(launch.get('resume_thread')), _usage_or_none(launch.get('prev_cumulative')),
                 _str(launch.get('call')) or '')


def _load_record(adir: Path) -> AttemptRecord | None:
    """The attempt as its attempt.json recorded it, or None."""
    data = _read_json(adir / ATTEMPT_FILE)
    if data is None:
        return None
    known = {k: v for k, v in data.items() if k in AttemptRecord.__dataclass_fields__}
    try:
        return AttemptRecord(**known)
    except TypeError:
        return None


def _latest_attempt_dir(task_dir: Path) -> Path | None:
    numbered = [(_attempt_number(p), p) for p in task_dir.glob('attempt-*') if p.is_dir()]
    numbered = [(n, p) for n, p in numbered if n > 0]
    return max(numbered)[1] if numbered else None


def _attempt_number(adir: Path) -> int:
    suffix = adir.name.removeprefix('attempt-')
    return int(suffix) if suffix.isdigit() else 0


def _earlier_attempts(task_dir: Path, call: str, before: int) -> list[AttemptRecord]:
    """The ended attempts of run_worker call `call` numbered below `before`, in order."""
    if not call:
        return []
    found: list[AttemptRecord] = []
    for adir in sorted(task_dir.glob('attempt-*'), key=_attempt_number):
        n = _attempt_number(adir)
        if not 0 < n < before or (_read_json(adir / LAUNCH_FILE) or {}).get('call') != call:
            continue
        record = _load_record(adir)
        if record is not None:
            found.append(record)
    return found


def _read_events(path: Path) -> EventStream:
    """An EventStream fed from a saved events.jsonl, read in chunks (memory stays flat)."""
    stream = EventStream()
    splitter = LineSplitter(MAX_LINE_BYTES)
    with contextlib.suppress(OSError), open(path, 'rb') as f:
        while chunk := f.read(READ_CHUNK):
            consume_lines(splitter.feed(chunk), stream, None)
    consume_lines(splitter.flush(), stream, None)
    return stream


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding='utf-8'))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding='utf-8', errors='replace')
    except OSError:
        return ''


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _str_list(value: object) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _usage_or_none(value: object) -> dict[str, int] | None:
    if not isinstance(value, dict):
        return None
    return {key: int(value.get(key, 0) or 0) for key in USAGE_KEYS}
