"""The work step: the Codex worker on the task's prompt, its answer validated, its changes committed, and
result.json — the task's target — written last. A kill anywhere in between never pays the model twice:
pending.json and the commit's Orch-Exec trailer let a resume finish what was already paid for.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from orch import output
from orch.adapters import git
from orch.adapters.codex_bin import find_codex
from orch.adapters.worker import WorkerResult, WorkerSpec, kill_stale_attempts, run_worker
from orch.adapters.worker_env import worker_codex_args
from orch.core.compile import Step
from orch.core.plan import Task
from orch.core.redact import redact
from orch.core.text import one_line
from orch.core.validate import schema_errors
from orch.engine.inputs import RunInputs
from orch.engine.scheduler import glob_match
from orch.engine.session import Session
from orch.errors import GitError
from orch.failpoints import crash_point
from orch.runstate import atomic, decisions, state
from orch.steps import checkout, git_seal, landing, verify
from orch.steps.commands import command_env
from orch.steps.failure import Failed, fail
from orch.steps.guard import EscapesWorktree, inside, touched_control_files
from orch.steps.review import run_review_rounds
from orch.steps.rounds import Rounds, changed_files, unrecorded_since
from orch.steps.setup import run_setup
from orch.steps.worktree import worktree_lock


def inputs_digest(rt: RunInputs, step: Step) -> str:
    """What the result was made from: content of every input plus the params."""
    h = hashlib.sha256()
    for dep in sorted(step.file_dep):
        h.update(dep.encode() + b'\0')
        h.update(hashlib.sha256(rt.path(dep).read_bytes()).digest())
    h.update(json.dumps(step.params, sort_keys=True).encode())
    return h.hexdigest()


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

    @property
    def shared(self) -> bool:
        return self.run_branch is not None

    @cached_property
    def ex(self) -> verify.Execution:
        """What the answer and its verification need (the same on a Dask worker, see orch.remote)."""
        rt, session, role = self.rt, self.session, self.rt.role(self.task.role)
        return verify.Execution(
            task_id=self.task.id, task_dir=self.task_dir, workdir=self.workdir, spec=worker_spec(self),
            schema=rt.schema(self.step.input('schema')), checks=self.checks, repair_rounds=role.repair_rounds,
            check_timeout=role.check_timeout, command_env=command_env(rt, self.task.id), log_root=rt.repo,
            cancel=session.cancel, on_event=session.on_worker_event(self.task.id), on_usage=session.budget.add,
            after_worker=lambda result: git_seal.check(session, self.task_dir, self.workdir))


def recorded_done(rt: RunInputs, step: Step, values: dict[str, Any]) -> bool:
    """uptodate check: the task's state agrees that its result is done.

    A kill during a re-execution, and the edit that caused it undone, leave doit's record of the earlier inputs
    valid while the state says the task never finished: the step then runs, finds its result was made from
    these very inputs, and records it done without a model call. A redo asked for (`codex-orch redo`) makes it run."""
    assert step.task_id is not None
    st = state.read_state(rt.task_dir(step.task_id))
    return st.get('status') == 'done' and not state.redo_requested(st)


def codex_worker(rt: RunInputs, session: Session, step: Step) -> None:
    assert step.task_id is not None
    task = rt.plan.by_id[step.task_id]
    task_dir = rt.task_dir(task.id)
    result_path = rt.path(step.outputs['result'])
    digest = inputs_digest(rt, step)
    previous = state.read_result(task_dir)
    redo = state.redo_requested(state.read_state(task_dir))   # a fresh execution asked for: no short-cut
    if previous and not redo and digest in (previous.get('made_from') or [previous.get('inputs_digest')]):
        # Finished before, but doit's record of it was lost (e.g. a kill): nothing to redo — only the state
        # a kill right after result.json may not have caught up with.
        if state.read_state(task_dir).get('status') != 'done':
            state.update_state(task_dir, status='done', reason=None, commit=previous.get('commit'), round=None)
            (task_dir / 'pending.json').unlink(missing_ok=True)
        return
    workspace = state.read_json(rt.path(step.input('workspace'))) or {}
    if not workspace.get('path') or not workspace.get('branch'):
        raise fail(task_dir, f'{step.input("workspace")}: no worktree record; resume to set the worktree up again')
    checks = (*rt.role(task.role).checks, *task.checks)
    if rt.run.per_task:
        work = TaskWork(rt, session, step, task, task_dir, result_path, digest, rt.path(workspace['path']),
                        workspace['branch'], None, checks)
    else:   # no worker ever shares a directory: its own checkout, its commits landed on the run's branch
        work = TaskWork(rt, session, step, task, task_dir, result_path, digest,
                        rt.path(rt.layout.checkout(task.id)), None, workspace['branch'], checks)
    kill_stale_attempts(task_dir)
    try:
        with session.scheduler.slot(task):
            if _finish_interrupted_commit(work):
                return
            _check_budget(work)
            if session.executor is not None:   # the worker part runs on a Dask cluster
                from orch.steps.remote_work import run_remote
                run_remote(work)
                return
            try:
                _run_and_commit(work)
            finally:   # what this execution leaves uncommitted is its own: the next start may discard it
                _remember_leftovers(work)
    except GitError as exc:   # recorded, or the task would show as 'running' / 'interrupted' forever
        raise fail(task_dir, str(exc)) from None


def _remember_leftovers(work: TaskWork) -> None:
    """Per-task mode: what this execution left uncommitted in the task's worktree, so that the next start knows
    it for its own. Not after a refusal to start over changes nobody's attempt left: those stay someone else's,
    however many resumes follow. (A private checkout needs no such record: all in it is the task's.)"""
    if work.shared or state.read_state(work.task_dir).get('outcome') == UNKNOWN_CHANGES:
        return
    if git_seal.broken(work.session, work.task_dir, work.workdir):
        return   # git must not read that worktree now: a planted filter would run
    try:
        left = changed_files(work.workdir, None) if git.worktree_valid(work.workdir) else {}
    except GitError:
        left = {}
    state.update_state(work.task_dir, left=left)


def _check_budget(work: TaskWork) -> None:
    reason = work.session.budget.exhausted()
    if reason:
        state.update_state(work.task_dir, status='deferred', reason=reason, outcome='budget')
        raise Failed(reason)


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
        retry_backoff=role.retry_backoff)


