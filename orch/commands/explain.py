"""`codex-orch explain TASK [--run-id ID]`: why a task's result came from the cache or not.

It reads the task's latest cache lookup (orch.steps.cache_hit) and compares the inputs its key covered with the
nearest entry in the cache: which inputs differ (orch.core.cache_key.INPUT_NAMES) and, when the prompt does, how.
Read-only: it writes nothing.
"""
from __future__ import annotations

import argparse
import datetime as dt
import difflib

from orch import output
from orch.adapters import cache_local
from orch.commands.common import find_repo
from orch.core.cache_key import INPUT_NAMES, differing
from orch.engine.cache_sync import PROMPT_FILE
from orch.engine.inputs import open_run
from orch.errors import EXIT_OK, InputError
from orch.runstate import state
from orch.runstate.runs import latest_run_id
from orch.steps.cache_hit import nearest_entry

DIFF_LINES = 40   # of the prompt's diff against the nearest entry's


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser('explain', help="why a task's result came from the result cache, or why it missed")
    p.add_argument('task', metavar='TASK', help='a task id of the plan')
    p.add_argument('--run-id', help='the run (default: the latest)')


def explain(args: argparse.Namespace) -> int:
    repo = find_repo()
    run_id = args.run_id or latest_run_id(repo)
    rt = open_run(repo, run_id)
    if args.task not in rt.plan.by_id:
        raise InputError(f'{args.task!r} is not a task of run {run_id} (its tasks: {", ".join(rt.plan.by_id)})')
    task_dir = rt.task_dir(args.task)
    if rt.config.cache is None:
        output.write_line(f'{args.task}: the result cache is off (add `cache: {{}}` to the config to turn it on)')
        return EXIT_OK
    record = state.read_state(task_dir).get('cache')
    result = state.read_result(task_dir) or {}
    if not isinstance(record, dict) or not isinstance(record.get('inputs'), dict):
        output.write_line(f'{args.task}: no cache lookup recorded in run {run_id} yet (it has not started since '
                          'the cache was turned on)')
        return EXIT_OK
    key = str(record.get('key'))
    if record.get('hit'):
        origin = record.get('origin') or {}
        output.write_line(f'{args.task}: cache hit in run {run_id} (entry {key[:12]}, from task '
                          f'{origin.get("task", "?")} of run {origin.get("run", "?")} on {origin.get("host", "?")}, '
                          f'{record.get("tokens_saved", 0):,} tokens saved); its checks ran here')
        return EXIT_OK
    paid = 'its worker ran' if result.get('inputs_digest') == record.get('inputs_digest') else 'it did not run'
    output.write_line(f'{args.task}: cache miss in run {run_id} (key {key[:12]}; {paid})')
    if record.get('refused'):
        output.write_line(f'  the entry under its key was refused: {record["refused"]}')
    store = cache_local.open_store(repo, rt.config.cache.local)
    nearest = nearest_entry(store, args.task, record['inputs'])
    if nearest is None:
        output.write_line('  the cache holds no entries (pull them with `codex-orch cache pull`)')
        return EXIT_OK
    other_key, data = nearest
    origin = data.get('origin') or {}
    when = dt.datetime.fromtimestamp(float(origin.get('time') or 0)).isoformat(timespec='seconds')
    output.write_line(f'  nearest entry {other_key[:12]}: task {origin.get("task", "?")} of run '
                      f'{origin.get("run", "?")} on {origin.get("host", "?")}, written {when}')
    differs = differing(record['inputs'], data.get('inputs') or {})
    output.write_line('  its key differs in:' if differs else '  its inputs are the same (a different cache format)')
    for name in differs:
        theirs, mine = (data.get('inputs') or {}).get(name), record['inputs'].get(name)
        shown = f' ({theirs} -> {mine})' if name == 'codex' else ''
        output.write_line(f'    - {name}: {INPUT_NAMES[name]}{shown}')
    if 'prompt' in differs and (task_dir / PROMPT_FILE).is_file():
        before = (store.prompt(other_key) or '').splitlines()
        after = (task_dir / PROMPT_FILE).read_text(encoding='utf-8').splitlines()
        diff = list(difflib.unified_diff(before, after, f'entry {other_key[:12]}', f'run {run_id}', lineterm='', n=1))
        for line in diff[:DIFF_LINES]:
            output.write_line(f'    {line}')
        if len(diff) > DIFF_LINES:
            output.write_line(f'    ... ({len(diff) - DIFF_LINES} more lines)')
    return EXIT_OK
