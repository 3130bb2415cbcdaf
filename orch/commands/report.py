"""`codex-orch report --run-id ID`: write report.md, summary.json and junit.xml for a run."""
from __future__ import annotations

import argparse

from orch import output
from orch.commands.common import find_repo
from orch.engine.inputs import open_run
from orch.engine.reports import write_reports
from orch.runstate.runs import latest_run_id


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser('report', help='write the Markdown, JSON and JUnit reports of a run')
    p.add_argument('--run-id', help='the run (default: the latest)')


def report(args: argparse.Namespace) -> int:
    repo = find_repo()
    rt = open_run(repo, args.run_id or latest_run_id(repo))
    write_reports(rt)
    for name in ('report.md', 'summary.json', 'junit.xml'):
        output.write_line(str(rt.run_dir / name))
    return 0
