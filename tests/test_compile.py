"""orch.core.compile: rules x plan -> steps (pure): names, order, inputs, targets, params, quoting, paths."""
from __future__ import annotations

import json
import random
import shlex
from pathlib import Path
from typing import Any

import pytest

from orch.core.compile import RunLayout, compile_plan
from orch.core.config import Config
from orch.core.plan import plan_from_data
from orch.core.resources import builtin_rules_dir
from orch.core.rules import load_rules

pytestmark = pytest.mark.unit   # the pure core: no processes, no git

R = '.orchestrator/runs/r1'
WT = '.orchestrator/worktrees/r1'


def layout(per_task: bool = False, spec: str | None = 'spec.md') -> RunLayout:
    return RunLayout(run_id='r1', date='20260101', base_commit='abc123', shared_branch='orch/20260101/run-r1/shared',
                     task_branch_template='orch/{date}/run-{run_id}/{task_id}', per_task=per_task, spec_file=spec)


def plan():
    return plan_from_data({'tasks': [
        {'id': 'T1', 'role': 'implementer', 'title': 'a', 'description': 'd'},
        {'id': 'T2', 'role': 'tester', 'title': 'b', 'description': 'd', 'depends_on': ['T1']},
        {'id': 'T3', 'role': 'reviewer', 'title': 'c', 'description': 'd', 'depends_on': ['T2', 'T1']},
    ]})


def rules(tmp_path: Path | None = None, *host: dict):
    host_dir = None
    if tmp_path is not None:
        host_dir = tmp_path / 'rules'
        host_dir.mkdir()
        for i, rule in enumerate(host):
            (host_dir / f'r{i}.yaml').write_text(json.dumps(rule))
    return load_rules(builtin_rules_dir(), host_dir)


def by_name(steps):
    return {s.name: s for s in steps}


def test_shared_workspace_steps_in_order() -> None:
    steps = compile_plan(plan(), rules(), Config(), layout())
    assert [s.name for s in steps] == ['worktree', 'prompt:T1', 'work:T1', 'prompt:T2', 'work:T2',
                                       'prompt:T3', 'work:T3', 'report']
    s = by_name(steps)
    assert s['worktree'].targets == [f'{R}/worktree.json']
    assert s['worktree'].params == {'branch': 'orch/20260101/run-r1/shared', 'base_commit': 'abc123'}
    assert s['prompt:T2'].file_dep == ['spec.md', '.orchestrator/prompts/tester.md',
                                       '.orchestrator/schemas/tester.json', f'{R}/tasks/T2/task.json',
                                       f'{R}/tasks/T1/result.json']
    assert s['prompt:T2'].targets == [f'{R}/tasks/T2/prompt.md']
    assert s['work:T3'].file_dep == [f'{R}/tasks/T3/prompt.md', '.orchestrator/schemas/reviewer.json',
                                     f'{R}/worktree.json', f'{R}/tasks/T2/result.json', f'{R}/tasks/T1/result.json']
    assert s['work:T3'].targets == [f'{R}/tasks/T3/result.json']
    assert s['work:T3'].params == {'model': '', 'sandbox': 'read-only', 'codex_args': '["codex"]'}
    assert s['work:T1'].log == f'{R}/tasks/T1/attempt-*'
    assert s['report'].targets == [f'{R}/report.md', f'{R}/summary.json', f'{R}/junit.xml']
    assert s['report'].file_dep == []
    assert s['work:T1'].doc == 'Run the implementer worker for task T1.'


def test_no_spec_means_no_spec_dependency() -> None:
    s = by_name(compile_plan(plan(), rules(), Config(), layout(spec=None)))
    assert s['prompt:T1'].file_dep[0] == '.orchestrator/prompts/implementer.md'


def test_config_changes_reach_params() -> None:
    config = Config.model_validate({'defaults': {'model': 'gpt-x'}, 'codex': {'binary': 'my-codex',
                                                                            'extra_args': ['-c', 'a=1']}})
    s = by_name(compile_plan(plan(), rules(), config, layout()))
    assert s['work:T1'].params == {'model': 'gpt-x', 'sandbox': 'workspace-write',
                                   'codex_args': '["my-codex", "-c", "a=1"]'}


