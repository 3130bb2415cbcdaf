"""Rules: the pipeline as data (Snakemake-like), loaded from rules/ and .orchestrator/rules/.

A rule names its inputs, outputs, params and log with `{placeholders}`, a scope (once per run,
or once per task, optionally only for some roles) and one action: a built-in step or a shell
command. The compiler expands rules over the plan; this module only loads and checks them.
"""
from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from orch.core.builtin_steps import BUILTINS, REQUIRED, Builtin, builtin
from orch.core.files import read_yaml_input
from orch.core.validate import pydantic_errors
from orch.errors import RuleError, problems_message

# Placeholders and what they stand for; list-valued ones expand to several paths.
RUN_PLACEHOLDERS = {
    'run_id', 'run_dir', 'repo', 'spec_file', 'branch', 'base_commit', 'date', 'worktree',
    'workspace', 'all_results',
}
TASK_PLACEHOLDERS = RUN_PLACEHOLDERS | {
    'task_id', 'task_dir', 'role', 'template', 'schema', 'upstream_results', 'upstream_gates',
    'model', 'sandbox', 'codex_args',
}
LIST_PLACEHOLDERS = {'upstream_results', 'upstream_gates', 'all_results', 'spec_file', 'workspace'}
# Placeholders a shell command may use: values codex-orch controls (paths, checked ids), never
# free text such as titles, so nothing from a plan can inject shell syntax.
SHELL_PLACEHOLDERS = {'run_id', 'run_dir', 'repo', 'worktree', 'task_id', 'task_dir', 'role',
                      'spec_file', 'base_commit', 'branch'}


class ShellAction(BaseModel):
    model_config = ConfigDict(extra='forbid', frozen=True)
    shell: str = Field(min_length=1)
    cwd: str = '{worktree}'
    timeout: float | None = Field(default=None, gt=0)
    # Codex's sandbox mode it runs in (orch.adapters.sandbox); `none`: unsandboxed, as you (doctor lists it)
    sandbox: Literal['workspace-write', 'read-only', 'none'] = 'workspace-write'


def _named(value: Any, default_name: str) -> Any:
    """`input`/`output` as written (one path, a list, or a mapping of names to paths) -> name -> paths.

    Unnamed entries are numbered; built-in actions read their files by name (see builtin_steps)."""
    if isinstance(value, str):
        return {default_name: [value]}
    if isinstance(value, list):
        return {str(i): [v] for i, v in enumerate(value)}
    if isinstance(value, dict):
        return {k: [v] if isinstance(v, str) else v for k, v in value.items()}
    return value


class Rule(BaseModel):
    model_config = ConfigDict(extra='forbid', frozen=True)

    name: str = Field(pattern=r'^[a-z][a-z0-9_]*$')
    scope: Literal['run', 'task']
    roles: list[str] | None = None
    workspace: Literal['shared', 'per-task', 'any'] = 'any'
    doc: str = ''
    input: dict[str, list[str]] = {}
    output: dict[str, str] = Field(min_length=1)
    params: dict[str, str] = {}
    log: str | None = None
    action: str | ShellAction
    gate: bool = False      # outputs of a task-scope gate become inputs of the dependents' workers
    source: str = ''        # the file the rule came from, for messages

    @field_validator('input', mode='before')
    @classmethod
    def _inputs(cls, value: Any) -> Any:
        return _named(value, '0')

    @field_validator('output', mode='before')
    @classmethod
    def _outputs(cls, value: Any) -> Any:
        named = _named(value, '0')
        if isinstance(named, dict) and all(isinstance(v, list) and len(v) == 1 for v in named.values()):
            return {k: v[0] for k, v in named.items()}
        return value   # a list under one name: pydantic says what is wrong

    @property
    def is_shell(self) -> bool:
        return isinstance(self.action, ShellAction)

    @property
    def builtin(self) -> Builtin | None:
        return builtin(self.action)

    @property
    def input_paths(self) -> list[str]:
        return [path for paths in self.input.values() for path in paths]

    @property
    def output_paths(self) -> list[str]:
        return list(self.output.values())


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...]

    def for_scope(self, scope: str, mode: str) -> list[Rule]:
        return [r for r in self.rules if r.scope == scope and r.workspace in ('any', mode)]

    def for_mode(self, mode: str) -> list[Rule]:
        return [r for r in self.rules if r.workspace in ('any', mode)]

    def providing(self, output: str, mode: str) -> Rule:
        """The built-in rule whose `output` feeds a provided placeholder (checked to exist at load)."""
        return next(r for r in self.for_mode(mode) if r.builtin and r.builtin.provides == output)


