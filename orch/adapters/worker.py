"""The worker adapter: runs one task through `codex exec --json` and judges the answer.

One call of `run_worker` makes one or more *attempts*; each is one `codex exec` process with
its own directory `task_dir/attempt-<n>` (prompt.txt, events.jsonl, stderr.log,
last-message.txt, pid = the process group id and process.json = its leader's identity (pid and start
time) while it runs, attempt.json at the end). Attempts are:
- 'initial': a fresh session with the task prompt;
- 'schema-retry': `resume <thread>` with a reminder after an answer that failed validation;
- 'failure-retry': a fresh session after a transient failure (crash, failed turn, timeout).
Each attempt also writes launch.json before it starts (its kind, argv, thread, the run_worker call it
belongs to and a fingerprint of the task prompt, schema and launch parameters).

A kill of codex-orch after the worker's turn completed must not make the next run pay the model again:
`run_worker(..., recover=True)` first looks at the task's latest attempt, made for the same fingerprint.
One that never ended (the kill came before codex exited: the answer is in events.jsonl, attempt.json was
never written) is finished from its events as if it had ended normally (`recover_completed_attempt`). One
that ended (attempt.json written, but the caller never recorded its answer) is taken as it is, when the
caller vouches that no record took in any attempt launched since a moment (`reuse_since`): only the caller
knows what its records hold.

Facts this relies on (reference/codex-exec.md): `-C`/`--sandbox` must precede `resume` and
nothing is restored by resume (§4); usage is cumulative over a thread (§2.1); the npm launcher
orphans the native binary on SIGKILL, so we always signal the whole process group (§8); stdin
must be closed or codex waits for it (§8).

Nothing may outlive a worker: every child runs in its own session/process group (orch.adapters.
procgroup), which is killed on timeout, on cancel, on KeyboardInterrupt, at the end of every attempt
(leftover background processes) and when codex-orch dies. `kill_all_workers()` does the same from
another thread (the CLI's signal handler).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from orch.adapters import procgroup
from orch.adapters.codex_bin import INSTALL_HINT
from orch.adapters.events import EventStream, classify_failure, parse_answer

# die_with_parent and leader_exited are re-exported for callers that import them from here.
from orch.adapters.procgroup import KILL_GRACE, Group, die_with_parent, leader_exited  # noqa: F401
from orch.adapters.worker_stream import (
    MAX_LINE_BYTES,
    READ_CHUNK,
    Clock,
    LineSplitter,
    StdoutReader,
    consume_lines,
)
from orch.core.redact import redact
from orch.core.text import encode_utf8
from orch.failpoints import crash_point
from orch.runstate.atomic import write_json, write_text

USAGE_KEYS = ('input_tokens', 'cached_input_tokens', 'output_tokens', 'reasoning_output_tokens')
TRANSIENT = frozenset({'exit-nonzero', 'turn-failed', 'timeout'})

PROCESS_FILE = 'process.json'      # in an attempt directory while its process runs
LAUNCH_FILE = 'launch.json'        # in an attempt directory from before its process starts
ATTEMPT_FILE = 'attempt.json'      # in an attempt directory once it ended
POLL = 0.1                         # how often cancel/timeouts are checked while waiting
MAX_BACKOFF = 60.0
STDERR_TAIL = 4096


# ---------------------------------------------------------------------------------------------
# Public data

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


# ---------------------------------------------------------------------------------------------
# Shutdown: the process groups themselves are registered in procgroup.

_SHUTDOWN = threading.Event()
# Gates are killed with the workers: both are work of a run that is being stopped. Services are
# not: Services.stop() ends them after the run, each with its own grace.
_SHUTDOWN_KINDS = ('worker', 'gate')


def kill_all_workers(grace: float = KILL_GRACE) -> int:
    """Kill every live worker and gate process group (SIGTERM, grace, SIGKILL); returns how many.

    Also refuses new attempts from now on (running `run_worker` calls end 'interrupted'),
    because this is called when the whole program shuts down. `reset_worker_shutdown()` undoes it.
    """
    _SHUTDOWN.set()
    return procgroup.kill_all(grace, kinds=_SHUTDOWN_KINDS)


def reset_worker_shutdown() -> None:
    """Allow new workers again after `kill_all_workers()` (for long-lived callers and tests)."""
    _SHUTDOWN.clear()


def live_worker_pgids() -> list[int]:
    return procgroup.live_pgids(kinds=('worker',))


# ---------------------------------------------------------------------------------------------
# run_worker: the attempt loop

@dataclass
class _Plan:
    """What the next attempt runs."""
    kind: str
    prompt: str
    resume_thread: str | None = None
    prev_cumulative: dict[str, int] | None = None
    call: str = ''   # the run_worker call the attempt belongs to (in launch.json: what recovery continues)


def run_worker(spec: WorkerSpec, prompt: str, task_dir: Path, validate: Callable[[object], list[str]],
               *, on_event: Callable[[dict], None] | None = None,
               cancel: threading.Event | None = None, resume_thread: str | None = None,
               prev_cumulative: dict[str, int] | None = None, recover: bool = False,
               before_fresh_start: Callable[[], None] | None = None,
               reuse_since: float | None = None) -> WorkerResult:
    """Run the task until it yields a valid answer or the retry budget is spent.

    resume_thread: continue that Codex thread with `prompt` (a repair or review round) instead of
    starting one; prev_cumulative is the thread's usage so far, so each attempt counts only its own.

    recover: first finish an attempt that a killed run left after its turn had completed, made for this
    same prompt and spec (`recover_completed_attempt`): a valid answer is returned without launching
    codex; an invalid one is that run's invalid-output attempt, which a schema retry resumes in its
    thread as usual. Its edits are still in the worktree: a caller that discards a killed attempt's
    leftovers does it in `before_fresh_start`, called only when nothing was recovered, before the
    first launch.

    reuse_since (with recover): the caller vouches that none of its records took in an attempt launched at or
    after this time (time.time()): a kill struck after such an attempt had ended and before the caller recorded
    its answer. Then the latest attempt may also be one that ended, and is taken as it is (its attempt.json
    kept) when it was made for this same prompt and spec, it and the earlier attempts of its run_worker call
    were launched since then, its turn completed, and its outcome was ok (or invalid-output, which a schema
    retry resumes as usual) and still is, judged again from its events. Only the caller can tell that no
    record took it in: an execution a kill interrupted (orch.steps.rounds.unrecorded_since and the turn of
    a round, Rounds.turn_since).
    """
    started = time.monotonic()
    task_dir = Path(task_dir)
    budget = _Budget(spec.schema_retries, spec.failure_retries)
    found = _recover(spec, prompt, task_dir, validate, reuse_since) if recover else None
    plan: _Plan | None
    recorded = 0   # how many of the attempts were on record before this call
    if found is not None:
        attempts, answer, last, recorded = found.attempts, found.answer, found.plan, found.recorded
        for earlier in attempts:
            budget.replay(earlier, spec.schema_retries)
        plan = _next_plan(spec, prompt, last, attempts[-1], budget, cancel)
        call = last.call or os.urandom(8).hex()   # its retries continue the killed run's chain of attempts
    else:
        attempts, answer = [], None
        if before_fresh_start is not None:
            before_fresh_start()
        plan = _Plan('resume' if resume_thread else 'initial', prompt, resume_thread, prev_cumulative)
        call = os.urandom(8).hex()
    fingerprint = launch_fingerprint(spec, prompt)
    while plan is not None:
        plan.call = call
        record, answer = _run_attempt(spec, plan, task_dir, validate, on_event, cancel, fingerprint)
        attempts.append(record)
        plan = _next_plan(spec, prompt, plan, record, budget, cancel)
    return _result(attempts, answer, time.monotonic() - started, recorded)


@dataclass
class _Budget:
    schema_left: int
    failure_left: int
    failures_done: int = 0

    def replay(self, record: AttemptRecord, schema_retries: int) -> None:
        """Count an attempt a killed run made, as _next_plan did when it planned it."""
        if record.kind == 'schema-retry':
            self.schema_left = max(self.schema_left - 1, 0)
        elif record.kind in ('failure-retry', 'resume-retry'):
            self.failure_left = max(self.failure_left - 1, 0)
            self.failures_done += 1
            self.schema_left = schema_retries


def _next_plan(spec: WorkerSpec, prompt: str, plan: _Plan, record: AttemptRecord, budget: _Budget,
               cancel: threading.Event | None) -> _Plan | None:
    if record.outcome == 'ok' or _stopping(cancel):
        return None
    if record.outcome == 'invalid-output' and budget.schema_left > 0 and record.thread_id:
        budget.schema_left -= 1
        cumulative = record.usage_cumulative or plan.prev_cumulative
        return _Plan('schema-retry', reminder_prompt(record.validation_errors), record.thread_id, cumulative)
    if record.outcome in TRANSIENT and budget.failure_left > 0:
        budget.failure_left -= 1
        if not _backoff(spec.retry_backoff, budget.failures_done, cancel):
            return None
        budget.failures_done += 1
        budget.schema_left = spec.schema_retries   # a fresh session gets a fresh schema budget
        if plan.kind in ('resume', 'resume-retry') and plan.resume_thread:
            # A round continues its thread: a fresh session would not know the work it is asked to fix.
            return _Plan('resume-retry', prompt, plan.resume_thread, record.usage_cumulative or plan.prev_cumulative)
        return _Plan('failure-retry', prompt)
    return None


def _backoff(base: float, done: int, cancel: threading.Event | None) -> bool:
    """Sleep before a fresh retry; False when cancelled meanwhile."""
    delay = min(base * (2 ** done), MAX_BACKOFF)
    deadline = time.monotonic() + max(delay, 0.0)
    while not _stopping(cancel):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return True
        time.sleep(min(POLL, remaining))
    return False


def _stopping(cancel: threading.Event | None) -> bool:
    return _SHUTDOWN.is_set() or (cancel is not None and cancel.is_set())


def reminder_prompt(problems: list[str]) -> str:
    """The resume prompt after an invalid answer: quotes what was wrong, restates the contract."""
    shown = [p if len(p) <= 500 else p[:499] + '…' for p in problems[:20]]
    if len(problems) > len(shown):
        shown.append(f'... and {len(problems) - len(shown)} more')
    bullets = redact('\n'.join(f'- {p}' for p in shown)) or '- (no details)'
    return ('Your previous final answer was not accepted:\n'
            f'{bullets}\n\n'
            'Your work so far is kept; do not redo it. Reply now with ONLY a JSON object that '
            'matches the output schema exactly: no prose, no Markdown, no code fences.\n')


def _result(attempts: list[AttemptRecord], answer: object | None, duration: float,
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


# ---------------------------------------------------------------------------------------------
# One attempt

def build_argv(spec: WorkerSpec, last_message: Path, resume_thread: str | None) -> list[str]:
    """`codex exec` argv; `-C`/`--sandbox` precede `resume`, which restores none of them."""
    argv = [*spec.codex, 'exec', '--json', '--skip-git-repo-check',
            '-C', str(Path(spec.workdir).absolute()), '--sandbox', spec.sandbox,
            '--output-schema', str(Path(spec.schema_path).absolute()),
            '-o', str(Path(last_message).absolute())]
    if spec.model:
        argv += ['-m', spec.model]
    argv += list(spec.extra_args)
    if resume_thread:
        argv += ['resume', resume_thread]
    return [*argv, '-']


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


def _run_attempt(spec: WorkerSpec, plan: _Plan, task_dir: Path, validate: Callable[[object], list[str]],
                 on_event: Callable[[dict], None] | None, cancel: threading.Event | None,
                 fingerprint: str = '') -> tuple[AttemptRecord, object | None]:
    n, adir = next_attempt_dir(task_dir)
    argv = build_argv(spec, adir / 'last-message.txt', plan.resume_thread)
    record = AttemptRecord(n=n, kind=plan.kind, argv=argv, started_at=time.time(),
                           thread_id=plan.resume_thread, usage=zero_usage())
    write_text(adir / 'prompt.txt', plan.prompt)
    _save_launch(adir, plan, record, fingerprint)
    stream = EventStream()
    answer: object | None = None
    try:
        if _stopping(cancel):
            _set_outcome(record, 'interrupted', 'cancelled before start')
        else:
            answer = _launch_and_judge(spec, plan, adir, record, stream, validate, on_event, cancel)
    except KeyboardInterrupt:
        _set_outcome(record, 'interrupted', 'interrupted (KeyboardInterrupt)')
        raise
    except BaseException as exc:   # a bug (e.g. in validate): still leave a truthful attempt.json
        _set_outcome(record, 'interrupted', f'worker error: {exc!r}')
        raise
    finally:
        _finish_record(record, stream, adir)
    crash_point('after-attempt', f'{task_dir.name}/{adir.name}')   # ended and on record; its caller has not seen it
    return record, answer


def _launch_and_judge(spec: WorkerSpec, plan: _Plan, adir: Path, record: AttemptRecord, stream: EventStream,
                      validate: Callable[[object], list[str]], on_event: Callable[[dict], None] | None,
                      cancel: threading.Event | None) -> object | None:
    try:
        group = _launch(record.argv, spec, encode_utf8(plan.prompt), adir)
    except OSError as exc:
        _set_outcome(record, 'launch-error', _launch_error_text(spec.codex, exc))
        return None
    record.pid = group.pgid
    try:
        # On disk while it runs: should the watchdog fail to stop the group when codex-orch dies, a
        # later run can still kill it, after checking by the start time that the pid is still it.
        procgroup.save_identity(adir / PROCESS_FILE, group.identity)
        write_text(adir / 'pid', f'{group.pgid}\n')
        ending = _pump(group, spec, adir, stream, on_event, cancel)
    finally:
        _reap(group)   # kills leftovers; on an exception (Ctrl-C) kills the whole group first
    record.exit_code = group.proc.returncode
    _take_usage(record, stream, plan.prev_cumulative)
    return _judge(record, ending, stream, adir, validate, cancel, spec)


def _launch(argv: list[str], spec: WorkerSpec, prompt: bytes, adir: Path) -> Group:
    env = dict(spec.env) if spec.env is not None else dict(os.environ)
    with open(adir / 'stderr.log', 'wb') as stderr:
        group = procgroup.spawn(argv, kind='worker', env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=stderr, bufsize=0)
    # A thread writes the prompt so a prompt larger than the pipe buffer cannot deadlock.
    threading.Thread(target=_feed_stdin, args=(group.proc, prompt), daemon=True,
                     name=f'codex-stdin-{group.pgid}').start()
    return group


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
        identity = procgroup.load_identity(adir / PROCESS_FILE)
        if identity is not None and procgroup.kill_stale(identity):
            killed += 1
    return killed


def _feed_stdin(proc: subprocess.Popen[bytes], data: bytes) -> None:
    assert proc.stdin is not None
    view = memoryview(data)
    try:
        while view:   # a raw pipe write may be partial
            view = view[proc.stdin.write(view) or 0:]
    except (BrokenPipeError, OSError):
        pass   # the child died or does not read stdin; its exit status tells the story
    finally:
        with contextlib.suppress(OSError):
            proc.stdin.close()


def _launch_error_text(codex: tuple[str, ...], exc: OSError) -> str:
    what = 'not found' if isinstance(exc, FileNotFoundError) else (
        'not executable' if isinstance(exc, PermissionError) else f'cannot be started ({exc})')
    name = codex[0] if codex else '(empty codex command)'
    return f'codex executable {name!r} {what}; {INSTALL_HINT}'


# ---------------------------------------------------------------------------------------------
# Reading stdout with deadlines

def _pump(group: Group, spec: WorkerSpec, adir: Path, stream: EventStream,
          on_event: Callable[[dict], None] | None, cancel: threading.Event | None) -> str | None:
    """Stream stdout into events.jsonl and the EventStream until the process is done.

    Returns None when it ended by itself, 'interrupted', or 'timeout:<limit>' (the group is
    then already killed).
    """
    clock = Clock(time.monotonic(), spec.timeout_total, spec.timeout_idle, spec.timeout_first_event)
    splitter = LineSplitter(MAX_LINE_BYTES)
    with open(adir / 'events.jsonl', 'ab', buffering=0) as sink:   # unbuffered: on disk as it arrives
        def consume(chunk: bytes) -> None:
            sink.write(chunk)   # raw bytes, as they arrive: the log survives a crash of ours
            consume_lines(splitter.feed(chunk), stream, on_event)
            if stream.turn_completed:   # the answer is paid for and on disk, codex has not exited yet
                crash_point('after-turn', adir.parent.name)
        ending = StdoutReader(group.proc, clock, consume).run(lambda: _stopping(cancel))
        consume_lines(splitter.flush(), stream, on_event)
    if ending is not None:
        group.terminate()
    return ending


# ---------------------------------------------------------------------------------------------
# Ending an attempt's process group

def _reap(group: Group) -> None:
    """Kill leftovers of the group (orphaned background processes), reap and unregister it."""
    group.reap()
    if group.proc.stdout is not None:
        group.proc.stdout.close()


# ---------------------------------------------------------------------------------------------
# Judging an attempt

def _take_usage(record: AttemptRecord, stream: EventStream, prev: dict[str, int] | None) -> None:
    """turn.completed usage is cumulative over the thread: the attempt's own cost is the difference."""
    if stream.usage is None:
        return
    cumulative = {key: int(stream.usage.get(key, 0) or 0) for key in USAGE_KEYS}
    base = prev or zero_usage()
    record.usage_cumulative = cumulative
    record.usage = {key: max(cumulative[key] - base.get(key, 0), 0) for key in USAGE_KEYS}


