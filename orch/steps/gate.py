"""Shell rules: a host's gates (after every task of some roles) and run-level commands."""
from __future__ import annotations

import time
from pathlib import Path

from orch.core.compile import Step
from orch.core.rules import ShellAction
from orch.engine.inputs import RunInputs
from orch.engine.session import Session
from orch.runstate import atomic, state
from orch.steps.commands import command_env, run_command
from orch.steps.failure import Failed


def shell(rt: RunInputs, session: Session, step: Step) -> None:
    action = step.rule.action
    assert isinstance(action, ShellAction)
    cwd = rt.path(step.cwd or '.')
    log_path = rt.path(step.log) if step.log else rt.path(step.targets[0]).with_suffix('.log')
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    run = run_command(rt, step.shell or '', cwd=cwd, env=command_env(rt, step.task_id), log_path=log_path,
                      timeout=action.timeout, cancel=session.cancel)
    record: dict[str, object] = {
        'rule': step.rule.name, 'command': step.shell, 'exit_code': run.exit_code, 'passed': run.passed,
        'duration': run.duration, 'log': run.log, 'tail': run.tail, 'started_at': started, 'finished_at': time.time()}
    if step.task_id:
        # A gate is a result of its task: a failing one fails the task (status, report, JUnit, exit code).
        _record_gate(rt.task_dir(step.task_id), step.rule.name, record)
    if not run.passed:
        raise Failed(f'gate {step.rule.name} failed: `{step.shell}` ({run.why}); see {run.log}')
    for target in step.targets:
        atomic.write_json(rt.path(target), record)


def _record_gate(task_dir: Path, name: str, record: dict[str, object]) -> None:
    gates = dict(state.read_state(task_dir).get('gates') or {})
    gates[name] = record
    state.update_state(task_dir, gates=gates)
