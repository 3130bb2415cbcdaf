"""The work step's coordinator side when its worker part runs on a Dask cluster (executor kind `dask`).

The unit sent: the rendered prompt, the schema, the codex settings, the checks and their limits, the setup
commands (worktree.setup, run in the worker's scratch checkout first), and a bundle of one parentless snapshot
commit with the tree the task starts from (no history, nothing else of the repository). What comes back
(orch.remote.unit.WorkOutcome) is recorded before it is applied:

1. the attempt files are copied into the task directory (renumbered after the task's earlier attempts), and
   the outcome with the worker's bundle is written to `remote-outcome.json`: a coordinator killed from here on
   applies it on resume instead of submitting again, so a finished model call is never paid twice;
2. the worker's commit is fetched into `refs/orch-remote/<run>/<task>/result` and checked: its parent is the
   snapshot sent, it adds no gitlink (a nested repository or submodule), it changes no control file unless
   the task may;
3. pending.json is written, then the commit's changes are applied to the run's worktree (on top of its current
   tip: a task that committed meanwhile changed other paths) and committed there exactly as a local commit is
   (same scope rules, decisions entry, trailers, Orch-Exec), then result.json is written by the same code.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from orch.adapters import git
from orch.adapters.worker import AttemptRecord, WorkerResult, WorkerSpec
from orch.core.plan import Task
from orch.core.redact import redact_obj
from orch.core.validate import schema_errors
from orch.failpoints import crash_point
from orch.remote.run_unit import capped
from orch.remote.unit import WorkOutcome, WorkUnit
from orch.runstate import atomic, state
from orch.steps import budget, checkout
from orch.steps.failure import Failed, fail
from orch.steps.finish import commit_remote, continue_rounds, finish_rounds, land_and_record
from orch.steps.guard import protected_reason, touched_control_files, touched_protected
from orch.steps.review import requests_changes
from orch.steps.rounds import Rounds
from orch.steps.setup import SETUP_DIR
from orch.steps.task_work import TaskWork, ensure_workdir, rerun_note

OUTCOME_FILE = 'remote-outcome.json'
UNIT_MARK = 'remote-unit'                 # in an attempt directory that came from a Dask worker: its unit's key
_FAILED_STATUSES = ('failed', 'blocked', 'deferred')


class DaskExecution:
    """The worker part run on the session's Dask cluster (WorkExecution)."""

    def run(self, work: TaskWork) -> None:
        run_remote(work)

    def round(self, work: TaskWork, prompt: str, rounds: Rounds) -> WorkerResult:
        budget.before_turn(work.session, work.task, work.task_dir)   # as a round here (verify.call_worker)
        return remote_turn(work, work.ex.spec, work.ex.schema, prompt, rounds.thread_id, rounds.cumulative, work.task)

    def turn(self, work: TaskWork, spec: WorkerSpec, schema: dict[str, Any], prompt: str, thread: str | None,
             prev_cumulative: dict[str, int] | None, owner: Task, reuse_since: float | None) -> WorkerResult:
        return remote_turn(work, spec, schema, prompt, thread, prev_cumulative, owner)   # reuse_since: here only


def run_remote(work: TaskWork) -> None:
    """Submit the task's work unit (or take the outcome a killed coordinator had received), then apply it."""
    rounds = Rounds.load(work.task_dir, work.digest)
    if rounds is not None and git.worktree_valid(work.workdir):   # a kill in the middle of a reviewer's rounds
        state.update_state(work.task_dir, status='running', reason=None, ended_at=None, pid=os.getpid())
        continue_rounds(work, rounds) if rounds.phase == 'resolving' else finish_rounds(work, rounds)
        return
    saved = state.read_json(work.task_dir / OUTCOME_FILE)
    if not saved or saved.get('inputs_digest') != work.digest:
        saved = _submit(work)
    apply_outcome(work, saved)


