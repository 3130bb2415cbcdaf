"""`run --dry-run` and `resume --dry-run`: which tasks would run, why, and what each cost last time.

It spends nothing and writes nothing — no lock, no run record, no doit record: the answer comes from the
same read-only check `status` makes (the plan as it is now against what each task last ran with, and doit's
records). Exit 0 when nothing would run, 1 when something would: a CI step can ask before it pays.
"""
from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path
from typing import Any

from tabulate import tabulate

from orch import output
from orch.core.config import CONFIG_FILE, load_config
from orch.core.plan import load_plan, topological_order
from orch.core.prices import money, usage_cost
from orch.core.resources import defaults_dir
from orch.core.spec import check_spec
from orch.core.status_text import nothing_would_run
from orch.core.validate import load_json_schema
from orch.engine.doit_runner import stale_task_ids
from orch.engine.inputs import RunInputs, open_run
from orch.engine.session import run_budget, spent_so_far
from orch.errors import EXIT_OK, EXIT_TASK_FAILED
from orch.runstate.lock import holder_pid
from orch.runstate.runs import ORCH_DIR, RunInfo
from orch.runstate.status import task_rows
from orch.steps.cache_predict import predict

NOTHING, SOMETHING = EXIT_OK, EXIT_TASK_FAILED


def dry_run_existing(repo: Path, info: RunInfo, spec_file: str | None, again: list[str]) -> int:
    """The dry run of an existing run, as the command `again` would bring it up to date (a new --spec-file
    taken as that command would take it, without recording it)."""
    if spec_file:
        info = dataclasses.replace(info, spec_file=check_spec(spec_file, repo))
        again = [*again, '--spec-file', spec_file]
    return dry_run_of(open_run(repo, info.run_id, info=info), shlex.join(again))


def dry_run_of(rt: RunInputs, again: str) -> int:
    rows = task_rows(rt, stale_task_ids(rt))
    would = [r for r in rows if r['status'] != 'done']
    run_id = rt.run.run_id
    pid = holder_pid(rt.run_dir)
    if pid is not None:
        output.write_line(f'run {run_id} is in progress (PID {pid}): the tasks below are what is left of it now')
    if not would:
        output.write_line(nothing_would_run(run_id, len(rows)))
        return NOTHING
    output.write_line(f'run {run_id}: {len(would)} of {len(rows)} task(s) would run '
                      '(dry run: nothing was spent or written)')
    cache = predict(rt, {r['id'] for r in would if not _gates_only(r)})
    table = [[r['id'], r['role'], _why(r), _last_time(r), *([cache.get(r['id'], '-')] if cache else [])]
             for r in would]
    output.write_line(tabulate(table, headers=['task', 'role', 'why', 'last time', *(['cache'] if cache else [])],
                               tablefmt='simple', maxcolwidths=[None, None, 50, None, 60] if cache else None))
    output.write_line(_cost_line(would) + _money_line(rt, would))
    if cache:
        hits = sorted(t for t, said in cache.items() if said.startswith('hit'))
        output.write_line(f'result cache: {len(hits)} of {len(cache)} task(s) would hit'
                          + (f' ({", ".join(hits)}: no model call, their checks run here)' if hits else ''))
    downstream = [r['id'] for r in would if _only_if_upstream(r)]
    if downstream:
        output.write_line(f'{", ".join(downstream)}: only if a task they depend on ends with a different answer or '
                          'different code (an identical result stops there)')
    budget = run_budget(rt, spent_so_far(rt)) if rt.config.token_budget or rt.config.cost_budget else None
    if budget is not None and budget.limit is not None:
        output.write_line(f'{budget.describe()}: the run has spent {budget.amount(budget.spent)}, '
                          f'{budget.amount(max(0, budget.limit - budget.spent))} left')
    output.write_line(f'To do it: {again}')
    return SOMETHING


def dry_run_new(repo: Path, plan_file: str, run_id: str | None) -> int:
    """The dry run of a run that does not exist yet: every task of the plan would run; the plan is checked
    as `run` would check it (with the default config when the repository has none yet), and nothing is written."""
    orch_dir = repo / ORCH_DIR if (repo / ORCH_DIR).is_dir() else defaults_dir()
    config = load_config(orch_dir / CONFIG_FILE)
    plan = load_plan(repo / plan_file, load_json_schema(orch_dir / 'schemas' / 'plan.json'), set(config.roles))
    tasks = topological_order(plan)
    named = f'run {run_id}' if run_id else 'a new run'
    output.write_line(f'{named}: all {len(tasks)} task(s) of {plan_file} would run, none ran before '
                      '(dry run: nothing was spent or written)')
    output.write_line(tabulate([[t.id, t.role, 'it never ran', '-'] for t in tasks],
                               headers=['task', 'role', 'why', 'last time'], tablefmt='simple'))
    if not (repo / ORCH_DIR).is_dir():
        output.write_line(f'{ORCH_DIR}/ would be created with the default config, schemas and prompts')
    return SOMETHING if tasks else NOTHING


def _why(row: dict[str, Any]) -> str:
    return '; '.join(r['detail'] for r in row['reasons']) or row['reason'] or row['status']


def _only_if_upstream(row: dict[str, Any]) -> bool:
    return bool(row['reasons']) and all(r['code'] == 'upstream_will_run' for r in row['reasons'])


def _tokens(usage: dict[str, Any] | None) -> tuple[int, int]:
    usage = usage or {}
    return int(usage.get('input_tokens') or 0), int(usage.get('output_tokens') or 0)


def _gates_only(row: dict[str, Any]) -> bool:
    return bool(row['reasons']) and all(r['code'] in ('gate_will_run', 'gate_waiting') for r in row['reasons'])


def _last_time(row: dict[str, Any]) -> str:
    if _gates_only(row):
        return 'no model call (its gates only)'
    tokens_in, tokens_out = _tokens(row.get('usage'))
    if not row.get('attempts') and not tokens_in and not tokens_out:
        return '-'
    duration = row.get('duration')
    took = f', {duration:.1f} s' if duration else ''
    return f'{tokens_in:,} in / {tokens_out:,} out{took}'


def _money_line(rt: RunInputs, rows: list[dict[str, Any]]) -> str:
    """With a price table: what the tokens of the last time cost (each task's latest execution, by its model)."""
    prices = rt.config.prices
    if not prices:
        return ''
    costs = [usage_cost(prices, rt.role(r['role']).model, r.get('usage')) for r in rows if not _gates_only(r)]
    return f'; about {money(sum(c for c in costs if c is not None))} by the price table'


def _cost_line(rows: list[dict[str, Any]]) -> str:
    rows = [r for r in rows if not _gates_only(r)]
    tokens_in = sum(_tokens(r.get('usage'))[0] for r in rows)
    tokens_out = sum(_tokens(r.get('usage'))[1] for r in rows)
    seconds = sum(float(r.get('duration') or 0) for r in rows)
    never = [r['id'] for r in rows if not r.get('attempts')]
    line = (f'last time, these cost {tokens_in + tokens_out:,} tokens ({tokens_in:,} in, {tokens_out:,} out) '
            f'and {seconds:.1f} s of work')
    if never:
        line += f'; {", ".join(never)} never ran, so no cost is known for them'
    return line
