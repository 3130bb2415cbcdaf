"""Starting a run and resuming one: typed entry points that the commands (and prune) call."""
from __future__ import annotations

import dataclasses
import datetime as dt
import errno
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from orch.adapters import git
from orch.adapters.codex_bin import require_codex
from orch.adapters.sandbox import require_for_run
from orch.core.config import Config
from orch.core.spec import check_spec, read_spec
from orch.engine.execute import execute
from orch.engine.inputs import RunInputs, load_inputs, open_run
from orch.engine.session import RunOptions
from orch.errors import GitError, InputError
from orch.runstate.lock import RunLock
from orch.runstate.runs import ORCH_DIR, RunInfo, check_run_id, latest_run_id, load_run, new_run_id, run_dir, save_run

MAX_JOBS = 64   # as for `jobs:` in the config


@dataclass(frozen=True)
class RunRequest:
    """How the user asked a run to go; `jobs` None takes the config's `jobs`."""

    jobs: int | None = None
    keep_going: bool = False
    verbosity: int = 1
    discard_changes: bool = False
    executor: str | None = None     # --executor local|dask; None: the config's executor.kind

    def options(self, default_jobs: int) -> RunOptions:
        jobs = self.jobs if self.jobs is not None else default_jobs
        if jobs < 1 or jobs > MAX_JOBS:
            raise InputError(f'-j {jobs}: the number of jobs must be at least 1 and at most {MAX_JOBS}')
        return RunOptions(jobs=jobs, keep_going=self.keep_going, verbosity=self.verbosity,
                          discard_changes=self.discard_changes, executor=self.executor)


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
    options = request.options(loaded.config.jobs)
    if not check_executor(loaded.config, options):   # remote workers use their own codex (doctor checks it)
        require_codex(loaded.config.codex.binary, repo)
        require_for_run(loaded.config, loaded.plan, loaded.rules, repo)
    spec = check_spec(spec_file, repo) if spec_file else None
    if run_id:
        check_run_id(run_id)
    run_id = run_id or new_run_id()
    info = existing_run(repo, run_id, kind, plan_file=plan_rel)
    if info is not None:
        info = RunInfo(**{**info.to_dict(), 'plan_file': plan_rel, 'plan_digest': loaded.plan.digest,
                          'spec_file': spec if spec_file else info.spec_file})
    else:
        info = new_run_info(repo, run_id, loaded.config, plan_rel, loaded.plan.digest, spec, kind)
    return PreparedRun(loaded.for_run(repo, info), options, _record_run(repo, info))


def resume_run(repo: Path, run_id: str | None, request: RunRequest, *, spec_file: str | None = None,
               check: Callable[[RunInputs], object] | None = None,
               before: Callable[[RunInputs], object] | None = None) -> int:
    """Bring a run up to date (the latest by default): plan and spec are re-read, so edits take effect.

    check: called with the run's inputs before its lock is taken (taking it writes the lock file); `before`: once
    the lock is held, before anything else is written (`redo` checks its tasks, then marks them). What either
    raises refuses the command, the lock released.
    """
    run_id = run_id or latest_run_id(repo)
    info = load_run(repo, run_id)
    spec = check_spec(spec_file, repo) if spec_file else info.spec_file
    if not spec_file and spec:
        read_spec(repo, spec)   # the run's spec, edited since: refused as a bad --spec-file is, before any write
    new_spec = spec != info.spec_file
    if new_spec:
        info = dataclasses.replace(info, spec_file=spec)
    rt = open_run(repo, run_id, info=info)
    options = request.options(rt.config.jobs)
    if not check_executor(rt.config, options):
        require_for_run(rt.config, rt.plan, rt.rules, repo)
    if check is not None:
        check(rt)
    lock = RunLock(rt.run_dir)
    lock.acquire()   # a run in progress is refused before anything is written
    try:
        if before is not None:
            before(rt)
        if new_spec:
            save_run(repo, info)
    except BaseException:
        lock.release()
        raise
    return execute(rt, options, lock)


