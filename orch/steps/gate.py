"""Shell rules: a host's gates (after every task of some roles) and run-level commands."""
from __future__ import annotations

import time
from pathlib import Path

from orch.adapters import git
from orch.core.compile import Step
from orch.core.rules import ShellAction
from orch.engine.inputs import RunInputs
from orch.engine.session import Session
from orch.runstate import atomic, state
from orch.steps.commands import command_env, run_command
from orch.steps.failure import Failed
from orch.steps.rounds import changed_files


def shell(rt: RunInputs, session: Session, step: Step) -> None:
    action = step.rule.action
    assert isinstance(action, ShellAction)
    log_path = rt.path(step.log) if step.log else rt.path(step.targets[0]).with_suffix('.log')
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = command_env(rt, step.task_id)
    cwd = rt.path(step.cwd or '.')
    snapshot = _snapshot_for(rt, session, step)
    if snapshot is not None:
        cwd, env['ORCH_WORKTREE'] = _inside_snapshot(rt, step.cwd or '.', snapshot), str(snapshot)
    started = time.time()
    try:
        run = run_command(rt, step.shell or '', cwd=cwd, env=env, log_path=log_path, timeout=action.timeout,
                          cancel=session.cancel)
    finally:
        if snapshot is not None:
            git.remove_worktree(rt.repo, snapshot, force=True)
    record: dict[str, object] = {
        'rule': step.rule.name, 'command': step.shell, 'exit_code': run.exit_code, 'passed': run.passed,
        'duration': run.duration, 'log': run.log, 'tail': run.tail, 'started_at': started, 'finished_at': time.time(),
        'snapshot': snapshot is not None}
    # The target first, then the record: a kill in between leaves a passed target with the record of an
    # earlier run, which status reads as "has not run on its latest work" (never as passed when it failed).
    # The target is what the tasks after it depend on: that this rule passed, never its times or output, so
    # a gate that runs again and passes again does not make them run again (early cut-off). The whole
    # record is in the task's state.json (gates) and in the log.
    for target in step.targets:
        if run.passed:
            atomic.write_if_changed(rt.path(target), atomic.json_text(
                {'rule': step.rule.name, 'task_id': step.task_id, 'passed': True, 'log': run.log}))
        else:   # a failed gate leaves no passed target of an earlier run behind
            rt.path(target).unlink(missing_ok=True)
    if step.task_id:
        # A gate is a result of its task: a failing one fails the task (status, report, JUnit, exit code).
        _record_gate(rt, step.task_id, step.rule.name, record)
    if not run.passed:
        raise Failed(f'gate {step.rule.name} failed: `{step.shell}` ({run.why}); see {run.log}')


def _snapshot_for(rt: RunInputs, session: Session, step: Step) -> Path | None:
    """Shared mode: where a task's gate runs to test exactly that task's landed work: a throw-away worktree at its
    commit (at the run branch's tip when it landed no commit). Never the run's worktree, where the user may have
    uncommitted changes and which later landings move on."""
    if step.task_id is None or rt.run.per_task:
        return None
    commit = (state.read_result(rt.task_dir(step.task_id)) or {}).get('commit') or \
        git.branch_tip(rt.repo, rt.run.shared_branch)
    if not commit:
        return None
    # Beside the run's worktree, at its depth: the rule's paths were rendered relative to it.
    path = rt.path(rt.layout.gate_checkout(step.task_id, step.rule.name))
    git.snapshot_worktree(rt.repo, path, commit)
    return path


def _inside_snapshot(rt: RunInputs, cwd: str, snapshot: Path) -> Path:
    shared = rt.layout.worktree
    if cwd == shared or cwd.startswith(shared + '/'):
        return snapshot / cwd[len(shared):].lstrip('/')
    return rt.path(cwd)


def _record_gate(rt: RunInputs, task_id: str, name: str, record: dict[str, object]) -> None:
    task_dir = rt.task_dir(task_id)
    gates = dict(state.read_state(task_dir).get('gates') or {})
    gates[name] = record
    changes: dict[str, object] = {'gates': gates}
    if rt.run.per_task:
        # What the gate left in the task's worktree (build output, caches) is codex-orch's own doing, not a user's.
        worktree = rt.path(rt.layout.task_worktree(task_id))
        if git.worktree_valid(worktree):
            changes['left'] = {**(state.read_state(task_dir).get('left') or {}), **changed_files(worktree, None)}
    state.update_state(task_dir, **changes)
