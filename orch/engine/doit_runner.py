"""The only module that drives doit: steps -> doit task dicts, the loader, and DoitMain.

The same namespace serves `codex-orch` (embedding DoitMain, with the write-through backend)
and a host's `dodo.py` (plain `doit list/info/run` on the latest run).
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import json
import os
import sys
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any, cast

from doit.cmd_base import ModuleTaskLoader
from doit.dependency import Dependency, MD5Checker
from doit.doit_cmd import DoitMain, get_var
from doit.exceptions import InvalidDodoFile, TaskFailed
from doit.reporter import ConsoleReporter
from doit.task import dict_to_task
from doit.tools import config_changed

from orch import output
from orch.adapters import git
from orch.adapters.doit_backend import ReadOnlySqliteDB, private_copy, record_digests
from orch.collect import rarer_full_collections
from orch.core.compile import Step
from orch.core.redact import RedactingStream, redact
from orch.core.task_entry import entry_changes
from orch.core.text import one_line
from orch.crashlog import write_crash_log
from orch.engine.inputs import RunInputs, open_run, stored_task_entry, write_task_entries
from orch.engine.progress import Progress
from orch.engine.session import Session
from orch.engine.stale_reasons import prompt_because, run_files
from orch.errors import OrchError
from orch.runstate import known_rows, manifest, state
from orch.runstate.runs import check_run_id, latest_run_id, record_use
from orch.steps import gate
from orch.steps.failure import Failed

BACKEND = 'orch-sqlite'


@functools.cache
def _implementation(ref: str) -> Callable[..., Any]:
    """A built-in step's function, from its 'module:function' in the table (imported when first used)."""
    module, _, name = ref.partition(':')
    return cast(Callable[..., Any], getattr(importlib.import_module(module), name))


def _invoke(rt: RunInputs, session: Session, step: Step) -> Any:
    """Run one step's action: the one error boundary of every step.

    Expected failures (recorded by the step, or a user-fixable OrchError) become doit's TaskFailed with a
    one-line reason. Anything else is a bug: a crash log under the run directory, the task failed with a
    reason pointing at it, and the command exits 3 — never "interrupted", never a bare doit traceback.
    """
    try:
        session.ensure_lock()
        if step.task_id is not None:
            session.task_step_ran = True
        with session.step_running():
            kind = step.builtin
            if kind is None:
                gate.shell(rt, session, step)
                return True
            value = _implementation(kind.implementation)(rt, session, step)
            return value if isinstance(value, dict) else True
    except (Failed, OrchError) as exc:
        if step.task_id is None:   # a run-level step (a run rule, the report): no task's state says it failed
            session.record_step_failure(f'{step.name}: {exc}')
        return TaskFailed(str(exc))
    except Exception as exc:
        return TaskFailed(_internal_error(rt, session, step, exc))


def _internal_error(rt: RunInputs, session: Session, step: Step, exc: Exception) -> str:
    log = write_crash_log(rt.run_dir, rt.config.codex.binary)
    reason = f'internal error in {step.name}: {type(exc).__name__}: {exc} (traceback in {log})'
    session.record_internal_error(reason)
    if step.task_id:
        with contextlib.suppress(Exception):   # the state file may be what failed; the log has it all
            state.update_state(rt.task_dir(step.task_id), status='failed', reason=reason,
                               outcome='internal-error', ended_at=time.time())
    return reason


# doit runs inspect.signature() on every callable uptodate of every task on every run (to pass `task` and
# `values`): ~15 us on a function, ~40 us on an instance, which a precomputed `__signature__` short-cuts.
_UPTODATE_SIGNATURE = inspect.Signature([inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD)
                                         for name in ('task', 'values')])


class _ConfigChanged(config_changed):
    """doit's config_changed with its call signature precomputed."""

    __signature__ = _UPTODATE_SIGNATURE


