"""Writing a run's reports: report.md, summary.json, junit.xml (rendered by orch.core.report) and findings.sarif
(orch.core.github)."""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from orch import __version__, filesig
from orch.core.github import annotation_commands, sarif
from orch.core.redact import redact_shared
from orch.core.report import build_summary, render_json_chunks, render_junit, render_markdown
from orch.core.text import encode_utf8
from orch.engine.inputs import RunInputs
from orch.failpoints import crash_point
from orch.runstate import atomic, attempts, known_rows
from orch.runstate.status import run_record, task_rows


def write_reports(rt: RunInputs, rows: list[dict[str, Any]] | None = None, *, clean: bool = False) -> dict[str, Any]:
    """rows: the tasks' status rows as read now (orch.runstate.status.task_rows); None: read here. clean: the rows
    are redacted already (KnownRows.redacted)."""
    if rows is None:
        with attempts.writing():   # a command that writes the reports may refresh the tasks' attempt summaries
            rows = task_rows(rt)
    # what the summary holds besides the rows is made from them (counts, totals, their decisions) and the run's record
    summary = build_summary(redact_shared(run_record(rt)), rows if clean else redact_shared(rows))
    markdown = render_markdown(summary)
    atomic.write_if_changed(rt.run_dir / 'report.md', markdown)
    crash_point('report')
    atomic.write_chunks_if_changed(rt.run_dir / 'summary.json', map(encode_utf8, render_json_chunks(summary)))
    atomic.write_if_changed(rt.run_dir / 'junit.xml', render_junit(summary))
    atomic.write_if_changed(rt.run_dir / 'findings.sarif', json.dumps(sarif(summary, __version__), indent=2) + '\n')
    step_summary = os.environ.get('GITHUB_STEP_SUMMARY')
    if step_summary:
        with open(step_summary, 'a', encoding='utf-8') as f:
            f.write(markdown + '\n')
    return summary


def github_annotations(rt: RunInputs, rows: list[dict[str, Any]] | None = None) -> list[str]:
    """The workflow annotations of the run's failures and findings when it runs in GitHub Actions, else none.
    rows: as read now (None: read here, only when they are needed)."""
    if os.environ.get('GITHUB_ACTIONS') != 'true':
        return []
    rows = task_rows(rt) if rows is None else rows
    return annotation_commands(redact_shared(build_summary(run_record(rt), rows)))


def report_digest(rt: RunInputs, inputs: known_rows.RowInputs | None = None) -> str:
    """Changes whenever any task's state or result changes: the report's input.

    These files are only ever replaced whole (atomic writes: a new inode, new times), so their stat
    signature tells a change as surely as their content, for a fraction of the cost (10,000 tasks:
    0.05 s instead of 0.24 s on every run). inputs: the rows' inputs as just signed (they hold these stats).
    """
    h = hashlib.sha256(rt.plan.digest.encode())
    layout, repo = rt.layout, rt.repo
    for task in rt.plan.tasks:
        if inputs is not None and task.id in inputs:
            sigs = inputs[task.id][0]
        else:
            task_dir = f'{repo}/{layout.task_dir(task.id)}'
            sigs = tuple(filesig.file_sig(f'{task_dir}/{name}') for name in known_rows.ROW_FILES)
        h.update(f'{sigs!r};'.encode())
    return h.hexdigest()
