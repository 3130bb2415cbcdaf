"""Shell rules: a host's gates (after every task of some roles) and run-level commands."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from orch.adapters import git, tracing
from orch.core.compile import Step
from orch.core.rules import ShellAction
from orch.engine.inputs import RunInputs
from orch.engine.session import Session
from orch.runstate import atomic, state
from orch.steps import gate_blame, setup
from orch.steps.commands import CommandRun, check_attrs, command_env, ran, run_command
from orch.steps.failure import Failed
from orch.steps.rounds import changed_files
from orch.steps.sandboxing import rule_sandbox, step_scratch


def shell(rt: RunInputs, session: Session, step: Step) -> None:
    """A shell rule's step; with tracing on, one span (a gate's carries its task's id)."""
    kind = 'gate' if step.rule.gate else 'rule'
    with tracing.span(f'{kind} {step.rule.name}', {**check_attrs(step.task_id, step.shell or ''),
                                                    'codex_orch.rule': step.rule.name}) as traced:
        _shell(rt, session, step, traced)


def _shell(rt: RunInputs, session: Session, step: Step, traced: tracing.Span) -> None:
    action = step.rule.action
    assert isinstance(action, ShellAction)
    log_path = rt.path(step.log) if step.log else rt.path(step.targets[0]).with_suffix('.log')
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    tested = _commit_to_test(rt, step)
    run = _run_at(rt, session, step, tested, log_path)
    ran(traced, run)
    traced.set({'codex_orch.commit': tested})
    _stop_if_cancelled(session)
    record: dict[str, object] = {
        'rule': step.rule.name, 'command': step.shell, 'exit_code': run.exit_code, 'passed': run.passed,
        'duration': run.duration, 'log': run.log, 'tail': run.tail, 'started_at': started, 'finished_at': time.time(),
        'snapshot': tested is not None, 'commit': tested}
    culprit = None
    if step.task_id and tested is not None:
        previous = (state.read_state(rt.task_dir(step.task_id)).get('gates') or {}).get(step.rule.name) or {}
        record['after'] = previous.get('after') or []   # the culprits it waited for: its step depends on them
        if run.passed:
            gate_blame.remember_pass(rt, step.name, tested)
        else:
            for target in step.targets:   # whatever the blame finds (or if it fails): no passed target of before
                rt.path(target).unlink(missing_ok=True)
            culprit = _blame(rt, session, step, tested, log_path, run, record)
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
        # A gate is a result of its task: a failing one fails the task (status, report, JUnit, exit code) — or,
        # when another task's commit broke it, that task, while this one waits for it.
        _record_gate(rt, step.task_id, step.rule.name, record)
    if culprit is not None:
        raise Failed(f'waiting: gate {step.rule.name} broken by {culprit}; it runs again once {culprit} ran again')
    if not run.passed:
        raise Failed(f'gate {step.rule.name} failed: `{step.shell}` ({run.why}); see {run.log}')


def _run_at(rt: RunInputs, session: Session, step: Step, commit: str | None, log_path: Path) -> CommandRun:
    """The rule's command: in a throw-away checkout of `commit` (shared mode, a task's gate), else where its rule
    says."""
    if commit is not None and step.task_id is not None:
        # Beside the run's worktree, at its depth: the rule's paths were rendered relative to it.
        snapshot = rt.path(rt.layout.gate_checkout(step.task_id, step.rule.name))
        git.snapshot_worktree(rt.repo, snapshot, commit)
        try:   # the snapshot has the tracked files only: what the task's own checkout got first, it gets too
            failed = setup.in_snapshot(rt, session, step.task_id, snapshot,
                                       log_path.with_name(f'{log_path.stem}-setup'))
            if failed is not None:   # the gate could not run on this commit: that is its failure, with the evidence
                return dataclasses.replace(failed, tail=f'worktree.setup `{failed.command}` failed in the gate\'s '
                                                        f'checkout:\n{failed.tail}')
            return run_in_checkout(rt, session, step, snapshot, log_path)
        finally:
            git.remove_worktree(rt.repo, snapshot, force=True)
    env = command_env(rt, step.task_id)
    return _run(rt, session, step, rt.path(step.cwd or '.'), env, log_path)