def _uptodate(rt: RunInputs, session: Session, step: Step, ref: str) -> Callable[[Any, dict[str, Any]], bool]:
    check = _implementation(ref)

    def uptodate(task: Any, values: dict[str, Any]) -> bool:
        return bool(check(rt, session, step, values))
    uptodate.__signature__ = _UPTODATE_SIGNATURE   # type: ignore[attr-defined]
    return uptodate


def task_dict(rt: RunInputs, session: Session, step: Step) -> dict[str, Any]:
    base, _, sub = step.name.partition(':')
    d: dict[str, Any] = {
        'basename': base, 'actions': [(_invoke, (rt, session, step))], 'file_dep': step.file_dep,
        'targets': step.targets, 'doc': step.doc, 'verbosity': 2, 'clean': True,
        # No stdout capture: doit swaps the global sys.stdout per action, which threads (-P thread)
        # interleave, leaving output in the wrong place; actions write to files and progress anyway.
        'io': {'capture': False},
    }
    if sub:
        d['name'] = sub
    uptodate: list[Any] = []
    kind = step.builtin
    if kind is None:
        uptodate.append(_ConfigChanged({'shell': step.shell, **step.params}))
    elif step.params:
        uptodate.append(_ConfigChanged(step.params))
    if kind is not None and kind.uptodate:
        uptodate.append(_uptodate(rt, session, step, kind.uptodate))
    if uptodate:
        d['uptodate'] = uptodate
    return d


def doit_config(rt: RunInputs, session: Session, backend: str, summarize: bool = False) -> dict[str, Any]:
    return {'dep_file': str(rt.run_dir / 'doit.db'), 'backend': backend, 'check_file_uptodate': 'md5',
            'verbosity': 2, 'reporter': make_reporter(rt, session, summarize)}


def is_last(step: Step) -> bool:
    """A step that reads every task's state (the report): run on its own after the tasks."""
    return bool(step.builtin and step.builtin.last)


def namespace(rt: RunInputs, session: Session, *, backend: str = BACKEND, report: str = 'include',
              read_only: bool = False, summarize: bool = False, scope: frozenset[str] | None = None,
              run_level: frozenset[str] | None = None) -> dict[str, Any]:
    """A doit namespace for the run. report: 'include' (dodo), 'exclude' (main run) or 'only'.

    read_only: for `doit list`/`info`, which must not write (task.json is written by a run).
    scope: only these tasks' steps and the run's own (orch.engine.noop_record.affected_by_edit: every other step is
    known up to date, and its targets are plain files to doit); run_level: of the run's own, only these.
    """
    def task_codex_orch() -> Iterator[dict[str, Any]]:
        if report == 'only':
            steps = [s for s in rt.steps if is_last(s)]
        else:
            if not read_only:
                write_task_entries(rt, scope)
            steps = [s for s in scoped_steps(rt, scope, run_level) if report == 'include' or not is_last(s)]
        groups: set[str] = set()
        for step in steps:
            base, _, sub = step.name.partition(':')
            if sub and base not in groups:
                # The group doit makes of `work:T1`, `work:T2`, ... has no action and no dependency of its
                # own, which doit reports as always out of date (`doit list --status`: R). It is up to date
                # by itself; running it still runs whichever of its tasks are not.
                groups.add(base)
                yield {'basename': base, 'name': None, 'uptodate': [True],
                       'doc': f'every {base} step of run {rt.run.run_id}'}
            yield task_dict(rt, session, step)
    task_codex_orch.__doc__ = f'codex-orch run {rt.run.run_id}'
    return {'task_codex_orch': task_codex_orch, 'DOIT_CONFIG': doit_config(rt, session, backend, summarize)}


