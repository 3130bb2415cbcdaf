"""One task execution's answer and its verification, wherever it runs: in the run's worktree (the work step)
or in a scratch repository on a Dask worker (orch.remote.run_unit).

`Execution` is all they need — the worktree, the task directory where attempts and check logs go, the
worker's launch spec and schema, the checks and their limits — so the same code gives the same timeouts,
schema validation, retries and bounded repair rounds in both places.
"""
from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orch.adapters import git, tracing
from orch.adapters.sandbox import Sandbox
from orch.adapters.worker import run_worker
from orch.adapters.worker_types import WorkerResult, WorkerSpec
from orch.core.redact import redact_obj
from orch.core.validate import schema_errors
from orch.errors import GitError
from orch.failpoints import crash_point
from orch.runstate import state
from orch.steps.commands import CommandRun, check_attrs, ran, run_shell
from orch.steps.failure import Failed
from orch.steps.rounds import Rounds, repair_prompt, tree_digest


@dataclass(frozen=True)
class Execution:
    """What running and verifying one task execution needs, with no run or session behind it."""

    task_id: str
    task_dir: Path                 # attempts, check logs, state.json and rounds.json go here
    workdir: Path                  # the worktree the worker edits and the checks run in
    spec: WorkerSpec
    schema: dict[str, Any]
    checks: tuple[str, ...]
    repair_rounds: int
    check_timeout: float
    command_env: Mapping[str, str]
    sandbox: Sandbox | None        # where the checks run (orch.adapters.sandbox); None: as you
    log_root: Path                 # check logs are recorded relative to it
    cancel: threading.Event | None = None
    on_event: Callable[[dict[str, Any]], None] | None = None
    on_usage: Callable[[dict[str, int]], None] | None = None   # the run's budget: each attempt's usage as it ends
    budget_stop: threading.Event | None = None   # set when the run's budget is spent (run_worker's budget_stop)
    # After each worker call, before git looks at the worktree again (a remote unit: raises Failed when the worker
    # changed its repository's git config, orch.remote.run_unit).
    after_worker: Callable[[WorkerResult], None] | None = None
    # Before each worker call: raises Failed (the task's state saying why) when the run's token budget or the task's
    # max_tokens leaves no room for another turn (orch.steps.budget).
    before_turn: Callable[[], None] | None = None
    task_prompt: str = ''   # what a fresh thread is given, before a round's prompt, when the round's thread is lost


def call_worker(ex: Execution, prompt: str, resume: Rounds | None = None,
                before_fresh_start: Callable[[], None] | None = None,
                reuse_since: float | None = None, round_name: str | None = None) -> WorkerResult:
    """The worker on `prompt`: the first answer, or (resume) a round in its thread, whose turn under way
    (Rounds.turn_since) says which ended attempts may be taken instead of paying again (run_worker's reuse_since).
    A round whose thread codex no longer has goes on, once, in a fresh thread given the task's prompt first.
    round_name: what the round is, in its trace span ('answer' without `resume`)."""
    if ex.before_turn is not None:
        ex.before_turn()
    fresh = f'{ex.task_prompt}\n\n## Where the work stands\n\n{prompt}' if resume and ex.task_prompt else None
    result = traced_turn(ex.task_id, round_name or ('round' if resume else 'answer'), ex.spec, lambda spec: run_worker(
        spec, prompt, ex.task_dir, lambda answer: schema_errors(answer, ex.schema),
        on_event=ex.on_event, cancel=ex.cancel,
        resume_thread=resume.thread_id if resume else None,
        prev_cumulative=resume.cumulative if resume else None,
        recover=True, before_fresh_start=before_fresh_start,
        reuse_since=resume.turn_since if resume else reuse_since, fresh_prompt=fresh,
        budget_stop=ex.budget_stop, on_spent=ex.on_usage))
    if any(a.kind == 'fresh-thread' for a in result.attempts):
        lost = resume.thread_id if resume else None
        state.update_state(ex.task_dir, thread_restarted=f'thread {lost} was gone (codex: no rollout found); the '
                           f'round went on in a fresh thread {result.thread_id}, given the task\'s prompt again')
    if ex.after_worker is not None:
        ex.after_worker(result)
    return result