def _submit(work: TaskWork) -> dict[str, Any]:
    rt, task, task_dir, session = work.rt, work.task, work.task_dir, work.session
    previous = state.read_state(task_dir)
    prior = previous.get('remote') if isinstance(previous.get('remote'), dict) else None
    if prior and prior.get('inputs_digest') == work.digest and previous.get('status') == 'running':
        # A coordinator killed while its unit was on the cluster: its outcome, not a second submission.
        from orch.adapters.dask_executor import Interrupted
        try:
            recovered = session.executor.recover(prior['unit_key'], prior['key'], cancel=session.cancel)
        except Interrupted:
            state.update_state(task_dir, status='pending', reason='interrupted; resume to run it again', round=None)
            raise Failed('interrupted') from None
        if recovered is not None:
            return _record(work, recovered, prior)
    elif prior:   # an earlier unit that ended without being recorded (interrupted): the scheduler need not keep it
        session.executor.forget(prior['unit_key'])
    started = time.time()
    note = rerun_note(previous, state.read_result(task_dir)) if previous.get('status') != 'running' \
        else previous.get('rerun_note') or ''
    submissions = int(previous.get('remote_submissions') or 0) + 1
    state.update_state(task_dir, status='running', started_at=started, ended_at=None, reason=None, pid=os.getpid(),
                       round='remote: sending', checks=None, warnings=None, rerun_note=note,
                       worker=None, remote_submissions=submissions)
    made_now = ensure_workdir(work)
    if work.shared:   # the unit starts from the run branch's tip, as a local execution does
        checkout.restart(work.rt, work.task_dir, work.workdir, work.run_branch or '', made_now=made_now)
    tip = git.rev_parse(work.workdir, 'HEAD')
    snapshot = git.snapshot_commit(work.workdir, tip)
    bundle_ref = f'refs/orch-remote/{rt.run.run_id}/{task.id}/start'
    bundle = git.create_bundle(work.workdir, snapshot, bundle_ref)
    params, role = work.step.params, rt.role(task.role)
    _, *extra = json.loads(params['codex_args'])
    unit = WorkUnit(
        key=f'codex-orch-{rt.run.run_id}-{task.id}-{work.digest[:12]}-{submissions}', run_id=rt.run.run_id,
        task_id=task.id, role=task.role,
        prompt=rt.path(work.step.input('prompt')).read_text(encoding='utf-8') + note,
        schema=rt.schema(work.step.input('schema')), codex=rt.config.codex.model_dump(), extra_args=list(extra),
        sandbox=params['sandbox'], model=params['model'] or None,
        limits={'timeout_total': role.timeout_total, 'timeout_idle': role.timeout_idle,
                'timeout_first_event': role.timeout_first_event, 'schema_retries': role.schema_retries,
                'failure_retries': role.failure_retries, 'retry_backoff': role.retry_backoff},
        checks=list(work.checks), repair_rounds=role.repair_rounds, check_timeout=role.check_timeout,
        bundle=bundle, bundle_ref=bundle_ref, snapshot=snapshot, **_setup(work))
    record = {'inputs_digest': work.digest, 'unit_key': unit.key, 'key': unit.key, 'snapshot': snapshot,
              'tip': tip, 'started_at': started}

    def submitted(key: str) -> None:
        record['key'] = key
        state.update_state(task_dir, round=f'remote: {key}', remote=dict(record))
        if session.progress is not None:
            session.progress.remote(task.id, f'on the Dask cluster ({key})', line=False)

    from orch.adapters.dask_executor import Interrupted
    try:
        outcome: WorkOutcome = session.executor.run(unit, cancel=session.cancel, on_submitted=submitted)
    except Interrupted:
        state.update_state(task_dir, status='pending', reason='interrupted; resume to run it again', round=None)
        raise Failed('interrupted') from None
    return _record(work, outcome, record)


def _setup(work: TaskWork) -> dict[str, Any]:
    """worktree.setup for the unit: its scratch checkout is a new one."""
    settings = work.rt.config.worktree
    return {'setup': list(settings.setup), 'setup_timeout': settings.setup_timeout,
            'command_sandbox': work.rt.role(work.task.role).command_sandbox}


def _record(work: TaskWork, outcome: WorkOutcome, record: dict[str, Any]) -> dict[str, Any]:
    """The outcome into the task directory (attempt files, then remote-outcome.json): paid once, applied from
    here on, even by a resume."""
    crash_point('remote-received', work.task.id)
    outcome = capped(outcome)
    _import_files(work, outcome)
    work.session.budget.add(outcome.usage, work.task.id, work.step.params.get('model') or None)
    saved = {'inputs_digest': work.digest, 'snapshot': record['snapshot'], 'tip': record['tip'],
             'started_at': record['started_at'], 'outcome': outcome.to_json()}
    atomic.write_json(work.task_dir / OUTCOME_FILE, saved)
    work.session.executor.forget(record['unit_key'])
    crash_point('remote-recorded', work.task.id)
    return saved


