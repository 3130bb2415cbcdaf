"""Starting a run and resuming one: typed entry points that the commands (and prune) call."""
from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from orch.adapters import git
from orch.adapters.codex_bin import require_codex
from orch.core.config import Config
from orch.core.spec import check_spec
from orch.engine.execute import execute
from orch.engine.inputs import RunInputs, load_inputs, open_run
from orch.engine.session import RunOptions
from orch.errors import GitError, InputError
from orch.runstate.lock import RunLock
from orch.runstate.runs import RunInfo, check_run_id, latest_run_id, load_run, new_run_id, run_dir, save_run

MAX_JOBS = 64   # as for `jobs:` in the config


@dataclass(frozen=True)
class RunRequest:
    """How the user asked a run to go; `jobs` None takes the config's `jobs`."""

    jobs: int | None = None
    keep_going: bool = False
    verbosity: int = 1

    def options(self, default_jobs: int) -> RunOptions:
        jobs = self.jobs if self.jobs is not None else default_jobs
        if jobs < 1 or jobs > MAX_JOBS:
            raise InputError(f'-j {jobs}: the number of jobs must be at least 1 and at most {MAX_JOBS}')
        return RunOptions(jobs=jobs, keep_going=self.keep_going, verbosity=self.verbosity)


@dataclass(frozen=True)
class PreparedRun:
    inputs: RunInputs
    options: RunOptions
    lock: RunLock          # held: one writer per run, taken before run.json was written

    def execute(self) -> int:
        return execute(self.inputs, self.options, self.lock)


def prepare_run(repo: Path, plan_rel: str, *, spec_file: str | None, run_id: str | None,
                request: RunRequest, kind: str = 'plan') -> PreparedRun:
    """Check every input, then create the run record (or update the one run_id names); runs nothing.

    Shared by `run` and the one-task runs of `task` and `plan`, so all start runs the same way.
    """
    loaded = load_inputs(repo, plan_rel)
    require_codex(loaded.config.codex.binary, repo)
    spec = check_spec(spec_file, repo) if spec_file else None
    options = request.options(loaded.config.jobs)
    if run_id:
        check_run_id(run_id)
    run_id = run_id or new_run_id()
    info = existing_run(repo, run_id, kind)
    if info is not None:
        info = RunInfo(**{**info.to_dict(), 'plan_file': plan_rel, 'plan_digest': loaded.plan.digest,
                          'spec_file': spec if spec_file else info.spec_file})
    else:
        info = new_run_info(repo, run_id, loaded.config, plan_rel, loaded.plan.digest, spec, kind)
    lock = RunLock(run_dir(repo, run_id))
    lock.acquire()   # one writer per run: a run in progress is refused before run.json is touched
    try:
        save_run(repo, info)
    except BaseException:
        lock.release()
        raise
    return PreparedRun(loaded.for_run(repo, info), options, lock)


def resume_run(repo: Path, run_id: str | None, request: RunRequest, *, spec_file: str | None = None) -> int:
    """Bring a run up to date (the latest by default): plan and spec are re-read, so edits take effect."""
    run_id = run_id or latest_run_id(repo)
    info = load_run(repo, run_id)
    spec = check_spec(spec_file, repo) if spec_file else info.spec_file
    new_spec = spec != info.spec_file
    if new_spec:
        info = dataclasses.replace(info, spec_file=spec)
    rt = open_run(repo, run_id, info=info)
    options = request.options(rt.config.jobs)
    lock = RunLock(rt.run_dir)
    lock.acquire()   # a run in progress is refused before anything is written
    try:
        if new_spec:
            save_run(repo, info)
    except BaseException:
        lock.release()
        raise
    return execute(rt, options, lock)


_KINDS = {'plan': 'a plan run (`codex-orch run`)',
          'task': 'a one-task run (`codex-orch task` or `plan`)'}


def existing_run(repo: Path, run_id: str, kind: str) -> RunInfo | None:
    """The run run_id names, if it exists; it must be of the same kind (a plan run or a one-task run)."""
    if not (run_dir(repo, run_id) / 'run.json').exists():
        return None
    info = load_run(repo, run_id)
    if info.kind != kind:
        raise InputError(f'--run-id {run_id}: that is {_KINDS.get(info.kind, info.kind)}, but this command makes '
                         f'{_KINDS[kind]}; choose a new run id, or omit --run-id')
    return info


def new_run_info(repo: Path, run_id: str, config: Config, plan_rel: str, digest: str, spec: str | None,
                 kind: str = 'plan') -> RunInfo:
    try:
        base_commit = git.rev_parse(repo, 'HEAD')
    except GitError:
        raise InputError(f'{repo}: the repository has no commit yet; commit something first '
                         '(a run starts from the current commit)') from None
    now = dt.datetime.now()
    date = f'{now:%Y%m%d}'
    values = {'date': date, 'run_id': run_id}
    return RunInfo(run_id=run_id, created=now.isoformat(timespec='microseconds'), date=date,
                   base_branch=git.current_branch(repo), base_commit=base_commit,
                   per_task=not config.use_single_workspace, plan_file=plan_rel, plan_digest=digest,
                   spec_file=spec, shared_branch=config.branches.shared.format(**values),
                   task_branch_template=config.branches.task, kind=kind)