def check_executor(config: Config, options: RunOptions) -> bool:
    """With the Dask executor (returns True): its address is set and its scheduler answers, before anything
    is written."""
    settings = config.executor
    if (options.executor or settings.kind) != 'dask':
        return False
    if not settings.address:
        raise InputError('--executor dask: the config has no executor.address; set it in '
                         '.orchestrator/orchestrator.yaml (executor: {kind: dask, address: tcp://HOST:8786})')
    from orch.adapters.dask_executor import connect
    connect(settings.address, settings.connect_timeout)
    return True


_KINDS = {'plan': 'a plan run (`codex-orch run`)',
          'task': 'a one-task run (`codex-orch task` or `plan`)'}


def existing_run(repo: Path, run_id: str, kind: str, *, plan_file: str | None = None) -> RunInfo | None:
    """The run run_id names, if it exists; it must be of the same kind (a plan run or a one-task run) and,
    given plan_file, run that plan file: a run follows one plan (its edits are how a run is continued),
    and mixing two plans' tasks on one branch is refused."""
    if not (run_dir(repo, run_id) / 'run.json').exists():
        return None
    info = load_run(repo, run_id)
    if info.kind != kind:
        raise InputError(f'--run-id {run_id}: that is {_KINDS.get(info.kind, info.kind)}, but this command makes '
                         f'{_KINDS[kind]}; choose a new run id, or omit --run-id')
    if plan_file is not None and info.plan_file != plan_file:
        raise InputError(f'--run-id {run_id}: that run executes the plan {info.plan_file}, not {plan_file}, and a run '
                         f'follows one plan; to run {plan_file}, choose a new run id (or omit --run-id); to continue '
                         f'run {run_id}, edit {info.plan_file} and `codex-orch resume --run-id {run_id}`')
    return info


def require_commit(repo: Path) -> str:
    """The commit HEAD is at: a run starts from it, so a repository without one is refused (before any write)."""
    try:
        return git.rev_parse(repo, 'HEAD')
    except GitError:
        raise InputError(f'{repo}: the repository has no commit yet; commit something first '
                         '(a run starts from the current commit)') from None


def new_run_info(repo: Path, run_id: str, config: Config, plan_rel: str, digest: str, spec: str | None,
                 kind: str = 'plan') -> RunInfo:
    base_commit = require_commit(repo)
    now = dt.datetime.now()
    date = f'{now:%Y%m%d}'
    values = {'date': date, 'run_id': run_id}
    return RunInfo(run_id=run_id, created=now.isoformat(timespec='microseconds'), date=date,
                   base_branch=git.current_branch(repo), base_commit=base_commit,
                   per_task=not config.use_single_workspace, plan_file=plan_rel, plan_digest=digest,
                   spec_file=spec, shared_branch=config.branches.shared.format(**values),
                   task_branch_template=config.branches.task, kind=kind)


def _record_run(repo: Path, info: RunInfo) -> RunLock:
    """Take the run's lock and write run.json: the first writes of a run. A runs directory that cannot be
    written is bad input (exit 2), and a new run's directory is taken back when its record cannot be written."""
    directory = run_dir(repo, info.run_id)
    created = not directory.exists()
    lock = RunLock(directory)
    try:
        lock.acquire()   # one writer per run: a run in progress is refused before run.json is touched
        try:
            save_run(repo, info)
        except BaseException:
            lock.release()
            raise
    except BaseException as exc:
        if created:
            shutil.rmtree(directory, ignore_errors=True)
        if isinstance(exc, OSError):
            raise InputError(_unwritable(repo, directory, exc)) from None
        raise
    return lock


def _unwritable(repo: Path, directory: Path, exc: OSError) -> str:
    """Why a run's directory cannot be written, naming the path that is in the way and the fix."""
    runs = directory.parent
    inside = [p for p in (repo / ORCH_DIR, runs, directory) if p.exists() or p.is_symlink()]
    blocker = next((p for p in inside if not p.is_dir()), None)
    if blocker is not None:
        return (f'{blocker}: is not a directory, and codex-orch keeps each run in {runs}/<run id>; '
                f'move {blocker} out of the way (rename or remove it), then run again')
    existing = inside[-1] if inside else repo
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (f'{existing}: cannot create the run {directory.name} there: {reason}; codex-orch writes '
                f'each run into {runs}/<run id>: make {existing} writable for this user (or run as its owner)')
    return f'{directory}: cannot create the run there: {reason} (check the disk and the path, then run again)'
