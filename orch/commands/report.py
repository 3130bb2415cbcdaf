"""`codex-orch report --run-id ID`: write report.md, summary.json and junit.xml for a run."""
from __future__ import annotations

import argparse
import os

from orch import output
from orch.runstate import atomic
from orch.commands.common import find_repo
from orch.failpoints import crash_point
from orch.core.redact import redact_obj
from orch.core.report import build_summary, render_json, render_junit, render_markdown
from orch.runstate.runs import latest_run_id
from orch.engine.runtime import Runtime, open_run
from orch.runstate.status import decisions_of, run_record, task_rows


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser('report', help='write the Markdown, JSON and JUnit reports of a run')
    p.add_argument('--run-id', help='the run (default: the latest)')


def write_reports(rt: Runtime) -> dict:
    summary = redact_obj(build_summary(run_record(rt), task_rows(rt), decisions_of(rt)))
    markdown = render_markdown(summary)
    atomic.write_if_changed(rt.run_dir / 'report.md', markdown)
    crash_point('report')
    atomic.write_if_changed(rt.run_dir / 'summary.json', render_json(summary))
    atomic.write_if_changed(rt.run_dir / 'junit.xml', render_junit(summary))
    step_summary = os.environ.get('GITHUB_STEP_SUMMARY')
    if step_summary:
        with open(step_summary, 'a', encoding='utf-8') as f:
            f.write(markdown + '\n')
    return summary


def report(args: argparse.Namespace) -> int:
    repo = find_repo()
    rt = open_run(repo, args.run_id or latest_run_id(repo))
    write_reports(rt)
    for name in ('report.md', 'summary.json', 'junit.xml'):
        output.write_line(str(rt.run_dir / name))
    return 0
