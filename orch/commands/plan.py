"""`codex-orch plan --spec-file S`: the navigator writes an implementation plan, checked like any plan.

The navigator runs as a one-task run (see `task`). Its `plan` is checked with the plan schema and
the graph checks `run` applies; a rejected plan goes back to the navigator with the problems
appended to its instructions, a bounded number of times. Only a plan that passes is written, so
`codex-orch run --plan-file <printed path>` can execute it as it is.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from orch import output
from orch.commands.common import ensure_orchestrator, find_repo
from orch.commands.run import request_from
from orch.commands.task import add_output_options, run_task
from orch.core.config import CONFIG_FILE, load_config
from orch.core.plan import graph_problems
from orch.core.spec import check_spec
from orch.core.validate import load_json_schema, schema_errors
from orch.errors import EXIT_TASK_FAILED, InputError
from orch.runstate import atomic
from orch.runstate.runs import ORCH_DIR, new_run_id, run_dir

ROLE = 'navigator'
DEFAULT_TRIES = 3


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser('plan', help='have the navigator write an implementation plan for a spec (validated)')
    p.add_argument('--spec-file', required=True, help='the specification to plan (UTF-8 text in the repository)')
    p.add_argument('-o', '--output',
                   help='where to write the plan (default: specs/<spec name>_implementation_plan.json)')
    p.add_argument('--tries', type=int, default=DEFAULT_TRIES,
                   help='navigator runs at most, each told what was wrong with the last plan '
                        f'(default: {DEFAULT_TRIES})')
    p.add_argument('--force', action='store_true', help='overwrite the output file if it exists')
    p.add_argument('--run-id', help='name of the navigator\'s run (default: a new id)')
    add_output_options(p)


def default_output(repo: Path, spec_rel: str) -> Path:
    return repo / 'specs' / f'{Path(spec_rel).stem}_implementation_plan.json'


def output_path(repo: Path, args: argparse.Namespace, spec_rel: str) -> Path:
    path = Path(args.output).absolute() if args.output else default_output(repo, spec_rel)
    if path.is_dir():
        raise InputError(f'-o {args.output}: is a directory; give the path of the plan file to write')
    if path.exists() and not args.force:
        raise InputError(f'{_shown(path)}: already exists; pass --force to overwrite it, or choose another '
                         'file with -o (nothing was run)')
    return path


def plan_problems(data: object, plan_schema: dict[str, Any], roles: set[str]) -> list[str]:
    """What `run --plan-file` would reject in this plan: schema problems first, then the graph's."""
    if not isinstance(data, dict):
        return ['plan: the answer has no plan object']
    problems = schema_errors(data, plan_schema)
    return problems or graph_problems(data, roles)


def instructions(out: Path, problems: list[str]) -> str:
    text = ('Write the implementation plan for the specification below. It is saved as '
            f'{_shown(out)} and executed with `codex-orch run --plan-file {_shown(out)}`, one worker per task.')
    if problems:
        listed = '\n'.join(f'- {p}' for p in problems)
        text += (f'\n\nYour previous plan was rejected because of these problems:\n{listed}\n'
                 'Answer again with the complete corrected plan.')
    return text


def plan(args: argparse.Namespace) -> int:
    repo = find_repo()
    ensure_orchestrator(repo)
    spec_rel = check_spec(args.spec_file, repo)
    out = output_path(repo, args, spec_rel)
    if args.tries < 1:
        raise InputError(f'--tries {args.tries}: the navigator must run at least once (use 1 or more)')
    roles = set(load_config(repo / ORCH_DIR / CONFIG_FILE).roles)
    plan_schema = load_json_schema(repo / ORCH_DIR / 'schemas' / 'plan.json')
    run_id = args.run_id or new_run_id()
    problems: list[str] = []
    for attempt in range(1, args.tries + 1):
        outcome = run_task(repo, ROLE, instructions(out, problems), spec_file=args.spec_file, run_id=run_id,
                           request=request_from(args))
        if outcome.result is None:
            output.write_line(f'codex-orch: the navigator did not finish (run {run_id}); no plan was written',
                              err=True)
            return outcome.exit_code or EXIT_TASK_FAILED
        data = (outcome.result.get('answer') or {}).get('plan')
        problems = plan_problems(data, plan_schema, roles)
        if not problems:
            atomic.write_text(out, json.dumps(data, indent=2, ensure_ascii=False) + '\n')
            output.write_line(_shown(out))
            return 0
        rejected = run_dir(repo, run_id) / f'rejected-plan-{attempt}.json'
        atomic.write_json(rejected, data)
        output.write_line(f'navigator plan {attempt}/{args.tries} rejected ({len(problems)} problem'
                          f'{"s" if len(problems) != 1 else ""}, kept in {_shown(rejected)}):\n'
                          + '\n'.join(f'  {p}' for p in problems), err=True)
    output.write_line(f'codex-orch: no valid plan after {args.tries} tries; nothing was written to {_shown(out)} '
                      '(raise --tries, or make the spec more precise)', err=True)
    return EXIT_TASK_FAILED


def _shown(path: Path) -> str:
    """A path as the user would type it from here."""
    relative = os.path.relpath(path)
    return relative if not relative.startswith('..') else str(path)
