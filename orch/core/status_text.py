"""The text `status` and the dry run print, from a status document (orch.runstate.status.document): pure
functions, shared by the commands, the no-op manifest (which records their text) and the fast path (which
renders a changed document without loading the run)."""
from __future__ import annotations

from typing import Any

from tabulate import tabulate

from orch.core.prices import SPLIT_KEYS, money


def render_table(doc: dict[str, Any]) -> str:
    remote = any(t.get('worker') for t in doc['tasks'])   # a Dask run: which worker ran each task
    rows = [[t['id'], t['role'], t['status'] + (f' ({t["round"]})' if t.get('round') else '') +
             (' (cache hit)' if (t.get('cache') or {}).get('hit') else ''), t['attempts'],
             *([t.get('worker') or ''] if remote else []), (t['reason'] or '')[:100]] for t in doc['tasks']]
    rows += [[t['id'], '', 'removed', '', *([''] if remote else []), t['reason']] for t in doc.get('removed') or []]
    head = f'run {doc["run"]["run_id"]}' + (' (in progress)' if doc['running'] else '')
    headers = ['task', 'role', 'status', 'attempts', *(['worker'] if remote else []), 'reason']
    return head + '\n' + tabulate(rows, headers=headers, tablefmt='simple') + paid_line(doc['tasks'])


def paid_line(tasks: list[dict[str, Any]]) -> str:
    """What the run paid, every execution counted, as a bill splits it (and its cost, with a price table)."""
    total = {k: sum(int((t.get('usage_total') or {}).get(k) or 0) for t in tasks) for k in SPLIT_KEYS}
    costs = [t['cost'] for t in tasks if t.get('cost') is not None]
    return (f'\ntokens: {total["billed_input_tokens"]:,} billed input, {total["cached_input_tokens"]:,} cached input, '
            f'{total["output_tokens"]:,} output ({total["reasoning_output_tokens"]:,} of it reasoning)'
            + (f'; cost {money(sum(costs))}' if costs else ''))


def nothing_would_run(run_id: str, tasks: int) -> str:
    """The dry run's answer when nothing would run."""
    return (f'run {run_id}: nothing would run: all {tasks} task(s) are done and up to date '
            '(dry run: nothing was spent or written)')
