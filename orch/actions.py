"""The built-in rule actions: worktree setup, prompt rendering, the Codex worker, shell gates.

Each action is called by doit with the Runtime and the Step it belongs to. An action returns
True on success; on failure it returns a `Failed` (doit's TaskFailed) after recording why in the
task's state.json. Targets are written atomically and only once the work is validated.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from orch import atomic, decisions, git, state
from orch.compile import Step
from orch.prompts import bullet_list, render, upstream_section
from orch.runtime import Runtime
from orch.spec import read_spec
from orch.validate import schema_errors
from orch.worker import WorkerSpec, kill_stale_attempts, run_worker


class Failed(Exception):
    """Raised inside actions for an expected failure; doit_runner turns it into TaskFailed."""

    def __init__(self, message: str, *, deferred: bool = False) -> None:
        super().__init__(message)
        self.deferred = deferred


# ---------------------------------------------------------------- worktrees

def worktree(rt: Runtime, step: Step) -> None:
    path = rt.path(rt.layout.worktree)
    git.ensure_worktree(rt.repo, path, rt.run.shared_branch, rt.run.base_commit)
    record = {'path': rt.layout.worktree, 'branch': rt.run.shared_branch, 'base_commit': rt.run.base_commit}
    atomic.write_if_changed(rt.path(step.targets[0]), json.dumps(record, indent=2, sort_keys=True) + '\n')


def task_worktree(rt: Runtime, step: Step) -> None:
    task = rt.plan.by_id[step.task_id]
    layout = rt.layout
    path = rt.path(layout.task_worktree(task.id))
    branch = layout.task_branch(task.id)
    created = git.ensure_worktree(rt.repo, path, branch, _start_point(rt, task))
    if created and len(task.depends_on) > 1:
        others = [layout.task_branch(d) for d in task.depends_on[1:]]
        conflicts = git.merge_into_worktree(path, others, f'Merge dependencies of {task.id}')
        if conflicts:
            git.remove_worktree(rt.repo, path)
            git.delete_branch(rt.repo, branch, base=rt.run.base_commit, force=True)
            raise Failed(f'merging the branches of {", ".join(task.depends_on)} conflicts in: '
                         f'{", ".join(conflicts)}')
    record = {'path': layout.task_worktree(task.id), 'branch': branch, 'base_commit': rt.run.base_commit,
              'depends_on': list(task.depends_on)}
    atomic.write_if_changed(rt.path(step.targets[0]), json.dumps(record, indent=2, sort_keys=True) + '\n')


def _start_point(rt: Runtime, task: Any) -> str:
    if not task.depends_on:
        return rt.run.base_commit
    return git.rev_parse(rt.repo, rt.layout.task_branch(task.depends_on[0]))


def worktree_ready(rt: Runtime, step: Step) -> bool:
    """uptodate check: the worktree the step made still exists (a hand-deleted one is re-attached)."""
    record = state.read_json(rt.path(step.targets[0]))
    return bool(record) and git.worktree_valid(rt.path(record['path']))


# ---------------------------------------------------------------- prompts

def render_prompt(rt: Runtime, step: Step) -> None:
    task = rt.plan.by_id[step.task_id]
    upstream = []
    for dep in task.depends_on:
        dep_task = rt.plan.by_id[dep]
        upstream.append((dep, dep_task.role, dep_task.title, state.read_result(rt.path(rt.layout.task_dir(dep)))))
    values = {
        'task_id': task.id, 'title': task.title, 'description': task.description, 'role': task.role,
        'run_id': rt.run.run_id,
        'acceptance': bullet_list(task.acceptance, '(none given: use your judgement)'),
        'paths': bullet_list(task.paths, '(not specified)'),
        'upstream': upstream_section(upstream),
        'spec': read_spec(rt.repo, rt.run.spec_file) or '(no specification was given)',
        'schema': json.dumps(rt.schemas[task.role], indent=2),
    }
    text = render(rt.templates[task.role], values)
    atomic.write_if_changed(rt.path(step.targets[0]), text)


# ---------------------------------------------------------------- the worker

def inputs_digest(rt: Runtime, step: Step) -> str:
    """What the result was made from: content of every input plus the params."""
    h = hashlib.sha256()
    for dep in sorted(step.file_dep):
        h.update(dep.encode() + b'\0')
        h.update(hashlib.sha256(rt.path(dep).read_bytes()).digest())
    h.update(json.dumps(step.params, sort_keys=True).encode())
    return h.hexdigest()


def codex_worker(rt: Runtime, step: Step) -> None:
    task = rt.plan.by_id[step.task_id]
    task_dir = rt.path(rt.layout.task_dir(task.id))
    result_path = rt.path(step.targets[0])
    digest = inputs_digest(rt, step)
    previous = state.read_json(result_path)
    if previous and previous.get('inputs_digest') == digest:
        # Finished before, but doit's record of it was lost (e.g. a kill): nothing to redo.
        return
    workdir = rt.path(rt.layout.task_worktree(task.id))
    kill_stale_attempts(task_dir)
    if _finish_interrupted_commit(rt, task, task_dir, result_path, digest, workdir):
        return
    sched = rt.scheduler
    with sched.slot(task):
        _check_budget(rt, task, task_dir)
        _run_and_commit(rt, step, task, task_dir, result_path, digest, workdir)


def _check_budget(rt: Runtime, task: Any, task_dir: Path) -> None:
    budget = rt.config.token_budget
    if budget is not None and rt.tokens_spent >= budget:
        reason = f'token budget of {budget} exhausted ({rt.tokens_spent} spent in this run); not started'
        state.update_state(task_dir, status='deferred', reason=reason, outcome='budget')
        rt.stop_reason = reason
        raise Failed(reason, deferred=True)


def _run_and_commit(rt: Runtime, step: Step, task: Any, task_dir: Path, result_path: Path, digest: str,
                    workdir: Path) -> None:
    role = rt.role(task.role)
    started = time.time()
    state.update_state(task_dir, status='running', started_at=started, ended_at=None, reason=None,
                       pid=os.getpid())
    if not git.worktree_valid(workdir):
        raise _fail(task_dir, f'the worktree {workdir} is missing or broken; run resume to recreate it')
    # Leftovers of a killed attempt must not be committed as this task's work.
    git.discard_changes(workdir, rt.scheduler.discard_scope(task))
    schema = rt.schemas[task.role]
    spec = WorkerSpec(
        codex=_codex_argv(rt), workdir=workdir, sandbox=role.sandbox, model=role.model,
        schema_path=rt.path(role.schema_file).resolve(), extra_args=tuple(rt.config.codex.extra_args),
        env={**os.environ, **rt.config.codex.env}, timeout_total=role.timeout_total,
        timeout_idle=role.timeout_idle, timeout_first_event=role.timeout_first_event,
        schema_retries=role.schema_retries, failure_retries=role.failure_retries,
        retry_backoff=role.retry_backoff)
    prompt = rt.path(step.file_dep[0]).read_text(encoding='utf-8')
    on_event = rt.progress_callback(task.id) if rt.events else None
    result = run_worker(spec, prompt, task_dir, lambda answer: schema_errors(answer, schema),
                        on_event=on_event, cancel=rt.cancel)
    outcome = result.to_dict()
    rt.add_tokens(result.usage)
    common = dict(attempts=state.attempt_count(task_dir), outcome=result.outcome, usage=result.usage,
                  ended_at=time.time(), thread_id=result.thread_id)
    if result.outcome == 'interrupted':
        state.update_state(task_dir, status='pending', reason='interrupted; resume to run it again', **common)
        raise Failed('interrupted')
    if result.outcome != 'ok':
        deferred = result.outcome == 'deferred'
        status = 'deferred' if deferred else 'failed'
        reason = f'{result.outcome}: {result.error}'
        state.update_state(task_dir, status=status, reason=reason, **common)
        raise Failed(reason, deferred=deferred)
    answer = result.answer
    if isinstance(answer, dict) and answer.get('status') == 'blocked':
        reason = f'worker reported blocked: {answer.get("summary", "")}'
        state.update_state(task_dir, status='failed', reason=reason, answer=answer, **common)
        raise Failed(reason)
    exec_id = f'{rt.run.run_id}/{task.id}/{digest[:16]}/{common["attempts"]}'
    pending = {'inputs_digest': digest, 'exec_id': exec_id, 'answer': answer, 'worker': outcome,
               'started_at': started}
    atomic.write_json(task_dir / 'pending.json', pending)
    _record_decisions(rt, task, answer, workdir)
    sha = _commit(rt, task, workdir, exec_id, answer)
    _write_result(rt, task, task_dir, result_path, pending, sha, workdir)


def _fail(task_dir: Path, reason: str) -> Failed:
    state.update_state(task_dir, status='failed', reason=reason, ended_at=time.time())
    return Failed(reason)


def _codex_argv(rt: Runtime) -> tuple[str, ...]:
    binary = rt.config.codex.binary
    if '/' in binary:
        binary = str((rt.repo / binary).resolve()) if not Path(binary).is_absolute() else binary
    else:
        binary = shutil.which(binary) or binary
    return (binary,)


def _record_decisions(rt: Runtime, task: Any, answer: Any, workdir: Path) -> None:
    items = answer.get('decisions') if isinstance(answer, dict) else None
    if isinstance(items, list):
        decisions.upsert(workdir / rt.config.decisions_file, rt.run.run_id, task.id, task.role, task.title,
                         [i for i in items if isinstance(i, dict)])


def _commit(rt: Runtime, task: Any, workdir: Path, exec_id: str, answer: Any) -> str | None:
    paths = rt.scheduler.commit_scope(task, workdir, answer)
    author = _author(rt.config.git.author)
    trailers = {'Orch-Run': rt.run.run_id, 'Orch-Task': task.id, 'Orch-Role': task.role, 'Orch-Exec': exec_id}
    message = f'{task.id}: {task.title}'
    return git.commit(workdir, message=message, trailers=trailers, paths=paths, author=author)


def _author(text: str | None) -> tuple[str, str] | None:
    if not text:
        return None
    name, _, email = text.partition(' <')
    return name.strip(), email.rstrip('>').strip()


def _write_result(rt: Runtime, task: Any, task_dir: Path, result_path: Path, pending: dict[str, Any],
                  sha: str | None, workdir: Path) -> None:
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
    atomic.write_json(result_path, result)
    state.update_state(task_dir, status='done', reason=None, ended_at=now, attempts=result['attempts'],
                       outcome='ok', usage=result['usage'], commit=sha)
    try:
        (task_dir / 'pending.json').unlink()
    except FileNotFoundError:
        pass


def _finish_interrupted_commit(rt: Runtime, task: Any, task_dir: Path, result_path: Path, digest: str,
                               workdir: Path) -> bool:
    """A kill between the answer and result.json: finish from pending.json instead of paying again."""
    pending = state.read_json(task_dir / 'pending.json')
    if not pending or pending.get('inputs_digest') != digest or not git.worktree_valid(workdir):
        return False
    sha = git.find_commit_by_trailer(workdir, 'Orch-Exec', pending['exec_id'], since=rt.run.base_commit)
    if sha is None:
        # The commit never happened: commit the worker's changes now (they are still in the worktree).
        _record_decisions(rt, task, pending['answer'], workdir)
        sha = _commit(rt, task, workdir, pending['exec_id'], pending['answer'])
    _write_result(rt, task, task_dir, result_path, pending, sha, workdir)
    return True


# ---------------------------------------------------------------- shell gates

def shell(rt: Runtime, step: Step) -> None:
    action = step.rule.action
    cwd = rt.path(step.cwd or '.')
    log_path = rt.path(step.log) if step.log else rt.path(step.targets[0]).with_suffix('.log')
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, 'ORCH_RUN_ID': rt.run.run_id, 'ORCH_REPO': str(rt.repo),
           'ORCH_TASK_ID': step.task_id or '', 'ORCH_WORKTREE': str(cwd)}
    started = time.time()
    with open(log_path, 'wb') as log:
        try:
            proc = subprocess.run(['/bin/sh', '-c', step.shell], cwd=cwd, env=env, stdout=log,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  timeout=action.timeout, start_new_session=True)
            code = proc.returncode
        except subprocess.TimeoutExpired:
            code = None
    if code != 0:
        why = 'timed out' if code is None else f'exited with {code}'
        if step.task_id:
            state.update_state(rt.path(rt.layout.task_dir(step.task_id)), gate_failed=step.rule.name,
                               reason=f'gate {step.rule.name} {why} (log: {log_path})')
        raise Failed(f'{step.rule.name}: `{step.shell}` {why}; see {log_path}')
    record = {'rule': step.rule.name, 'command': step.shell, 'exit_code': 0,
              'duration': round(time.time() - started, 3), 'log': str(log_path.relative_to(rt.repo))}
    for target in step.targets:
        atomic.write_json(rt.path(target), record)