def _run_and_commit(work: TaskWork) -> None:
    """The first answer (or the rounds under way, after a kill), its verification, then the commit."""
    rounds = Rounds.load(work.task_dir, work.digest) if git.worktree_valid(work.workdir) else None
    if rounds is None:
        rounds = _first_answer(work)
    else:   # a kill interrupted this execution's rounds: go on where it stood, keeping the worker's edits
        state.update_state(work.task_dir, status='running', reason=None, ended_at=None, pid=os.getpid())
    continue_rounds(work, rounds)


def continue_rounds(work: TaskWork, rounds: Rounds) -> None:
    """From wherever the execution's rounds stand: resolving its work on a moved tip, its checks (with repair
    rounds), its review rounds, then the commit, the landing and result.json."""
    if rounds.phase == 'resolving':
        landing.resolve(work, rounds, lambda prompt, resume: _call_worker(work, prompt, resume),
                        lambda result: _accept(work, result))
    verify.verify(work.ex, rounds)
    finish_rounds(work, rounds)


def finish_rounds(work: TaskWork, rounds: Rounds) -> None:
    """After the answer passed its checks: the review rounds (a reviewer), then the commit and result.json."""
    run_review_rounds(work, rounds, lambda result: _accept(work, result),
                      lambda prompt, resume: _call_worker(work, prompt, resume))
    if rounds.fixes and work.checks:   # the reviewed work changed: the reviewer's own checks see the fix too
        failed = next((r for r in verify.run_checks(work.ex, rounds) if not r.passed), None)
        if failed is not None:
            raise verify.checks_failed(work.ex, rounds, failed, f'after the fix of review round {rounds.reviews}')
    _commit_verified(work, rounds)