def run_doit(rt: RunInputs, session: Session, argv: list[str], *, report: str = 'exclude',
             scope: frozenset[str] | None = None, run_level: frozenset[str] | None = None) -> int:
    extra = {'BACKEND': {BACKEND: 'orch.adapters.doit_backend:WriteThroughSqliteDB'}}
    saved = sys.stdout, sys.stderr
    try:
        loader = ModuleTaskLoader(namespace(rt, session, report=report, scope=scope, run_level=run_level))
        main = DoitMain(loader, config_filenames=(), extra_config=extra)
        return int(main.run(argv))   # (with rarer full collections: orch.main set them for the command)
    finally:
        # doit's output capture swaps sys.stdout; with threads it can leave a stale writer behind.
        sys.stdout, sys.stderr = saved


def stale_task_ids(rt: RunInputs) -> dict[str, list[tuple[str, str]]]:
    """Tasks whose prompt or work step doit would run now, with why (without running or writing anything).

    From any directory: doit's file dependencies are relative to the repository. A plan entry (or the
    checks the config adds) that changed since task.json was written counts too, although task.json itself
    is only rewritten by the next run.
    """
    stale = changed_entries(rt)
    db = rt.run_dir / 'doit.db'
    if not db.exists():
        return stale
    steps = [s for s in rt.steps if s.task_id and (s.builtin.task_input if s.builtin else s.rule.gate)]
    by_name = {step.name: step for step in steps}
    results = {rt.layout.result(t.id): t.id for t in rt.plan.tasks}
    own = {rt.layout.task_dir(t.id) + '/task.json' for t in rt.plan.tasks}
    files = run_files(rt)
    for name, status, recorded in _doit_statuses(rt, steps, db):
        if status.status == 'up-to-date':
            continue
        step = by_name[name]
        if not recorded and step.builtin is not None and step.builtin.task_outcome:
            found = [('forgotten', 'forgotten (doit forget)')]   # no record at all: every input looks changed
        elif not recorded and step.builtin is not None:
            continue   # its prompt: the forgotten work step says it
        else:
            found = _doit_reasons(status.reasons, results, own, _ran_with(rt, step), step.params, files) \
                if step.builtin else _gate_reasons(rt, step, status.reasons, results)
        if not found and step.builtin is None:
            continue
        why = stale.setdefault(step.task_id or '', [])
        for reason in found:
            if reason not in why:
                why.append(reason)
    return {tid: prompt_because(tid, why) or [('inputs_changed', 'its inputs changed since it ran')]
            for tid, why in stale.items()}


def changed_entries(rt: RunInputs, only: frozenset[str] | None = None) -> dict[str, list[tuple[str, str]]]:
    """Tasks whose plan entry (or the checks the config adds) differs from their task.json, field by field
    (only: of these tasks)."""
    stale: dict[str, list[tuple[str, str]]] = {}
    for task in rt.plan.tasks if only is None else [t for t in rt.plan.tasks if t.id in only]:
        try:
            on_disk = json.loads((rt.task_dir(task.id) / 'task.json').read_text(encoding='utf-8'))
        except (OSError, ValueError):
            continue   # never written: the task never ran, the status says so already
        changes = entry_changes(on_disk, stored_task_entry(rt, task))
        if changes:
            stale[task.id] = [('plan_field_changed', change) for change in changes]
    return stale


def all_up_to_date(rt: RunInputs, scope: frozenset[str] | None = None,
                   quiet: known_rows.RowInputs | None = None, *, entries_checked: bool = False) -> bool:
    """Whether a `doit run` of the whole graph would run nothing now and status would call nothing stale:
    doit's own check of every step (file deps by md5, targets, uptodate callables such as worktree_ready),
    and every task.json equal to its plan entry; without running or writing anything.

    scope: check only these tasks' steps and the run's own (the caller knows the others are up to date); quiet: the
    row inputs of tasks known without a look (KnownRows.quiet), for the report step's check; entries_checked: the
    caller just compared the task.json files of the scope (changed_entries), and found them equal."""
    db = rt.run_dir / 'doit.db'
    if not db.exists() or (not entries_checked and changed_entries(rt, scope)):
        return False
    session = Session(rt)   # never runs an action, so never takes the lock
    session.rows.quiet = quiet or {}
    return all(status.status == 'up-to-date'
               for _, status, _ in _doit_statuses(rt, scoped_steps(rt, scope), db, session, stop_at_stale=True))


