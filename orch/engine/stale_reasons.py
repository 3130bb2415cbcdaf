"""Why a task would run again, in the plan's words: the run's own files a step depends on named by what they are
("prompt of T7", "T6's gate tests_gate result"), never by their path in the run directory."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orch.engine.inputs import RunInputs


def run_files(rt: RunInputs) -> dict[str, str]:
    """The run's own files a step depends on, by what they are in the plan: 'prompt of T7', 'T6's gate
    tests_gate result' (a reason never names a run-directory path)."""
    out: dict[str, str] = {}
    for step in rt.steps:
        if not step.task_id:
            continue
        for target in step.targets:
            if step.builtin is not None and step.builtin.action == 'render_prompt':
                out[target] = f'prompt of {step.task_id}'
            elif step.builtin is None and step.rule.gate:
                out[target] = f'{step.task_id}\'s gate {step.rule.name} result'
    return out


def prompt_because(task_id: str, why: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """'prompt of T7 changed because upstream T5's answer changed': its prompt step's reasons (an upstream
    result) said once, as the cause of its work step's (the prompt)."""
    prompt = ('input_changed', f'prompt of {task_id} changed')
    upstream = [text for code, text in why if code == 'upstream_result_changed']
    if prompt not in why or not upstream:
        return why
    cause = ', '.join(t.replace("'s result changed", "'s answer changed") for t in upstream)
    return [(prompt[0], f'{prompt[1]} because {cause}') if r == prompt else r for r in why
            if r[0] != 'upstream_result_changed']

