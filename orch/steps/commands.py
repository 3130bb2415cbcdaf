"""Running a user's shell command (a gate or a check) in a worktree: one environment, one log, one result."""
from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from orch.adapters import tracing
from orch.adapters.procgroup import run_to_end
from orch.adapters.sandbox import Sandbox, codex_stderr
from orch.core.redact import redact
from orch.core.text import plain
from orch.engine.inputs import RunInputs
from orch.runstate import atomic

TAIL_LINES = 40
TAIL_BYTES = 4000


@dataclass(frozen=True)
class CommandRun:
    """One run of one command: what a report, JUnit and a repair prompt show."""

    command: str
    exit_code: int | None          # None: it timed out (or was cancelled)
    duration: float
    log: str                       # repo-relative
    tail: str                      # the last lines of its output, redacted

    @property
    def passed(self) -> bool:
        return self.exit_code == 0

    @property
    def why(self) -> str:
        return 'timed out' if self.exit_code is None else f'exit {self.exit_code}'

    def fingerprint(self) -> str:
        """Same command, same ending, same output up to numbers (timings, PIDs, addresses): the same failure."""
        text = re.sub(r'0x[0-9a-f]+|\d+', '#', self.tail)
        return hashlib.sha256(f'{self.command}\0{self.exit_code}\0{text}'.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), 'passed': self.passed}


def command_env(rt: RunInputs, task_id: str | None) -> dict[str, str]:
    """The environment of gates and checks: codex-orch's own plus where the run and the task's worktree are (its
    private checkout in shared mode, where its checks run; a gate sets its snapshot's instead)."""
    worktree = rt.layout.checkout(task_id) if task_id else rt.layout.worktree
    return {**os.environ, 'ORCH_RUN_ID': rt.run.run_id, 'ORCH_REPO': str(rt.repo),
            'ORCH_TASK_ID': task_id or '', 'ORCH_WORKTREE': str(rt.path(worktree))}


def run_command(rt: RunInputs, command: str, *, cwd: Path, env: dict[str, str], log_path: Path,
                timeout: float | None, sandbox: Sandbox | None, cancel: threading.Event | None = None) -> CommandRun:
    """`/bin/sh -c command` in its own process group (killed with everything it started when it ends), inside
    `sandbox` (None: as you)."""
    return run_shell(command, cwd=cwd, env=env, log_path=log_path, timeout=timeout, cancel=cancel, log_root=rt.repo,
                     sandbox=sandbox)


def run_shell(command: str, *, cwd: Path, env: Mapping[str, str], log_path: Path, timeout: float | None,
              sandbox: Sandbox | None, cancel: threading.Event | None = None, log_root: Path) -> CommandRun:
    """run_command without a run: the log is recorded relative to `log_root` (a Dask worker's scratch task)."""
    argv = ['/bin/sh', '-c', command] if sandbox is None else sandbox.shell(command)
    env = env if sandbox is None else sandbox.env(env)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(log_path, 'wb') as log:
        if not cwd.is_dir():
            log.write(f'cannot start: the working directory {cwd} does not exist\n'.encode())
            code: int | None = 127
        else:
            try:
                with tempfile.TemporaryFile() as codex_err:
                    code = run_to_end(argv, cwd=cwd, env=dict(env), stdout=log, timeout=timeout, cancel=cancel,
                                      stderr=log if sandbox is None else codex_err)
                    codex_err.seek(0)
                    log.write(codex_stderr(codex_err.read().decode(errors='replace')).encode())
            except OSError as exc:
                log.write(f'cannot start {argv[0]}: {exc}\n'.encode())
                code = 127
    atomic.redact_file(log_path)   # the command has ended: its log is kept without secrets
    return CommandRun(command=command, exit_code=code, duration=round(time.monotonic() - started, 3),
                      log=_relative(log_path, log_root), tail=tail_of(log_path))


def tail_of(path: Path) -> str:
    try:
        with open(path, 'rb') as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - TAIL_BYTES))
            data = f.read()
    except OSError:
        return ''
    lines = data.decode('utf-8', errors='replace').splitlines()[-TAIL_LINES:]
    return redact(plain('\n'.join(lines)))   # the log keeps the colours, the record does not


def _relative(path: Path, repo: Path) -> str:
    try:
        return path.relative_to(repo).as_posix()
    except ValueError:
        return str(path)


def check_attrs(task_id: str | None, command: str) -> dict[str, Any]:
    """A check's or gate's trace span: its task and command."""
    return {'codex_orch.task.id': task_id, 'codex_orch.command': redact(command)}


def ran(traced: tracing.Span, run: CommandRun) -> None:
    """A check's or gate's run, in its trace span."""
    traced.set({'codex_orch.exit_code': run.exit_code, 'codex_orch.passed': run.passed,
                'codex_orch.duration': run.duration})
    if not run.passed:
        traced.fail(run.why)