def _write_redacted(path: Path, data: bytes) -> None:
    """A file the remote worker wrote, redacted by this machine's secrets too (as a local one is)."""
    if path.suffix == '.json':
        with contextlib.suppress(ValueError):
            atomic.write_json(path, json.loads(data))   # redacted as data
            return
    atomic.write_bytes(path, data)
    atomic.redact_file(path, jsonl=path.suffix == '.jsonl')


def _import_files(work: TaskWork, outcome: WorkOutcome) -> None:
    """The attempts' files into the task directory, numbered after its earlier attempts; check logs beside."""
    task_dir = work.task_dir
    # Each imported attempt names its unit: a kill after the import and before remote-outcome.json must not make
    # a resume import (and count as paid) the same attempts twice.
    done = any((p / UNIT_MARK).is_file() and (p / UNIT_MARK).read_text(encoding='utf-8') == outcome.key
               for p in task_dir.glob('attempt-*'))
    base = max((int(p.name.split('-', 1)[1]) for p in task_dir.glob('attempt-*')
                if p.is_dir() and p.name.split('-', 1)[1].isdigit()), default=0)
    renamed: dict[str, str] = {}
    for rel, data in sorted(outcome.files.items()):
        parts = rel.split('/')
        if '..' in parts or not parts[0] or rel.startswith('/') or parts[-1] == UNIT_MARK:
            continue
        if parts[0].startswith('attempt-') and parts[0][8:].isdigit():
            if done:
                continue
            if parts[0] not in renamed:   # numbered in order after this task's own: never the worker's number
                renamed[parts[0]] = f'attempt-{base + len(renamed) + 1}'
                atomic.write_text(task_dir / renamed[parts[0]] / UNIT_MARK, outcome.key)
            parts[0] = renamed[parts[0]]
        elif parts[0] not in ('checks', SETUP_DIR) and rel != 'remote-error.txt':
            continue
        _write_redacted(task_dir.joinpath(*parts), data)
    prefix = task_dir.relative_to(work.rt.repo).as_posix() if task_dir.is_relative_to(work.rt.repo) \
        else str(task_dir)
    for check in [*outcome.checks, *outcome.setup]:
        if isinstance(check, dict) and check.get('log'):
            log = str(check['log'])
            inside = not log.startswith('/') and '..' not in log.split('/')
            check['log'] = (log if log.startswith(prefix + '/') else f'{prefix}/{log}') if inside else None
    outcome.files = {}


