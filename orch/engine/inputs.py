"""The frozen inputs of a run, loaded and checked up front: config, plan, spec, rules, schemas, templates.

One loader serves `codex-orch` and a host's `dodo.py`, so both see the same graph.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from orch.core.compile import RunLayout, Step, compile_plan
from orch.core.config import CONFIG_FILE, Config, ResolvedRole, load_config
from orch.core.plan import Plan, Task, load_plan
from orch.core.prompts import check_template
from orch.core.resources import builtin_rules_dir
from orch.core.rules import RuleSet, load_rules
from orch.core.schema_lint import strict_problems
from orch.core.task_entry import stored_entry
from orch.core.validate import load_json_schema
from orch.errors import InputError, SchemaError, problems_message
from orch.runstate import atomic, signing, state
from orch.runstate.runs import ORCH_DIR, RunInfo, load_run, run_dir

PLAN_CHECK_FILE = 'plan-schema-checked'


@dataclass(frozen=True)
class RunInputs:
    """The frozen inputs of one run: config, plan, rules, schemas, templates, the run record, its layout and
    compiled steps. Built once per command, never changed after; what changes while a run goes (lock,
    cancellation, budget, scheduling, progress) is the Session's."""

    repo: Path
    config: Config
    run: RunInfo
    plan: Plan
    rules: RuleSet
    schemas: Mapping[str, dict[str, Any]]   # repo-relative path -> checked schema
    templates: Mapping[str, str]             # repo-relative path -> checked template
    # The signatures of the files and directories these inputs were read from, taken before each was read
    # (see source_paths): the no-op manifest vouches only for exactly the inputs the graph was compiled from.
    sources: Sources | None = None

    @cached_property
    def layout(self) -> RunLayout:
        return layout_for(self.run)

    @cached_property
    def steps(self) -> tuple[Step, ...]:
        """The compiled steps, once per command (doit loads the tasks twice: the run and the report)."""
        steps = tuple(compile_plan(self.plan, self.rules, self.config, self.layout))
        if not self.run.per_task:
            _wait_for_culprits(self, steps)
        return steps

    @cached_property
    def steps_by_name(self) -> dict[str, Step]:
        return {step.name: step for step in self.steps}

    @cached_property
    def work_step_of(self) -> dict[str, str]:
        """Task id -> the name of the step whose result is the task's (progress and status follow it)."""
        return {s.task_id: s.name for s in self.steps if s.task_id and s.builtin and s.builtin.task_outcome}

    @property
    def run_dir(self) -> Path:
        return run_dir(self.repo, self.run.run_id)

    def path(self, relative: str) -> Path:
        return self.repo / relative

    def task_dir(self, task_id: str) -> Path:
        return self.repo / self.layout.task_dir(task_id)

    def role(self, name: str) -> ResolvedRole:
        """A role's settings, resolved once per command (looked up per task: 20,000 times at 10,000 tasks)."""
        found = self._roles.get(name)
        if found is None:
            found = self._roles[name] = self.config.role(name)
        return found

    @cached_property
    def _roles(self) -> dict[str, ResolvedRole]:
        return {}

    @cached_property
    def stored_entries(self) -> dict[str, dict[str, Any]]:
        """Each task's task.json as stored, once made (stored_task_entry)."""
        return {}

    def schema(self, path: str) -> dict[str, Any]:
        """A schema a step names: the roles' were checked at load; another one is checked now."""
        known = self.schemas.get(path)
        return known if known is not None else load_strict_schema(self.repo / path)

    def template(self, path: str) -> str:
        known = self.templates.get(path)
        return known if known is not None else check_template(self.repo / path)


def remember_plan_check(inputs: RunInputs) -> None:
    """Record that this plan passed the plan schema (see open_run); only a cache."""
    if inputs.plan.schema_key:
        with contextlib.suppress(OSError):
            atomic.write_if_changed(inputs.run_dir / PLAN_CHECK_FILE, inputs.plan.schema_key)


