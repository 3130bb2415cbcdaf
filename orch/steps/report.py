"""The report step: the run's reports, refreshed whenever any task's state changed."""
from __future__ import annotations

from typing import Any

from orch.core.compile import Step
from orch.engine.inputs import RunInputs
from orch.engine.reports import report_digest, write_reports
from orch.engine.session import Session
from orch.runstate import attempts
from orch.runstate.known_rows import row_inputs


def write_report(rt: RunInputs, session: Session, step: Step) -> dict[str, str]:
    # The rows' inputs, signed before they are read (a state that changes while they are read is reported again),
    # and the report's own input among them; the attempts of the tasks a scoped resume leaves alone as its first
    # check found them.
    inputs = row_inputs(rt, session.rows.quiet, session.rows.quiet_dirs)
    digest = report_digest(rt, inputs)
    with attempts.writing():   # a run may refresh its tasks' attempt summaries
        rows = session.rows.read(rt, inputs)   # kept: the run's summary is these rows, if nothing changed since
    write_reports(rt, session.rows.redacted(rows), clean=True)
    return {'state_digest': digest}   # saved by doit: what report_uptodate compares against


def report_uptodate(rt: RunInputs, session: Session, step: Step, values: dict[str, Any]) -> bool:
    # After a task's step in this command the answer is no, without a stat of every task's files (30,000 at 10,000
    # tasks): at worst the reports are written again from the same state. The manifest's check (all_up_to_date)
    # signs the tasks a scoped resume leaves alone as its first check found them: a change since only keeps it from
    # writing the manifest (the digest differs from the one this step saved), and the next command's first check
    # sees it.
    if session.task_step_ran:
        return False
    return bool(values.get('state_digest') == report_digest(rt, session.rows.quiet or None))