def _first_answer(work: TaskWork) -> Rounds:
    rt, session, task, task_dir = work.rt, work.session, work.task, work.task_dir
    started = time.time()
    previous = state.read_state(task_dir)
    # An execution a kill interrupted before it recorded its answer goes on: from its start, its ended answer is
    # taken instead of a second one (a kill of this very execution in the same place finds it again).
    unrecorded = unrecorded_since(task_dir, previous)
    started = started if unrecorded is None else unrecorded
    # The note of an execution a kill interrupted is kept: the same prompt lets its completed turn be recovered.
    note = previous.get('rerun_note') or '' if previous.get('status') == 'running' else \
        rerun_note(previous, state.read_result(task_dir))
    state.update_state(task_dir, status='running', started_at=started, ended_at=None, reason=None,
                       pid=os.getpid(), round=None, checks=None, warnings=None, rerun_note=note, worker=None)
    ensure_workdir(work)
    git_seal.seal(session, task_dir, work.workdir)

    def discard_leftovers() -> None:   # only when no killed attempt's completed turn is recovered
        if work.shared:   # its own checkout: what is there was left by its own earlier attempt
            checkout.restart(rt, task_dir, work.workdir, work.run_branch or '')
        else:
            # Leftovers of a killed or failed attempt must not be committed as this task's work; anything else
            # uncommitted in the worktree is someone's work, and is never silently discarded.
            _refuse_unknown_changes(work, previous)
            git.discard_changes(work.workdir)
        run_setup(rt, session, task.id, work.workdir)   # worktree.setup: a fresh execution's checkout, as yours

    prompt = rt.path(work.step.input('prompt')).read_text(encoding='utf-8')
    result = _call_worker(work, prompt + note, before_fresh_start=discard_leftovers, reuse_since=unrecorded)
    crash_point('after-answer', task.id)
    answer = _accept(work, result)
    rounds = Rounds(inputs_digest=work.digest, thread_id=result.thread_id, answer=answer, usage=dict(result.usage),
                    cumulative=result.usage_cumulative, started_at=started)
    rounds.save(task_dir)
    return rounds


UNKNOWN_CHANGES = 'unknown-changes'


def _refuse_unknown_changes(work: TaskWork, previous: dict[str, Any]) -> None:
    """Refuse to start over changes that no codex-orch attempt of this run left (a user's edits in the
    worktree): name them and the ways out, unless the run was told to discard them."""
    if work.session.options.discard_changes:
        return
    current = changed_files(work.workdir, None)
    if not current:
        return
    known: dict[str, str] = {}
    for other in work.rt.plan.tasks:   # this task's own state as it was before this execution began
        st = previous if other.id == work.task.id else state.read_state(work.rt.task_dir(other.id))
        if st.get('status') == 'running' and st.get('pid') != os.getpid():
            return   # an attempt killed mid-way: what it left is unknowable, and it is codex-orch's own
        known.update(st.get('left') or {})
    unknown = sorted(p for p, digest in current.items() if known.get(p) != digest)
    if unknown:
        shown = ', '.join(unknown[:10]) + (f' and {len(unknown) - 10} more' if len(unknown) > 10 else '')
        reason = (f'uncommitted changes in its worktree {work.workdir} that codex-orch did not make: {shown}; '
                  f'commit them there (git -C {work.workdir} commit), or resume with --discard-changes to drop them')
        state.update_state(work.task_dir, status='failed', reason=reason, ended_at=time.time(),
                           outcome=UNKNOWN_CHANGES)
        raise Failed(reason)


def _call_worker(work: TaskWork, prompt: str, resume: Rounds | None = None,
                 before_fresh_start: Callable[[], None] | None = None,
                 reuse_since: float | None = None) -> WorkerResult:
    if work.session.executor is not None and resume is not None:   # a review round of a task run on Dask
        return call_turn(work, work.ex.spec, work.ex.schema, prompt, resume.thread_id, resume.cumulative, work.task)
    return verify.call_worker(work.ex, prompt, resume, before_fresh_start, reuse_since)