def run_in_checkout(rt: RunInputs, session: Session, step: Step, checkout: Path, log_path: Path) -> CommandRun:
    """The rule's command on the files of `checkout` (a gate's snapshot, or a review fix in its judge's checkout):
    its working directory the rule's, inside that checkout, which ORCH_WORKTREE names; its sandbox and timeout."""
    env = command_env(rt, step.task_id)
    cwd, env['ORCH_WORKTREE'] = _inside(rt, step, checkout), str(checkout)
    return _run(rt, session, step, cwd, env, log_path)


def _run(rt: RunInputs, session: Session, step: Step, cwd: Path, env: dict[str, str], log_path: Path) -> CommandRun:
    action = step.rule.action
    assert isinstance(action, ShellAction)
    scratch = step_scratch(rt, step)
    env['ORCH_STEP_DIR'] = str(scratch)
    sandbox = rule_sandbox(rt, step, env, cwd, Path(env['ORCH_WORKTREE']), scratch)
    return run_command(rt, step.shell or '', cwd=cwd, env=env, log_path=log_path, timeout=action.timeout,
                       sandbox=sandbox, cancel=session.cancel)


def _commit_to_test(rt: RunInputs, step: Step) -> str | None:
    """Shared mode, a task's gate: the task's own landed commit (the run branch's tip when it landed none). Never
    the run's worktree, where the user may have uncommitted changes and which later landings move on. A gate that
    waited for another task that broke it tests the tip: the culprit's fix is there, on top of this task's work."""
    if step.task_id is None or rt.run.per_task:
        return None
    tip = git.branch_tip(rt.repo, rt.run.shared_branch)
    previous = (state.read_state(rt.task_dir(step.task_id)).get('gates') or {}).get(step.rule.name) or {}
    if previous.get('blamed') or previous.get('after'):
        return tip
    return (state.read_result(rt.task_dir(step.task_id)) or {}).get('commit') or tip


def _stop_if_cancelled(session: Session) -> None:
    """A gate killed by Ctrl-C failed nothing: it neither fails its task nor blames another (no probe counts)."""
    if session.cancel.is_set():
        raise Failed('interrupted')


def _blame(rt: RunInputs, session: Session, step: Step, tested: str, log_path: Path, run: CommandRun,
           record: dict[str, object]) -> str | None:
    """The gate failed at `tested`: find the commit that broke it (orch.steps.gate_blame). Another task's: that
    task fails with the gate's evidence and the task this gate belongs to waits for it (its id is returned)."""
    assert step.task_id is not None
    probes = iter(range(1, 1000))

    def probe(commit: str) -> CommandRun:
        probed = _run_at(rt, session, step, commit, log_path.with_name(f'{log_path.stem}-probe-{next(probes)}.log'))
        _stop_if_cancelled(session)
        return probed
    own = (state.read_result(rt.task_dir(step.task_id)) or {}).get('commit')
    blame = gate_blame.find_culprit(rt, step.task_id, own, tested, gate_blame.last_pass(rt, step.name, tested),
                                    probe)
    record['blame'] = {'task': blame.task, 'commit': blame.commit, 'probes': blame.probes}
    culprit = blame.task
    if culprit == step.task_id:
        # Its own commit broke it: a failure of its work like a failing check, so it runs again on the next resume
        # (told the gate's evidence); the gate runs again once its result changed, never while nothing did.
        gate_blame.fail_culprit(rt, culprit, step.rule.name, step.task_id, blame.commit or tested, run)
        return None
    if culprit is None or culprit not in rt.plan.by_id:
        return None
    gate_blame.fail_culprit(rt, culprit, step.rule.name, step.task_id, blame.commit or tested, run)
    record['blamed'] = culprit
    after = record.get('after')
    record['after'] = sorted({*(after if isinstance(after, list) else []), culprit})
    return culprit


def _inside(rt: RunInputs, step: Step, checkout: Path) -> Path:
    """The rule's working directory, moved from the task's worktree (where its paths were rendered) into
    `checkout`."""
    cwd = step.cwd or '.'
    tree = rt.layout.task_worktree(step.task_id) if step.task_id else rt.layout.worktree
    if cwd == tree or cwd.startswith(tree + '/'):
        return checkout / cwd[len(tree):].lstrip('/')
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
