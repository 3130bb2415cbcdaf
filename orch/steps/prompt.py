"""The prompt step: the role's template rendered for one task, from the files its rule names."""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from orch.core.compile import Step
from orch.core.prompts import bullet_list, render, upstream_section
from orch.core.redact import redact
from orch.core.spec import read_spec
from orch.engine.inputs import RunInputs
from orch.engine.session import Session
from orch.runstate import atomic, state


def render_prompt(rt: RunInputs, session: Session, step: Step) -> None:
    assert step.task_id is not None
    task = rt.plan.by_id[step.task_id]
    results = {dep: state.read_result(rt.task_dir(dep)) for dep in task.depends_on}
    atomic.write_if_changed(rt.path(step.outputs['prompt']), prompt_text(rt, step, results))


def prompt_text(rt: RunInputs, step: Step, results: Mapping[str, dict[str, Any] | None]) -> str:
    """The task's prompt, its upstream tasks' results given (a dry run predicting the cache gives its own)."""
    assert step.task_id is not None
    task = rt.plan.by_id[step.task_id]
    upstream = []
    for dep in task.depends_on:
        dep_task = rt.plan.by_id[dep]
        upstream.append((dep, dep_task.role, dep_task.title, results.get(dep)))
    spec_files = step.inputs.get('spec') or []
    values = {
        'task_id': task.id, 'title': task.title, 'description': task.description, 'role': task.role,
        'run_id': rt.run.run_id,
        'acceptance': bullet_list(task.acceptance, '(none given: use your judgement)'),
        'paths': bullet_list(task.paths, '(not specified)'),
        'upstream': upstream_section(upstream),
        'spec': (read_spec(rt.repo, spec_files[0]) if spec_files else None) or '(no specification was given)',
        'schema': json.dumps(rt.schema(step.input('schema')), indent=2),
    }
    return redact(render(rt.template(step.input('template')), values))   # the plan's text may quote a key