def apply_outcome(work: TaskWork, saved: dict[str, Any]) -> None:
    rt, task, task_dir = work.rt, work.task, work.task_dir
    outcome = WorkOutcome.from_json(saved['outcome'])
    raw_answer = outcome.answer   # validated as it came (a local answer is too, before its redaction)
    outcome.answer = redact_obj(outcome.answer)   # as a local answer: by this machine's secrets too
    where = _where(outcome)
    state.update_state(task_dir, worker=outcome.worker or None, executor='dask', setup=outcome.setup or None)
    if work.session.progress is not None:
        text = f'ran on Dask worker {where}' if where else 'on the Dask cluster'
        work.session.progress.remote(task.id, f'{text}: {outcome.status}', line=True)
    attempts = state.attempt_count(task_dir)
    if outcome.status != 'done':
        status = outcome.status if outcome.status in _FAILED_STATUSES else \
            'pending' if outcome.status == 'interrupted' else 'failed'
        reason = str(outcome.reason or outcome.outcome or outcome.status)
        reason += f' (on Dask worker {where})' if where else ''
        state.update_state(task_dir, status=status, reason=reason, outcome=outcome.outcome, usage=outcome.usage,
                           attempts=attempts, ended_at=time.time(), round=None, answer=outcome.answer,
                           checks=outcome.checks, thread_id=outcome.thread_id)
        (task_dir / OUTCOME_FILE).unlink(missing_ok=True)
        raise Failed(reason)
    problem = _untrusted_done(work, outcome, raw_answer)
    if problem is not None:
        (task_dir / OUTCOME_FILE).unlink(missing_ok=True)
        state.update_state(task_dir, outcome='remote-refused', usage=outcome.usage, attempts=attempts, round=None)
        raise fail(task_dir, problem + (f' (on Dask worker {where})' if where else ''))
    commit, paths = None, []
    if outcome.bundle:
        commit = _fetch_result(work, outcome)
        paths = _check_commit(work, saved['snapshot'], commit)
    if requests_changes(outcome.answer, work.rt.schema(work.step.input('schema'))):
        _review(work, saved, outcome, commit, paths)
        return
    exec_id = f'{rt.run.run_id}/{task.id}/{work.digest[:16]}/{attempts}'
    pending = {'inputs_digest': work.digest, 'exec_id': exec_id, 'answer': outcome.answer,
               'worker': {'usage': outcome.usage, 'thread_id': outcome.thread_id,
                          'cumulative': outcome.usage_cumulative}, 'checks': outcome.checks,
               'repair_rounds': outcome.repair_rounds, 'review_rounds': 0, 'fixes': [],
               'started_at': saved.get('started_at') or outcome.started_at,
               'remote': {'snapshot': saved['snapshot'], 'commit': commit, 'paths': paths, 'worker': outcome.worker}}
    atomic.write_json(task_dir / 'pending.json', pending)
    (task_dir / OUTCOME_FILE).unlink(missing_ok=True)   # pending.json carries it on from here
    crash_point('after-pending', task.id)
    sha = commit_remote(work, pending)
    crash_point('after-commit', task.id)
    land_and_record(work, pending, sha)
    _drop_refs(work)


def _untrusted_done(work: TaskWork, outcome: WorkOutcome, answer: Any) -> str | None:
    """Why a `done` the Dask worker reports is not believed here, or None. A worker is untrusted code: its answer
    is validated against the role's schema again, here, and the checks it reports must be all of the task's
    checks, passed (they are still only its word: the gates on the coordinator are not)."""
    schema = work.rt.schema(work.step.input('schema'))
    errors = schema_errors(answer, schema)
    if errors:
        return (f'the answer of the Dask worker does not validate against the role\'s schema: {"; ".join(errors[:5])}'
                '; refused')
    ran = [c for c in outcome.checks if isinstance(c, dict)]
    if work.checks and ([c.get('command') for c in ran] != list(work.checks)
                        or not all(c.get('passed') is True and c.get('exit_code') == 0 for c in ran)):
        return (f'the Dask worker reported done but not the task\'s {len(work.checks)} check(s), each passed '
                f'({len(ran)} reported); refused')
    return None


def _fetch_result(work: TaskWork, outcome: WorkOutcome) -> str:
    rt, task = work.rt, work.task
    try:
        return git.fetch_bundle(work.workdir, outcome.bundle or b'', outcome.bundle_ref or '',
                                f'refs/orch-remote/{rt.run.run_id}/{task.id}/result')
    except git.GitError as exc:
        raise fail(work.task_dir, f'the bundle returned by the Dask worker was refused: {exc}') from None


def _review(work: TaskWork, saved: dict[str, Any], outcome: WorkOutcome, commit: str | None, paths: list[str]) -> None:
    """A reviewer run on Dask asked for changes: its rounds go on from here with the local review code, each
    turn on the Dask worker that holds the thread it resumes (remote_turn), then the local commit path."""
    rounds = Rounds.load(work.task_dir, work.digest)
    if rounds is None:   # the first time (not a resume in the middle of the rounds)
        if commit is not None:
            with work.session.scheduler.commit_lock:
                git.restore_paths(work.workdir, paths)
                git.apply_commit_changes(work.workdir, saved['snapshot'], commit)
        rounds = Rounds(inputs_digest=work.digest, thread_id=outcome.thread_id, answer=outcome.answer,
                        usage=dict(outcome.usage), cumulative=outcome.usage_cumulative,
                        started_at=saved.get('started_at') or outcome.started_at, repairs=outcome.repair_rounds,
                        checks=list(outcome.checks))
        rounds.save(work.task_dir)
    (work.task_dir / OUTCOME_FILE).unlink(missing_ok=True)   # rounds.json carries it on from here
    finish_rounds(work, rounds)
    _drop_refs(work)


