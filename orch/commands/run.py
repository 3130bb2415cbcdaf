"""`codex-orch run --plan-file P`: start a run (or continue the run named by --run-id)."""
from __future__ import annotations

import argparse
from pathlib import Path

from orch.commands.common import find_repo, first_use
from orch.engine.start import RunRequest, existing_run, prepare_run
from orch.runstate.runs import check_run_id


def add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument('-j', '--jobs', type=int, default=None, help='tasks to run at once (default: config `jobs`)')
    p.add_argument('--continue', dest='keep_going', action='store_true',
                   help='keep running independent tasks after a failure')
    p.add_argument('-q', '--quiet', action='count', default=0, help='less output')
    p.add_argument('-v', '--verbose', action='count', default=0, help='more output (worker activity)')
    p.add_argument('--discard-changes', action='store_true',
                   help="drop uncommitted changes in the run's worktrees that codex-orch did not make "
                        '(by default a task refuses to start over them)')
    p.add_argument('--executor', choices=('local', 'dask'), default=None,
                   help='where work steps run: here, or on the Dask cluster of the config\'s executor.address '
                        '(default: config `executor.kind`)')


def add_dry_run_option(p: argparse.ArgumentParser) -> None:
    """Here, not in orch.commands.dry_run: only a dry run pays for importing the dry-run machinery."""
    p.add_argument('--dry-run', action='store_true',
                   help='print which tasks would run, why, and what each cost last time; spend and write nothing '
                        '(exit 0: nothing would run, 1: something would)')


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser('run', help='execute a plan file')
    p.add_argument('--plan-file', required=True, help='the JSON plan to execute')
    p.add_argument('--spec-file', help='specification given to every worker (UTF-8 text in the repository)')
    p.add_argument('--run-id', help='name of a new run, or of an existing run to continue')
    add_run_options(p)
    add_dry_run_option(p)


def request_from(args: argparse.Namespace) -> RunRequest:
    return RunRequest(jobs=args.jobs, keep_going=args.keep_going, verbosity=max(0, 1 + args.verbose - args.quiet),
                      discard_changes=getattr(args, 'discard_changes', False),
                      executor=getattr(args, 'executor', None))


def plan_path_for_record(repo: Path, plan_file: str) -> str:
    path = Path(plan_file).resolve()
    try:
        return path.relative_to(repo.resolve()).as_posix()
    except ValueError:
        return str(path)


def run(args: argparse.Namespace) -> int:
    repo = find_repo()
    if args.dry_run:
        return _dry_run(repo, args)
    with first_use(repo):   # bad input leaves nothing behind, not even a first .orchestrator/
        plan_rel = plan_path_for_record(repo, args.plan_file)
        prepared = prepare_run(repo, plan_rel, spec_file=args.spec_file, run_id=args.run_id,
                               request=request_from(args))
    return prepared.execute()


def _dry_run(repo: Path, args: argparse.Namespace) -> int:
    from orch.commands.dry_run import dry_run_existing, dry_run_new
    plan_rel = plan_path_for_record(repo, args.plan_file)
    info = None
    if args.run_id:
        check_run_id(args.run_id)
        info = existing_run(repo, args.run_id, 'plan', plan_file=plan_rel)
    if info is None:
        return dry_run_new(repo, plan_rel, args.run_id)
    return dry_run_existing(repo, info, args.spec_file,
                            ['codex-orch', 'run', '--plan-file', args.plan_file, '--run-id', info.run_id])