def test_per_task_workspaces() -> None:
    steps = compile_plan(plan(), rules(), Config(), layout(per_task=True))
    # In rule-file order within a task, as far as the dependencies allow: the prompt needs no worktree.
    assert [s.name for s in steps] == ['prompt:T1', 'task_worktree:T1', 'work:T1', 'prompt:T2', 'task_worktree:T2',
                                       'work:T2', 'prompt:T3', 'task_worktree:T3', 'work:T3', 'report']
    s = by_name(steps)
    assert s['task_worktree:T2'].params == {'branch': 'orch/20260101/run-r1/T2', 'base_commit': 'abc123'}
    assert s['task_worktree:T2'].file_dep == [f'{R}/tasks/T1/result.json']
    assert f'{R}/tasks/T2/worktree.json' in s['work:T2'].file_dep


def test_gate_outputs_feed_the_dependents_and_paths_are_quoted_relative_to_cwd(tmp_path: Path) -> None:
    gate = {'name': 'gate', 'scope': 'task', 'roles': ['implementer'], 'input': ['{task_dir}/result.json'],
            'output': '{task_dir}/gate.json',
            'action': {'shell': 'pytest {task_id} {task_dir}/log {spec_file} {worktree} {repo} {run_id}'}}
    tricky = RunLayout(run_id='r1', date='d', base_commit='abc', shared_branch='b', task_branch_template='{task_id}',
                       per_task=False, spec_file="docs/my spec $(x) 'q'.md")
    steps = by_name(compile_plan(plan(), rules(tmp_path, gate), Config(), tricky))
    assert 'gate:T2' not in steps and 'gate:T3' not in steps       # only implementer tasks
    g = steps['gate:T1']
    assert g.file_dep == [f'{R}/tasks/T1/result.json'] and g.targets == [f'{R}/tasks/T1/gate.json']
    assert g.cwd == WT
    # repository-relative paths become relative to the command's cwd (the worktree), each one quoted
    assert shlex.split(g.shell) == ['pytest', 'T1', '../../runs/r1/tasks/T1/log',
                                    "../../../docs/my spec $(x) 'q'.md", '.', '../../..', 'r1']
    assert steps['work:T2'].file_dep[-1] == f'{R}/tasks/T1/gate.json'   # upstream gate
    assert steps['work:T3'].file_dep[-1] == f'{R}/tasks/T1/gate.json'   # T3 depends on T1 too
    assert f'{R}/tasks/T1/gate.json' not in steps['work:T1'].file_dep


def test_shell_cwd_at_the_repository(tmp_path: Path) -> None:
    gate = {'name': 'lint', 'scope': 'run', 'output': '{run_dir}/lint.json',
            'action': {'shell': 'lint {run_dir} {worktree}', 'cwd': '{repo}'}}
    steps = compile_plan(plan(), rules(tmp_path, gate), Config(), layout())
    assert [s.name for s in steps][:2] == ['worktree', 'lint'] and steps[-1].name == 'report'
    lint = by_name(steps)['lint']
    assert lint.cwd == '.' and lint.shell == f'lint {R} {WT}'


def test_a_gate_always_runs_after_its_task(tmp_path: Path) -> None:
    gate = {'name': 'gate', 'scope': 'task', 'roles': ['implementer'], 'output': '{task_dir}/gate.json',
            'action': {'shell': 'true'}}
    steps = by_name(compile_plan(plan(), rules(tmp_path, gate), Config(), layout()))
    assert steps['gate:T1'].file_dep == [f'{R}/tasks/T1/result.json']


@pytest.mark.unit
def test_a_template_is_formatted_as_format_map_formats_it() -> None:
    """compile's _fmt takes a template from its parsed parts (a plain name per placeholder) and hands anything else to
    str.format_map: the same text, or the same error, for any template."""
    from orch.core import compile as compiling
    values = {'task_id': 'T1', 'task_dir': '.orchestrator/runs/r/tasks/T1', 'all_results': ['a.json', 'b.json'],
              'n': 3, 'none': None, 'é': 'accent'}
    keys = [*values, 'missing', '', '0', 'task_id!r', 'task_id:>5', 'a.b', 'x[0]']
    rnd = random.Random(7)

    def outcome(f: Any, template: str) -> tuple[str, str]:
        try:
            return 'text', f(template, values)
        except Exception as exc:   # the same error either way
            return 'error', type(exc).__name__
    for _ in range(5000):
        parts = []
        for _ in range(rnd.randint(0, 4)):
            parts.append(rnd.choice(['', 'x', '{{', '}}', '/', ' ', '\u00e9']))
            if rnd.random() < 0.7:
                parts.append('{' + rnd.choice(keys) + '}')
        if rnd.random() < 0.05:
            parts.append(rnd.choice(['{', '}', '{x']))
        template = ''.join(parts)
        assert outcome(compiling._fmt, template) == outcome(
            lambda t, v: t.format_map(compiling._Joined(v)), template), template