def scoped_steps(rt: RunInputs, scope: frozenset[str] | None, run_level: frozenset[str] | None = None) -> list[Step]:
    """The steps of these tasks and the run's own steps (all of them without a scope; run_level: only these of the
    run's own)."""
    if scope is None:
        return list(rt.steps)
    return [s for s in rt.steps if (s.task_id is None and (run_level is None or s.name in run_level))
            or (s.task_id is not None and s.task_id in scope)]


def step_records(rt: RunInputs, tasks: Collection[str]) -> dict[str, str]:
    """A digest of doit's record of each step of these tasks that has one (what doit decides the step by besides
    its files: a `doit forget`, or anyone deleting or rewriting a record, changes it). Raises DatabaseException when
    the records cannot be read."""
    names = {s.name for s in rt.steps if s.task_id is not None and s.task_id in tasks}
    return record_digests(rt.run_dir / 'doit.db', names)


def _doit_statuses(rt: RunInputs, steps: list[Step], db: Path, session: Session | None = None, *,
                   stop_at_stale: bool = False) -> list[tuple[str, Any, bool]]:
    """doit's Dependency.get_status of each step, read from the run's database (opened read-only), and whether
    the database has any record of it (none: it never ran, or `doit forget`); stop_at_stale: up to the first step
    that is not up to date."""
    session = session or Session(rt)   # never runs an action, so never takes the lock
    # Each step's doit task is made, checked and let go, not all of them first (9,000 of doit's tasks hold 15 MB).
    # get_status reads the other tasks only for an UptodateCalculator (doit's result_dep), which no step has.
    tasks: dict[str, Any] = {}
    with contextlib.chdir(rt.repo):
        dep = Dependency(ReadOnlySqliteDB, str(db), checker_cls=MD5Checker)
        try:
            out = []
            for step in steps:
                d = task_dict(rt, session, step)
                d['name'] = step.name
                d.pop('basename')
                task = tasks[step.name] = dict_to_task(d)
                recorded = bool(dep.backend.in_(step.name))   # before get_status caches an empty record for it
                status = dep.get_status(task, tasks, get_log=True)
                del tasks[step.name]
                out.append((step.name, status, recorded))
                if stop_at_stale and status.status != 'up-to-date':
                    break   # the caller asks whether every step is up to date: one that is not answers
            return out
        finally:
            dep.backend._conn.close()

def _gate_reasons(rt: RunInputs, step: Step, reasons: dict[str, Any], results: dict[str, str]) -> list[tuple[str, str]]:
    """Why a passed gate of a task would run again: its command or an input of its rule changed. (Its task's
    new result is the task's own reason; a gate that failed or never ran, the task's status says already.)"""
    name = step.rule.name
    out: list[tuple[str, str]] = []
    changed = [p for p in reasons.get('changed_file_dep', []) if p not in results]
    out += [('gate_will_run', f'gate {name} will run again: {path} changed') for path in changed]
    if reasons.get('uptodate_false'):
        ran = ((state.read_state(rt.task_dir(step.task_id or '')).get('gates') or {}).get(name) or {}).get('command')
        what = f'command {one_line(str(ran))} → {one_line(step.shell or "")}' if ran and ran != step.shell \
            else 'its rule changed'
        out.append(('gate_will_run', f'gate {name} will run again: {what}'))
    return out


def _ran_with(rt: RunInputs, step: Step) -> dict[str, Any] | None:
    """The params the step's latest result was made with (execution.json keeps them), when it has any."""
    if not step.params or step.task_id is None or step.builtin is None or not step.builtin.task_outcome:
        return None
    params = (state.read_result(rt.task_dir(step.task_id)) or {}).get('params')
    return params if isinstance(params, dict) else None


