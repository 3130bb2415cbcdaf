"""The built-in rule actions: worktree setup, prompt rendering, the Codex worker, shell gates.

Each action is called by doit with the Runtime and the Step it belongs to. An action returns
True on success; on failure it returns a `Failed` (doit's TaskFailed) after recording why in the
task's state.json. Targets are written atomically and only once the work is validated.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from orch.runstate import atomic
from orch.runstate import decisions
from orch.adapters import git
from orch.runstate import state
from orch.adapters.codex_bin import find_codex
from orch.core.compile import Step
from orch.errors import GitError
from orch.failpoints import crash_point
from orch.core.prompts import bullet_list, render, upstream_section
from orch.core.redact import redact_obj
from orch.engine.runtime import Runtime
from orch.core.spec import read_spec
from orch.core.validate import schema_errors
from orch.adapters.worker import WorkerSpec, die_with_parent, leader_exited, kill_stale_attempts, run_worker


class Failed(Exception):
    """Raised inside actions for an expected failure (recorded in state.json first); doit_runner turns it
    into TaskFailed."""


# ---------------------------------------------------------------- worktrees

def worktree(rt: Runtime, step: Step) -> None:
    path = rt.path(rt.layout.worktree)
    git.ensure_worktree(rt.repo, path, rt.run.shared_branch, rt.run.base_commit)
    record = {'path': rt.layout.worktree, 'branch': rt.run.shared_branch, 'base_commit': rt.run.base_commit}
    atomic.write_if_changed(rt.path(step.targets[0]), json.dumps(record, indent=2, sort_keys=True) + '\n')


# Worktree and branch changes one at a time: parallel tasks set up their worktrees from threads, and
# `git worktree add` / `prune` in one repository must not interleave.
_worktree_lock = threading.Lock()


def task_worktree(rt: Runtime, step: Step) -> None:
    """Per-task mode: the task's worktree on its own branch, started from the tip of what it depends on.

    No dependency: the base commit. One (or one whose tip contains the others'): that branch's tip.
    Several: the first, with the others merged in; a conflict fails the task, naming the files.
    When a dependency's branch moved since (it ran again), the branch is started afresh if it holds
    nothing but this task's own earlier work (stale, about to be redone); otherwise the new
    dependency work is merged into it.
    """
    task = rt.plan.by_id[step.task_id]
    task_dir = rt.path(rt.layout.task_dir(task.id))
    target = rt.path(step.targets[0])
    try:
        with _worktree_lock:
            record = _prepare_task_worktree(rt, task, task_dir, state.read_json(target) or {})
    except GitError as exc:
        raise _fail(task_dir, f'cannot set up the worktree of {task.id}: {exc}')
    except Failed as exc:
        raise _fail(task_dir, str(exc))
    atomic.write_if_changed(target, json.dumps(record, indent=2, sort_keys=True) + '\n')


def _prepare_task_worktree(rt: Runtime, task: Any, task_dir: Path, previous: dict[str, Any]) -> dict[str, Any]:
    layout, repo = rt.layout, rt.repo
    path = rt.path(layout.task_worktree(task.id))
    branch = layout.task_branch(task.id)
    tips = {dep: git.rev_parse(repo, f'refs/heads/{layout.task_branch(dep)}') for dep in task.depends_on}
    needed = _tips_to_merge(repo, list(task.depends_on), tips)
    tip = git.branch_tip(repo, branch)
    behind = [d for d in needed if tip is not None and not git.is_ancestor(repo, tips[d], tip)]
    if behind and tip in _own_states(task_dir, previous):
        # Nothing on the branch but this task's stale work: start it afresh from the new tips.
        git.remove_worktree(repo, path, force=True)
        if not git.delete_branch(repo, branch, base=tip, force=True):
            raise Failed(f'cannot start {task.id} afresh: its branch {branch} is checked out in '
                         f'{git.worktree_of_branch(repo, branch)}; check out another branch there, then resume')
        tip, behind = None, []
    fresh = tip is None
    if fresh:
        git.ensure_worktree(repo, path, branch, tips[needed[0]] if needed else rt.run.base_commit)
        to_merge = needed[1:]
    else:
        git.ensure_worktree(repo, path, branch, tip)
        if behind:
            git.discard_changes(path)   # leftovers of an earlier attempt; the task runs again anyway
        to_merge = behind
    start = previous.get('start_commit') if not fresh and not to_merge else None
    if to_merge:
        message = (f'Merge {", ".join(to_merge)} into {task.id}\n\n'
                   f'Orch-Run: {rt.run.run_id}\nOrch-Task: {task.id}')
        # Every task appends its own entry to the decisions log: both sides' lines are kept.
        conflicts = git.merge_into_worktree(path, [layout.task_branch(d) for d in to_merge], message,
                                            union=(rt.config.decisions_file,))
        if conflicts:
            if fresh:   # leave nothing behind: the next attempt starts over
                git.remove_worktree(repo, path, force=True)
                git.delete_branch(repo, branch, base=rt.run.base_commit, force=True)
            merged = [*needed[:1], *to_merge] if fresh else [task.id, *to_merge]
            hint = ('make the tasks touch different files, or make one depend on the other' if fresh else
                    f'merge them by hand in {layout.task_worktree(task.id)}, or delete the branch {branch} '
                    '(codex-orch clean --force) to start the task afresh')
            raise Failed(f'cannot start {task.id}: merging the work of {", ".join(merged)} conflicts in '
                         f'{", ".join(conflicts)} ({hint})')
    if start is None:
        start = git.rev_parse(path, 'HEAD')
    return {'path': layout.task_worktree(task.id), 'branch': branch, 'base_commit': rt.run.base_commit,
            'depends_on': list(task.depends_on), 'start_commit': start}


def _tips_to_merge(repo: Path, deps: list[str], tips: dict[str, str]) -> list[str]:
    """The dependencies whose tips are not already contained in another one's, in plan order."""
    needed: list[str] = []
    for dep in deps:
        sha = tips[dep]
        if any(tips[d] == sha for d in needed):
            continue
        if any(other != sha and git.is_ancestor(repo, sha, other) for other in tips.values()):
            continue
        needed.append(dep)
    return needed



def _own_states(task_dir: Path, previous: dict[str, Any]) -> set[str]:
    """Commits at which the task's branch holds nothing but codex-orch's own work for the task."""
    result = state.read_result(task_dir) or {}
    return {sha for sha in (previous.get('start_commit'), result.get('commit')) if sha}


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
    try:
        if _finish_interrupted_commit(rt, task, task_dir, result_path, digest, workdir):
            return
        sched = rt.scheduler
        with sched.slot(task):
            _check_budget(rt, task, task_dir)
            _run_and_commit(rt, step, task, task_dir, result_path, digest, workdir)
    except GitError as exc:   # recorded, or the task would show as 'running' / 'interrupted' forever
        raise _fail(task_dir, str(exc))


def _check_budget(rt: Runtime, task: Any, task_dir: Path) -> None:
    budget = rt.config.token_budget
    if budget is not None and rt.tokens_spent >= budget:
        reason = f'token budget of {budget} exhausted ({rt.tokens_spent} spent in this run); not started'
        state.update_state(task_dir, status='deferred', reason=reason, outcome='budget')
        rt.stop_reason = reason
        raise Failed(reason)


def _run_and_commit(rt: Runtime, step: Step, task: Any, task_dir: Path, result_path: Path, digest: str,
                    workdir: Path) -> None:
    role = rt.role(task.role)
    started = time.time()
    state.update_state(task_dir, status='running', started_at=started, ended_at=None, reason=None,
                       pid=os.getpid())
    _ensure_workdir(rt, task, task_dir, workdir)
    # Leftovers of a killed attempt must not be committed as this task's work.
    git.discard_changes(workdir, rt.scheduler.discard_scope(task, workdir))
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
    crash_point('after-answer', task.id)
    outcome = result.to_dict()
    rt.add_tokens(result.usage)
    common = dict(attempts=state.attempt_count(task_dir), outcome=result.outcome, usage=result.usage,
                  ended_at=time.time(), thread_id=result.thread_id)
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
    exec_id = f'{rt.run.run_id}/{task.id}/{digest[:16]}/{common["attempts"]}'
    pending = {'inputs_digest': digest, 'exec_id': exec_id, 'answer': answer, 'worker': outcome,
               'started_at': started}
    atomic.write_json(task_dir / 'pending.json', pending)
    crash_point('after-pending', task.id)
    sha = _record_and_commit(rt, task, workdir, exec_id, answer)
    crash_point('after-commit', task.id)
    _write_result(rt, task, task_dir, result_path, pending, sha, workdir)


def _ensure_workdir(rt: Runtime, task: Any, task_dir: Path, workdir: Path) -> None:
    """A worktree deleted behind codex-orch's back (by hand, or by an earlier worker) is re-attached to its
    branch before the task starts: the work committed so far lives on the branch, so nothing is lost."""
    if git.worktree_valid(workdir):
        return
    branch = rt.layout.task_branch(task.id) if rt.run.per_task else rt.run.shared_branch
    try:
        git.rev_parse(rt.repo, f'refs/heads/{branch}')
    except GitError:
        raise _fail(task_dir, f'the worktree {workdir} is missing and its branch {branch} is gone; '
                              'run resume to recreate them')
    try:
        with _worktree_lock:
            git.ensure_worktree(rt.repo, workdir, branch, rt.run.base_commit)
    except GitError as exc:
        raise _fail(task_dir, f'the worktree {workdir} is missing or broken and cannot be recreated '
                              f'(move the directory away, then resume): {exc}')


def _fail(task_dir: Path, reason: str) -> Failed:
    state.update_state(task_dir, status='failed', reason=reason, ended_at=time.time())
    return Failed(reason)


def _codex_argv(rt: Runtime) -> tuple[str, ...]:
    # Resolved like `run` checked it; if it vanished since, the worker records a launch-error.
    return (find_codex(rt.config.codex.binary, rt.repo) or rt.config.codex.binary,)


def _record_and_commit(rt: Runtime, task: Any, workdir: Path, exec_id: str, answer: Any) -> str | None:
    """The task's decisions entry and its changes, in its own commit.

    Serialised: parallel tasks sharing a worktree would otherwise both rewrite the decisions file
    (one entry lost) or commit each other's entries.
    """
    with rt.scheduler.commit_lock:
        _record_decisions(rt, task, answer, workdir)
        return _commit(rt, task, workdir, exec_id, answer)


def _record_decisions(rt: Runtime, task: Any, answer: Any, workdir: Path) -> None:
    items = answer.get('decisions') if isinstance(answer, dict) else None
    if isinstance(items, list):
        decisions.upsert(workdir / rt.config.decisions_file, rt.run.run_id, task.id, task.role, task.title,
                         [i for i in items if isinstance(i, dict)])


def _commit(rt: Runtime, task: Any, workdir: Path, exec_id: str, answer: Any) -> str | None:
    paths = rt.scheduler.commit_scope(task, workdir, answer)
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
    crash_point('before-result', task.id)
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
        # The commit never happened: commit the worker's changes now (they are still in the worktree),
        # but not the temp file of a decisions write the kill interrupted.
        atomic.sweep_temp((workdir / rt.config.decisions_file).parent, recursive=False)
        sha = _record_and_commit(rt, task, workdir, pending['exec_id'], pending['answer'])
    _write_result(rt, task, task_dir, result_path, pending, sha, workdir)
    return True


# ---------------------------------------------------------------- shell gates

def _run_gate(command: str, cwd: Path, env: dict[str, str], log: Any, timeout: float | None) -> int | None:
    """Run a gate in its own process group; the whole group is killed when the command ends (background
    leftovers), times out (None) or codex-orch is interrupted, and it dies with codex-orch."""
    try:
        proc = subprocess.Popen(['/bin/sh', '-c', command], cwd=cwd, env=env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                preexec_fn=die_with_parent)
    except OSError as exc:
        log.write(f'cannot start /bin/sh: {exc}\n'.encode())
        return 127
    deadline = None if timeout is None else time.monotonic() + timeout
    timed_out = False
    try:
        while not leader_exited(proc):   # not reaped yet: the pgid stays ours while we signal it
            if deadline is not None and time.monotonic() >= deadline:
                timed_out = True
                break
            time.sleep(0.02)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()
    return None if timed_out else proc.returncode


def shell(rt: Runtime, step: Step) -> None:
    action = step.rule.action
    cwd = rt.path(step.cwd or '.')
    log_path = rt.path(step.log) if step.log else rt.path(step.targets[0]).with_suffix('.log')
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, 'ORCH_RUN_ID': rt.run.run_id, 'ORCH_REPO': str(rt.repo),
           'ORCH_TASK_ID': step.task_id or '', 'ORCH_WORKTREE': str(cwd)}
    started = time.time()
    code: int | None = None
    if not cwd.is_dir():
        code, why = -1, f'cannot start: its working directory {cwd} does not exist'
    else:
        with open(log_path, 'wb') as log:
            code = _run_gate(step.shell, cwd, env, log, action.timeout)
        why = 'timed out' if code is None else f'exited with {code}'
    if code != 0:
        if step.task_id:
            state.update_state(rt.path(rt.layout.task_dir(step.task_id)), gate_failed=step.rule.name,
                               reason=f'gate {step.rule.name} {why} (log: {log_path})')
        raise Failed(f'{step.rule.name}: `{step.shell}` {why}; see {log_path}')
    record = {'rule': step.rule.name, 'command': step.shell, 'exit_code': 0,
              'duration': round(time.time() - started, 3), 'log': str(log_path.relative_to(rt.repo))}
    for target in step.targets:
        atomic.write_json(rt.path(target), record)
