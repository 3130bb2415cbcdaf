"""Which sandbox a run's gates, checks and setup commands get (orch.adapters.sandbox), and what runs without one.

- A task's checks and `worktree.setup` commands: Codex's sandbox in its role's mode (`workspace-write` by
  default; setup needs to write, so a `read-only` role's setup gets `workspace-write`), writing only the
  task's checkout; unsandboxed when the role says `check_sandbox: none` or its sandbox is
  `danger-full-access` (still without the variables workers do not get: they run the worker's code).
- A shell rule (a gate, a run-level command): its `sandbox` (default `workspace-write`), writing its working
  directory, the checkout it tests (`ORCH_WORKTREE`) and the directories of its declared outputs (a gate
  writes its results there, e.g. `{task_dir}/lint.json`; whatever else lies in those directories is writable
  too, so a rule that runs untrusted code should declare its outputs in a directory of their own); `sandbox:
  none` runs it as you.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from orch.adapters.sandbox import Sandbox, sandbox_for, unsandboxed_checks
from orch.core.compile import Step
from orch.core.rules import ShellAction
from orch.engine.inputs import RunInputs


def role_sandbox(rt: RunInputs, role: str, env: Mapping[str, str], *, writes: bool = False) -> Sandbox:
    """The sandbox of a check (or, `writes`, a setup command) of a task of `role`; unsandboxed, it still withholds
    the variables workers do not get."""
    mode = rt.role(role).command_sandbox
    if writes and mode == 'read-only':
        mode = 'workspace-write'
    return sandbox_for(rt.config, mode, env, repo=rt.repo) or unsandboxed_checks(rt.config, env)


def rule_sandbox(rt: RunInputs, step: Step, env: Mapping[str, str], *writable: Path) -> Sandbox | None:
    """The sandbox of a shell rule's command: writable besides its working directory are `writable` (the checkout
    it tests) and the directories of the rule's declared outputs."""
    action = step.rule.action
    assert isinstance(action, ShellAction)
    sandbox = sandbox_for(rt.config, action.sandbox, env, repo=rt.repo)
    if sandbox is None:
        return None
    outputs = {rt.path(target).parent for target in step.targets}
    return sandbox.with_writable(*writable, *sorted(outputs))