def _judge(record: AttemptRecord, ending: str | None, stream: EventStream, adir: Path,
           validate: Callable[[object], list[str]], cancel: threading.Event | None,
           spec: WorkerSpec) -> object | None:
    """Set the attempt's outcome; return the validated answer when ok."""
    record.thread_id = stream.thread_id or record.thread_id
    if ending == 'interrupted' or (ending is None and _stopping(cancel) and not stream.turn_completed):
        _set_outcome(record, 'interrupted', 'interrupted (cancelled)')
    elif ending is not None:
        _set_timeout(record, ending.removeprefix('timeout:'), stream, spec)
    elif not _judge_process(record, stream, adir):
        return _judge_answer(record, stream, validate)
    return None


def _judge_process(record: AttemptRecord, stream: EventStream, adir: Path) -> bool:
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
        _set_outcome(record, 'exit-nonzero', 'codex exited 0 but emitted no turn.completed')
        return True
    return False


def _judge_answer(record: AttemptRecord, stream: EventStream,
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
    _set_outcome(record, 'ok', None)
    return answer


def _invalid(record: AttemptRecord, problems: list[str]) -> None:
    record.validation_errors = problems
    _set_outcome(record, 'invalid-output', 'invalid answer: ' + '; '.join(problems))


def _set_failure(record: AttemptRecord, outcome: str, message: str, texts: list[str]) -> None:
    deferred = any(classify_failure(t) == 'deferred' for t in texts)
    _set_outcome(record, 'deferred' if deferred else outcome, message)


def _set_timeout(record: AttemptRecord, limit: str, stream: EventStream, spec: WorkerSpec) -> None:
    record.timeout = limit
    seconds = {'total': spec.timeout_total, 'idle': spec.timeout_idle,
               'first-event': spec.timeout_first_event}.get(limit)
    what = {'total': f'total timeout: still running after {seconds:g} s',
            'idle': f'idle timeout: no output for {seconds:g} s',
            'first-event': f'first-event timeout: no output within {seconds:g} s of start'}[limit]
    doing = f' (last activity: {stream.last_activity})' if stream.last_activity else ''
    _set_outcome(record, 'timeout', f'{what}{doing}')


def _set_outcome(record: AttemptRecord, outcome: str, error: str | None) -> None:
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


def _finish_record(record: AttemptRecord, stream: EventStream, adir: Path, ended_at: float | None = None) -> None:
    record.ended_at = time.time() if ended_at is None else ended_at
    record.duration = round(record.ended_at - record.started_at, 3)
    record.events = stream.events
    record.garbage_lines = stream.garbage_lines
    record.thread_id = stream.thread_id or record.thread_id
    record.last_activity = stream.last_activity
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


def _save_launch(adir: Path, plan: _Plan, record: AttemptRecord, fingerprint: str) -> None:
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
    found = _recover(spec, prompt, Path(task_dir), validate, reuse_since)
    if found is None:
        return None
    return _result(found.attempts, found.answer, time.monotonic() - started, found.recorded)


@dataclass
class _Found:
    """What a killed run left of a run_worker call: its attempts, the taken one last."""
    attempts: list[AttemptRecord]
    answer: object | None          # the last attempt's answer, when valid
    plan: _Plan                    # how the last attempt was launched (what a retry continues)
    recorded: int                  # how many of the attempts were on record (attempt.json) before


def _recover(spec: WorkerSpec, prompt: str, task_dir: Path, validate: Callable[[object], list[str]],
             reuse_since: float | None = None) -> _Found | None:
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
    identity = procgroup.load_identity(latest / PROCESS_FILE)
    if identity is not None:
        procgroup.kill_stale(identity)   # between turn.completed and its exit: nothing more will come
    stream = _read_events(latest / 'events.jsonl')
    if not stream.turn_completed or stream.turn_failed_message is not None:
        return None   # not paid for, or failed: the attempt is simply lost, as before
    plan = _launch_plan(latest, launch)
    record = AttemptRecord(n=_attempt_number(latest), kind=plan.kind, argv=_str_list(launch.get('argv')),
                           thread_id=plan.resume_thread, usage=zero_usage(), recovered=True,
                           started_at=float(launch.get('started_at') or 0.0))
    pid = _read_text(latest / 'pid').strip()
    record.pid = int(pid) if pid.isdigit() else None
    _take_usage(record, stream, plan.prev_cumulative)
    record.thread_id = stream.thread_id or record.thread_id
    answer = _judge_answer(record, stream, validate)
    try:   # it ended with its last event, not with this recovery
        ended_at: float | None = max((latest / 'events.jsonl').stat().st_mtime, record.started_at)
    except OSError:
        ended_at = None
    _finish_record(record, stream, latest, ended_at)
    earlier = _earlier_attempts(task_dir, plan.call, record.n)
    return _Found([*earlier, record], answer, plan, recorded=len(earlier))


# Outcomes of an ended attempt that a resume takes instead of paying again: an answer (valid, or not, which a
# schema retry resumes). Any other outcome is what an uninterrupted run would have retried or failed on.
_REUSABLE = ('ok', 'invalid-output')


def _reuse_ended(task_dir: Path, latest: Path, launch: dict[str, Any], validate: Callable[[object], list[str]],
                 since: float) -> _Found | None:
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
    answer = _judge_answer(judged, stream, validate)
    if judged.outcome != record.outcome:
        return None   # an answer this validation judges otherwise is not taken for this call
    return _Found(attempts, answer, plan, recorded=len(attempts))


def _launch_plan(adir: Path, launch: dict[str, Any]) -> _Plan:
    """How the attempt in `adir` was launched, from its launch.json."""
    return _Plan(str(launch.get('kind') or 'initial'), _read_text(adir / 'prompt.txt'),
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
