"""The only module that drives doit: steps -> doit task dicts, the loader, and DoitMain.

The same namespace serves `codex-orch` (embedding DoitMain, with the write-through backend)
and a host's `dodo.py` (plain `doit list/info/run` on the latest run).
"""
from __future__ import annotations

import contextlib
import gc
import hashlib
import inspect
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from doit.cmd_base import ModuleTaskLoader
from doit.dependency import Dependency, MD5Checker, SqliteDB
from doit.doit_cmd import DoitMain
from doit.exceptions import InvalidDodoFile, TaskFailed
from doit.reporter import ConsoleReporter
from doit.task import dict_to_task
from doit.tools import config_changed

from orch.steps import actions
from orch.runstate import state
from orch.core.compile import Step
from orch.errors import OrchError
from orch.engine.runtime import Runtime

BACKEND = 'orch-sqlite'
_ACTIONS = {'worktree': actions.worktree, 'task_worktree': actions.task_worktree,
            'render_prompt': actions.render_prompt, 'codex_worker': actions.codex_worker}


def _invoke(rt: Runtime, step: Step) -> Any:
    """Run one step's action; expected failures become doit's TaskFailed with a one-line reason."""
    try:
        rt.ensure_lock()
        if step.rule.is_shell:
            actions.shell(rt, step)
        elif step.rule.action == 'report':
            return write_report(rt)
        else:
            _ACTIONS[step.rule.action](rt, step)
    except actions.Failed as exc:
        return TaskFailed(str(exc))
    except OrchError as exc:
        return TaskFailed(str(exc))
    return True


def report_digest(rt: Runtime) -> str:
    """Changes whenever any task's state or result changes: the report's input.

    Both files are only ever replaced whole (atomic writes: a new inode, new times), so their stat
    signature tells a change as surely as their content, for a fraction of the cost (10,000 tasks:
    0.05 s instead of 0.24 s on every run).
    """
    h = hashlib.sha256(rt.plan.digest.encode())
    layout, repo = rt.layout, rt.repo
    for task in rt.plan.tasks:
        task_dir = f'{repo}/{layout.task_dir(task.id)}'
        for name in ('state.json', 'result.json'):
            try:
                st = os.stat(f'{task_dir}/{name}')
                h.update(f'{st.st_ino} {st.st_size} {st.st_mtime_ns} {st.st_ctime_ns};'.encode())
            except FileNotFoundError:
                h.update(b'-')
    return h.hexdigest()


def write_report(rt: Runtime) -> dict[str, str]:
    from orch.commands.report import write_reports
    write_reports(rt)
    return {'state_digest': report_digest(rt)}


def _report_uptodate(rt: Runtime) -> Any:
    def check(task: Any, values: dict[str, Any]) -> bool:
        return values.get('state_digest') == report_digest(rt)
    return check


class _ConfigChanged(config_changed):
    """doit's config_changed with its call signature precomputed.

    doit runs inspect.signature() on every callable uptodate of every task on every run (to pass
    `task` and `values`); on an instance that costs ~40 us, which `__signature__` short-cuts.
    """

    __signature__ = inspect.Signature([inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD)
                                       for name in ('task', 'values')])


def task_dict(rt: Runtime, step: Step) -> dict[str, Any]:
    base, _, sub = step.name.partition(':')
    d: dict[str, Any] = {
        'basename': base, 'actions': [(_invoke, (rt, step))], 'file_dep': step.file_dep,
        'targets': step.targets, 'doc': step.doc, 'verbosity': 2, 'clean': True,
        # No stdout capture: doit swaps the global sys.stdout per action, which threads (-P thread)
        # interleave, leaving output in the wrong place; actions write to files and progress anyway.
        'io': {'capture': False},
    }
    if sub:
        d['name'] = sub
    uptodate: list[Any] = []
    if step.rule.is_shell:
        uptodate.append(_ConfigChanged({'shell': step.shell, **step.params}))
    elif step.params:
        uptodate.append(_ConfigChanged(step.params))
    if not step.rule.is_shell and step.rule.action in ('worktree', 'task_worktree'):
        uptodate.append((actions.worktree_ready, (rt, step), {}))
    if not step.rule.is_shell and step.rule.action == 'report':
        uptodate.append(_report_uptodate(rt))
    if uptodate:
        d['uptodate'] = uptodate
    return d


def doit_config(rt: Runtime, backend: str) -> dict[str, Any]:
    return {'dep_file': str(rt.run_dir / 'doit.db'), 'backend': backend, 'check_file_uptodate': 'md5',
            'verbosity': 2, 'reporter': make_reporter(rt)}


def namespace(rt: Runtime, *, backend: str = BACKEND, report: str = 'include') -> dict[str, Any]:
    """A doit namespace for the run. report: 'include' (dodo), 'exclude' (main run) or 'only'."""
    def task_codex_orch() -> Iterator[dict[str, Any]]:
        if report == 'only':
            steps = [s for s in rt.steps() if s.rule.action == 'report']
        else:
            rt.write_task_entries()
            steps = [s for s in rt.steps() if report == 'include' or s.rule.action != 'report']
        for step in steps:
            yield task_dict(rt, step)
    task_codex_orch.__doc__ = f'codex-orch run {rt.run.run_id}'
    return {'task_codex_orch': task_codex_orch, 'DOIT_CONFIG': doit_config(rt, backend)}


