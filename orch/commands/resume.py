"""`codex-orch resume [--run-id ID]`: bring a run up to date (the latest by default).

Plan and spec are re-read, so edits take effect; only stale, failed or unfinished tasks run.
"""
from __future__ import annotations

import argparse
import dataclasses

from orch.commands.common import find_repo
from orch.engine.execute import execute
from orch.commands.run import add_run_options, options_from
from orch.runstate.runs import latest_run_id, save_run
from orch.engine.runtime import open_run
from orch.core.spec import check_spec


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser('resume', help='re-run what is stale, failed or unfinished in a run')
    p.add_argument('--run-id', help='the run (default: the latest)')
    p.add_argument('--spec-file', help='replace the run\'s spec file')
    add_run_options(p)


def resume(args: argparse.Namespace) -> int:
    repo = find_repo()
    run_id = args.run_id or latest_run_id(repo)
    rt = open_run(repo, run_id)
    rt.options = options_from(args, rt.config.jobs)
    spec = check_spec(args.spec_file, repo) if args.spec_file else rt.run.spec_file
    rt.ensure_lock()   # a run in progress is refused before anything is written
    if spec != rt.run.spec_file:
        rt.run = dataclasses.replace(rt.run, spec_file=spec)
        save_run(repo, rt.run)
    rt.scheduler.jobs = rt.options.jobs
    return execute(rt)
