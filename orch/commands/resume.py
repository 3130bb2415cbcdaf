"""`codex-orch resume [--run-id ID]`: bring a run up to date (the latest by default).

Plan and spec are re-read, so edits take effect; only stale, failed or unfinished tasks run.
"""
from __future__ import annotations

import argparse

from orch.commands.run import add_run_options, request_from


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser('resume', help='re-run what is stale, failed or unfinished in a run')
    p.add_argument('--run-id', help='the run (default: the latest)')
    p.add_argument('--spec-file', help='replace the run\'s spec file')
    add_run_options(p)


def resume(args: argparse.Namespace) -> int:
    from orch import fastpath
    # nothing changed since a run found nothing to do (no doit import); main() may have asked already
    answered = None if getattr(args, 'fast_path_tried', False) else fastpath.resume(args)
    if answered is not None:
        return answered
    from orch.commands.common import find_repo
    from orch.engine.start import resume_run
    return resume_run(find_repo(), args.run_id, request_from(args), spec_file=args.spec_file)
