"""Running a run to its end: lock, services, progress, doit, the report, the exit code.

Shared by run, resume, task and plan (and prune when it resumes), so every run goes the same way.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any

from doit.dependency import DatabaseException

from orch import output
from orch.adapters import tracing, worker
from orch.adapters.services import Services
from orch.adapters.worker_env import provider_key
from orch.core.redact import RedactingStream
from orch.engine import cache_sync, edit_waves, manifest_rows, noop_record
from orch.engine.doit_runner import changed_entries, is_last, run_doit, step_records
from orch.engine.inputs import RunInputs, remember_plan_check
from orch.engine.progress import Progress
from orch.engine.reports import github_annotations, write_reports
from orch.engine.session import RunOptions, Session, spent_so_far
from orch.engine.stale_git_locks import clear_stale_git_locks
from orch.errors import EXIT_BAD_INPUT, EXIT_DEFERRED, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, EXIT_TASK_FAILED
from orch.runstate import atomic, manifest, state
from orch.runstate.fastpath import FULL_CHECK_ENV
from orch.runstate.lock import RunLock
from orch.runstate.runs import record_use


def execute(rt: RunInputs, options: RunOptions, lock: RunLock | None = None) -> int:
    """Run every stale or unfinished step of the run; returns the exit code (see orch.errors). Under GitHub Actions
    its own workflow annotations come last, after everything it printed that may quote a worker.

    lock: the run's lock when the caller already holds it (it took it before writing run.json).
    With an OTLP endpoint set, the run is one trace (orch.adapters.tracing).
    """
    with tracing.run_span(rt.run.run_id, {'codex_orch.tasks': len(rt.plan.tasks)}) as root:
        with output.workflow_commands_paused():
            code, rows = _execute(rt, options, lock)
        root.set({'codex_orch.exit_code': code})
        if code != EXIT_OK:
            root.fail(f'exit code {code}')
    for line in github_annotations(rt, rows):
        output.write_line(line)
    return code


def _execute(rt: RunInputs, options: RunOptions, lock: RunLock | None) -> tuple[int, list[dict[str, Any]] | None]:
    """The exit code, and the rows of the tasks as the run ended (None: not read)."""
    progress = Progress(len(rt.plan.tasks), verbosity=options.verbosity, stream=RedactingStream(sys.stdout),
                        work_steps=rt.work_step_of)
    session = Session(rt, options, lock=lock, progress=progress,
                      spent_before=spent_so_far(rt) if rt.config.token_budget or rt.config.cost_budget else 0)
    progress.details = running_details(rt, session)
    session.ensure_lock()
    previous = noop_record.load_previous(rt)   # from here on the run may change things: no manifest
    # after a plan edit, only the edited tasks and those downstream need doit's look (None: every step)
    scope = None if os.environ.get(FULL_CHECK_ENV) else noop_record.affected_by_edit(rt, previous)
    signed = edited = None
    records: dict[str, str] | None = None
    if scope is not None and previous is not None:
        # the rows of the tasks outside it are the manifest's while their files are as then; the attempts of the tasks
        # that no step of this command touches are taken as then while their directories are
        signed = manifest_rows.row_inputs_in(rt, previous, trusted_only=True)
        edited = manifest_rows.edited_tasks(rt, previous)
        # doit's records of the scope's steps as found: a change of one not made by running it is seen at the end
        with contextlib.suppress(DatabaseException):
            records = step_records(rt, scope)
        session.rows.unchanged = lambda inputs: manifest_rows.unchanged_rows(rt, previous, scope, inputs, signed,
                                                                             edited)
    remember_plan_check(rt)
    record_use(rt.repo, rt.run.run_id)   # under the lock: this run is now the latest (a plan run's default)
    services = Services(rt.repo, rt.config.services, rt.run_dir)
    try:
        if scope is None:   # with a scope the last run ended cleanly and no writer ran since: there are none
            atomic.sweep_temp(rt.run_dir)   # temp files of writes a kill interrupted
        clear_stale_git_locks(rt, scope)   # and lock files of git commands killed (also by a command not of a run)
        with sigterm_as_interrupt(), contextlib.chdir(rt.repo):
            try:
                services.start()
                cache_sync.pull_before(rt)
                rc, scope = _run_steps(rt, session, options, previous, scope, edited, records)
                # for the report step: the tasks no step of this command touched (with the scope it went on with)
                quiet = manifest_rows.quiet_row_inputs(rt, previous, scope, signed)
                session.rows.quiet, session.rows.quiet_dirs = quiet
                if any(is_last(s) for s in rt.steps):
                    report_rc = run_doit(rt, session, ['run', *(s.name for s in rt.steps if is_last(s))],
                                         report='only')
                    rc = rc or report_rc
            except KeyboardInterrupt:
                session.cancel.set()
                worker.kill_all_workers()
                progress.close()
                output.write_line(f'interrupted; finished tasks are kept. Resume with: '
                                  f'codex-orch resume --run-id {rt.run.run_id}', err=True)
                _final_report(rt)
                # (steps may still be finishing: what the annotations say is read once they have)
                return EXIT_INTERRUPTED, None
            finally:
                services.stop()
    finally:
        progress.close()
        session.release_lock()   # waits for steps still finishing in doit's threads
        if session.executor is not None:
            from orch.adapters.dask_executor import close_all
            close_all()
    clean = rc == 0 and _clean(session)
    before = None
    if clean:   # the no-op manifest's first snapshot, before the rows below are read
        with contextlib.suppress(OSError):
            before = noop_record.snapshot_before(rt, previous, scope=scope, as_before=session.rows.as_before,
                                                 records=records)
    if previous is not None:   # its signatures, answers and index were used: only its rows are read from here on
        previous = dataclasses.replace(previous, files=[], dirs=[], index={},
                                       answers={manifest_rows.ROWS: previous.answers.get(manifest_rows.ROWS)})
    # The rows the report was written from, unless anything they are read from changed since (then read again):
    # what they are read from as the snapshot above signed it. (A resume scoped after an edit signs the tasks whose
    # rows were the old manifest's as that manifest did, without a look: a hand edit of their files after the report
    # step is not in these rows, and the manifest it writes signs them as they were; the next command's first check
    # finds the difference and shows it. See noop_record._settled_paths.)
    rows = session.rows.read(rt, noop_record.row_inputs_of(rt, before))
    cache_sync.store_and_push(rt, rows)
    lines = summary_lines(rt, session, rows)
    for line, err in lines:
        output.write_line(line, err=err)
    if session.internal_errors:
        return EXIT_INTERNAL, rows
    code = exit_code(rows, rc)
    # a failed step never exits 0, whatever the tasks' records say (a prompt step that failed leaves the last result)
    code = EXIT_TASK_FAILED if code == EXIT_OK and (session.step_failures or rc) else code
    if code == EXIT_OK and _still_stale(rt, scope):
        return EXIT_INTERNAL, rows
    if code == EXIT_OK and before is not None:
        # What a no-op resume of this state would print is what this one printed (every task done);
        # the manifest is written only if doit finds nothing left to run and nothing changed meanwhile.
        with contextlib.suppress(OSError):
            noop_record.record(rt, before, session.rows.redacted(rows), [line for line, err in lines if not err],
                               scope=scope, quiet=session.rows.quiet, entries_checked=True)
    return code, rows


def _run_steps(rt: RunInputs, session: Session, options: RunOptions, previous: manifest.Manifest | None,
               scope: frozenset[str] | None, edited: set[str] | None,
               records: dict[str, str] | None) -> tuple[int, frozenset[str] | None]:
    """doit's run of every step but the report; after a plan edit, of the scope's, the edited tasks' first
    (orch.engine.edit_waves). Returns doit's exit code and the scope the resume goes on with: only the edited tasks
    when nothing below them had to run (the rest is as the old manifest found it, as after an edit with nothing below
    it). edited: the tasks whose plan objects the edit changed; records: doit's records of the scope's steps as the
    resume found them."""
    argv = _argv(rt, options)
    wave = edit_waves.first_wave(rt, edited, scope, jobs=options.jobs, keep_going='--continue' in argv)
    if wave is None or scope is None or previous is None:
        return run_doit(rt, session, argv, scope=scope), scope
    rc = run_doit(rt, session, argv, scope=wave.tasks, run_level=wave.run_steps)
    if rc != 0 or not _clean(session):
        return rc, scope
    if edit_waves.rest_needed(rt, previous, scope, wave.tasks, records):
        # the rest, and the run's own steps that wait for it (the first wave's steps: files to doit)
        return run_doit(rt, session, argv, scope=scope - wave.tasks), scope
    if not wave.all_run_steps:   # the run's own steps that read what the scope writes, once the tasks are done
        rc = run_doit(rt, session, argv, scope=frozenset())
    return rc, wave.tasks


def _clean(session: Session) -> bool:
    """No step failed, and nothing stopped the run (a doit exit code of 0 alone does not say so)."""
    return not (session.internal_errors or session.step_failures or session.budget.stop_reason)


def running_details(rt: RunInputs, session: Session) -> Callable[[str], str]:
    """What the terminal's progress block shows of a running task's work step: its round and its tokens so far."""
    task_of = {step: task for task, step in rt.work_step_of.items()}

    def details(step_name: str) -> str:
        task_id = task_of.get(step_name)
        if task_id is None:
            return ''
        round_now = state.read_state(rt.task_dir(task_id)).get('round')
        spent = session.budget.task_spent(task_id)
        return ', '.join([*([str(round_now)] if round_now else []), *([f'{spent:,} tokens'] if spent else [])])
    return details


def _still_stale(rt: RunInputs, scope: frozenset[str] | None) -> bool:
    """A task whose plan entry still differs from its task.json after a run that did all it could: no resume
    can bring it up to date (what is stored for comparison is not what is compared). Said, never exit 0.
    scope: the only tasks whose entries may have changed (orch.engine.noop_record.affected_by_edit)."""
    stale = changed_entries(rt, scope)
    for task_id, why in stale.items():
        output.write_line(f'  STALE {task_id}: still stale after this run ({"; ".join(d for _, d in why)}), and no '
                          'resume can change that; please report it', err=True)
    return bool(stale)


def exit_code(rows: list[dict[str, Any]], doit_rc: int) -> int:
    statuses = {r['status'] for r in rows}
    if statuses <= {'done'}:
        return EXIT_OK
    if statuses & {'failed', 'blocked'}:
        return EXIT_TASK_FAILED
    if any(r['status'] == 'deferred' and (r.get('cache') or {}).get('miss') for r in rows):
        return EXIT_BAD_INPUT   # a cache miss with no provider key: nothing was launched (orch.steps.cache_hit)
    if 'deferred' in statuses:
        return EXIT_DEFERRED
    if doit_rc == 3:
        return EXIT_INTERNAL
    return EXIT_TASK_FAILED


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM stops a run like Ctrl-C: workers killed, finished work kept, exit 130."""
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt
    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:   # not the main thread (e.g. embedded): leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _argv(rt: RunInputs, options: RunOptions) -> list[str]:
    argv = ['run']
    if options.keep_going or _keyless_cache(rt):
        argv.append('--continue')
    if options.jobs > 1:
        argv += ['-n', str(options.jobs), '-P', 'thread']
    return argv


