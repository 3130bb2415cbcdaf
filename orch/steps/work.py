"""The work step: the Codex worker on the task's prompt, its answer validated, its changes committed, and
result.json — the task's target — written last. A kill anywhere in between never pays the model twice:
pending.json and the commit's Orch-Exec trailer let a resume finish what was already paid for.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orch.adapters import git
from orch.adapters.codex_bin import find_codex
from orch.adapters.worker import WorkerSpec, kill_stale_attempts, run_worker
from orch.core.compile import Step
from orch.core.plan import Task
from orch.core.redact import redact_obj
from orch.core.validate import schema_errors
from orch.engine.inputs import RunInputs
from orch.engine.session import Session
from orch.errors import GitError
from orch.failpoints import crash_point
from orch.runstate import atomic, decisions, state
from orch.steps.failure import Failed, fail
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
class _Work:
    """One execution of a task's work step: what it runs on and where it records."""

    rt: RunInputs
    session: Session
    step: Step
    task: Task
    task_dir: Path
    result_path: Path
    digest: str
    workdir: Path
    branch: str


def codex_worker(rt: RunInputs, session: Session, step: Step) -> None:
    assert step.task_id is not None
    task = rt.plan.by_id[step.task_id]
    task_dir = rt.task_dir(task.id)
    result_path = rt.path(step.outputs['result'])
    digest = inputs_digest(rt, step)
    previous = state.read_json(result_path)
    if previous and previous.get('inputs_digest') == digest:
        # Finished before, but doit's record of it was lost (e.g. a kill): nothing to redo.
        return
    workspace = state.read_json(rt.path(step.input('workspace'))) or {}
    if not workspace.get('path') or not workspace.get('branch'):
        raise fail(task_dir, f'{step.input("workspace")}: no worktree record; resume to set the worktree up again')
    work = _Work(rt, session, step, task, task_dir, result_path, digest, rt.path(workspace['path']),
                 workspace['branch'])
    kill_stale_attempts(task_dir)
    try:
        if _finish_interrupted_commit(work):
            return
        with session.scheduler.slot(task):
            _check_budget(work)
            _run_and_commit(work)
    except GitError as exc:   # recorded, or the task would show as 'running' / 'interrupted' forever
        raise fail(task_dir, str(exc)) from None


def _check_budget(work: _Work) -> None:
    reason = work.session.budget.exhausted()
    if reason:
        state.update_state(work.task_dir, status='deferred', reason=reason, outcome='budget')
        raise Failed(reason)


def worker_spec(work: _Work) -> WorkerSpec:
    """How Codex is launched: model, sandbox and the codex command from the rule's params, limits from the role."""
    rt, params = work.rt, work.step.params
    role = rt.role(work.task.role)
    binary, *extra = json.loads(params['codex_args'])
    return WorkerSpec(
        codex=(find_codex(binary, rt.repo) or binary,), workdir=work.workdir, sandbox=params['sandbox'],
        model=params['model'] or None, schema_path=rt.path(work.step.input('schema')).resolve(),
        extra_args=tuple(extra), env={**os.environ, **rt.config.codex.env}, timeout_total=role.timeout_total,
        timeout_idle=role.timeout_idle, timeout_first_event=role.timeout_first_event,
        schema_retries=role.schema_retries, failure_retries=role.failure_retries,
        retry_backoff=role.retry_backoff)


def _run_and_commit(work: _Work) -> None:
    rt, session, step, task = work.rt, work.session, work.step, work.task
    task_dir, workdir = work.task_dir, work.workdir
    started = time.time()
    state.update_state(task_dir, status='running', started_at=started, ended_at=None, reason=None,
                       pid=os.getpid())
    _ensure_workdir(work)
    # Leftovers of a killed attempt must not be committed as this task's work.
    git.discard_changes(workdir, session.scheduler.discard_scope(task, workdir))
    schema = rt.schema(step.input('schema'))
    prompt = rt.path(step.input('prompt')).read_text(encoding='utf-8')
    result = run_worker(worker_spec(work), prompt, task_dir, lambda answer: schema_errors(answer, schema),
                        on_event=session.on_worker_event(task.id), cancel=session.cancel)
    crash_point('after-answer', task.id)
    outcome = result.to_dict()
    session.budget.add(result.usage)
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
        raise Failed(reason)
    answer = redact_obj(result.answer)   # it goes into result.json, decisions.md and the reports
    if isinstance(answer, dict) and answer.get('status') == 'blocked':
        reason = f'worker reported blocked: {answer.get("summary", "")}'
        state.update_state(task_dir, status='failed', reason=reason, answer=answer, **common)
        raise Failed(reason)
    exec_id = f'{rt.run.run_id}/{task.id}/{work.digest[:16]}/{common["attempts"]}'
    pending = {'inputs_digest': work.digest, 'exec_id': exec_id, 'answer': answer, 'worker': outcome,
               'started_at': started}
    atomic.write_json(task_dir / 'pending.json', pending)
    crash_point('after-pending', task.id)
    sha = _record_and_commit(work, exec_id, answer)
    crash_point('after-commit', task.id)
    _write_result(work, pending, sha)