def call_turn(work: TaskWork, spec: WorkerSpec, schema: dict[str, Any], prompt: str, thread: str | None,
              prev_cumulative: dict[str, int] | None, owner: Task, reuse_since: float | None = None) -> WorkerResult:
    """One resumed turn of `owner`'s Codex thread, in the worktree of `work`: here, or (executor dask) on the
    Dask worker that holds the thread, its changes brought back into the worktree uncommitted. reuse_since: see
    run_worker (here only)."""
    if work.session.executor is not None:
        from orch.steps.remote_work import remote_turn
        return remote_turn(work, spec, schema, prompt, thread, prev_cumulative, owner)
    result = run_worker(spec, prompt, work.task_dir, lambda answer: schema_errors(answer, schema),
                        on_event=work.session.on_worker_event(work.task.id), cancel=work.session.cancel,
                        resume_thread=thread, prev_cumulative=prev_cumulative, recover=True,
                        reuse_since=reuse_since)
    work.session.budget.add(result.spent_now)
    return result


def _accept(work: TaskWork, result: WorkerResult) -> Any:
    return verify.accept(work.ex, result)


def _refuse_control_changes(work: TaskWork, rounds: Rounds) -> None:
    """A worker's edits to codex-orch's own control files fail its task, unless the plan task opts in."""
    if work.task.control_files:
        return
    touched = touched_control_files(git.changed_paths(work.workdir), work.rt.config)
    if touched:
        reason = (f'the worker changed codex-orch control files: {", ".join(touched)}; nothing was committed '
                  '(they decide what later runs execute; a plan task may change them only with '
                  '"control_files": true)')
        state.update_state(work.task_dir, status='failed', reason=reason, ended_at=time.time(), round=None,
                           outcome='control-files', usage=rounds.usage, answer=rounds.answer)
        Rounds.clear(work.task_dir)
        raise Failed(reason)


def _commit_verified(work: TaskWork, rounds: Rounds) -> None:
    rt, task, task_dir = work.rt, work.task, work.task_dir
    _refuse_control_changes(work, rounds)
    attempts = state.attempt_count(task_dir)
    exec_id = f'{rt.run.run_id}/{task.id}/{work.digest[:16]}/{attempts}'
    pending = {'inputs_digest': work.digest, 'exec_id': exec_id, 'answer': rounds.answer,
               'worker': {'usage': rounds.usage, 'thread_id': rounds.thread_id, 'cumulative': rounds.cumulative},
               'checks': rounds.checks, 'repair_rounds': rounds.repairs, 'review_rounds': rounds.reviews,
               'fixes': rounds.fixes, 'conflict_rounds': rounds.conflicts, 'started_at': rounds.started_at}
    atomic.write_json(task_dir / 'pending.json', pending)
    Rounds.clear(task_dir)
    crash_point('after-pending', task.id)
    try:
        sha = _record_and_commit(work, exec_id, rounds.answer)
    except git.CommitRefused as exc:
        # Refused for what is in the worktree (a nested repository, a switched branch): the worker must run
        # again, so the pending answer must not be committed on resume either.
        (task_dir / 'pending.json').unlink(missing_ok=True)
        raise fail(task_dir, f'its changes cannot be committed: {exc}') from None
    crash_point('after-commit', task.id)
    land_and_record(work, pending, sha)


def land_and_record(work: TaskWork, pending: dict[str, Any], sha: str | None) -> None:
    """Shared mode: land the task's commits on the run's branch first (a replay that needs the worker goes back
    into its rounds: a conflict round, its checks, a new commit, and here again); then result.json."""
    if work.shared:
        try:
            sha = landing.land(work)
        except landing.Rework as rework:
            rounds = landing.rounds_for(pending, rework)
            rounds.save(work.task_dir)
            (work.task_dir / 'pending.json').unlink(missing_ok=True)
            state.update_state(work.task_dir, rework=None)
            continue_rounds(work, rounds)
            return
        except GitError as exc:
            raise landing.replay_failed(work, exc) from None
    write_result(work, pending, sha)
    if work.shared:
        checkout.release(work.rt, work.workdir)


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


