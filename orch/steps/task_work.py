"""What a task's work step runs on, and the one interface of its two executions.

`TaskWork` is one execution of a task's work step; its `execution` says where the worker part runs: here
(orch.steps.work.LocalExecution) or on a Dask cluster (orch.steps.remote_work.DaskExecution). Both implement
`WorkExecution`; what follows the answer (its rounds, the commit, the landing, result.json) is the same code for
both (orch.steps.finish), and calls a worker only through `call_worker` and `call_turn` here.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

from orch.adapters import git
from orch.adapters.codex_bin import find_codex
from orch.adapters.worker_env import codex_home, worker_codex_args
from orch.adapters.worker_types import WorkerResult, WorkerSpec
from orch.core.compile import Step
from orch.core.plan import Task
from orch.engine.inputs import RunInputs
from orch.engine.session import Session
from orch.errors import GitError
from orch.runstate import state
from orch.steps import budget, checkout, git_seal, verify
from orch.steps.commands import command_env
from orch.steps.failure import fail
from orch.steps.rounds import Rounds
from orch.steps.sandboxing import role_sandbox
from orch.steps.worktree import head_moved, worktree_lock


class WorkExecution(Protocol):
    """What differs between a task's work run here and on a Dask cluster."""

    def run(self, work: TaskWork) -> None:
        """The task's worker part, through the commit and result.json: here its first answer (or the rounds a kill
        interrupted), its rounds and the commit; on Dask the unit submitted (or the outcome a killed coordinator
        had received) and its outcome applied."""

    def round(self, work: TaskWork, prompt: str, rounds: Rounds) -> WorkerResult:
        """A round in the task's own thread (a conflict or a review round)."""

    def turn(self, work: TaskWork, spec: WorkerSpec, schema: dict[str, Any], prompt: str, thread: str | None,
             prev_cumulative: dict[str, int] | None, owner: Task, reuse_since: float | None) -> WorkerResult:
        """One resumed turn of `owner`'s thread (a reviewed task's fix), its changes left in `work`'s worktree."""


@dataclass(frozen=True)
class TaskWork:
    """One execution of a task's work step: what it runs on and where it records."""

    rt: RunInputs
    session: Session
    step: Step
    task: Task
    task_dir: Path
    result_path: Path
    digest: str
    workdir: Path                   # where its worker works: its private checkout, or (per-task) its worktree
    branch: str | None              # the branch its commits go on in `workdir` (per-task); None: detached
    run_branch: str | None          # shared mode: the run's branch, where its commits land (orch.steps.landing)
    checks: tuple[str, ...]         # the role's (with the defaults') and the task's own, in that order
    execution: WorkExecution        # where its worker part runs: here (orch.steps.work) or on Dask (remote_work)

    @property
    def shared(self) -> bool:
        return self.run_branch is not None

    @cached_property
    def ex(self) -> verify.Execution:
        """What the answer and its verification need (the same on a Dask worker, see orch.remote)."""
        rt, session, role = self.rt, self.session, self.rt.role(self.task.role)
        env = command_env(rt, self.task.id)
        spec = worker_spec(self)

        def after_worker(result: WorkerResult) -> None:
            git_seal.check(session, self.task_dir, self.workdir)
            budget.after_turn(session, self.task_dir, result)

        return verify.Execution(
            task_id=self.task.id, task_dir=self.task_dir, workdir=self.workdir, spec=spec,
            schema=rt.schema(self.step.input('schema')), checks=self.checks, repair_rounds=role.repair_rounds,
            check_timeout=role.check_timeout, command_env=env, log_root=rt.repo,
            sandbox=role_sandbox(rt, self.task.role, env) if self.checks else None,
            cancel=session.cancel, on_event=session.on_worker_event(self.task.id),
            on_usage=budget.note_usage(session, self.task.id, spec.model), budget_stop=session.budget.stop,
            after_worker=after_worker,
            before_turn=lambda: budget.before_turn(session, self.task, self.task_dir),
            task_prompt=rt.path(self.step.input('prompt')).read_text(encoding='utf-8'))


def worker_spec(work: TaskWork) -> WorkerSpec:
    """How Codex is launched: model, sandbox and the codex command from the rule's params, limits from the role."""
    rt, params = work.rt, work.step.params
    role = rt.role(work.task.role)
    binary, *extra = json.loads(params['codex_args'])
    env = {**os.environ, **rt.config.codex.env}
    return WorkerSpec(
        codex=(find_codex(binary, rt.repo) or binary,), workdir=work.workdir, sandbox=params['sandbox'],
        model=params['model'] or None, schema_path=rt.path(work.step.input('schema')).resolve(),
        # codex itself keeps its environment (its provider key); the shells it runs for the worker do not get
        # secret-like variables (Codex's shell_environment_policy), unless `codex.pass_env` names them.
        extra_args=(*extra, *worker_codex_args(rt.config, env)), env=env, timeout_total=role.timeout_total,
        timeout_idle=role.timeout_idle, timeout_first_event=role.timeout_first_event,
        schema_retries=role.schema_retries, failure_retries=role.failure_retries,
        retry_backoff=role.retry_backoff, rollouts_home=codex_home(env))


def call_worker(work: TaskWork, prompt: str, rounds: Rounds) -> WorkerResult:
    """A round in the task's own thread, where its execution runs it."""
    return work.execution.round(work, prompt, rounds)


