"""The end of a task's work step, the same wherever its worker ran: the rounds after its answer (a conflict on a
moved tip, its checks with their repair rounds, a reviewer's rounds), then the commit with its decisions entry and
trailers, the landing on the run's branch and result.json — and, after a kill between the answer and result.json,
the finishing of what was already paid for, from pending.json and the commit's Orch-Exec trailer.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orch import output
from orch.adapters import git
from orch.core.plan import Task
from orch.core.redact import redact
from orch.core.text import one_line
from orch.engine.inputs import RunInputs
from orch.engine.scheduler import glob_match
from orch.errors import GitError
from orch.failpoints import crash_point
from orch.runstate import atomic, decisions, state
from orch.steps import checkout, git_seal, landing, verify
from orch.steps.failure import Failed, fail
from orch.steps.guard import EscapesWorktree, inside, protected_reason, touched_control_files, touched_protected_in
from orch.steps.review import run_review_rounds
from orch.steps.rounds import Rounds
from orch.steps.task_work import TaskWork, accept, author_of, call_worker


def continue_rounds(work: TaskWork, rounds: Rounds) -> None:
    """From wherever the execution's rounds stand: resolving its work on a moved tip, its checks (with repair
    rounds), its review rounds, then the commit, the landing and result.json."""
    if rounds.phase == 'resolving':
        landing.resolve(work, rounds, lambda prompt, resume: call_worker(work, prompt, resume),
                        lambda result: accept(work, result))
    verify.verify(work.ex, rounds)
    finish_rounds(work, rounds)


def finish_rounds(work: TaskWork, rounds: Rounds) -> None:
    """After the answer passed its checks: the review rounds (a reviewer), then the commit and result.json."""
    run_review_rounds(work, rounds, lambda result: accept(work, result),
                      lambda prompt, resume: call_worker(work, prompt, resume))
    if rounds.fixes and work.checks:   # the reviewed work changed: the reviewer's own checks see the fix too
        failed = next((r for r in verify.run_checks(work.ex, rounds) if not r.passed), None)
        if failed is not None:
            raise verify.checks_failed(work.ex, rounds, failed, f'after the fix of review round {rounds.reviews}')
    commit_verified(work, rounds)


def _refuse_control_changes(work: TaskWork, rounds: Rounds) -> list[str]:
    """A worker's edits to codex-orch's own control files fail its task, unless the plan task opts in; so do its
    edits to protected files (orch.steps.guard.PROTECTED) its `paths` do not name. Returns the changed paths."""
    changed = git.changed_paths(work.workdir)
    touched = [] if work.task.control_files else touched_control_files(changed, work.rt.config)
    protected = touched_protected_in(work.workdir, changed, work.rt.config, work.task)
    reason = outcome = None
    if touched:
        reason, outcome = (f'the worker changed codex-orch control files: {", ".join(touched)}; nothing was '
                           'committed (they decide what later runs execute; a plan task may change them only with '
                           '"control_files": true)'), 'control-files'
    elif protected:
        reason, outcome = protected_reason(protected), 'protected-files'
    if reason:
        state.update_state(work.task_dir, status='failed', reason=reason, ended_at=time.time(), round=None,
                           outcome=outcome, usage=rounds.usage, answer=rounds.answer, rounds=rounds.history)
        Rounds.clear(work.task_dir)
        raise Failed(reason)
    return changed


def commit_verified(work: TaskWork, rounds: Rounds, extra: dict[str, Any] | None = None) -> None:
    """extra: kept in pending.json and the execution record (a cache hit's `cache`, orch.steps.cache_hit)."""
    rt, task, task_dir = work.rt, work.task, work.task_dir
    changed = _refuse_control_changes(work, rounds)
    attempts = state.attempt_count(task_dir)
    exec_id = f'{rt.run.run_id}/{task.id}/{work.digest[:16]}/{attempts}'
    pending = {'inputs_digest': work.digest, 'exec_id': exec_id, 'answer': rounds.answer,
               'worker': {'usage': rounds.usage, 'thread_id': rounds.thread_id, 'cumulative': rounds.cumulative},
               'checks': rounds.checks, 'repair_rounds': rounds.repairs, 'review_rounds': rounds.reviews,
               'fixes': rounds.fixes, 'conflict_rounds': rounds.conflicts, 'started_at': rounds.started_at,
               'rounds': rounds.history,
               **(extra or {})}
    atomic.write_json(task_dir / 'pending.json', pending)
    Rounds.clear(task_dir)
    crash_point('after-pending', task.id)
    try:
        sha = record_and_commit(work, exec_id, rounds.answer, changed=changed)
    except git.CommitRefused as exc:
        # Refused for what is in the worktree (a nested repository, a switched branch): the worker must run
        # again, so the pending answer must not be committed on resume either.
        (task_dir / 'pending.json').unlink(missing_ok=True)
        raise fail(task_dir, f'its changes cannot be committed: {exc}') from None
    crash_point('after-commit', task.id)
    land_and_record(work, pending, sha)


class HitDoesNotFit(Exception):
    """A cache hit's work does not land as it was on the run branch's moved tip: it would need a worker (a conflict
    round, a repair on the new tip) in a thread the cache never had, unreserved — so it is a miss after all
    (orch.steps.cache_hit.does_not_fit)."""


def land_and_record(work: TaskWork, pending: dict[str, Any], sha: str | None) -> None:
    """Shared mode: land the task's commits on the run's branch first (a replay that needs the worker goes back
    into its rounds: a conflict round, its checks, a new commit, and here again); then result.json."""
    if work.shared:
        try:
            sha = landing.land(work)
        except landing.Rework as rework:
            if (pending.get('cache') or {}).get('hit'):
                (work.task_dir / 'pending.json').unlink(missing_ok=True)
                state.update_state(work.task_dir, rework=None)
                why = (f'it conflicts in {", ".join(rework.conflicts)}' if rework.conflicts else
                       'its check fails' if rework.failed_check else 'it does not apply')
                raise HitDoesNotFit(f'{why} on what landed on the run branch meanwhile') from None
            rounds = landing.rounds_for(pending, rework)
            rounds.save(work.task_dir)
            (work.task_dir / 'pending.json').unlink(missing_ok=True)
            crash_point('after-rework-pending', work.task.id)
            state.update_state(work.task_dir, rework=None)
            continue_rounds(work, rounds)
            return
        except GitError as exc:
            raise landing.replay_failed(work, exc) from None
    write_result(work, pending, sha)
    if work.shared:
        checkout.release(work.rt, work.workdir)


def record_and_commit(work: TaskWork, exec_id: str, answer: Any,
                       before: Callable[[], None] | None = None, changed: list[str] | None = None) -> str | None:
    """The task's decisions entry and its changes, in its own commit (`before` runs first, under the same lock:
    a remote worker's changes are written into the worktree there; `changed`: the worker's changed paths, when
    the caller has just listed them, so the whole tree's status is not taken again under the run-wide lock).

    Serialised: parallel tasks sharing a worktree would otherwise both rewrite the decisions file
    (one entry lost) or commit each other's entries.
    """
    with work.session.scheduler.commit_lock:
        git_seal.check(work.session, work.task_dir, work.workdir)   # before git touches the worktree again
        if before is not None:
            before()
        _record_decisions(work.rt, work.task, answer, work.workdir)
        return _commit(work, exec_id, answer, changed)


def _record_decisions(rt: RunInputs, task: Task, answer: Any, workdir: Path) -> None:
    items = answer.get('decisions') if isinstance(answer, dict) else None
    if isinstance(items, list):
        try:
            path = inside(workdir, rt.config.decisions_file)
        except EscapesWorktree as exc:
            raise fail(rt.task_dir(task.id), f'cannot record the decisions: {exc}') from None
        decisions.upsert(path, rt.run.run_id, task.id, task.role, task.title,
                         [i for i in items if isinstance(i, dict)])


def _commit(work: TaskWork, exec_id: str, answer: Any, changed: list[str] | None = None) -> str | None:
    """Everything its worker changed in its own checkout (or worktree), with the decisions entry: attribution is
    exact by construction. Files outside its `paths` are committed with it and reported as a warning."""
    rt, task, workdir = work.rt, work.task, work.workdir
    strays = outside_paths(task, git.changed_paths(workdir) if changed is None else changed,
                           rt.config.decisions_file)
    if strays:
        warning = f'changed files outside its paths, committed with it: {", ".join(strays)} (add them to its paths)'
        state.update_state(work.task_dir, warnings=[warning])
        output.write_line(f'warning: {task.id} {warning}', err=True)
    author = author_of(rt.config.git.author)
    trailers = {'Orch-Run': rt.run.run_id, 'Orch-Task': task.id, 'Orch-Role': task.role, 'Orch-Exec': exec_id}
    # A title with line breaks stays the subject; no secret from the plan reaches the history.
    message = redact(f'{task.id}: {one_line(task.title)}')   # one line, no terminal controls, encodable
    # Where codex-orch left its HEAD (either mode): a commit, reset or rebase by a worker fails the task.
    expect_head = checkout.expected_head(work.task_dir)
    sha = git.commit(workdir, message=message, trailers=trailers, author=author, expect_branch=work.branch,
                     expect_head=expect_head, detached=work.shared)
    if sha is not None:
        checkout.moved(work.task_dir, sha)
    return sha


def commit_remote(work: TaskWork, pending: dict[str, Any]) -> str | None:
    """Apply the commit a Dask worker returned (pending.json's `remote`, orch.steps.remote_work) to the run's
    worktree and commit it there, as a local commit is made."""
    remote = pending['remote']
    workdir = work.workdir

    def apply() -> None:
        if remote.get('commit'):
            git.restore_paths(workdir, remote['paths'])   # what a kill during an earlier apply left
            git.apply_commit_changes(workdir, remote['snapshot'], remote['commit'])

    try:
        return record_and_commit(work, pending['exec_id'], pending['answer'], before=apply)
    except git.CommitRefused as exc:
        (work.task_dir / 'pending.json').unlink(missing_ok=True)
        raise fail(work.task_dir, f'its changes cannot be committed: {exc}') from None
    except Failed:
        raise
    except git.GitError as exc:
        (work.task_dir / 'pending.json').unlink(missing_ok=True)
        if remote.get('commit'):
            git.restore_paths(workdir, remote['paths'])
        raise fail(work.task_dir, 'the change made on the Dask worker does not apply to the run\'s branch (a task '
                                  f'that committed meanwhile changed the same files?): {exc}') from None


def outside_paths(task: Task, changed: list[str], decisions_file: str) -> list[str]:
    """Changed files its `paths` do not cover (none when it declares no paths), codex-orch's own log left out."""
    if not task.paths:
        return []
    return [p for p in changed if p != decisions_file and not any(glob_match(g, p) for g in task.paths)]


def write_result(work: TaskWork, pending: dict[str, Any], sha: str | None) -> None:
    rt, task, task_dir = work.rt, work.task, work.task_dir
    worker = pending['worker']
    now = time.time()
    commit, files = _task_commit(work, sha)
    rounds = _landed_fixes(work, pending.get('rounds') or [])
    landed = {r.get('round'): r['fix'].get('commit') for r in rounds if r.get('kind') == 'review' and r.get('fix')}
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
        'review_rounds': pending.get('review_rounds', 0),
        'conflict_rounds': pending.get('conflict_rounds', 0), 'rounds': rounds,
        'fixes': [{**f, 'commit': landed.get(f.get('round'), f.get('commit'))} for f in pending.get('fixes') or []],
        'warnings': state.read_state(task_dir).get('warnings') or [],
    }
    if pending.get('cache'):   # a cache hit (orch.steps.cache_hit): its origin and the tokens it saved
        execution['cache'] = pending['cache']
    crash_point('before-result', task.id)
    state.write_result(task_dir, result, execution)
    state.update_state(task_dir, status='done', reason=None, ended_at=now, attempts=execution['attempts'],
                       outcome='ok', usage=execution['usage'], commit=commit, round=None, checks=execution['checks'],
                       rounds=execution['rounds'],
                       redo=None)   # a redo asked for (`codex-orch redo`) is done with this execution
    (task_dir / 'pending.json').unlink(missing_ok=True)
    git_seal.unseal(task_dir)


