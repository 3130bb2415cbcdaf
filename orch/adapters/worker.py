"""The worker adapter: runs one task through `codex exec --json` and judges the answer.

One call of `run_worker` makes one or more *attempts*; each is one `codex exec` process with
its own directory `task_dir/attempt-<n>` (prompt.txt, events.jsonl, stderr.log,
last-message.txt, pid = the process group id and process.json = its leader's identity (pid and start
time) while it runs, attempt.json at the end). Attempts are:
- 'initial': a fresh session with the task prompt;
- 'schema-retry': `resume <thread>` with a reminder after an answer that failed validation;
- 'failure-retry': a fresh session after a transient failure (crash, failed turn, timeout);
- 'fresh-thread': once, a fresh session when the thread a round resumes is gone ('thread-lost': codex has no
  rollout of it any more), given `fresh_prompt` (the task's prompt with the round's) instead.
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

The data is in orch.adapters.worker_types, the judging of an ended attempt in
orch.adapters.worker_judge, and attempt directories, stale attempts and recovery in
orch.adapters.worker_attempts; this module is the attempt loop and the running of one attempt.
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from orch.adapters import procgroup, procgroup_identity
from orch.adapters.codex_bin import INSTALL_HINT
from orch.adapters.events import EventStream

# die_with_parent and leader_exited are re-exported for callers that import them from here.
from orch.adapters.procgroup import KILL_GRACE, Group, die_with_parent, leader_exited  # noqa: F401

# The attempt records, recovery and the worker's data: ATTEMPT_FILE, LAUNCH_FILE, kill_stale_attempts,
# recover_completed_attempt, USAGE_KEYS, AttemptRecord, WorkerResult and WorkerSpec are re-exported
# for callers that import them from here.
from orch.adapters.worker_attempts import (  # noqa: F401
    ATTEMPT_FILE,
    LAUNCH_FILE,
    PROCESS_FILE,
    finish_record,
    kill_stale_attempts,
    launch_fingerprint,
    next_attempt_dir,
    recover_attempts,
    recover_completed_attempt,
    save_launch,
)
from orch.adapters.worker_judge import judge_answer, judge_process, set_outcome, set_timeout, take_usage
from orch.adapters.worker_stream import (
    MAX_LINE_BYTES,
    Clock,
    LineSplitter,
    RedactedLog,
    StdoutReader,
    consume_lines,
)
from orch.adapters.worker_types import (  # noqa: F401
    USAGE_KEYS,
    AttemptRecord,
    Plan,
    WorkerResult,
    WorkerSpec,
    worker_result,
    zero_usage,
)
from orch.core.redact import redact
from orch.core.text import encode_utf8
from orch.core.verdict import VERDICT_KEY, for_codex
from orch.failpoints import crash_point
from orch.runstate.atomic import write_text

TRANSIENT = frozenset({'exit-nonzero', 'turn-failed', 'timeout'})
# An attempt ended (or not started) because the run's budget was spent meanwhile (run_worker's budget_stop)
BUDGET_STOPPED = 'budget-stopped'
POLL = 0.1                         # how often cancel/timeouts are checked while waiting
MAX_BACKOFF = 60.0


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

def run_worker(spec: WorkerSpec, prompt: str, task_dir: Path, validate: Callable[[object], list[str]],
               *, on_event: Callable[[dict], None] | None = None,
               cancel: threading.Event | None = None, resume_thread: str | None = None,
               prev_cumulative: dict[str, int] | None = None, recover: bool = False,
               before_fresh_start: Callable[[], None] | None = None,
               reuse_since: float | None = None, fresh_prompt: str | None = None,
               budget_stop: threading.Event | None = None,
               on_spent: Callable[[dict[str, int]], None] | None = None) -> WorkerResult:
    """Run the task until it yields a valid answer or the retry budget is spent.

    budget_stop: set when the run's budget is spent: an attempt whose turn has not completed yet is ended at once
    (its process group terminated) and one not started yet is not started; either ends the call with outcome
    BUDGET_STOPPED. on_spent: each attempt's usage as soon as the attempt ended (those this call runs, not the
    ones it took from the record), so that a budget sees a turn's tokens before the next attempt starts.

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

    fresh_prompt (with resume_thread): what a fresh thread is given, once, when the resumed one is gone.
    """
    started = time.monotonic()
    task_dir = Path(task_dir)
    budget = _Budget(spec.schema_retries, spec.failure_retries, fresh_prompt)
    found = recover_attempts(spec, prompt, task_dir, validate, reuse_since) if recover else None
    plan: Plan | None
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
        plan = Plan('resume' if resume_thread else 'initial', prompt, resume_thread, prev_cumulative)
        call = os.urandom(8).hex()
    fingerprint = launch_fingerprint(spec, prompt)
    while plan is not None:
        plan.call = call
        record, answer = _run_attempt(spec, plan, task_dir, validate, on_event, (cancel, budget_stop), fingerprint)
        attempts.append(record)
        if on_spent is not None and record.usage:
            on_spent(record.usage)
        plan = _next_plan(spec, prompt, plan, record, budget, cancel)
    return worker_result(attempts, answer, time.monotonic() - started, recorded)


@dataclass
class _Budget:
    schema_left: int
    failure_left: int
    fresh_prompt: str | None = None   # for a fresh thread when the resumed one is lost; None: used, or none
    fresh_used: str | None = None     # that prompt once used: a fresh retry of the fresh thread is given it too
    failures_done: int = 0

    def replay(self, record: AttemptRecord, schema_retries: int) -> None:
        """Count an attempt a killed run made, as _next_plan did when it planned it."""
        if record.kind == 'fresh-thread':
            self.fresh_used, self.fresh_prompt = self.fresh_prompt, None
            self.schema_left = schema_retries
        elif record.kind == 'schema-retry':
            self.schema_left = max(self.schema_left - 1, 0)
        elif record.kind in ('failure-retry', 'resume-retry'):
            self.failure_left = max(self.failure_left - 1, 0)
            self.failures_done += 1
            self.schema_left = schema_retries


def _next_plan(spec: WorkerSpec, prompt: str, plan: Plan, record: AttemptRecord, budget: _Budget,
               cancel: threading.Event | None) -> Plan | None:
    if record.outcome == 'ok' or _stopping(cancel):
        return None
    if record.outcome == 'thread-lost' and budget.fresh_prompt is not None and plan.resume_thread:
        fresh = budget.fresh_used = budget.fresh_prompt
        budget.fresh_prompt = None
        budget.schema_left = spec.schema_retries
        return Plan('fresh-thread', fresh)
    if record.outcome == 'invalid-output' and budget.schema_left > 0 and record.thread_id:
        budget.schema_left -= 1
        cumulative = record.usage_cumulative or plan.prev_cumulative
        return Plan('schema-retry', reminder_prompt(record.validation_errors), record.thread_id, cumulative)
    if record.outcome in TRANSIENT and budget.failure_left > 0:
        budget.failure_left -= 1
        if not _backoff(spec.retry_backoff, budget.failures_done, cancel):
            return None
        budget.failures_done += 1
        budget.schema_left = spec.schema_retries   # a fresh session gets a fresh schema budget
        if plan.kind in ('resume', 'resume-retry') and plan.resume_thread:
            # A round continues its thread: a fresh session would not know the work it is asked to fix.
            return Plan('resume-retry', prompt, plan.resume_thread, record.usage_cumulative or plan.prev_cumulative)
        return Plan('failure-retry', budget.fresh_used or prompt)
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


# ---------------------------------------------------------------------------------------------
# One attempt

def build_argv(spec: WorkerSpec, last_message: Path, resume_thread: str | None,
               schema_path: Path | None = None) -> list[str]:
    """`codex exec` argv; `-C`/`--sandbox` precede `resume`, which restores none of them."""
    argv = [*spec.codex, 'exec', '--json', '--skip-git-repo-check',
            '-C', str(Path(spec.workdir).absolute()), '--sandbox', spec.sandbox,
            '--output-schema', str(Path(schema_path or spec.schema_path).absolute()),
            '-o', str(Path(last_message).absolute())]
    if spec.model:
        argv += ['-m', spec.model]
    argv += list(spec.extra_args)
    if resume_thread:
        argv += ['resume', resume_thread]
    return [*argv, '-']


def codex_schema(schema_path: Path, adir: Path) -> Path:
    """The schema file codex is given: the role's, or (when it carries codex-orch's verdict annotation, which
    Codex's strict structured output would refuse) a copy without it, in the attempt's directory."""
    try:
        schema = json.loads(Path(schema_path).read_text(encoding='utf-8'))
    except (OSError, ValueError):
        return schema_path   # codex reports it; the role's schemas were checked at load
    if not isinstance(schema, dict) or VERDICT_KEY not in schema:
        return schema_path
    derived = adir / 'output-schema.json'
    write_text(derived, json.dumps(for_codex(schema), indent=2) + '\n')
    return derived


Stops = tuple[threading.Event | None, threading.Event | None]   # (cancel, budget_stop), see run_worker


def _run_attempt(spec: WorkerSpec, plan: Plan, task_dir: Path, validate: Callable[[object], list[str]],
                 on_event: Callable[[dict], None] | None, stops: Stops,
                 fingerprint: str = '') -> tuple[AttemptRecord, object | None]:
    cancel, budget_stop = stops
    n, adir = next_attempt_dir(task_dir)
    argv = build_argv(spec, adir / 'last-message.txt', plan.resume_thread, codex_schema(spec.schema_path, adir))
    record = AttemptRecord(n=n, kind=plan.kind, argv=argv, started_at=time.time(),
                           thread_id=plan.resume_thread, usage=zero_usage())
    write_text(adir / 'prompt.txt', redact(plan.prompt))
    save_launch(adir, plan, record, fingerprint)
    stream = EventStream()
    answer: object | None = None
    try:
        if _stopping(cancel):
            set_outcome(record, 'interrupted', 'cancelled before start')
        elif budget_stop is not None and budget_stop.is_set():
            set_outcome(record, BUDGET_STOPPED, "not started: the run's budget is spent")
        else:
            answer = _launch_and_judge(spec, plan, adir, record, stream, validate, on_event, stops)
    except KeyboardInterrupt:
        set_outcome(record, 'interrupted', 'interrupted (KeyboardInterrupt)')
        raise
    except BaseException as exc:   # a bug (e.g. in validate): still leave a truthful attempt.json
        set_outcome(record, 'interrupted', f'worker error: {exc!r}')
        raise
    finally:
        finish_record(record, stream, adir)
    crash_point('after-attempt', f'{task_dir.name}/{adir.name}')   # ended and on record; its caller has not seen it
    return record, answer


def _launch_and_judge(spec: WorkerSpec, plan: Plan, adir: Path, record: AttemptRecord, stream: EventStream,
                      validate: Callable[[object], list[str]], on_event: Callable[[dict], None] | None,
                      stops: Stops) -> object | None:
    cancel = stops[0]
    try:
        group = _launch(record.argv, spec, encode_utf8(plan.prompt), adir)
    except OSError as exc:
        set_outcome(record, 'launch-error', _launch_error_text(spec.codex, exc))
        return None
    record.pid = group.pgid
    try:
        # On disk while it runs: should the watchdog fail to stop the group when codex-orch dies, a
        # later run can still kill it, after checking by the start time that the pid is still it.
        procgroup_identity.save_identity(adir / PROCESS_FILE, group.identity)
        write_text(adir / 'pid', f'{group.pgid}\n', durable=False)   # (not synced either: no process outlives a reboot)
        ending = _pump(group, spec, adir, stream, on_event, stops)
    finally:
        _reap(group)   # kills leftovers; on an exception (Ctrl-C) kills the whole group first
    record.exit_code = group.proc.returncode
    take_usage(record, stream, plan.prev_cumulative, spec.rollouts_home)
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
          on_event: Callable[[dict], None] | None, stops: Stops) -> str | None:
    """Stream stdout into events.jsonl and the EventStream until the process is done.

    Returns None when it ended by itself, 'interrupted', 'budget' (the run's budget was spent before its turn
    completed) or 'timeout:<limit>' (the group is then already killed).
    """
    cancel, budget_stop = stops

    def stopping() -> bool:   # a turn that completed is paid for: it is let finish whatever the budget says
        return _stopping(cancel) or (budget_stop is not None and budget_stop.is_set() and not stream.turn_completed)

    clock = Clock(time.monotonic(), spec.timeout_total, spec.timeout_idle, spec.timeout_first_event)
    splitter = LineSplitter(MAX_LINE_BYTES)
    with open(adir / 'events.jsonl', 'ab', buffering=0) as sink:   # unbuffered: on disk as it arrives
        log = RedactedLog(sink)
        def consume(chunk: bytes) -> None:
            # each line as it arrives, redacted: the log survives a crash of ours and holds no secret
            consume_lines(log.tee(splitter.feed(chunk)), stream, on_event)
            if stream.turn_completed:   # the answer is paid for and on disk, codex has not exited yet
                crash_point('after-turn', adir.parent.name)
        ending = StdoutReader(group.proc, clock, consume).run(stopping)
        consume_lines(log.tee(splitter.flush()), stream, on_event)
    if ending == 'interrupted' and not _stopping(cancel):
        ending = 'budget'
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
# Judging an attempt (what does not depend on cancel and timeouts is in worker_judge)

def _judge(record: AttemptRecord, ending: str | None, stream: EventStream, adir: Path,
           validate: Callable[[object], list[str]], cancel: threading.Event | None,
           spec: WorkerSpec) -> object | None:
    """Set the attempt's outcome; return the validated answer when ok."""
    record.thread_id = stream.thread_id or record.thread_id
    if ending == 'interrupted' or (ending is None and _stopping(cancel) and not stream.turn_completed):
        set_outcome(record, 'interrupted', 'interrupted (cancelled)')
    elif ending == 'budget':
        set_outcome(record, BUDGET_STOPPED, "stopped mid-turn: the run's budget was spent meanwhile")
    elif ending is not None:
        set_timeout(record, ending.removeprefix('timeout:'), stream, spec)
    elif not judge_process(record, stream, adir):
        return judge_answer(record, stream, validate)
    return None
