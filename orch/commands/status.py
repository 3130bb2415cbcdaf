"""`codex-orch status [--run-id ID] [--json] [--watch]`: where a run stands, per task."""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from orch import output
from orch.commands.common import find_repo
from orch.core.status_text import render_table
from orch.engine.doit_runner import stale_task_ids
from orch.engine.inputs import open_run
from orch.runstate.lock import holder_pid
from orch.runstate.runs import latest_run_id
from orch.runstate.status import document, task_rows


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser('status', help='show the state of each task of a run')
    p.add_argument('--run-id', help='the run (default: the latest)')
    p.add_argument('--json', action='store_true', help='machine-readable output')
    p.add_argument('--watch', action='store_true', help='refresh every second until the run ends')


def status_document(repo: Path, run_id: str) -> dict[str, Any]:
    rt = open_run(repo, run_id)
    return document(rt, task_rows(rt, stale_task_ids(rt)), running=holder_pid(rt.run_dir) is not None)


def status(args: argparse.Namespace) -> int:
    repo = find_repo()
    run_id = args.run_id or latest_run_id(repo)
    while True:
        doc = status_document(repo, run_id)
        if args.json:
            output.write_json(doc)
        else:
            output.write_line(render_table(doc))
        if not args.watch or not doc['running']:
            return 0
        time.sleep(1.0)
        output.write_line()