def remote_turn(work: TaskWork, spec: WorkerSpec, schema: dict[str, Any], prompt: str, thread: str | None,
                prev_cumulative: dict[str, int] | None, owner: Task) -> WorkerResult:
    """One resumed turn of `owner`'s thread on the Dask worker that ran `owner` (its CODEX_HOME holds the thread),
    on a snapshot of the worktree's tip; what it changed comes back into the worktree, uncommitted."""
    rt, task, task_dir = work.rt, work.task, work.task_dir
    holder = state.read_state(rt.task_dir(owner.id)).get('worker') or {}
    pin = holder.get('address') if isinstance(holder, dict) else None
    if not thread or not pin:
        return _turn_failed(f'{owner.id} has no Codex thread on a Dask worker to resume')
    from orch.adapters.dask_executor import Interrupted
    turn = hashlib.sha256('\0'.join((owner.id, thread, prompt)).encode()).hexdigest()[:16]
    prior = state.read_state(task_dir).get('remote_turn')
    outcome: WorkOutcome | None = None
    if isinstance(prior, dict) and prior.get('inputs_digest') == work.digest and prior.get('turn') == turn:
        # A coordinator killed while this turn was on the cluster: its outcome (published, or the unit still
        # running), not a second paid turn.
        try:
            outcome = work.session.executor.recover(prior['unit_key'], prior['key'], cancel=work.session.cancel)
        except Interrupted:
            return _turn_failed('interrupted', outcome='interrupted')
        snapshot = str(prior['snapshot'])
    if outcome is None:
        tip = git.rev_parse(work.workdir, 'HEAD')
        snapshot = git.snapshot_commit(work.workdir, tip)
        bundle_ref = f'refs/orch-remote/{rt.run.run_id}/{task.id}/start'
        turns = int(state.read_state(task_dir).get('remote_turns') or 0) + 1
        unit = WorkUnit(
            key=f'codex-orch-{rt.run.run_id}-{task.id}-{work.digest[:12]}-turn-{turns}', run_id=rt.run.run_id,
            task_id=task.id, role=owner.role, prompt=prompt, schema=schema, codex=rt.config.codex.model_dump(),
            extra_args=list(json.loads(work.step.params['codex_args'])[1:]), sandbox=spec.sandbox, model=spec.model,
            limits={'timeout_total': spec.timeout_total, 'timeout_idle': spec.timeout_idle,
                    'timeout_first_event': spec.timeout_first_event, 'schema_retries': spec.schema_retries,
                    'failure_retries': spec.failure_retries, 'retry_backoff': spec.retry_backoff},
            checks=[], repair_rounds=0, check_timeout=1.0,
            bundle=git.create_bundle(work.workdir, snapshot, bundle_ref), bundle_ref=bundle_ref, snapshot=snapshot,
            resume_thread=thread, prev_cumulative=prev_cumulative, pin=pin, **_setup(work))
        turn_record = {'inputs_digest': work.digest, 'turn': turn, 'unit_key': unit.key, 'key': unit.key,
                       'snapshot': snapshot}

        def submitted(key: str) -> None:   # recorded before it is submitted: a resume asks the cluster for it
            state.update_state(task_dir, remote_turns=turns, remote_turn={**turn_record, 'key': key})

        if work.session.progress is not None:
            work.session.progress.remote(task.id, f'{owner.id}\'s thread on Dask worker {pin}', line=False)
        try:
            outcome = work.session.executor.run(unit, cancel=work.session.cancel, on_submitted=submitted)
        except Interrupted:
            state.update_state(task_dir, remote_turn=None)
            return _turn_failed('interrupted', outcome='interrupted')
    outcome = capped(outcome)
    _import_files(work, outcome)
    work.session.budget.add(outcome.usage, work.task.id, spec.model)
    state.update_state(task_dir, remote_turn=None)
    work.session.executor.forget(outcome.key)
    if outcome.status != 'done':   # the unit itself did not run (lost worker, a broken machine)
        return _turn_failed(f'{outcome.reason or outcome.outcome} (Dask worker {pin})', usage=outcome.usage)
    if (outcome.outcome or 'ok') == 'ok':
        errors = schema_errors(outcome.answer, schema)   # the worker validated it; a worker is untrusted
        if errors:
            return _turn_failed(f'the answer of the Dask worker {pin} does not validate against the schema: '
                                f'{"; ".join(errors[:5])}', outcome='invalid-output', usage=outcome.usage)
    if outcome.bundle:
        commit = _fetch_result(work, outcome)
        _check_commit(work, snapshot, commit, owner)
        with work.session.scheduler.commit_lock:
            git.apply_commit_changes(work.workdir, snapshot, commit)
    record = AttemptRecord(n=0, kind='remote-turn', argv=[], thread_id=outcome.thread_id,
                           outcome=outcome.outcome or 'ok', error=outcome.error, usage=dict(outcome.usage),
                           usage_cumulative=outcome.usage_cumulative)
    return WorkerResult(outcome=outcome.outcome or 'ok', answer=outcome.answer, error=outcome.error,
                        thread_id=outcome.thread_id, attempts=[record], usage=dict(outcome.usage),
                        duration=outcome.ended_at - outcome.started_at)