def load_rules(builtin_dir: Path, host_dir: Path | None, roles: set[str] | None = None) -> RuleSet:
    """Built-in rules, then the host's; a host rule may not reuse a built-in name.

    roles: the configured roles, which a rule's `roles:` must name (None: not checked, e.g. in unit tests).
    """
    rules: list[Rule] = []
    for directory, is_host in ((builtin_dir, False), (host_dir, True)):
        if directory is None or not directory.is_dir():
            continue
        for path in sorted(directory.glob('*.yaml')) + sorted(directory.glob('*.yml')):
            rules.extend(_load_file(path, is_host, roles))
    _check_set(rules)
    return RuleSet(tuple(rules))


MAX_RULE_BYTES = 1024 * 1024


def _load_file(path: Path, is_host: bool, roles: set[str] | None) -> list[Rule]:
    data = read_yaml_input(path, limit=MAX_RULE_BYTES, what='rule file', error=RuleError,
                           invalid='not a valid YAML rule file',
                           fix='a rule is a YAML file: replace it with one, or move it out of the rules directory')
    docs = data.get('rules') if isinstance(data, dict) and 'rules' in data else [data]
    if not isinstance(docs, list) or not all(isinstance(d, dict) for d in docs):
        raise RuleError(f'{path}: a rule file holds one rule (a mapping) or `rules:` with a list of them')
    out = []
    for i, doc in enumerate(docs):
        try:
            rule = Rule.model_validate({**doc, 'source': str(path)})
        except ValidationError as exc:
            name = doc.get('name')
            where = f'rule {name!r}' if isinstance(name, str) and len(name) <= 100 else f'rule {i}'   # no alias bomb
            raise RuleError(problems_message(f'{path}: {where}', pydantic_errors(exc))) from None
        _check_rule(rule, is_host, roles)
        if is_host and rule.scope == 'task' and rule.is_shell:
            rule = rule.model_copy(update={'gate': True})
        out.append(rule)
    return out


def _check_rule(rule: Rule, is_host: bool, roles: set[str] | None) -> None:
    where = f'{rule.source}: rule {rule.name!r}'
    step = rule.builtin
    if not rule.is_shell and step is None:
        raise RuleError(f'{where}: action: unknown action {rule.action!r} '
                        f'(use one of {", ".join(BUILTINS)} or `shell: <command>`)')
    if step is not None and is_host:
        raise RuleError(f'{where}: action: {rule.action!r} is a built-in step of the pipeline, defined once in '
                        "codex-orch's own rules/; a host rule runs a command instead (`action: {shell: ...}`)")
    if roles is not None:
        for i, role in enumerate(rule.roles or []):
            if role not in roles:
                raise RuleError(f'{where}: roles[{i}]: unknown role {role!r} (configured roles: '
                                f'{", ".join(sorted(roles))}; a misspelt role would silently never run)')
    if rule.roles is not None and rule.scope == 'run':
        raise RuleError(f'{where}: roles: only a per-task rule (scope: task) can be limited to roles')
    _check_placeholders(rule, where)
    _check_written_paths(rule, where)
    if step is not None:
        _check_builtin(rule, step, where)


