"""Which sandbox a run's gates, checks and setup commands get (orch.adapters.sandbox), and what runs without one.

- A task's checks and `worktree.setup` commands: Codex's sandbox in its role's mode (`workspace-write` by
  default; setup needs to write, so a `read-only` role's setup gets `workspace-write`), writing only the
  task's checkout; unsandboxed when the role says `check_sandbox: none` or its sandbox is
  `danger-full-access` (still without the variables workers do not get: they run the worker's code).
- A shell rule (a gate, a run-level command): its `sandbox` (default `workspace-write`), writing its working
  directory, the checkout it tests (`ORCH_WORKTREE`) and a scratch directory of its own, emptied before each
  run (`ORCH_STEP_DIR`). Never the run's or a task's directory: a gate runs the workers' code, and there lie
  every task's records (its declared outputs are written by codex-orch once the command ended, orch.steps.gate);
  `sandbox: none` runs it as you.
"""
from __future__ import annotations

import re
import shutil
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
    """The sandbox of a shell rule's command, writing only `writable` (its working directory, the checkout it
    tests, its scratch directory)."""
    action = step.rule.action
    assert isinstance(action, ShellAction)
    sandbox = sandbox_for(rt.config, action.sandbox, env, repo=rt.repo)
    return None if sandbox is None else sandbox.with_writable(*writable)


def step_scratch(rt: RunInputs, step: Step) -> Path:
    """A shell rule's own scratch directory (`ORCH_STEP_DIR`), empty: what it leaves there is its own business."""
    scratch = rt.run_dir / 'scratch' / re.sub(r'[^A-Za-z0-9_.-]', '_', step.name)
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    return scratch