def params_changes(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """'model: null → gpt-5' for each param that differs (an empty value is the default: null)."""
    def shown(value: Any) -> str:
        text = 'null' if value in ('', None) else one_line(str(value))
        return text if len(text) <= 60 else text[:59] + '…'
    return [f'{key}: {shown(before.get(key))} → {shown(now.get(key))}'
            for key in sorted(set(before) | set(now)) if before.get(key) != now.get(key)]


def _doit_reasons(reasons: dict[str, Any], results: dict[str, str], own: set[str],
                  ran_with: dict[str, Any] | None = None, params: dict[str, Any] | None = None,
                  files: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """doit's reasons as (stable code, text): the codes are listed in the README."""
    out: list[tuple[str, str]] = []
    for path in [*reasons.get('changed_file_dep', []), *reasons.get('missing_file_dep', [])]:
        if path in results:
            out.append(('upstream_result_changed', f'upstream {results[path]}\'s result changed'))
        elif path not in own:   # task.json: its plan entry, already explained field by field
            out.append(('input_changed', f'{(files or {}).get(path, path)} changed'))
    if reasons.get('has_no_dependencies') or reasons.get('missing_target'):
        out.append(('no_result', 'it has no valid result'))
    # Only a changed config value is a reason here; the other uptodate checks (the task's state agreeing that
    # it is done) are false only for a task that is not done, which its status says already.
    if any(isinstance(check, config_changed) for check, *_ in reasons.get('uptodate_false', [])):
        changes = params_changes(ran_with, params) if ran_with is not None and params is not None else []
        out += [('params_changed', change) for change in changes] or [
            ('params_changed', 'its parameters (model, sandbox, codex arguments) changed')]
    return out


def make_reporter(rt: RunInputs, session: Session, summarize: bool = False) -> type:
    progress = session.progress
    steps = rt.steps_by_name
    setup_failed: set[str] = set()   # tasks whose own worktree step failed: their state says why

    def shown(name: str) -> bool:
        step = steps.get(name)
        return step is not None and (step.builtin is None or step.builtin.shown)

    class OrchReporter(ConsoleReporter):
        """doit's lifecycle hooks -> codex-orch's progress; doit's own lines are not printed."""

        def execute_task(self, task: Any) -> None:
            step = steps.get(task.name)
            # a task's work step says when it starts itself: it may first wait for a slot (orch.steps.work)
            if progress and shown(task.name) and not (step and step.builtin and step.builtin.task_outcome):
                progress.started(task.name)

        def add_success(self, task: Any) -> None:
            if progress and shown(task.name):
                progress.finished(task.name)

        def add_failure(self, task: Any, fail: Any) -> None:
            unmet = fail.get_name() == 'UnmetDependency'
            if progress:
                progress.failed_step(task.name, _BLOCKED if unmet else fail.get_msg())
            step = steps.get(task.name)
            if step is None or step.task_id is None or step.builtin is None:
                return
            if step.builtin.task_setup:
                setup_failed.add(step.task_id)
            if unmet and step.builtin.task_outcome and step.task_id not in setup_failed:
                state.update_state(rt.task_dir(step.task_id), status='pending', reason=_BLOCKED)

        def skip_uptodate(self, task: Any) -> None:
            if progress and shown(task.name):
                progress.up_to_date(task.name)

        def skip_ignore(self, task: Any) -> None:
            pass

        def complete_run(self) -> None:
            if summarize:   # plain doit: nobody else says how the run ended (codex-orch prints its own)
                self.outstream.write(_summary(rt, session))
                self.outstream.flush()

        def runtime_error(self, msg: str) -> None:
            sys.stderr.write(f'doit: {msg}\n')

    return OrchReporter


_BLOCKED = 'blocked: a task it depends on did not finish'


def _summary(rt: RunInputs, session: Session) -> str:
    rows = session.rows.read(rt)   # the report's rows when nothing changed since it read them
    counts: dict[str, int] = {}
    for row in rows:
        counts[row['status']] = counts.get(row['status'], 0) + 1
    lines = [f'run {rt.run.run_id}: ' + ', '.join(f'{n} {s}' for s, n in sorted(counts.items()))]
    lines += [f'  {row["id"]} {row["status"]}: {row["reason"]}' for row in rows
              if row['status'] in ('failed', 'blocked', 'deferred')]
    lines += [f'{reason}; please report it' for reason in session.internal_errors]
    return redact('\n'.join(lines) + '\n')


RUN_ID_VAR = 'run_id'             # `doit run_id=ID list`: a doit command-line variable
RUN_ID_ENV = 'CODEX_ORCH_RUN_ID'  # or the environment, e.g. for a whole CI job


def dodo_namespace(start: Path | None = None, run_id: str | None = None) -> dict[str, Any]:
    """What a host's dodo.py exports: a run's graph (or nothing, with a hint).

    The run: `run_id` (a dodo.py may pin one), else `doit run_id=ID ...`, else $CODEX_ORCH_RUN_ID, else the
    latest plan run."""
    rt = open_for_dodo(start or Path.cwd(), run_id or get_var(RUN_ID_VAR) or os.environ.get(RUN_ID_ENV) or None)
    if rt is None:
        return {'DOIT_CONFIG': {'verbosity': 2}}
    read_only = _doit_command(sys.argv[1:]) in READ_ONLY_DOIT_COMMANDS
    # Plain `doit run` shows what codex-orch shows without a terminal: a line per step, then a summary.
    progress = None if read_only else Progress(len(rt.plan.tasks), verbosity=1, stream=RedactingStream(sys.stdout),
                                                tty=False, work_steps=rt.work_step_of)
    session = Session(rt, progress=progress)
    if not read_only:
        # One writer per run: a `doit run` (or clean, forget, ...) on a run in progress is refused at
        # once, before doit touches a task, a target or its database.
        try:
            session.ensure_lock()
        except OrchError as exc:
            raise InvalidDodoFile(f'codex-orch: {exc}') from None
        # Plain doit may now run, forget or clean steps: the no-op manifest vouches for nothing any more
        # (the next codex-orch run writes a new one once everything is up to date again).
        manifest.invalidate(rt.run_dir)
        if _doit_command(sys.argv[1:]) == 'run':
            record_use(rt.repo, rt.run.run_id)   # a plain `doit run` runs the run, as `resume` would
    rarer_full_collections()   # this process only runs doit over the run
    names = namespace(rt, session, backend='sqlite3', report='include', read_only=read_only,
                      summarize=not read_only)
    if read_only:   # doit opens its records read-write: it gets a copy, and the run directory stays untouched
        names['DOIT_CONFIG']['dep_file'] = str(private_copy(rt.run_dir / 'doit.db'))
    return names


def open_for_dodo(start: Path, run_id: str | None) -> RunInputs | None:
    try:
        repo = git.repo_root(start)
        if run_id is not None:
            check_run_id(run_id)
        return open_run(repo, run_id or latest_run_id(repo))
    except OrchError as exc:
        if run_id is not None:   # a run asked for by name that is not there is an error, not an empty graph
            raise InvalidDodoFile(f'codex-orch: {exc}') from None
        output.write_line(f'codex-orch: no run to show ({exc})', err=True)
        return None


READ_ONLY_DOIT_COMMANDS = frozenset({'list', 'info', 'help', 'dumpdb', 'tabcompletion'})
_DOIT_COMMANDS = READ_ONLY_DOIT_COMMANDS | {'run', 'clean', 'forget', 'ignore', 'strace', 'auto', 'reset-dep'}


def _doit_command(args: list[str]) -> str:
    """The doit subcommand of this process's argv, as DoitMain picks it: the first argument, else `run`."""
    return args[0] if args and args[0] in _DOIT_COMMANDS else 'run'