def traced_turn(task_id: str, round_name: str, spec: WorkerSpec,
                call: Callable[[WorkerSpec], WorkerResult]) -> WorkerResult:
    """A worker turn in its trace span (an agent invocation, its attempts as children), the worker given the
    span's TRACEPARENT so that Codex's own spans nest under it. Without tracing: `call(spec)`."""
    with tracing.span(f'invoke_agent {task_id}', tracing.agent_attrs(task_id, round_name, spec.model)) as traced:
        if not traced.recording:
            return call(spec)
        result = call(dataclasses.replace(spec, env={**(spec.env or os.environ), **tracing.traceparent()}))
        traced.set({'gen_ai.conversation.id': result.thread_id, 'codex_orch.outcome': result.outcome,
                    'codex_orch.attempts': len(result.attempts), **tracing.usage_attrs(result.usage)})
        if not result.ok:
            traced.set({'error.type': result.outcome})
            traced.fail(f'{result.outcome}: {result.error}')
        for attempt in result.attempts:
            tracing.past_span(f'codex exec {attempt.kind}', attempt.started_at, attempt.ended_at, {
                'codex_orch.attempt.n': attempt.n, 'codex_orch.attempt.kind': attempt.kind,
                'codex_orch.attempt.outcome': attempt.outcome, 'codex_orch.attempt.exit_code': attempt.exit_code,
                'codex_orch.attempt.recovered': attempt.recovered, 'gen_ai.conversation.id': attempt.thread_id,
                **tracing.usage_attrs(attempt.usage, prefix='codex_orch.usage.')})
        return result


def accept(ex: Execution, result: WorkerResult) -> Any:
    """The worker's valid answer, or the task's state says why there is none (and Failed is raised)."""
    task_dir, workdir = ex.task_dir, ex.workdir
    common: dict[str, Any] = {'attempts': state.attempt_count(task_dir), 'outcome': result.outcome,
                              'usage': result.usage, 'ended_at': time.time(), 'thread_id': result.thread_id}
    if result.outcome == 'interrupted':
        state.update_state(task_dir, status='pending', reason='interrupted; resume to run it again', **common)
        raise Failed('interrupted')
    if result.outcome != 'ok':
        status = 'deferred' if result.outcome == 'deferred' else 'failed'
        reason = f'{result.outcome}: {result.error}'
        state.update_state(task_dir, status=status, reason=reason, **common)
        raise Failed(reason)
    if not git.worktree_valid(workdir):
        reason = (f'workspace-lost: the worker deleted or broke its worktree {workdir}, so its work cannot be '
                  'committed; resume recreates the worktree and runs the task again')
        state.update_state(task_dir, status='failed', reason=reason, **{**common, 'outcome': 'workspace-lost'})
        Rounds.clear(task_dir)
        raise Failed(reason)
    answer = redact_obj(result.answer)   # it goes into result.json, decisions.md and the reports
    if isinstance(answer, dict) and answer.get('status') == 'blocked':
        # Its own outcome, not a failure of the worker: it says it cannot go on, and why.
        reason = f'blocked: {answer.get("summary") or "(the worker gave no reason)"}'
        state.update_state(task_dir, status='blocked', reason=reason, answer=answer, **common)
        Rounds.clear(task_dir)
        raise Failed(reason)
    return answer


def verify(ex: Execution, rounds: Rounds) -> None:
    """The task's checks, with repair rounds in the worker's own thread until they pass (bounded)."""
    if not ex.checks:
        return
    limit = ex.repair_rounds
    while True:
        if rounds.phase == 'repairing' and rounds.failure:
            fixing = CommandRun(**{k: v for k, v in rounds.failure.items() if k != 'passed'})
        else:
            runs = run_checks(ex, rounds)
            failed = next((r for r in runs if not r.passed), None)
            if failed is None:
                return
            _start_repair(ex, rounds, failed, limit)
            fixing = failed
        _repair(ex, rounds, fixing, limit)


