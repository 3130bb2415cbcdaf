"""The work step: the Codex worker on the task's prompt, its answer validated, its changes committed, and
result.json — the task's target — written last. A kill anywhere in between never pays the model twice:
pending.json and the commit's Orch-Exec trailer let a resume finish what was already paid for.

Here: the step's entry, which picks where the worker part runs (orch.steps.task_work.WorkExecution), and the
execution here, by this process (LocalExecution); the Dask one is orch.steps.remote_work.DaskExecution, and what
follows the answer, the same for both, is orch.steps.finish.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any

from orch.adapters import git, tracing
from orch.adapters.worker import WorkerResult, WorkerSpec, kill_stale_attempts, run_worker
from orch.core.compile import Step
from orch.core.plan import Task
from orch.core.validate import schema_errors
from orch.engine.inputs import RunInputs
from orch.engine.session import Session
from orch.errors import GitError
from orch.failpoints import crash_point
from orch.runstate import state
from orch.steps import budget, cache_hit, checkout, git_seal, landing, verify
from orch.steps.failure import Failed, fail
from orch.steps.finish import HitDoesNotFit, continue_rounds, finish_interrupted_commit
from orch.steps.remote_work import DaskExecution
from orch.steps.rounds import Rounds, changed_files, killed_midway, unrecorded_since
from orch.steps.setup import run_setup
from orch.steps.task_work import TaskWork, WorkExecution, accept, ensure_workdir, rerun_note


def inputs_digest(rt: RunInputs, step: Step) -> str:
    """What the result was made from: content of every input plus the params."""
    h = hashlib.sha256()
    for dep in sorted(step.file_dep):
        h.update(dep.encode() + b'\0')
        h.update(hashlib.sha256(rt.path(dep).read_bytes()).digest())
    h.update(json.dumps(step.params, sort_keys=True).encode())
    return h.hexdigest()


def recorded_done(rt: RunInputs, session: Session, step: Step, values: dict[str, Any]) -> bool:
    """uptodate check: the task's state agrees that its result is done.

    A kill during a re-execution, and the edit that caused it undone, leave doit's record of the earlier inputs
    valid while the state says the task never finished: the step then runs, finds its result was made from
    these very inputs, and records it done without a model call. A redo asked for (`codex-orch redo`) makes it run."""
    assert step.task_id is not None
    st = state.read_state(rt.task_dir(step.task_id))
    return st.get('status') == 'done' and not state.redo_requested(st)


def codex_worker(rt: RunInputs, session: Session, step: Step) -> None:
    """The work step; with tracing on, one span of the task (its status, reason and tokens at the end)."""
    assert step.task_id is not None
    task = rt.plan.by_id[step.task_id]
    with tracing.span(f'task {task.id}', {'codex_orch.task.id': task.id, 'codex_orch.role': task.role,
                                          'codex_orch.run.id': rt.run.run_id}) as traced:
        try:
            _codex_worker(rt, session, step, task)
        finally:
            if traced.recording:
                st = state.read_state(rt.task_dir(task.id))
                traced.set({'codex_orch.status': st.get('status'), 'codex_orch.reason': st.get('reason'),
                            'codex_orch.outcome': st.get('outcome'),
                            **tracing.usage_attrs(st.get('usage'), prefix='codex_orch.usage.')})
                if st.get('status') in ('failed', 'blocked'):
                    traced.fail(str(st.get('reason') or st.get('status')))


def _codex_worker(rt: RunInputs, session: Session, step: Step, task: Task) -> None:
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
    # where the worker part runs: here, or on a Dask cluster
    execution: WorkExecution = LocalExecution() if session.executor is None else DaskExecution()
    if rt.run.per_task:
        work = TaskWork(rt, session, step, task, task_dir, result_path, digest, rt.path(workspace['path']),
                        workspace['branch'], None, checks, execution)
    else:   # no worker ever shares a directory: its own checkout, its commits landed on the run's branch
        work = TaskWork(rt, session, step, task, task_dir, result_path, digest,
                        rt.path(rt.layout.checkout(task.id)), None, workspace['branch'], checks, execution)
    kill_stale_attempts(task_dir)
    merging = pending_merge(work) if session.executor is not None else None
    if merging is not None:
        raise fail(task_dir, f'merging the work of {merging["task"]} into {task.id} conflicts; on the Dask executor '
                             'that merge cannot be resolved: resume with --executor local')
    try:
        with session.scheduler.slot(task):
            if session.progress is not None:   # now, not when doit handed it a thread: it may have waited here
                session.progress.started(step.name)
            try:
                done = finish_interrupted_commit(work) or cache_hit.try_hit(work)
            except HitDoesNotFit as exc:
                done = cache_hit.does_not_fit(work, str(exc))
            if done:
                return
            budget.launch(rt, session, task, task_dir)
            with tracing.span(f'execution {task.id}', {'codex_orch.task.id': task.id, 'codex_orch.executor':
                                                       'local' if session.executor is None else 'dask'}):
                execution.run(work)
    except GitError as exc:   # recorded, or the task would show as 'running' / 'interrupted' forever
        raise fail(task_dir, str(exc)) from None
    finally:
        session.budget.release(task.id)


class LocalExecution:
    """The worker part run here, by this process (WorkExecution)."""

    def run(self, work: TaskWork) -> None:
        try:
            _run_and_commit(work)
        finally:   # what this execution leaves uncommitted is its own: the next start may discard it
            _remember_leftovers(work)

    def round(self, work: TaskWork, prompt: str, rounds: Rounds) -> WorkerResult:
        return verify.call_worker(work.ex, prompt, rounds, round_name=round_name(rounds))

    def turn(self, work: TaskWork, spec: WorkerSpec, schema: dict[str, Any], prompt: str, thread: str | None,
             prev_cumulative: dict[str, int] | None, owner: Task, reuse_since: float | None) -> WorkerResult:
        return verify.traced_turn(owner.id, f'review fix by {owner.id}', spec, lambda traced: run_worker(
            traced, prompt, work.task_dir, lambda answer: schema_errors(answer, schema),
            on_event=work.session.on_worker_event(work.task.id), cancel=work.session.cancel,
            resume_thread=thread, prev_cumulative=prev_cumulative, recover=True,
            reuse_since=reuse_since, budget_stop=work.session.budget.stop,
            on_spent=budget.note_usage(work.session, work.task.id, spec.model)))


def round_name(rounds: Rounds) -> str:
    """The round a turn in the task's own thread belongs to (other than the first answer and repair rounds)."""
    return f'conflict {rounds.conflicts}' if rounds.phase == 'resolving' else f'review {rounds.reviews}'


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


