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
from orch.core.status_text import dry_run_lines, gates_only
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
    cache = predict(rt, {r['id'] for r in would if not gates_only(r)}) if would else {}
    budget = run_budget(rt, spent_so_far(rt)) if would and (rt.config.token_budget or rt.config.cost_budget) else None
    budget_line = (f'{budget.describe()}: the run has spent {budget.amount(budget.spent)}, '
                   f'{budget.amount(max(0, budget.limit - budget.spent))} left'
                   if budget is not None and budget.limit is not None else None)
    lines = dry_run_lines(rt.run.run_id, rows, pid=holder_pid(rt.run_dir), cache=cache,
                          money=_money_line(rt, would), budget=budget_line, again=again)
    for line in lines:
        output.write_line(line)
    return SOMETHING if would else NOTHING


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


def _money_line(rt: RunInputs, rows: list[dict[str, Any]]) -> str:
    """With a price table: what the tokens of the last time cost (each task's latest execution, by its model)."""
    prices = rt.config.prices
    if not prices or not rows:
        return ''
    costs = [usage_cost(prices, rt.role(r['role']).model, r.get('usage')) for r in rows if not gates_only(r)]
    return f'; about {money(sum(c for c in costs if c is not None))} by the price table'