def run_doit(rt: Runtime, argv: list[str], *, report: str = 'exclude') -> int:
    extra = {'BACKEND': {BACKEND: 'orch.adapters.doit_backend:WriteThroughSqliteDB'}}
    saved = sys.stdout, sys.stderr
    try:
        main = DoitMain(ModuleTaskLoader(namespace(rt, report=report)), config_filenames=(),
                        extra_config=extra)
        with few_full_collections():
            return main.run(argv)
    finally:
        # doit's output capture swaps sys.stdout; with threads it can leave a stale writer behind.
        sys.stdout, sys.stderr = saved


@contextlib.contextmanager
def few_full_collections() -> Iterator[None]:
    """Rarer full garbage collections while doit builds and walks the graph.

    doit allocates a few hundred objects per task and frees almost none until the end, so
    CPython's default thresholds run ever larger full collections that find nothing: 10 of them
    took 1.1 s of a 4.3 s no-op resume of 10,000 tasks. Young objects are still collected as usual,
    and a full collection still comes every few million allocations.
    """
    old = gc.get_threshold()
    gc.set_threshold(old[0], old[1], max(old[2], 1000))
    try:
        yield
    finally:
        gc.set_threshold(*old)


def stale_task_ids(rt: Runtime) -> set[str]:
    """Tasks whose prompt or work step doit would run now (without running anything)."""
    db = rt.run_dir / 'doit.db'
    if not db.exists():
        return set()
    steps = [s for s in rt.steps() if s.task_id and s.rule.action in ('render_prompt', 'codex_worker')]
    tasks = {}
    for step in steps:
        d = task_dict(rt, step)
        d['name'] = step.name
        d.pop('basename')
        tasks[step.name] = dict_to_task(d)
    dep = Dependency(SqliteDB, str(db), checker_cls=MD5Checker)
    stale = set()
    try:
        for name, task in tasks.items():
            if dep.get_status(task, tasks).status != 'up-to-date':
                stale.add(task_of(name))
    finally:
        dep.backend._conn.close()
    return stale


def task_of(step_name: str) -> str:
    return step_name.partition(':')[2]


def make_reporter(rt: Runtime) -> type:
    progress = rt.events
    setup_failed: set[str] = set()   # tasks whose own worktree step failed: their state says why

    class OrchReporter(ConsoleReporter):
        """doit's lifecycle hooks -> codex-orch's progress; doit's own lines are not printed."""

        def execute_task(self, task: Any) -> None:
            if progress and _shown(task.name):
                progress.started(task.name)

        def add_success(self, task: Any) -> None:
            if progress and _shown(task.name):
                progress.finished(task.name)

        def add_failure(self, task: Any, fail: Any) -> None:
            if progress:
                name = fail.get_name()
                reason = 'blocked: a task it depends on did not finish' if name == 'UnmetDependency' \
                    else fail.get_msg() if name == 'TaskFailed' else fail.get_msg()
                progress.failed_step(task.name, reason)
            if task.name.startswith('task_worktree:'):
                setup_failed.add(task_of(task.name))
            if fail.get_name() == 'UnmetDependency' and task.name.startswith('work:') \
                    and task_of(task.name) not in setup_failed:
                tid = task_of(task.name)
                state.update_state(rt.path(rt.layout.task_dir(tid)), status='pending',
                                   reason='blocked: a task it depends on did not finish')

        def skip_uptodate(self, task: Any) -> None:
            if progress and _shown(task.name):
                progress.up_to_date(task.name)

        def skip_ignore(self, task: Any) -> None:
            pass

        def complete_run(self) -> None:
            pass   # codex-orch prints its own summary

        def runtime_error(self, msg: str) -> None:
            sys.stderr.write(f'doit: {msg}\n')

    return OrchReporter


def _shown(name: str) -> bool:
    return ':' in name and not name.startswith('prompt:') or name in ('worktree', 'report')


def dodo_namespace(start: Path | None = None) -> dict[str, Any]:
    """What a host's dodo.py exports: the latest run's graph (or nothing, with a hint)."""
    from orch.commands.common import open_latest_for_dodo
    rt = open_latest_for_dodo(start or Path.cwd())
    if rt is None:
        return {'DOIT_CONFIG': {'verbosity': 2}}
    if _doit_command(sys.argv[1:]) not in READ_ONLY_DOIT_COMMANDS:
        # One writer per run: a `doit run` (or clean, forget, ...) on a run in progress is refused at
        # once, before doit touches a task, a target or its database.
        try:
            rt.ensure_lock()
        except OrchError as exc:
            raise InvalidDodoFile(f'codex-orch: {exc}') from None
    threshold = gc.get_threshold()   # see few_full_collections: this process only runs doit
    gc.set_threshold(threshold[0], threshold[1], max(threshold[2], 1000))
    return namespace(rt, backend='sqlite3', report='include')


READ_ONLY_DOIT_COMMANDS = frozenset({'list', 'info', 'help', 'dumpdb', 'tabcompletion'})
_DOIT_COMMANDS = READ_ONLY_DOIT_COMMANDS | {'run', 'clean', 'forget', 'ignore', 'strace', 'auto', 'reset-dep'}


def _doit_command(args: list[str]) -> str:
    """The doit subcommand of this process's argv, as DoitMain picks it: the first argument, else `run`."""
    return args[0] if args and args[0] in _DOIT_COMMANDS else 'run'