def _ensure_workdir(work: _Work) -> None:
    """A worktree deleted behind codex-orch's back (by hand, or by an earlier worker) is re-attached to its
    branch before the task starts: the work committed so far lives on the branch, so nothing is lost."""
    rt, workdir, branch = work.rt, work.workdir, work.branch
    if git.worktree_valid(workdir):
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


def _record_and_commit(work: _Work, exec_id: str, answer: Any) -> str | None:
    """The task's decisions entry and its changes, in its own commit.

    Serialised: parallel tasks sharing a worktree would otherwise both rewrite the decisions file
    (one entry lost) or commit each other's entries.
    """
    with work.session.scheduler.commit_lock:
        _record_decisions(work.rt, work.task, answer, work.workdir)
        return _commit(work, exec_id, answer)


def _record_decisions(rt: RunInputs, task: Task, answer: Any, workdir: Path) -> None:
    items = answer.get('decisions') if isinstance(answer, dict) else None
    if isinstance(items, list):
        decisions.upsert(workdir / rt.config.decisions_file, rt.run.run_id, task.id, task.role, task.title,
                         [i for i in items if isinstance(i, dict)])


def _commit(work: _Work, exec_id: str, answer: Any) -> str | None:
    rt, task, workdir = work.rt, work.task, work.workdir
    paths = work.session.scheduler.commit_scope(task, workdir, answer)
    if paths is not None:   # a scoped commit must still take the task's own decisions entry
        paths.append(rt.config.decisions_file)
    author = _author(rt.config.git.author)
    trailers = {'Orch-Run': rt.run.run_id, 'Orch-Task': task.id, 'Orch-Role': task.role, 'Orch-Exec': exec_id}
    message = f'{task.id}: {" ".join(task.title.split())}'   # a title with line breaks stays the subject
    return git.commit(workdir, message=message, trailers=trailers, paths=paths, author=author)


def _author(text: str | None) -> tuple[str, str] | None:
    if not text:
        return None
    name, _, email = text.partition(' <')
    return name.strip(), email.rstrip('>').strip()


def _write_result(work: _Work, pending: dict[str, Any], sha: str | None) -> None:
    rt, task, task_dir, workdir = work.rt, work.task, work.task_dir, work.workdir
    worker = pending['worker']
    now = time.time()
    result = {
        'task_id': task.id, 'role': task.role, 'title': task.title, 'status': 'done',
        'answer': pending['answer'], 'commit': sha,
        'files_changed': git.commit_files(workdir, sha) if sha else [],
        'usage': worker.get('usage'), 'attempts': state.attempt_count(task_dir),
        'thread_id': worker.get('thread_id'), 'started_at': pending['started_at'], 'finished_at': now,
        'duration': round(now - pending['started_at'], 3), 'inputs_digest': pending['inputs_digest'],
        'exec_id': pending['exec_id'], 'run_id': rt.run.run_id,
    }
    crash_point('before-result', task.id)
    atomic.write_json(work.result_path, result)
    state.update_state(task_dir, status='done', reason=None, ended_at=now, attempts=result['attempts'],
                       outcome='ok', usage=result['usage'], commit=sha)
    (task_dir / 'pending.json').unlink(missing_ok=True)


def _finish_interrupted_commit(work: _Work) -> bool:
    """A kill between the answer and result.json: finish from pending.json instead of paying again."""
    rt, workdir = work.rt, work.workdir
    pending = state.read_json(work.task_dir / 'pending.json')
    if not pending or pending.get('inputs_digest') != work.digest or not git.worktree_valid(workdir):
        return False
    sha = git.find_commit_by_trailer(workdir, 'Orch-Exec', pending['exec_id'], since=rt.run.base_commit)
    if sha is None:
        # The commit never happened: commit the worker's changes now (they are still in the worktree),
        # but not the temp file of a decisions write the kill interrupted.
        atomic.sweep_temp((workdir / rt.config.decisions_file).parent, recursive=False)
        sha = _record_and_commit(work, pending['exec_id'], pending['answer'])
    _write_result(work, pending, sha)
    return True
