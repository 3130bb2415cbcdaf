"""orch.core.rules: the built-in rules load; a bad host rule gets one exact message naming file, rule and fix."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from orch.core.resources import builtin_rules_dir
from orch.core.rules import SHELL_PLACEHOLDERS, load_rules, placeholders
from orch.errors import RuleError

pytestmark = pytest.mark.unit   # the pure core: no processes, no git


def test_builtin_rules() -> None:
    rules = load_rules(builtin_rules_dir(), None)
    assert sorted((r.name, r.scope, r.workspace) for r in rules.rules) == [
        ('prompt', 'task', 'any'), ('report', 'run', 'any'), ('task_worktree', 'task', 'per-task'),
        ('work', 'task', 'any'), ('worktree', 'run', 'shared')]
    assert [r.name for r in rules.for_scope('task', 'shared')] == ['prompt', 'work']
    assert [r.name for r in rules.for_scope('run', 'per-task')] == ['report']
    assert not any(r.gate for r in rules.rules)


def host_rules(tmp_path: Path, text: str, name: str = 'x.yaml'):
    host = tmp_path / 'rules'
    host.mkdir(exist_ok=True)
    (host / name).write_text(text)
    return load_rules(builtin_rules_dir(), host)


GOOD = {'name': 'x', 'scope': 'task', 'input': ['{task_dir}/result.json'], 'output': '{task_dir}/x.json',
        'action': {'shell': 'make test'}}


def rule(**changes: object) -> str:
    data = {**GOOD, **changes}
    return json.dumps({k: v for k, v in data.items() if v is not None})


def test_a_host_shell_rule_per_task_is_a_gate(tmp_path: Path) -> None:
    rules = host_rules(tmp_path, rule())
    [x] = [r for r in rules.rules if r.name == 'x']
    assert x.gate and x.is_shell and x.action.cwd == '{worktree}' and x.source == str(tmp_path / 'rules' / 'x.yaml')


def test_a_file_may_hold_several_rules(tmp_path: Path) -> None:
    text = json.dumps({'rules': [json.loads(rule()), json.loads(rule(name='y', output='{task_dir}/y.json'))]})
    assert {'x', 'y'} <= {r.name for r in host_rules(tmp_path, text).rules}


ALLOWED = ', '.join(sorted(SHELL_PLACEHOLDERS))


@pytest.mark.parametrize('text, message', [
    (rule(action='frobnicate'),
     "rule 'x': action: unknown action 'frobnicate' (use one of worktree, task_worktree, render_prompt, codex_worker, "
     'report or `shell: <command>`)'),
    (rule(output='{task_dir}/{nope}.json'),
     "rule 'x': unknown placeholder {nope} in '{task_dir}/{nope}.json' (known for scope task: all_results, "
     'base_commit, branch, codex_args, date, model, repo, role, run_dir, run_id, sandbox, schema, spec_file, task_dir, '
     'task_id, template, upstream_gates, upstream_results, workspace, worktree)'),
    (rule(scope='run', output='{run_dir}/x.json', input=['{task_dir}/a']),
     "rule 'x': unknown placeholder {task_dir} in '{task_dir}/a' (known for scope run: all_results, base_commit, "
     'branch, date, repo, run_dir, run_id, spec_file, workspace, worktree)'),
    (rule(doc='Gate {nope}'),
     "rule 'x': unknown placeholder {nope} in 'Gate {nope}' (known for scope task: all_results, base_commit, "
     'branch, codex_args, date, model, repo, role, run_dir, run_id, sandbox, schema, spec_file, task_dir, '
     'task_id, template, upstream_gates, upstream_results, workspace, worktree)'),
    (rule(action={'shell': 'echo {title}'}),
     f"rule 'x': placeholder {{title}} cannot be used in a shell command (allowed: {ALLOWED}; "
     'write literal braces as {{ and }})'),
    (rule(action={'shell': 'echo {model}'}),
     f"rule 'x': placeholder {{model}} cannot be used in a shell command (allowed: {ALLOWED}; "
     'write literal braces as {{ and }})'),
    (rule(action={'shell': 'echo {task_id:.1}'}),
     "rule 'x': {task_id:.1} in 'echo {task_id:.1}': only plain {name} placeholders are allowed "
     '(no attributes, indexes, conversions or format specs)'),
    (rule(action={'shell': 'echo {task_id!r}'}),
     "rule 'x': {task_id!r} in 'echo {task_id!r}': only plain {name} placeholders are allowed "
     '(no attributes, indexes, conversions or format specs)'),
    (rule(output='{task_dir.upper}/x'),
     "rule 'x': {task_dir.upper} in '{task_dir.upper}/x': only plain {name} placeholders are allowed "
     '(no attributes, indexes, conversions or format specs)'),
    (rule(action={'shell': 'echo {'}),
     "rule 'x': bad placeholder syntax in 'echo {': Single '{' encountered in format string "
     '(write literal braces as {{ and }})'),
    (rule(output='/tmp/{task_id}.json'),
     "rule 'x': output '/tmp/{task_id}.json' must start with {run_dir} or {task_dir} "
     '(outputs live in the run directory)'),
    (rule(output='{run_dir}/x.json'),
     "rule 'x': output '{run_dir}/x.json' of a per-task rule must contain {task_dir} or {task_id}, "
     'or every task would write the same file'),
    (rule(output='{task_dir}/{upstream_results}'),
     "rule 'x': output '{task_dir}/{upstream_results}' cannot use a list placeholder"),
    (rule(output='{task_dir}/../../../x.json'),
     "rule 'x': '{task_dir}/../../../x.json' must not contain \"..\" (paths a rule writes stay inside the run "
     'directory or the worktree)'),
    (rule(action={'shell': 'true', 'cwd': '{worktree}/..'}),
     "rule 'x': '{worktree}/..' must not contain \"..\" (paths a rule writes stay inside the run directory or "
     'the worktree)'),
    (rule(log='/tmp/x.log'),
     "rule 'x': log '/tmp/x.log' must start with {run_dir} or {task_dir} (logs live in the run directory)"),
    (rule(output='{task_dir}/result.json'),
     "rule 'x': output '{task_dir}/result.json' is also the output of rule 'work' in "
     f"{builtin_rules_dir() / 'work.yaml'} (each file has one producer)"),
])
def test_bad_host_rule_messages(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(RuleError) as exc:
        host_rules(tmp_path, text)
    assert str(exc.value) == f'{tmp_path / "rules" / "x.yaml"}: {message}'


@pytest.mark.parametrize('text, message', [
    (rule(name='work'), "rule name 'work' is already defined in {builtin}/work.yaml (rename one of them)"),
    ('name: !!python/object/apply:os.getcwd []\n',
     "line 1 column 7: not a valid YAML rule file: could not determine a constructor for the tag "
     "'tag:yaml.org,2002:python/object/apply:os.getcwd' (only plain YAML is accepted: no tags that construct "
     'objects)'),
    ('- a\n- b\n', 'a rule file holds one rule (a mapping) or `rules:` with a list of them'),
    ('', 'a rule file holds one rule (a mapping) or `rules:` with a list of them'),
    (rule(inputs=[]), "rule 'x': 1 problem\n  inputs: unknown key (remove it or check its spelling)"),
    (rule(name='Bad Name', scope='always'),
     "rule 'Bad Name': 2 problems\n  name: String should match pattern '^[a-z][a-z0-9_]*$' (got 'Bad Name')\n"
     "  scope: Input should be 'run' or 'task' (got 'always')"),
])
def test_bad_rule_file_messages(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(RuleError) as exc:
        host_rules(tmp_path, text)
    assert str(exc.value) == f'{tmp_path / "rules" / "x.yaml"}: {message.format(builtin=builtin_rules_dir())}'


def test_placeholders() -> None:
    assert placeholders('{a}/{b} {{literal}} {a}', 'w') == {'a', 'b'}
    assert placeholders('no fields', 'w') == set()
    with pytest.raises(RuleError, match=r'^w: \{\} in'):
        placeholders('positional {}', 'w')
    with pytest.raises(RuleError, match=r'^w: \{0\} in'):
        placeholders('{0}', 'w')
