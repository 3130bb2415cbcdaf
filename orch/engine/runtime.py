"""Everything one run needs, loaded and checked up front: config, plan, spec, rules, schemas.

One loader serves `codex-orch` and a host's `dodo.py`, so both see the same graph.
"""
from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orch.runstate import atomic
from orch.core.compile import RunLayout, Step, compile_plan
from orch.core.config import CONFIG_FILE, Config, ResolvedRole, load_config
from orch.errors import SchemaError, problems_message
from orch.runstate.lock import RunLock
from orch.core.plan import Plan, load_plan
from orch.core.prompts import check_template
from orch.core.resources import builtin_rules_dir
from orch.core.rules import RuleSet, load_rules
from orch.runstate.runs import ORCH_DIR, RunInfo, load_run, run_dir
from orch.engine.scheduler import Scheduler
from orch.core.schema_lint import strict_problems
from orch.core.validate import load_json_schema


PLAN_CHECK_FILE = 'plan-schema-checked'


@dataclass
class RunOptions:
    jobs: int = 1
    keep_going: bool = False
    verbosity: int = 1          # 0 quiet, 1 normal, 2 verbose


@dataclass
class Runtime:
    repo: Path
    config: Config
    run: RunInfo
    plan: Plan
    rules: RuleSet
    schemas: dict[str, dict[str, Any]]
    templates: dict[str, str]
    options: RunOptions = field(default_factory=RunOptions)
    events: Any = None          # live progress sink (orch.engine.progress), None when silent
    cancel: threading.Event = field(default_factory=threading.Event)
    tokens_spent: int = 0       # by this invocation, for the token budget
    stop_reason: str | None = None
    scheduler: Any = None
    lock: RunLock | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _steps: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.scheduler is None:
            self.scheduler = Scheduler(jobs=self.options.jobs, per_task=self.run.per_task,
                                       allow=self.config.concurrency.allow, ignore=self.config.concurrency.ignore)

    def ensure_lock(self) -> None:
        """Hold the run's lock (plain `doit run` takes it at its first action; codex-orch up front)."""
        if self.lock is None:
            with self._lock:
                if self.lock is None:
                    lock = RunLock(self.run_dir)
                    lock.acquire()
                    self.lock = lock

    def add_tokens(self, usage: dict[str, int] | None) -> None:
        if usage:
            with self._lock:
                self.tokens_spent += int(usage.get('input_tokens', 0)) + int(usage.get('output_tokens', 0))

    def progress_callback(self, task_id: str) -> Any:
        events = self.events
        return lambda event: events.worker_event(task_id, event)

    @property
    def layout(self) -> RunLayout:
        return layout_for(self.run)

    @property
    def run_dir(self) -> Path:
        return run_dir(self.repo, self.run.run_id)

    def path(self, relative: str) -> Path:
        return self.repo / relative

    def role(self, name: str) -> ResolvedRole:
        return self.config.role(name)

    def steps(self) -> list[Step]:
        """The compiled steps, once per invocation (doit loads the tasks twice: the run and the report).

        Plan, rules and config are fixed for a Runtime's life; the layout follows `run`, which resume
        may replace (a new spec file), so it is the cache key.
        """
        layout = self.layout
        if self._steps is None or self._steps[0] != layout:
            self._steps = (layout, compile_plan(self.plan, self.rules, self.config, layout))
        return list(self._steps[1])

    def remember_plan_check(self) -> None:
        """Record that this plan passed the plan schema (see open_run); only a cache."""
        if self.plan.schema_key:
            try:
                atomic.write_if_changed(self.run_dir / PLAN_CHECK_FILE, self.plan.schema_key + '\n')
            except OSError:
                pass

    def write_task_entries(self) -> None:
        """task.json per task, rewritten only when the plan entry changed (it is a file_dep).

        Once all are written, the plan's digest is recorded beside them; while the plan is unchanged
        and every file is there, no entry is serialised or compared again (10,000 tasks: 0.26 s saved
        on every resume).
        """
        marker = self.run_dir / 'task-entries.digest'
        layout, digest = self.layout, self.plan.digest
        files = [f'{self.repo}/{layout.task_dir(task.id)}/task.json' for task in self.plan.tasks]
        try:
            if digest and marker.read_text(encoding='utf-8') == digest and all(map(os.path.isfile, files)):
                return
        except OSError:
            pass
        for task, path in zip(self.plan.tasks, files):
            atomic.write_if_changed(Path(path), json.dumps(task.entry(), indent=2, sort_keys=True,
                                                           ensure_ascii=False) + '\n')
        if digest:
            atomic.write_text(marker, digest)


def layout_for(run: RunInfo) -> RunLayout:
    return RunLayout(run_id=run.run_id, date=run.date, base_commit=run.base_commit,
                     shared_branch=run.shared_branch, task_branch_template=run.task_branch_template,
                     per_task=run.per_task, spec_file=run.spec_file)


def load_inputs(repo: Path, plan_file: Path | str, *,
                plan_schema_valid: str | None = None) -> tuple[Config, Plan, RuleSet, dict, dict]:
    """Config, plan, rules, role schemas and templates, every one checked; raises InputError.

    plan_schema_valid: a Plan.schema_key recorded earlier (see load_plan).
    """
    config = load_config(repo / ORCH_DIR / CONFIG_FILE)
    plan_schema = load_json_schema(repo / ORCH_DIR / 'schemas' / 'plan.json')
    plan = load_plan(repo / plan_file if not Path(plan_file).is_absolute() else Path(plan_file),
                     plan_schema, set(config.roles), schema_valid=plan_schema_valid)
    rules = load_rules(builtin_rules_dir(), repo / ORCH_DIR / 'rules')
    roles = sorted({t.role for t in plan.tasks})
    schemas, templates = check_roles(repo, config, roles)
    return config, plan, rules, schemas, templates


def check_roles(repo: Path, config: Config, roles: list[str]) -> tuple[dict, dict]:
    """Load and lint each role's schema and template before any worker starts."""
    schemas: dict[str, dict[str, Any]] = {}
    templates: dict[str, str] = {}
    for name in roles:
        role = config.role(name)
        schema_path = repo / role.schema_file
        schema = load_json_schema(schema_path)
        problems = strict_problems(schema)
        if problems:
            raise SchemaError(problems_message(
                schema_path, problems, "Codex's strict structured output would reject this schema"))
        schemas[name] = schema
        templates[name] = check_template(repo / role.template)
    return schemas, templates


def open_run(repo: Path, run_id: str, *, options: RunOptions | None = None) -> Runtime:
    """Load an existing run, re-reading plan and spec so edits take effect."""
    info = load_run(repo, run_id)
    # The plan as last checked against the plan schema (content + schema digest): an unchanged
    # plan is not checked again on every resume. Written by remember_plan_check() during a run
    # only, so read-only commands (status, merge, clean) never write into a run.
    checked = run_dir(repo, run_id) / PLAN_CHECK_FILE
    try:
        known = checked.read_text(encoding='utf-8').strip() or None
    except OSError:
        known = None
    config, plan, rules, schemas, templates = load_inputs(repo, info.plan_file, plan_schema_valid=known)
    if info.spec_file and not (repo / info.spec_file).is_file():
        from orch.errors import InputError
        raise InputError(f'{info.spec_file}: the run\'s spec file is gone (restore it, or start a new run)')
    return Runtime(repo=repo, config=config, run=info, plan=plan, rules=rules, schemas=schemas,
                   templates=templates, options=options or RunOptions())