def stored_task_entry(inputs: RunInputs, task: Task) -> dict[str, Any]:
    """task.json as it is stored, and so as it is compared (changed_entries); made once per command (a resume
    writes the entries of its tasks and then compares them: 0.28 s each time at 4,500 tasks). Not to be changed."""
    found = inputs.stored_entries.get(task.id)
    if found is None:
        found = inputs.stored_entries[task.id] = stored_entry(task, inputs.role(task.role).checks)
    return found


def write_task_entries(inputs: RunInputs, scope: frozenset[str] | None = None) -> None:
    """task.json per task, rewritten only when the entry changed (it is a file_dep).

    Once all are written, a digest of the plan and the config's checks is recorded beside them; while
    both are unchanged and every file is there, no entry is serialised or compared again (10,000 tasks:
    0.26 s saved on every resume).
    """
    marker = inputs.run_dir / 'task-entries.digest'
    layout = inputs.layout
    config_checks = {name: inputs.role(name).checks for name in sorted({t.role for t in inputs.plan.tasks})}
    extra = json.dumps({k: v for k, v in config_checks.items() if v}, sort_keys=True)
    digest = inputs.plan.digest + (f'+{hashlib.sha256(extra.encode()).hexdigest()[:16]}' if extra != '{}' else '')
    files = [f'{inputs.repo}/{layout.task_dir(task.id)}/task.json' for task in inputs.plan.tasks]
    try:
        if inputs.plan.digest and marker.read_text(encoding='utf-8') == digest and all(map(os.path.isfile, files)):
            return
    except OSError:
        pass
    for task, path in zip(inputs.plan.tasks, files, strict=True):
        if scope is not None and task.id not in scope:
            continue   # its plan object is as when its entry was written (orch.engine.noop_record.affected_by_edit)
        atomic.write_if_changed(Path(path), json.dumps(stored_task_entry(inputs, task), indent=2, sort_keys=True,
                                                       ensure_ascii=False) + '\n')
    if inputs.plan.digest:
        atomic.write_text(marker, digest)


def layout_for(run: RunInfo) -> RunLayout:
    return RunLayout(run_id=run.run_id, date=run.date, base_commit=run.base_commit,
                     shared_branch=run.shared_branch, task_branch_template=run.task_branch_template,
                     per_task=run.per_task, spec_file=run.spec_file)


@dataclass(frozen=True)
class Sources:
    """Signatures of the files (and rule directories) a run's inputs were read from, each taken before it was
    read: an edit made after the read differs from them, whenever it was made."""

    files: dict[str, signing.FileSig]
    dirs: dict[str, signing.DirSig]


def source_paths(repo: Path, plan_file: str, spec_file: str | None = None,
                 role_files: list[str] | None = None) -> tuple[list[str], list[str]]:
    """(files, directories) a run's inputs are read from, named as the no-op manifest names them: the config,
    the plan schema, the plan, the spec, every rule file and both rule directories, the roles' schemas and
    templates."""
    files = [f'{ORCH_DIR}/{CONFIG_FILE}', f'{ORCH_DIR}/schemas/plan.json', plan_file,
             *([spec_file] if spec_file else []), *(role_files or [])]
    dirs = []
    for rules in (builtin_rules_dir(), repo / ORCH_DIR / 'rules'):
        dirs.append(str(rules))
        files += rule_files(rules)
    return files, dirs


def rule_files(directory: Path) -> list[str]:
    try:
        return sorted(str(p) for p in directory.iterdir() if p.is_file())
    except OSError:
        return []


def _signed(repo: Path, files: list[str], dirs: list[str], into: Sources | None) -> Sources | None:
    """Add the signatures of these sources, now, before they are read; None when one cannot be signed (then
    no manifest is written for this run)."""
    if into is None:
        return None
    try:
        into.files.update((s[0], s) for s in signing.snapshot_files(str(repo), files))
    except signing.Unsignable:
        return None
    into.dirs.update((d[0], d) for d in signing.snapshot_dirs(str(repo), dirs))
    return into


@dataclass(frozen=True)
class LoadedInputs:
    """Everything of a run that does not depend on its record: see load_inputs."""

    config: Config
    plan: Plan
    rules: RuleSet
    schemas: Mapping[str, dict[str, Any]]
    templates: Mapping[str, str]
    sources: Sources | None = None

    def for_run(self, repo: Path, info: RunInfo) -> RunInputs:
        return RunInputs(repo=repo, config=self.config, run=info, plan=self.plan, rules=self.rules,
                         schemas=self.schemas, templates=self.templates, sources=self.sources)