def _keyless_cache(rt: RunInputs) -> bool:
    """A cached run with no provider key can spend nothing: it goes past each miss (orch.steps.cache_hit defers
    it) so that every task the cache has is built and every missing one is named."""
    return rt.config.cache is not None and provider_key(rt.config).problem is not None


def _final_report(rt: RunInputs) -> None:
    with contextlib.suppress(Exception):   # a report must never hide the interrupt itself
        write_reports(rt)


def summary_lines(rt: RunInputs, session: Session, rows: list[dict[str, Any]]) -> list[tuple[str, bool]]:
    """The lines a run ends with, each with whether it goes to stderr (the internal errors)."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row['status']] = counts.get(row['status'], 0) + 1
    text = ', '.join(f'{n} {s}' for s, n in sorted(counts.items()))
    lines = [f'run {rt.run.run_id}: {text}']
    lines += [f'  {row["id"]} {row["status"]}: {row["reason"]}' for row in rows
              if row['status'] in ('failed', 'deferred', 'blocked')]
    if session.budget.stop_reason:
        lines.append(f'stopped early: {session.budget.stop_reason}')
    lines += [f'  FAILED {reason}' for reason in session.step_failures]
    out = [(line, False) for line in lines]
    out += [(f'{reason}; please report it', True) for reason in session.internal_errors]
    out.append((f'report: {rt.run_dir / "report.md"}', False))
    return out
