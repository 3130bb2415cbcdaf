"""`codex-orch status [--run-id ID] [--json] [--watch]`: where a run stands, per task."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from tabulate import tabulate

from orch import output
from orch.adapters.doit_runner import stale_task_ids
from orch.commands.common import find_repo
from orch.core.prices import SPLIT_KEYS, money
from orch.engine.inputs import RunInputs, open_run
from orch.runstate.lock import holder_pid
from orch.runstate.runs import latest_run_id
from orch.runstate.status import removed_tasks, run_record, task_rows


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser('status', help='show the state of each task of a run')
    p.add_argument('--run-id', help='the run (default: the latest)')
    p.add_argument('--json', action='store_true', help='machine-readable output')
    p.add_argument('--watch', action='store_true', help='refresh every second until the run ends')


def status_document(repo: Path, run_id: str) -> dict[str, Any]:
    rt = open_run(repo, run_id)
    return document(rt, task_rows(rt, stale_task_ids(rt)), running=holder_pid(rt.run_dir) is not None)


def document(rt: RunInputs, rows: list[dict[str, Any]], *, running: bool) -> dict[str, Any]:
    """The status of a run from its task rows (also what the no-op manifest records, orch.engine.noop_record)."""
    return {'run': run_record(rt), 'running': running, 'tasks': rows, 'removed': removed_tasks(rt)}


def render_table(doc: dict) -> str:
    remote = any(t.get('worker') for t in doc['tasks'])   # a Dask run: which worker ran each task
    rows = [[t['id'], t['role'], t['status'] + (f' ({t["round"]})' if t.get('round') else '') +
             (' (cache hit)' if (t.get('cache') or {}).get('hit') else ''), t['attempts'],
             *([t.get('worker') or ''] if remote else []), (t['reason'] or '')[:100]] for t in doc['tasks']]
    rows += [[t['id'], '', 'removed', '', *([''] if remote else []), t['reason']] for t in doc.get('removed') or []]
    head = f'run {doc["run"]["run_id"]}' + (' (in progress)' if doc['running'] else '')
    headers = ['task', 'role', 'status', 'attempts', *(['worker'] if remote else []), 'reason']
    return head + '\n' + tabulate(rows, headers=headers, tablefmt='simple') + _paid_line(doc['tasks'])


def _paid_line(tasks: list[dict[str, Any]]) -> str:
    """What the run paid, every execution counted, as a bill splits it (and its cost, with a price table)."""
    total = {k: sum(int((t.get('usage_total') or {}).get(k) or 0) for t in tasks) for k in SPLIT_KEYS}
    costs = [t['cost'] for t in tasks if t.get('cost') is not None]
    return (f'\ntokens: {total["billed_input_tokens"]:,} billed input, {total["cached_input_tokens"]:,} cached input, '
            f'{total["output_tokens"]:,} output ({total["reasoning_output_tokens"]:,} of it reasoning)'
            + (f'; cost {money(sum(costs))}' if costs else ''))


def status(args: argparse.Namespace) -> int:
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