def load_inputs(repo: Path, plan_file: Path | str, *, plan_schema_valid: str | None = None,
                spec_file: str | None = None) -> LoadedInputs:
    """Config, plan, rules, role schemas and templates, every one checked; raises InputError.

    plan_schema_valid: a Plan.schema_key recorded earlier (see load_plan).
    """
    files, dirs = source_paths(repo, str(plan_file), spec_file)
    sources = _signed(repo, files, dirs, Sources({}, {}))
    config = load_config(repo / ORCH_DIR / CONFIG_FILE)
    plan_schema = load_json_schema(repo / ORCH_DIR / 'schemas' / 'plan.json')
    plan = load_plan(repo / plan_file if not Path(plan_file).is_absolute() else Path(plan_file),
                     plan_schema, set(config.roles), schema_valid=plan_schema_valid)
    rules = load_host_rules(repo, config)
    roles = sorted({t.role for t in plan.tasks})
    role_files = [path for name in roles for path in (config.role(name).schema_file, config.role(name).template)]
    sources = _signed(repo, role_files, [], sources)
    schemas, templates = check_roles(repo, config, roles)
    return LoadedInputs(config, plan, rules, schemas, templates, sources)


def load_host_rules(repo: Path, config: Config) -> RuleSet:
    """The built-in rules and the host's, checked against the configured roles."""
    return load_rules(builtin_rules_dir(), repo / ORCH_DIR / 'rules', set(config.roles))


def load_strict_schema(path: Path) -> dict[str, Any]:
    schema = load_json_schema(path)
    problems = strict_problems(schema)
    if problems:
        raise SchemaError(problems_message(path, problems, "Codex's strict structured output would reject this schema"))
    return schema


def check_roles(repo: Path, config: Config, roles: list[str]) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Load and lint each role's schema and template before any worker starts; keyed by repo-relative path."""
    schemas: dict[str, dict[str, Any]] = {}
    templates: dict[str, str] = {}
    for name in roles:
        role = config.role(name)
        schemas[role.schema_file] = load_strict_schema(repo / role.schema_file)
        templates[role.template] = check_template(repo / role.template)
    return schemas, templates


def open_run(repo: Path, run_id: str, *, info: RunInfo | None = None) -> RunInputs:
    """Load an existing run, re-reading plan and spec so edits take effect.

    info: the run's record as it will be saved (resume with a new spec file), instead of the one on disk.
    """
    info = info or load_run(repo, run_id)
    # The plan as last checked against the plan schema (content + schema digest): an unchanged
    # plan is not checked again on every resume. Written by remember_plan_check() during a run
    # only, so read-only commands (status, merge, clean) never write into a run.
    checked = run_dir(repo, run_id) / PLAN_CHECK_FILE
    try:
        known = checked.read_text(encoding='utf-8') or None
    except OSError:
        known = None
    loaded = load_inputs(repo, info.plan_file, plan_schema_valid=known, spec_file=info.spec_file)
    if info.spec_file and not (repo / info.spec_file).is_file():
        raise InputError(f'{info.spec_file}: the run\'s spec file is gone (restore it, or start a new run)')
    return loaded.for_run(repo, info)


def _wait_for_culprits(rt: RunInputs, steps: tuple[Step, ...]) -> None:
    """A task's gate that another task's commit broke waits for that task (orch.steps.gate_blame): its step depends
    on the culprit's result, so doit runs the culprit first and does not run the gate again while that result
    stays as it is. Read from the gate's record in the task's state (`after`)."""
    for step in steps:
        if step.task_id is None or step.builtin is not None or not step.rule.gate:
            continue
        record = (state.read_state(rt.task_dir(step.task_id)).get('gates') or {}).get(step.rule.name) or {}
        after = [t for t in record.get('after') or [] if t in rt.plan.by_id and t != step.task_id]
        step.after = (*step.after, *(rt.layout.result(t) for t in after if rt.layout.result(t) not in step.file_dep))
