"""The report step: the run's reports, refreshed whenever any task's state changed."""
from __future__ import annotations

from typing import Any

from orch.core.compile import Step
from orch.engine.inputs import RunInputs
from orch.engine.reports import report_digest, write_reports
from orch.engine.session import Session


def write_report(rt: RunInputs, session: Session, step: Step) -> dict[str, str]:
    write_reports(rt)
    return {'state_digest': report_digest(rt)}   # saved by doit: what report_uptodate compares against


def report_uptodate(rt: RunInputs, step: Step, values: dict[str, Any]) -> bool:
    return bool(values.get('state_digest') == report_digest(rt))
