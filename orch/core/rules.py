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

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from orch.errors import RuleError, problems_message
from orch.core.validate import pydantic_errors, yaml_problem

BUILTIN_ACTIONS = ('worktree', 'task_worktree', 'render_prompt', 'codex_worker', 'report')

# Placeholders and what they stand for; list-valued ones expand to several paths.
RUN_PLACEHOLDERS = {
    'run_id', 'run_dir', 'repo', 'spec_file', 'branch', 'base_commit', 'date', 'worktree',
    'workspace', 'all_results',
}
TASK_PLACEHOLDERS = RUN_PLACEHOLDERS | {
    'task_id', 'task_dir', 'role', 'template', 'schema', 'upstream_results', 'upstream_gates',
    'model', 'sandbox', 'codex_args',
}
LIST_PLACEHOLDERS = {'upstream_results', 'upstream_gates', 'all_results', 'spec_file'}
# Placeholders a shell command may use: values codex-orch controls (paths, checked ids), never
# free text such as titles, so nothing from a plan can inject shell syntax.
SHELL_PLACEHOLDERS = {'run_id', 'run_dir', 'repo', 'worktree', 'task_id', 'task_dir', 'role',
                      'spec_file', 'base_commit', 'branch'}


class ShellAction(BaseModel):
    model_config = ConfigDict(extra='forbid', frozen=True)
    shell: str = Field(min_length=1)
    cwd: str = '{worktree}'
    timeout: float | None = Field(default=None, gt=0)


class Rule(BaseModel):
    model_config = ConfigDict(extra='forbid', frozen=True)

    name: str = Field(pattern=r'^[a-z][a-z0-9_]*$')
    scope: Literal['run', 'task']
    roles: list[str] | None = None
    workspace: Literal['shared', 'per-task', 'any'] = 'any'
    doc: str = ''
    input: list[str] = []
    output: list[str] = Field(min_length=1)
    params: dict[str, str] = {}
    log: str | None = None
    action: str | ShellAction
    gate: bool = False      # outputs of a task-scope gate become inputs of the dependents' workers
    source: str = ''        # the file the rule came from, for messages

    @field_validator('output', 'input', mode='before')
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @property
    def is_shell(self) -> bool:
        return isinstance(self.action, ShellAction)


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...]

    def for_scope(self, scope: str, mode: str) -> list[Rule]:
        return [r for r in self.rules if r.scope == scope and r.workspace in ('any', mode)]


def load_rules(builtin_dir: Path, host_dir: Path | None) -> RuleSet:
    """Built-in rules, then the host's; a host rule may not reuse a built-in name."""
    rules: list[Rule] = []
    for directory, is_host in ((builtin_dir, False), (host_dir, True)):
        if directory is None or not directory.is_dir():
            continue
        for path in sorted(directory.glob('*.yaml')) + sorted(directory.glob('*.yml')):
            rules.extend(_load_file(path, is_host))
    _check_set(rules)
    return RuleSet(tuple(rules))


def _load_file(path: Path, is_host: bool) -> list[Rule]:
    try:
        data = yaml.safe_load(path.read_text(encoding='utf-8'))
    except UnicodeDecodeError as exc:
        raise RuleError(f'{path}: not UTF-8 text: byte {exc.start} is invalid (save it as UTF-8)')
    except yaml.YAMLError as exc:
        where, problem = yaml_problem(exc)
        raise RuleError(f'{path}: {where}not a valid YAML rule file: {problem} '
                        '(only plain YAML is accepted: no tags that construct objects)')
    docs = data.get('rules') if isinstance(data, dict) and 'rules' in data else [data]
    if not isinstance(docs, list) or not all(isinstance(d, dict) for d in docs):
        raise RuleError(f'{path}: a rule file holds one rule (a mapping) or `rules:` with a list of them')
    out = []
    for i, doc in enumerate(docs):
        try:
            rule = Rule.model_validate({**doc, 'source': str(path)})
        except ValidationError as exc:
            where = f'rule {doc.get("name", i)!r}'
            raise RuleError(problems_message(f'{path}: {where}', pydantic_errors(exc)))
        _check_rule(rule)
        if is_host and rule.scope == 'task' and rule.is_shell:
            rule = rule.model_copy(update={'gate': True})
        out.append(rule)
    return out


def _check_rule(rule: Rule) -> None:
    where = f'{rule.source}: rule {rule.name!r}'
    if not rule.is_shell and rule.action not in BUILTIN_ACTIONS:
        raise RuleError(f'{where}: unknown action {rule.action!r} '
                        f'(use one of {", ".join(BUILTIN_ACTIONS)} or `shell: <command>`)')
    allowed = TASK_PLACEHOLDERS if rule.scope == 'task' else RUN_PLACEHOLDERS
    texts = [*rule.input, *rule.output, *rule.params.values(), *([rule.log] if rule.log else []), rule.doc]
    if rule.is_shell:
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
    for out in rule.output:
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
    written = [*rule.output, *([rule.log] if rule.log else []), *([rule.action.cwd] if rule.is_shell else [])]
    for text in written:
        if '..' in PurePosixPath(text).parts:
            raise RuleError(f'{where}: {text!r} must not contain ".." (paths a rule writes stay inside the run '
                            'directory or the worktree)')


def placeholders(text: str, where: str) -> set[str]:
    """The `{name}` fields of a text; anything fancier (attributes, indexes, conversions, format specs)
    is refused: it could fail at expansion time or cut a shell-quoted value apart."""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise RuleError(f'{where}: bad placeholder syntax in {text!r}: {exc} (write literal braces as {{{{ and }}}})')
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
        for out in rule.output:
            other = seen_outputs.get(out)
            if other is not None and (other.workspace == 'any' or rule.workspace in ('any', other.workspace)):
                raise RuleError(f'{rule.source}: rule {rule.name!r}: output {out!r} is also the output of '
                                f'rule {other.name!r} in {other.source} (each file has one producer)')
            seen_outputs[out] = rule
