"""`codex-orch status [--run-id ID] [--json] [--watch]`: where a run stands, per task."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from orch import output

# doit, the config models, git and tabulate are imported where they are used: a status answered from the
# run's no-op manifest (orch.fastpath) needs none of them, and importing them costs more than doit's run.


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser('status', help='show the state of each task of a run')
    p.add_argument('--run-id', help='the run (default: the latest)')
    p.add_argument('--json', action='store_true', help='machine-readable output')
    p.add_argument('--watch', action='store_true', help='refresh every second until the run ends')


def status_document(repo: Path, run_id: str) -> dict[str, Any]:
    from orch.adapters.doit_runner import stale_task_ids
    from orch.engine.inputs import open_run
    from orch.runstate.lock import holder_pid
    from orch.runstate.status import run_record, task_rows

    rt = open_run(repo, run_id)
    rows = task_rows(rt, stale_task_ids(rt))
    return {'run': run_record(rt), 'running': holder_pid(rt.run_dir) is not None, 'tasks': rows}


def render_table(doc: dict) -> str:
    from tabulate import tabulate

    rows = [[t['id'], t['role'], t['status'] + (f' ({t["round"]})' if t.get('round') else ''), t['attempts'],
             (t['reason'] or '')[:100]] for t in doc['tasks']]
    head = f'run {doc["run"]["run_id"]}' + (' (in progress)' if doc['running'] else '')
    return head + '\n' + tabulate(rows, headers=['task', 'role', 'status', 'attempts', 'reason'], tablefmt='simple')


def status(args: argparse.Namespace) -> int:
    from orch import fastpath
    # unchanged since a run found nothing to do: its answer, at once; main() may have asked already
    answered = None if getattr(args, 'fast_path_tried', False) else fastpath.status(args)
    if answered is not None:
        return answered
    from orch.commands.common import find_repo
    from orch.runstate.runs import latest_run_id

    repo = find_repo()
    run_id = args.run_id or latest_run_id(repo)
    while True:
        doc = status_document(repo, run_id)
        if args.json:
            output.write_line(json.dumps(doc, indent=2, sort_keys=True))
        else:
            output.write_line(render_table(doc))
        if not args.watch or not doc['running']:
            return 0
        time.sleep(1.0)
        output.write_line()
