"""`codex-orch resume [--run-id ID]`: bring a run up to date (the latest by default).

Plan and spec are re-read, so edits take effect; only stale, failed or unfinished tasks run.
"""
from __future__ import annotations

import argparse

from orch.commands.common import find_repo
from orch.commands.run import add_dry_run_option, add_run_options, request_from
from orch.engine.start import resume_run
from orch.runstate.runs import latest_run_id, load_run


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser('resume', help='re-run what is stale, failed or unfinished in a run')
    p.add_argument('--run-id', help='the run (default: the latest)')
    p.add_argument('--spec-file', help='replace the run\'s spec file')
    add_run_options(p)
    add_dry_run_option(p)


def resume(args: argparse.Namespace) -> int:
    repo = find_repo()
    if args.dry_run:
        from orch.commands.dry_run import dry_run_existing  # its machinery only for a dry run
        run_id = args.run_id or latest_run_id(repo)
        return dry_run_existing(repo, load_run(repo, run_id), args.spec_file,
                                ['codex-orch', 'resume', '--run-id', run_id])
    return resume_run(repo, args.run_id, request_from(args), spec_file=args.spec_file)