def _check_placeholders(rule: Rule, where: str) -> None:
    allowed = TASK_PLACEHOLDERS if rule.scope == 'task' else RUN_PLACEHOLDERS
    texts = [*rule.input_paths, *rule.output_paths, *rule.params.values(), *([rule.log] if rule.log else []),
             rule.doc]
    if isinstance(rule.action, ShellAction):
        texts.append(rule.action.cwd)
        for name in placeholders(rule.action.shell, where):
            if name not in SHELL_PLACEHOLDERS:
                raise RuleError(f'{where}: placeholder {{{name}}} cannot be used in a shell command '
                                f'(allowed: {", ".join(sorted(SHELL_PLACEHOLDERS))}; '
                                'write literal braces as {{ and }})')
    for text in texts:
        for name in placeholders(text, where):
            if name not in allowed:
                raise RuleError(f'{where}: unknown placeholder {{{name}}} in {text!r} '
                                f'(known for scope {rule.scope}: {", ".join(sorted(allowed))})')


def _check_written_paths(rule: Rule, where: str) -> None:
    for out in rule.output_paths:
        names = placeholders(out, where)
        if not out.startswith(('{run_dir}', '{task_dir}')):
            raise RuleError(f'{where}: output {out!r} must start with {{run_dir}} or {{task_dir}} '
                            '(outputs live in the run directory)')
        if rule.scope == 'task' and not names & {'task_dir', 'task_id'}:
            raise RuleError(f'{where}: output {out!r} of a per-task rule must contain {{task_dir}} '
                            'or {task_id}, or every task would write the same file')
        if names & LIST_PLACEHOLDERS:
            raise RuleError(f'{where}: output {out!r} cannot use a list placeholder')
    if rule.log and not rule.log.startswith(('{run_dir}', '{task_dir}')):
        raise RuleError(f'{where}: log {rule.log!r} must start with {{run_dir}} or {{task_dir}} '
                        '(logs live in the run directory)')
    written = [*rule.output_paths, *([rule.log] if rule.log else []),
               *([rule.action.cwd] if isinstance(rule.action, ShellAction) else [])]
    for text in written:
        if '..' in PurePosixPath(text).parts:
            raise RuleError(f'{where}: {text!r} must not contain ".." (paths a rule writes stay inside the run '
                            'directory or the worktree)')


def _check_builtin(rule: Rule, step: Builtin, where: str) -> None:
    """A built-in rule gives its action what the action reads, and keeps what others read where they read it."""
    what = f'the {step.action} action'
    if rule.scope != step.scope:
        raise RuleError(f'{where}: scope: {what} runs once per {step.scope}, so the rule needs `scope: {step.scope}`')
    if step.workspace != 'any' and rule.workspace != step.workspace:
        raise RuleError(f'{where}: workspace: {what} belongs to the {step.workspace} workspace mode '
                        f'(`workspace: {step.workspace}`)')
    if rule.roles is not None:
        raise RuleError(f'{where}: roles: a built-in step runs for every task; remove `roles`')
    for name, purpose in step.inputs.items():
        if name not in rule.input:
            raise RuleError(f'{where}: input: missing the named input `{name}` ({what} reads {purpose} from it; '
                            f'write `input: {{{name}: <path>}}`)')
        if len(rule.input[name]) != 1:
            raise RuleError(f'{where}: input.{name}: {what} reads one file from it; give one path')
    for name, purpose in step.params.items():
        if name not in rule.params:
            raise RuleError(f'{where}: params: missing `{name}` ({what} uses it: {purpose})')
    for name, path in rule.output.items():
        if name not in step.outputs:
            raise RuleError(f'{where}: output.{name}: {what} writes only {", ".join(step.outputs)}; '
                            'name its outputs so')
        fixed = step.outputs[name]
        if fixed and path != fixed:
            raise RuleError(f'{where}: output.{name}: must be {fixed!r}, where codex-orch reads it back '
                            f'(status, reports and crash recovery read it there), not {path!r}')
    for name in step.outputs:
        if name not in rule.output:
            raise RuleError(f'{where}: output: missing `{name}` ({what} writes it)')
    if rule.log is not None and rule.log != step.log:
        kept = f'keeps its log in {step.log!r}' if step.log else 'keeps no log'
        raise RuleError(f'{where}: log: {what} {kept}; remove `log` or write {step.log!r}'
                        if step.log else f'{where}: log: {what} {kept}; remove `log`')