def _landed_fixes(work: TaskWork, history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rounds, each review round's fix commit as it landed on the run's branch (a landing replays it onto
    the tip there: another sha), found by its Orch-Exec trailer."""
    if not work.run_branch:
        return history
    out = []
    for entry in history:
        fix = entry.get('fix') if isinstance(entry, dict) else None
        if isinstance(fix, dict) and fix.get('commit') and fix.get('exec_id'):
            landed = git.find_commit_by_trailer(work.rt.repo, 'Orch-Exec', str(fix['exec_id']),
                                                since=work.rt.run.base_commit, tip=f'refs/heads/{work.run_branch}')
            entry = {**entry, 'fix': {**fix, 'commit': landed or fix['commit']}}
        out.append(entry)
    return out


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


def finish_interrupted_commit(work: TaskWork) -> bool:
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
    if sha is not None and git.rev_parse(workdir, 'HEAD') == sha:
        checkout.moved(work.task_dir, sha)   # its own commit, made just before the kill
    if sha is None and not (work.shared and landing.rework_recorded(work)):
        # The commit never happened: commit the worker's changes now (they are still in the worktree, or for a
        # remote worker in the commit it returned), but not the temp file of a decisions write the kill interrupted.
        atomic.sweep_temp((workdir / rt.config.decisions_file).parent, recursive=False)
        if pending.get('remote'):   # by what made pending.json, not by this run's executor (it may differ)
            sha = commit_remote(work, pending)
        else:
            sha = record_and_commit(work, pending['exec_id'], pending['answer'])
    land_and_record(work, pending, sha)
    return True