def ensure_workdir(work: TaskWork) -> None:
    """Shared mode: the task's private checkout (orch.steps.checkout). Per-task: a worktree deleted behind
    codex-orch's back (by hand, or by an earlier worker) is re-attached to its branch before the task starts:
    the work committed so far lives on the branch, so nothing is lost."""
    if work.run_branch is not None:
        checkout.ensure(work.rt, work.task_dir, work.workdir, work.run_branch)
        return
    rt, workdir, branch = work.rt, work.workdir, work.branch
    assert branch is not None
    if git.worktree_valid(workdir):
        on, _ = git.head_state(workdir)
        if on != branch:   # a worker with full access switched it: later commits would go elsewhere
            raise fail(work.task_dir, f'the worktree {workdir} is on {on or "a detached HEAD"}, not on the run\'s '
                                      f'branch {branch}; check out {branch} there (git -C {workdir} checkout '
                                      f'{branch}), then resume')
        return
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


def _record_and_commit(work: TaskWork, exec_id: str, answer: Any,
                       before: Callable[[], None] | None = None) -> str | None:
    """The task's decisions entry and its changes, in its own commit (`before` runs first, under the same lock:
    a remote worker's changes are written into the worktree there).

    Serialised: parallel tasks sharing a worktree would otherwise both rewrite the decisions file
    (one entry lost) or commit each other's entries.
    """
    with work.session.scheduler.commit_lock:
        git_seal.check(work.session, work.task_dir, work.workdir)   # before git touches the worktree again
        if before is not None:
            before()
        _record_decisions(work.rt, work.task, answer, work.workdir)
        return _commit(work, exec_id, answer)


def _record_decisions(rt: RunInputs, task: Task, answer: Any, workdir: Path) -> None:
    items = answer.get('decisions') if isinstance(answer, dict) else None
    if isinstance(items, list):
        try:
            path = inside(workdir, rt.config.decisions_file)
        except EscapesWorktree as exc:
            raise fail(rt.task_dir(task.id), f'cannot record the decisions: {exc}') from None
        decisions.upsert(path, rt.run.run_id, task.id, task.role, task.title,
                         [i for i in items if isinstance(i, dict)])


def _commit(work: TaskWork, exec_id: str, answer: Any) -> str | None:
    """Everything its worker changed in its own checkout (or worktree), with the decisions entry: attribution is
    exact by construction. Files outside its `paths` are committed with it and reported as a warning."""
    rt, task, workdir = work.rt, work.task, work.workdir
    strays = outside_paths(task, git.changed_paths(workdir), rt.config.decisions_file)
    if strays:
        warning = f'changed files outside its paths, committed with it: {", ".join(strays)} (add them to its paths)'
        state.update_state(work.task_dir, warnings=[warning])
        output.write_line(f'warning: {task.id} {warning}', err=True)
    author = author_of(rt.config.git.author)
    trailers = {'Orch-Run': rt.run.run_id, 'Orch-Task': task.id, 'Orch-Role': task.role, 'Orch-Exec': exec_id}
    # A title with line breaks stays the subject; no secret from the plan reaches the history.
    message = redact(f'{task.id}: {one_line(task.title)}')   # one line, no terminal controls, encodable
    expect_head = checkout.expected_head(work.task_dir) if work.shared else None
    sha = git.commit(workdir, message=message, trailers=trailers, author=author, expect_branch=work.branch,
                     expect_head=expect_head)
    if sha is not None and work.shared:
        checkout.moved(work.task_dir, sha)
    return sha


def outside_paths(task: Task, changed: list[str], decisions_file: str) -> list[str]:
    """Changed files its `paths` do not cover (none when it declares no paths), codex-orch's own log left out."""
    if not task.paths:
        return []
    return [p for p in changed if p != decisions_file and not any(glob_match(g, p) for g in task.paths)]


def author_of(text: str | None) -> tuple[str, str] | None:
    if not text:
        return None
    name, _, email = text.partition(' <')
    return name.strip(), email.rstrip('>').strip()


