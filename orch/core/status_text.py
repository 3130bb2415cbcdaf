"""The text `status` and the dry run print, from a status document (orch.runstate.status.document): pure
functions, shared by the commands, the no-op manifest (which records their text) and the fast path (which
renders a changed document without loading the run)."""
from __future__ import annotations

from typing import Any

from orch.core.prices import SPLIT_KEYS, money
from orch.core.tables import table


def render_table(doc: dict[str, Any]) -> str:
    remote = any(t.get('worker') for t in doc['tasks'])   # a Dask run: which worker ran each task
    rows = [[t['id'], t['role'], t['status'] + (f' ({t["round"]})' if t.get('round') else '') +
             (' (cache hit)' if (t.get('cache') or {}).get('hit') else ''), t['attempts'],
             *([t.get('worker') or ''] if remote else []), (t['reason'] or '')[:100]] for t in doc['tasks']]
    rows += [[t['id'], '', 'removed', '', *([''] if remote else []), t['reason']] for t in doc.get('removed') or []]
    head = f'run {doc["run"]["run_id"]}' + (' (in progress)' if doc['running'] else '')
    headers = ['task', 'role', 'status', 'attempts', *(['worker'] if remote else []), 'reason']
    # No number parsing: an id or a reason that looks like a number ('007', '1e3') is printed as it is.
    return head + '\n' + table(rows, headers, 'simple') + paid_line(doc['tasks'])


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


def dry_run_lines(run_id: str, rows: list[dict[str, Any]], *, pid: int | None, cache: dict[str, str],
                  money: str, budget: str | None, again: str) -> list[str]:
    """What a dry run prints: which tasks would run, why, and what each cost last time.

    cache: what the result cache would say of each task (orch.steps.cache_predict; empty without a cache);
    money: the cost line's tail with a price table; budget: the run budget's line, if it has one."""
    would = [r for r in rows if r['status'] != 'done']
    lines = []
    if pid is not None:
        lines.append(f'run {run_id} is in progress (PID {pid}): the tasks below are what is left of it now')
    if not would:
        return [*lines, nothing_would_run(run_id, len(rows))]
    lines.append(f'run {run_id}: {len(would)} of {len(rows)} task(s) would run (dry run: nothing was spent or written)')
    from tabulate import tabulate  # wrapped columns: only the dry run has them
    listed = [[r['id'], r['role'], _why(r), _last_time(r), *([cache.get(r['id'], '-')] if cache else [])]
              for r in would]
    lines.append(tabulate(listed, headers=['task', 'role', 'why', 'last time', *(['cache'] if cache else [])],
                          tablefmt='simple', maxcolwidths=[None, None, 50, None, 60] if cache else None,
                          disable_numparse=True))
    lines.append(_cost_line(would) + money)
    if cache:
        hits = sorted(t for t, said in cache.items() if said.startswith('hit'))
        lines.append(f'result cache: {len(hits)} of {len(cache)} task(s) would hit'
                     + (f' ({", ".join(hits)}: no model call, their checks run here)' if hits else ''))
    downstream = [r['id'] for r in would if _only_if_upstream(r)]
    if downstream:
        lines.append(f'{", ".join(downstream)}: only if a task they depend on ends with a different answer or '
                     'different code (an identical result stops there)')
    if budget:
        lines.append(budget)
    lines.append(f'To do it: {again}')
    return lines


def gates_only(row: dict[str, Any]) -> bool:
    """A task that would run only its gates (no model call)."""
    return bool(row['reasons']) and all(r['code'] in ('gate_will_run', 'gate_waiting') for r in row['reasons'])


def _why(row: dict[str, Any]) -> str:
    return '; '.join(r['detail'] for r in row['reasons']) or row['reason'] or row['status']


def _only_if_upstream(row: dict[str, Any]) -> bool:
    return bool(row['reasons']) and all(r['code'] == 'upstream_will_run' for r in row['reasons'])


def _tokens(usage: dict[str, Any] | None) -> tuple[int, int]:
    usage = usage or {}
    return int(usage.get('input_tokens') or 0), int(usage.get('output_tokens') or 0)


def _last_time(row: dict[str, Any]) -> str:
    if gates_only(row):
        return 'no model call (its gates only)'
    tokens_in, tokens_out = _tokens(row.get('usage'))
    if not row.get('attempts') and not tokens_in and not tokens_out:
        return '-'
    duration = row.get('duration')
    took = f', {duration:.1f} s' if duration else ''
    return f'{tokens_in:,} in / {tokens_out:,} out{took}'


def _cost_line(rows: list[dict[str, Any]]) -> str:
    rows = [r for r in rows if not gates_only(r)]
    tokens_in = sum(_tokens(r.get('usage'))[0] for r in rows)
    tokens_out = sum(_tokens(r.get('usage'))[1] for r in rows)
    seconds = sum(float(r.get('duration') or 0) for r in rows)
    never = [r['id'] for r in rows if not r.get('attempts')]
    line = (f'last time, these cost {tokens_in + tokens_out:,} tokens ({tokens_in:,} in, {tokens_out:,} out) '
            f'and {seconds:.1f} s of work')
    if never:
        line += f'; {", ".join(never)} never ran, so no cost is known for them'
    return line