def call_turn(work: TaskWork, spec: WorkerSpec, schema: dict[str, Any], prompt: str, thread: str | None,
              prev_cumulative: dict[str, int] | None, owner: Task, reuse_since: float | None = None) -> WorkerResult:
    """One resumed turn of `owner`'s Codex thread, in the worktree of `work`: here, or (executor dask) on the
    Dask worker that holds the thread, its changes brought back into the worktree uncommitted. reuse_since: see
    run_worker (here only). Like every turn, not started when a budget is spent, and its task deferred when the
    run's budget stopped it (orch.steps.budget)."""
    budget.before_turn(work.session, work.task, work.task_dir)
    result = work.execution.turn(work, spec, schema, prompt, thread, prev_cumulative, owner, reuse_since)
    budget.after_turn(work.session, work.task_dir, result)
    return result


def accept(work: TaskWork, result: WorkerResult) -> Any:
    return verify.accept(work.ex, result)


def rerun_note(previous: dict[str, Any], result: dict[str, Any] | None) -> str:
    """Appended to the prompt of a task that ran before: why it runs again, and what its last run left."""
    if not previous.get('status'):
        return ''
    lines = ['', '', '## This task ran before', '']
    redo = state.redo_requested(previous)
    if redo:
        lines.append('A fresh execution of this task was asked for (`codex-orch redo`): nothing it is made from '
                     'changed, but its previous result is not to be taken as it is.')
    evidence = previous.get('gate_evidence') if previous.get('outcome') == 'gate-blamed' else None
    if isinstance(evidence, dict):   # its committed work broke another task's gate (orch.steps.gate_blame)
        tail = str(evidence.get('tail') or '').strip() or '(it printed nothing)'
        lines.append(f'Its previous result, committed in the worktree, breaks the gate `{evidence.get("command")}` '
                     f'(run for task {evidence.get("for")}; first failing at its commit '
                     f'{str(evidence.get("commit"))[:12]}). The last lines of its output:\n\n```\n{tail}\n```\n\n'
                     'Change that work so the gate passes; do not weaken or delete the gate\'s command.')
    elif previous.get('status') in ('failed', 'blocked', 'deferred') and previous.get('reason'):
        lines.append(f'Its previous execution ended {previous["status"]}: {previous["reason"]}. Its uncommitted '
                     'changes were discarded; the worktree holds what was committed.')
    elif result and result.get('commit'):
        files = ', '.join(result.get('files_changed') or []) or '(none)'
        then = ('Do the task again: check that work against the task, and change what falls short' if redo else
                'Its inputs changed since: update that work to match the task as it is now')
        lines.append(f'Its previous result is already committed in the worktree (commit {result["commit"][:12]}, '
                     f'files: {files}). {then}; do not add a second copy of it.')
    elif not redo:
        return ''
    return '\n'.join(lines) + '\n'


def ensure_workdir(work: TaskWork) -> bool:
    """Shared mode: the task's private checkout (orch.steps.checkout); True when it was made just now. Per-task: a
    worktree deleted behind codex-orch's back (by hand, or by an earlier worker) is re-attached to its branch before
    the task starts: the work committed so far lives on the branch, so nothing is lost."""
    if work.run_branch is not None:
        return checkout.ensure(work.rt, work.task_dir, work.workdir, work.run_branch)
    rt, workdir, branch = work.rt, work.workdir, work.branch
    assert branch is not None
    if git.worktree_valid(workdir):
        try:
            git.pin(workdir)   # from now on its .git is not read (a resume: right after the lookup above)
        except GitError as exc:
            raise fail(work.task_dir, f'the worktree {workdir} cannot be used: {exc}') from None
        on, head = git.head_state(workdir)
        if on != branch:   # a worker with full access switched it: later commits would go elsewhere
            raise fail(work.task_dir, f'the worktree {workdir} is on {on or "a detached HEAD"}, not on the run\'s '
                                      f'branch {branch}; check out {branch} there (git -C {workdir} checkout '
                                      f'{branch}), then resume')
        _refuse_moved_head(work, head)
        return False
    try:
        git.rev_parse(rt.repo, f'refs/heads/{branch}')
    except GitError:
        raise fail(work.task_dir, f'the worktree {workdir} is missing and its branch {branch} is gone; '
                                  'run resume to recreate them') from None
    try:
        with worktree_lock:
            git.ensure_worktree(rt.repo, workdir, branch, rt.run.base_commit)
    except GitError as exc:
        raise fail(work.task_dir, f'the worktree {workdir} is missing or broken and cannot be recreated '
                                  f'(move the directory away, then resume): {exc}') from None
    return False


def _refuse_moved_head(work: TaskWork, head: str) -> None:
    """Per-task mode, before the worker is paid for: the worktree's HEAD is where codex-orch left it (an earlier
    worker's own commit, reset or rebase is never built on). A record kept by none (a run started before it was)
    begins here."""
    if checkout.expected_head(work.task_dir) is None:
        checkout.moved(work.task_dir, head)
        return
    moved = head_moved(work.rt.repo, work.workdir, work.task_dir, head)
    if moved:
        raise fail(work.task_dir, f'its worktree is not where codex-orch left it: {moved}')


def author_of(text: str | None) -> tuple[str, str] | None:
    if not text:
        return None
    name, _, email = text.partition(' <')
    return name.strip(), email.rstrip('>').strip()
