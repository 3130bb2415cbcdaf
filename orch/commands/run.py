"""`codex-orch run --plan-file P`: start a run (or continue the run named by --run-id)."""
from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from orch.adapters import git
from orch.adapters.codex_bin import require_codex
from orch.commands.common import ensure_orchestrator, find_repo
from orch.engine.execute import execute
from orch.errors import GitError, InputError
from orch.runstate.lock import RunLock
from orch.runstate.runs import RunInfo, check_run_id, load_run, new_run_id, run_dir, save_run
from orch.engine.runtime import RunOptions, Runtime, load_inputs
from orch.core.spec import check_spec


MAX_JOBS = 64   # as for `jobs:` in the config


def add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument('-j', '--jobs', type=int, default=None, help='tasks to run at once (default: config `jobs`)')
    p.add_argument('--continue', dest='keep_going', action='store_true',
                   help='keep running independent tasks after a failure')
    p.add_argument('-q', '--quiet', action='count', default=0, help='less output')
    p.add_argument('-v', '--verbose', action='count', default=0, help='more output (worker activity)')


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser('run', help='execute a plan file')
    p.add_argument('--plan-file', required=True, help='the JSON plan to execute')
    p.add_argument('--spec-file', help='specification given to every worker (UTF-8 text in the repository)')
    p.add_argument('--run-id', help='name of a new run, or of an existing run to continue')
    add_run_options(p)


def options_from(args: argparse.Namespace, default_jobs: int) -> RunOptions:
    jobs = args.jobs if args.jobs is not None else default_jobs
    if jobs < 1 or jobs > MAX_JOBS:
        raise InputError(f'-j {jobs}: the number of jobs must be at least 1 and at most {MAX_JOBS}')
    return RunOptions(jobs=jobs, keep_going=args.keep_going, verbosity=max(0, 1 + args.verbose - args.quiet))


def plan_path_for_record(repo: Path, plan_file: str) -> str:
    path = Path(plan_file).resolve()
    try:
        return path.relative_to(repo.resolve()).as_posix()
    except ValueError:
        return str(path)


def run(args: argparse.Namespace) -> int:
    repo = find_repo()
    ensure_orchestrator(repo)
    plan_rel = plan_path_for_record(repo, args.plan_file)
    return execute(prepare_run(repo, plan_rel, spec_file=args.spec_file, run_id=args.run_id, args=args))


def prepare_run(repo: Path, plan_rel: str, *, spec_file: str | None, run_id: str | None,
                args: argparse.Namespace, kind: str = 'plan') -> Runtime:
    """Check every input, then create the run record (or update the one --run-id names); runs nothing.

    Shared by `run` and the one-task runs of `task` and `plan`, so all start runs the same way.
    """
    config, plan, rules, schemas, templates = load_inputs(repo, plan_rel)
    require_codex(config.codex.binary, repo)
    spec = check_spec(spec_file, repo) if spec_file else None
    options = options_from(args, config.jobs)
    if run_id:
        check_run_id(run_id)
    run_id = run_id or new_run_id()
    info = existing_run(repo, run_id, kind)
    if info is not None:
        info = RunInfo(**{**info.to_dict(), 'plan_file': plan_rel, 'plan_digest': plan.digest,
                          'spec_file': spec if spec_file else info.spec_file})
    else:
        info = new_run_info(repo, run_id, config, plan_rel, plan.digest, spec, kind)
    lock = RunLock(run_dir(repo, run_id))
    lock.acquire()   # one writer per run: a run in progress is refused before run.json is touched
    try:
        save_run(repo, info)
    except BaseException:
        lock.release()
        raise
    return Runtime(repo=repo, config=config, run=info, plan=plan, rules=rules, schemas=schemas,
                   templates=templates, options=options, lock=lock)


_KINDS = {'plan': 'a plan run (`codex-orch run`)',
          'task': 'a one-task run (`codex-orch task` or `plan`)'}


def existing_run(repo: Path, run_id: str, kind: str) -> RunInfo | None:
    """The run --run-id names, if it exists; it must be of the same kind (a plan run or a one-task run)."""
    if not (run_dir(repo, run_id) / 'run.json').exists():
        return None
    info = load_run(repo, run_id)
    if info.kind != kind:
        raise InputError(f'--run-id {run_id}: that is {_KINDS.get(info.kind, info.kind)}, but this command makes '
                         f'{_KINDS[kind]}; choose a new run id, or omit --run-id')
    return info


def new_run_info(repo: Path, run_id: str, config, plan_rel: str, digest: str, spec: str | None,
                 kind: str = 'plan') -> RunInfo:
    try:
        base_commit = git.rev_parse(repo, 'HEAD')
    except GitError:
        raise InputError(f'{repo}: the repository has no commit yet; commit something first '
                         '(a run starts from the current commit)')
    now = dt.datetime.now()
    date = f'{now:%Y%m%d}'
    values = {'date': date, 'run_id': run_id}
    return RunInfo(run_id=run_id, created=now.isoformat(timespec='microseconds'), date=date,
                   base_branch=git.current_branch(repo), base_commit=base_commit,
                   per_task=not config.use_single_workspace, plan_file=plan_rel, plan_digest=digest,
                   spec_file=spec, shared_branch=config.branches.shared.format(**values),
                   task_branch_template=config.branches.task, kind=kind)
