"""Running a loaded run to its end: lock, progress, doit, report, exit code. Shared by run/resume/task."""
from __future__ import annotations

import contextlib
import sys

from orch import output
from orch.steps import actions
from orch.engine.stale_git_locks import clear_stale_git_locks
from orch.runstate import atomic
from orch.adapters import worker
from orch.commands.common import exit_code, sigterm_as_interrupt
from orch.adapters.doit_runner import run_doit
from orch.errors import EXIT_INTERRUPTED
from orch.engine.progress import Progress
from orch.core.redact import RedactingStream
from orch.engine.runtime import Runtime
from orch.adapters.services import Services
from orch.runstate.status import task_rows


def execute(rt: Runtime) -> int:
    rt.ensure_lock()   # usually taken already by run/resume, before they wrote anything
    rt.remember_plan_check()
    lock = rt.lock
    progress = Progress(len(rt.plan.tasks), verbosity=rt.options.verbosity, stream=RedactingStream(sys.stdout))
    rt.events = progress
    services = Services(rt.repo, rt.config.services, rt.run_dir)
    try:
        atomic.sweep_temp(rt.run_dir)   # temp files of writes a kill interrupted
        clear_stale_git_locks(rt)   # and lock files of git commands killed with it
        with sigterm_as_interrupt(), contextlib.chdir(rt.repo):
            try:
                services.start()
                rc = run_doit(rt, _argv(rt))
                run_doit(rt, ['run', 'report'], report='only')
            except KeyboardInterrupt:
                rt.cancel.set()
                worker.kill_all_workers()
                progress.close()
                output.write_line(f'interrupted; finished tasks are kept. Resume with: '
                                  f'codex-orch resume --run-id {rt.run.run_id}', err=True)
                _final_report(rt)
                return EXIT_INTERRUPTED
            finally:
                services.stop()
    finally:
        progress.close()
        lock.release()
        rt.lock = None
    rows = task_rows(rt)
    _summary_line(rt, rows)
    return exit_code(rows, rc)


def _argv(rt: Runtime) -> list[str]:
    argv = ['run']
    if rt.options.keep_going:
        argv.append('--continue')
    if rt.options.jobs > 1:
        argv += ['-n', str(rt.options.jobs), '-P', 'thread']
    return argv


def _final_report(rt: Runtime) -> None:
    try:
        from orch.commands.report import write_reports
        write_reports(rt)
    except Exception:   # a report must never hide the interrupt itself
        pass


def _summary_line(rt: Runtime, rows: list[dict]) -> None:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row['status']] = counts.get(row['status'], 0) + 1
    text = ', '.join(f'{n} {s}' for s, n in sorted(counts.items()))
    output.write_line(f'run {rt.run.run_id}: {text}')
    for row in rows:
        if row['status'] in ('failed', 'deferred'):
            output.write_line(f'  {row["id"]} {row["status"]}: {row["reason"]}')
    if rt.stop_reason:
        output.write_line(f'stopped early: {rt.stop_reason}')
    output.write_line(f'report: {rt.run_dir / "report.md"}')