def _run_and_commit(work: TaskWork) -> None:
    """The first answer (or the rounds under way, after a kill), its verification, then the commit."""
    rounds = Rounds.load(work.task_dir, work.digest) if git.worktree_valid(work.workdir) else None
    if rounds is None:
        rounds = _first_answer(work)
    else:   # a kill interrupted this execution's rounds: go on where it stood, keeping the worker's edits
        state.update_state(work.task_dir, status='running', reason=None, ended_at=None, pid=os.getpid())
    continue_rounds(work, rounds)


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
                       pid=os.getpid(), round=None, checks=None, warnings=None, rerun_note=note, worker=None,
                       rounds=[])
    made_now = ensure_workdir(work)
    git_seal.seal(session, task_dir, work.workdir)
    merge = pending_merge(work)

    def discard_leftovers() -> None:   # only when no killed attempt's completed turn is recovered
        if work.shared:   # its own checkout: what is there was left by its own earlier attempt
            checkout.restart(rt, task_dir, work.workdir, work.run_branch or '', made_now=made_now)
        else:
            # Leftovers of a killed or failed attempt must not be committed as this task's work; anything else
            # uncommitted in the worktree is someone's work, and is never silently discarded.
            _refuse_unknown_changes(work, previous)
            git.discard_changes(work.workdir)
            if merge is not None:   # a dependency's work conflicts: its worker resolves it (see merge_note)
                git.start_merge(work.workdir, merge['branch'], union=(rt.config.decisions_file,))
        run_setup(rt, session, task.id, work.workdir)   # worktree.setup: a fresh execution's checkout, as yours

    prompt = rt.path(work.step.input('prompt')).read_text(encoding='utf-8') + (merge_note(merge) if merge else '')
    result = verify.call_worker(work.ex, prompt + note, before_fresh_start=discard_leftovers, reuse_since=unrecorded)
    crash_point('after-answer', task.id)
    answer = accept(work, result)
    rounds = Rounds(inputs_digest=work.digest, thread_id=result.thread_id, answer=answer, usage=dict(result.usage),
                    cumulative=result.usage_cumulative, started_at=started)
    left = landing.marked_files(work.workdir, merge['conflicts']) if merge is not None else []
    if merge is not None and left:   # it did not resolve them all: a conflict round in its thread, bounded
        rounds.phase, rounds.conflict = 'resolving', {'files': left, 'merge': merge['task']}
    rounds.save(task_dir)
    return rounds


def pending_merge(work: TaskWork) -> dict[str, Any] | None:
    """Per-task mode: the dependency whose work conflicts with the others' in this task's worktree and is merged
    in by this task's own worker (orch.steps.worktree), while its commit has not concluded that merge yet."""
    if work.shared:
        return None
    record = (state.read_json(work.rt.path(work.step.input('workspace'))) or {}).get('merge')
    if not isinstance(record, dict):
        return None
    dep_tip = git.branch_tip(work.rt.repo, str(record.get('branch')))
    if dep_tip is None or git.contains(work.rt.repo, f'refs/heads/{work.branch}', dep_tip):
        return None
    return record


def merge_note(merge: dict[str, Any]) -> str:
    files = ', '.join(merge.get('conflicts') or [])
    return (f'\n\n## First: a merge to finish\n\nThe work of task {merge.get("task")}, which this task depends on, '
            f'is being merged into your worktree and conflicts with the work of the other tasks it depends on in: '
            f'{files}. Those files hold git\'s conflict markers (<<<<<<< ... ======= ... >>>>>>>). Resolve every '
            'conflict first, keeping what each side meant, and remove every marker; do not abort the merge and do '
            'not commit (codex-orch concludes the merge with your work\'s commit). Then do the task.\n')


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
        if killed_midway(st):
            return   # an attempt killed mid-way: what it left is unknowable, and it is codex-orch's own
        known.update(st.get('left') or {})
    unknown = sorted(p for p, digest in current.items() if known.get(p) != digest)
    if unknown:
        shown = ', '.join(unknown[:10]) + (f' and {len(unknown) - 10} more' if len(unknown) > 10 else '')
        reason = (f'uncommitted changes in its worktree {work.workdir} that codex-orch did not make: {shown}; '
                  f'move them out (git -C {work.workdir} stash), or resume with --discard-changes to drop them')
        state.update_state(work.task_dir, status='failed', reason=reason, ended_at=time.time(),
                           outcome=UNKNOWN_CHANGES)
        raise Failed(reason)