def _turn_failed(reason: str, *, outcome: str = 'worker-lost', usage: dict[str, int] | None = None) -> WorkerResult:
    return WorkerResult(outcome=outcome, answer=None, error=reason, thread_id=None, attempts=[],
                        usage=dict(usage or {}), duration=0.0)


def _check_commit(work: TaskWork, snapshot: str, commit: str, owner: Task | None = None) -> list[str]:
    """The worker's commit: on the snapshot sent, within the limits once unpacked, no symbolic link out of the tree or
    replacing a file, no gitlink, no control file unless the task may, no protected file unless its task (`owner`'s,
    for a turn of another task's thread) names it in its paths."""
    parents = git.parents_of(work.workdir, commit)
    if parents != [snapshot]:
        raise fail(work.task_dir, f'the commit returned by the Dask worker ({commit[:12]}) is not on the snapshot '
                                  f'it was sent ({snapshot[:12]}): its parents are {parents or "none"}; refused')
    settings = work.rt.config.executor
    refusal = git.unpacked_refusal(work.workdir, snapshot, commit, max_bytes=settings.result_max_bytes,
                                   max_files=settings.result_max_files)
    if refusal:
        raise fail(work.task_dir, f'the Dask worker\'s commit ({commit[:12]}) {refusal}; refused (nothing was '
                                  'written into the task\'s checkout)')
    changes = git.tree_changes(work.workdir, snapshot, commit)
    links = [c.path for c in changes if '160000' in (c.new_mode,)]
    if links:
        raise fail(work.task_dir, f'refusing the commit of the Dask worker: {", ".join(links)} would be committed '
                                  'as gitlinks (a nested git repository or a changed submodule); nothing was '
                                  'committed')
    paths = [c.path for c in changes]
    inside = dot_git_paths(paths)
    if inside:
        raise fail(work.task_dir, f'refusing the commit of the Dask worker: it holds {", ".join(inside[:5])}, '
                                  'inside a `.git` directory (git never commits one; it would be a repository\'s '
                                  'own config or hooks); nothing was committed')
    if not work.task.control_files:
        touched = touched_control_files(paths, work.rt.config)
        if touched:
            raise fail(work.task_dir, f'the worker changed codex-orch control files: {", ".join(touched)}; nothing '
                                      'was committed (they decide what later runs execute; a plan task may change '
                                      'them only with "control_files": true)')
    protected = touched_protected(paths, work.rt.config, owner or work.task)
    if protected:
        raise fail(work.task_dir, protected_reason(protected))
    return paths


def dot_git_paths(paths: list[str]) -> list[str]:
    """The paths with a `.git` component (any case: case-insensitive filesystems; trailing dots and spaces)."""
    return [p for p in paths if any(part.lower().rstrip('. ') == '.git' for part in p.split('/'))]


def _drop_refs(work: TaskWork) -> None:
    rt, task = work.rt, work.task
    for name in ('start', 'result'):
        with contextlib.suppress(git.GitError):
            git.delete_ref(work.workdir, f'refs/orch-remote/{rt.run.run_id}/{task.id}/{name}')


def _where(outcome: WorkOutcome) -> str:
    worker = outcome.worker or {}
    address, host = worker.get('address'), worker.get('host')
    return f'{address} ({host})' if address and host else str(address or host or '')