def run_checks(ex: Execution, rounds: Rounds) -> list[CommandRun]:
    """Run the checks in order, up to the first failure; each run keeps its output in the task's directory."""
    runs: list[CommandRun] = []
    state.update_state(ex.task_dir, round=f'checks (after {rounds.repairs} repair rounds)' if rounds.repairs
                       else 'checks')
    for i, command in enumerate(ex.checks, 1):
        log = ex.task_dir / 'checks' / f'round-{rounds.repairs}' / f'check-{i}.log'
        with tracing.span(f'check {i}', check_attrs(ex.task_id, command)) as traced:
            run = run_shell(command, cwd=ex.workdir, env=ex.command_env, log_path=log, timeout=ex.check_timeout,
                            sandbox=ex.sandbox, cancel=ex.cancel, log_root=ex.log_root)
            ran(traced, run)
        runs.append(run)
        if ex.cancel is not None and ex.cancel.is_set():
            state.update_state(ex.task_dir, status='pending', reason='interrupted; resume to run it again')
            raise Failed('interrupted')
        if not run.passed:
            break
    rounds.checks = [r.to_dict() for r in runs]
    rounds.save(ex.task_dir)
    state.update_state(ex.task_dir, checks=rounds.checks)
    return runs


def _start_repair(ex: Execution, rounds: Rounds, failed: CommandRun, limit: int) -> None:
    if rounds.repairs >= limit:
        raise checks_failed(ex, rounds, failed,
                            f'after {limit} repair round{"s" if limit != 1 else ""}' if limit else 'no repair rounds')
    fingerprint = failed.fingerprint()
    if rounds.fingerprints and rounds.fingerprints[-1] == fingerprint:
        raise checks_failed(ex, rounds, failed, 'the same failure again after a repair round')
    rounds.fingerprints.append(fingerprint)
    rounds.repairs += 1
    rounds.round_record('repair', rounds.repairs, failed_check=failed.to_dict())
    rounds.phase, rounds.failure, rounds.tree_before = 'repairing', failed.to_dict(), tree_digest(ex.workdir)
    rounds.save(ex.task_dir)


def _repair(ex: Execution, rounds: Rounds, failed: CommandRun, limit: int) -> None:
    """One repair round: the worker's thread resumed with the failure; its new answer must validate too."""
    state.update_state(ex.task_dir, round=f'repair {rounds.repairs} of {limit}')
    rounds.begin_turn(ex.task_dir)
    result = call_worker(ex, repair_prompt(failed, rounds.repairs, limit), resume=rounds,
                         round_name=f'repair {rounds.repairs}')
    crash_point('after-repair-answer', ex.task_id)
    # Paid for: counted with the round's answer in one record below (a kill before it takes the ended turn again,
    # unpaid), or at once when the answer is refused.
    rounds.end_turn(result.usage)
    if not result.ok:
        rounds.save(ex.task_dir)
    answer = accept(ex, result)
    try:
        changed = tree_digest(ex.workdir) != rounds.tree_before
    except GitError:
        rounds.save(ex.task_dir)
        raise
    rounds.answer = answer
    rounds.thread_id = result.thread_id or rounds.thread_id
    rounds.cumulative = result.usage_cumulative or rounds.cumulative
    rounds.round_record('repair', rounds.repairs)['ended_at'] = time.time()
    rounds.phase, rounds.failure, rounds.tree_before = 'checking', None, None
    rounds.save(ex.task_dir)
    if not changed:
        raise checks_failed(ex, rounds, failed, 'the repair round changed nothing')


def checks_failed(ex: Execution, rounds: Rounds, failed: CommandRun, why: str) -> Failed:
    reason = f'checks failed: {failed.command} ({failed.why}); {why}'
    state.update_state(ex.task_dir, status='failed', reason=reason, ended_at=time.time(), round=None,
                       outcome='checks-failed', usage=rounds.usage, checks=rounds.checks,
                       repair_rounds=rounds.repairs, attempts=state.attempt_count(ex.task_dir),
                       rounds=rounds.history)
    Rounds.clear(ex.task_dir)   # a resume starts a fresh execution: the unverified edits are not kept
    return Failed(reason)
