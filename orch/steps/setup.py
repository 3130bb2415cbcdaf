"""`worktree.setup`: commands run in every new checkout of a task before its worker starts, so that its checks and
gates test what the user's own checkout tests (git-ignored build outputs its tests need, say compiled translation
files).

Each command runs as a check does (orch.steps.commands: `/bin/sh -c` in its own process group, killed with
everything it started when it ends or times out, the checks' environment), its output in
`tasks/<id>/setup/<n>.log`. What ran is recorded in the task's state (`setup`: command, exit code, duration, log,
tail), which status, the report and JUnit show. The first command that fails or times out fails the task with its
output tail, before any model request.

The work step runs it when a task starts a fresh execution in its checkout (after the leftovers of an earlier
attempt were discarded), not when an interrupted execution goes on in the checkout it kept; a Dask worker runs it in
its scratch checkout (orch.remote.run_unit); a gate runs it in each snapshot checkout it tests (`in_snapshot`), its
bisection probes too.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orch.adapters import git
from orch.adapters.sandbox import Sandbox
from orch.core.text import one_line
from orch.runstate import state
from orch.steps.commands import CommandRun, command_env, run_shell
from orch.steps.failure import Failed
from orch.steps.sandboxing import role_sandbox

if TYPE_CHECKING:
    from orch.engine.inputs import RunInputs
    from orch.engine.session import Session

SETUP_DIR = 'setup'

def run_setup(rt: RunInputs, session: Session, task_id: str, workdir: Path) -> None:
    """The configured setup commands in the task's checkout `workdir` (its own: no other task's setup runs there at
    the same time); raises Failed (recorded) when one fails."""
    settings = rt.config.worktree
    env = command_env(rt, task_id)
    sandbox = role_sandbox(rt, rt.plan.by_id[task_id].role, env, writes=True) if settings.setup else None
    run_setup_commands(settings.setup, task_dir=rt.task_dir(task_id), workdir=workdir, env=env, sandbox=sandbox,
                       timeout=settings.setup_timeout, cancel=session.cancel, log_root=rt.repo)


def in_snapshot(rt: RunInputs, session: Session, task_id: str, checkout: Path, log_dir: Path) -> CommandRun | None:
    """The setup commands in a gate's snapshot `checkout` of `task_id`'s work (tracked files only, as the task's own
    checkout had): the first that fails, or None. Logged in `log_dir`; a failing one is the gate's failure."""
    settings = rt.config.worktree
    if not settings.setup:
        return None
    env = {**command_env(rt, task_id), 'ORCH_WORKTREE': str(checkout)}
    sandbox = role_sandbox(rt, rt.plan.by_id[task_id].role, env, writes=True)
    for n, command in enumerate(settings.setup, 1):
        run = run_shell(command, cwd=checkout, env=env, log_path=log_dir / f'setup-{n}.log',
                        timeout=settings.setup_timeout, sandbox=sandbox, cancel=session.cancel, log_root=rt.repo)
        if not run.passed:
            return run
    return None


def run_setup_commands(commands: Sequence[str], *, task_dir: Path, workdir: Path, env: Mapping[str, str],
                       sandbox: Sandbox | None, timeout: float, cancel: threading.Event | None, log_root: Path,
                       log_dir: str = SETUP_DIR) -> list[dict[str, Any]]:
    """Run `commands` in order in `workdir`, up to the first failure, each logged in `task_dir/log_dir/<n>.log`
    (recorded relative to `log_root`). Returns the runs (also in the task's state as `setup`); a failure, a
    timeout, an interruption or a change to the repository's git configuration raises Failed, recorded first."""
    if not commands:
        if state.read_state(task_dir).get('setup'):   # an earlier execution's, under another config
            state.update_state(task_dir, setup=None)
        return []
    before = git.control_digest(workdir)
    runs: list[dict[str, Any]] = []
    state.update_state(task_dir, setup=runs, round='setup')
    for n, command in enumerate(commands, 1):
        run = run_shell(command, cwd=workdir, env=env, log_path=task_dir / log_dir / f'{n}.log', timeout=timeout,
                        sandbox=sandbox, cancel=cancel, log_root=log_root)
        runs.append(run.to_dict())
        state.update_state(task_dir, setup=runs)
        if cancel is not None and cancel.is_set():
            state.update_state(task_dir, status='pending', reason='interrupted; resume to run it again', round=None)
            raise Failed('interrupted')
        if not run.passed:
            raise _failed(task_dir, f'setup failed: {command} ({_ending(run, timeout)}){_last_line(run)}; '
                                    'the worker was not started')
    changed = git.control_changes(workdir, before)
    if changed:
        raise _failed(task_dir, f'setup changed the git configuration of the repository ({", ".join(changed)}): '
                                'it is sealed while workers run (orch.steps.git_seal), so setup commands must not '
                                'change it; the worker was not started')
    state.update_state(task_dir, round=None)
    return runs


def _failed(task_dir: Path, reason: str) -> Failed:
    state.update_state(task_dir, status='failed', reason=reason, outcome='setup-failed', ended_at=time.time(),
                       round=None, attempts=state.attempt_count(task_dir))
    return Failed(reason)


def _ending(run: CommandRun, timeout: float) -> str:
    return f'timed out after {timeout:g} s' if run.exit_code is None else run.why


def _last_line(run: CommandRun) -> str:
    """The last line of its output, for the one-line reason (the whole tail is in the record)."""
    lines = [line for line in run.tail.splitlines() if line.strip()]
    if not lines:
        return ''
    line = one_line(lines[-1]).strip()
    return f': {line[:200]}{"…" if len(line) > 200 else ""}'
