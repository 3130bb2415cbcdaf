"""Shell rules: a host's gates (after every task of some roles) and run-level commands."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import BinaryIO

from orch.adapters.worker import die_with_parent, leader_exited
from orch.core.compile import Step
from orch.core.rules import ShellAction
from orch.engine.inputs import RunInputs
from orch.engine.session import Session
from orch.runstate import atomic, state
from orch.steps.failure import Failed


def _run_gate(command: str, cwd: Path, env: dict[str, str], log: BinaryIO, timeout: float | None) -> int | None:
    """Run a gate in its own process group; the whole group is killed when the command ends (background
    leftovers), times out (None) or codex-orch is interrupted, and it dies with codex-orch."""
    try:
        proc = subprocess.Popen(['/bin/sh', '-c', command], cwd=cwd, env=env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                preexec_fn=die_with_parent)
    except OSError as exc:
        log.write(f'cannot start /bin/sh: {exc}\n'.encode())
        return 127
    deadline = None if timeout is None else time.monotonic() + timeout
    timed_out = False
    try:
        while not leader_exited(proc):   # not reaped yet: the pgid stays ours while we signal it
            if deadline is not None and time.monotonic() >= deadline:
                timed_out = True
                break
            time.sleep(0.02)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()
    return None if timed_out else proc.returncode


def shell(rt: RunInputs, session: Session, step: Step) -> None:
    action = step.rule.action
    assert isinstance(action, ShellAction)
    cwd = rt.path(step.cwd or '.')
    log_path = rt.path(step.log) if step.log else rt.path(step.targets[0]).with_suffix('.log')
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # The task's worktree (or the run's), whatever directory the rule runs the command in.
    worktree = rt.layout.task_worktree(step.task_id) if step.task_id else rt.layout.worktree
    env = {**os.environ, 'ORCH_RUN_ID': rt.run.run_id, 'ORCH_REPO': str(rt.repo),
           'ORCH_TASK_ID': step.task_id or '', 'ORCH_WORKTREE': str(rt.path(worktree))}
    started = time.time()
    code: int | None = None
    if not cwd.is_dir():
        code, why = -1, f'cannot start: its working directory {cwd} does not exist'
    else:
        with open(log_path, 'wb') as log:
            code = _run_gate(step.shell or '', cwd, env, log, action.timeout)
        why = 'timed out' if code is None else f'exited with {code}'
    if code != 0:
        if step.task_id:
            state.update_state(rt.task_dir(step.task_id), gate_failed=step.rule.name,
                               reason=f'gate {step.rule.name} {why} (log: {log_path})')
        raise Failed(f'{step.rule.name}: `{step.shell}` {why}; see {log_path}')
    record = {'rule': step.rule.name, 'command': step.shell, 'exit_code': 0,
              'duration': round(time.time() - started, 3), 'log': str(log_path.relative_to(rt.repo))}
    for target in step.targets:
        atomic.write_json(rt.path(target), record)