def write_result(work: TaskWork, pending: dict[str, Any], sha: str | None) -> None:
    rt, task, task_dir = work.rt, work.task, work.task_dir
    worker = pending['worker']
    now = time.time()
    commit, files = _task_commit(work, sha)
    result: dict[str, Any] = {
        'task_id': task.id, 'role': task.role, 'title': task.title, 'status': 'done',
        'answer': pending['answer'], 'commit': commit, 'files_changed': files,
        # the code it finished on: its dependencies' results (their commits, transitively theirs)
        'upstream': {dep: state.file_digest(rt.task_dir(dep) / 'result.json') for dep in task.depends_on}}
    execution: dict[str, Any] = {
        'usage': worker.get('usage'), 'attempts': state.attempt_count(task_dir),
        'thread_id': worker.get('thread_id'), 'started_at': pending['started_at'], 'finished_at': now,
        'duration': round(now - pending['started_at'], 3), 'inputs_digest': pending['inputs_digest'],
        'exec_id': pending['exec_id'], 'run_id': rt.run.run_id, 'params': work.step.params,
        'checks': pending.get('checks') or [], 'repair_rounds': pending.get('repair_rounds', 0),
        'review_rounds': pending.get('review_rounds', 0), 'fixes': pending.get('fixes') or [],
        'conflict_rounds': pending.get('conflict_rounds', 0),
        'warnings': state.read_state(task_dir).get('warnings') or [],
    }
    crash_point('before-result', task.id)
    state.write_result(task_dir, result, execution)
    state.update_state(task_dir, status='done', reason=None, ended_at=now, attempts=execution['attempts'],
                       outcome='ok', usage=execution['usage'], commit=commit, round=None, checks=execution['checks'],
                       redo=None)   # a redo asked for (`codex-orch redo`) is done with this execution
    (task_dir / 'pending.json').unlink(missing_ok=True)
    git_seal.unseal(task_dir)


def _task_commit(work: TaskWork, sha: str | None) -> tuple[str | None, list[str]]:
    """The commit holding the task's work, and the files it changed.

    An execution that changed nothing (it ran again and found its earlier work right) made no commit: its work
    is still the earlier commit, when that is on the branch. Keeping it keeps result.json byte for byte, so the
    tasks that depend on it do not run again."""
    if sha is not None:
        return sha, git.commit_files(work.rt.repo, sha)
    before = state.read_result(work.task_dir) or {}
    earlier = before.get('commit')
    tip = f'refs/heads/{work.run_branch}' if work.run_branch else 'HEAD'
    if isinstance(earlier, str) and git.contains(work.rt.repo if work.run_branch else work.workdir, tip, earlier):
        return earlier, list(before.get('files_changed') or [])
    return None, []


def _finish_interrupted_commit(work: TaskWork) -> bool:
    """A kill between the answer and result.json: finish from pending.json instead of paying again."""
    rt, workdir = work.rt, work.workdir
    pending = state.read_json(work.task_dir / 'pending.json')
    if not pending or pending.get('inputs_digest') != work.digest:
        return False
    if work.run_branch is not None:   # landed before the kill (its checkout may be gone already)
        landed = git.find_commit_by_trailer(rt.repo, 'Orch-Exec', pending['exec_id'], since=rt.run.base_commit,
                                            tip=f'refs/heads/{work.run_branch}')
        if landed is not None:
            write_result(work, pending, landed)
            checkout.release(rt, workdir)
            return True
    if not git.worktree_valid(workdir):
        return False
    sha = git.find_commit_by_trailer(workdir, 'Orch-Exec', pending['exec_id'], since=rt.run.base_commit)
    if sha is not None and work.shared and git.rev_parse(workdir, 'HEAD') == sha:
        checkout.moved(work.task_dir, sha)   # its own commit, made just before the kill
    if sha is None and not (work.shared and landing.rework_recorded(work)):
        # The commit never happened: commit the worker's changes now (they are still in the worktree, or for a
        # remote worker in the commit it returned), but not the temp file of a decisions write the kill interrupted.
        atomic.sweep_temp((workdir / rt.config.decisions_file).parent, recursive=False)
        if pending.get('remote'):
            from orch.steps.remote_work import commit_remote
            sha = commit_remote(work, pending)
        else:
            sha = _record_and_commit(work, pending['exec_id'], pending['answer'])
    land_and_record(work, pending, sha)
    return True