def placeholders(text: str, where: str) -> set[str]:
    """The `{name}` fields of a text; anything fancier (attributes, indexes, conversions, format specs)
    is refused: it could fail at expansion time or cut a shell-quoted value apart."""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise RuleError(f'{where}: bad placeholder syntax in {text!r}: {exc} '
                        '(write literal braces as {{ and }})') from None
    names = set()
    for _, field, spec, conv in parsed:
        if field is None:
            continue
        if spec or conv or not field.isidentifier():
            shown = '{' + field + (f'!{conv}' if conv else '') + (f':{spec}' if spec else '') + '}'
            raise RuleError(f'{where}: {shown} in {text!r}: only plain {{name}} placeholders are allowed '
                            '(no attributes, indexes, conversions or format specs)')
        names.add(field)
    return names


def _check_set(rules: list[Rule]) -> None:
    seen_names: dict[str, str] = {}
    seen_outputs: dict[str, Rule] = {}
    for rule in rules:
        if rule.name in seen_names:
            raise RuleError(f'{rule.source}: rule name {rule.name!r} is already defined in '
                            f'{seen_names[rule.name]} (rename one of them)')
        seen_names[rule.name] = rule.source
        for out in rule.output_paths:
            other = seen_outputs.get(out)
            if other is not None and (other.workspace == 'any' or rule.workspace in ('any', other.workspace)):
                raise RuleError(f'{rule.source}: rule {rule.name!r}: output {out!r} is also the output of '
                                f'rule {other.name!r} in {other.source} (each file has one producer)')
            seen_outputs[out] = rule
    for mode, actions in REQUIRED.items():
        in_mode = [r for r in rules if r.workspace in ('any', mode)]
        for action in actions:
            having = [r for r in in_mode if r.action == action]
            if len(having) > 1:
                raise RuleError(f'{having[1].source}: rule {having[1].name!r}: action: {action!r} is already the '
                                f'action of rule {having[0].name!r} in {having[0].source} (one rule per built-in '
                                'step)')
            if not having and any(r.builtin for r in rules):
                raise RuleError(f'{_first_source(rules)}: no rule runs the built-in {action!r} step for the {mode} '
                                'workspace mode; restore it in rules/')
        _check_followed(in_mode)


# Files in the run directory that codex-orch itself writes, so a rule may read them without a producer rule.
WRITTEN_BY_CODEX_ORCH = ('{task_dir}/task.json',)


def _check_followed(rules: list[Rule]) -> None:
    """Every run-directory file a rule reads is written by some rule (or codex-orch), so the pipeline can follow
    it: a renamed output with a stale reader would otherwise fail every task at run time."""
    produced = {out for rule in rules for out in rule.output_paths} | set(WRITTEN_BY_CODEX_ORCH)
    for rule in rules:
        for name, paths in rule.input.items():
            for path in paths:
                if path.startswith(('{run_dir}', '{task_dir}')) and path not in produced:
                    raise RuleError(f'{rule.source}: rule {rule.name!r}: input.{name}: {path!r} is not the output '
                                    'of any rule, so nothing would ever write it (name an output of another rule, '
                                    'or a placeholder such as {upstream_results})')


def _first_source(rules: list[Rule]) -> str:
    return next((r.source for r in rules if r.builtin), rules[0].source if rules else 'rules/')
