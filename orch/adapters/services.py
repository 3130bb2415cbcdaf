"""Helper services started for a run (e.g. the codex-mem server) and stopped after it.

`scripts/start_codex_mem.sh`, when the host has it, is a service even without config.
Each runs in its own process group with its log under `.codex-mem/` (or `.orchestrator/runs/<id>/`).
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from orch import output

CODEX_MEM_SCRIPT = 'scripts/start_codex_mem.sh'
CODEX_MEM_DIR = '.codex-mem'
STOP_GRACE = 3.0    # seconds a service has to exit after SIGTERM before it is killed


class Services:
    def __init__(self, repo: Path, configured: list[Any], run_dir: Path) -> None:
        self.repo = repo
        self.specs: list[tuple[str, list[str], Path, float]] = []
        for svc in configured:
            self.specs.append((svc.name, list(svc.command), run_dir / f'service-{svc.name}.log', svc.ready_seconds))
        if (repo / CODEX_MEM_SCRIPT).is_file() and not any(name == 'codex-mem' for name, *_ in self.specs):
            self.specs.append(('codex-mem', ['bash', CODEX_MEM_SCRIPT], repo / CODEX_MEM_DIR / 'server.log', 0.5))
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self) -> None:
        for name, command, log_path, ready in self.specs:
            _make_log_dir(log_path.parent)
            with open(log_path, 'ab') as log:
                try:
                    proc = subprocess.Popen(command, cwd=self.repo, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
                except OSError as exc:
                    output.write_line(f'service {name} could not start: {exc}', err=True)
                    continue
            self.procs.append((name, proc))
            time.sleep(ready)
            if proc.poll() is not None and proc.returncode != 0:
                output.write_line(f'service {name} exited with {proc.returncode}; see {log_path}', err=True)

    def stop(self) -> None:
        for name, proc in reversed(self.procs):
            _stop_group(proc)
        self.procs = []


def _make_log_dir(path: Path) -> None:
    """The log directory; `.codex-mem/` in the user's checkout ignores itself, so `git status` stays clean."""
    path.mkdir(parents=True, exist_ok=True)
    if path.name == CODEX_MEM_DIR and not (path / '.gitignore').exists():
        (path / '.gitignore').write_text('*\n')


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the whole group, give all of it a moment to exit, then SIGKILL whatever is left of it."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        proc.poll()
        return
    # Not just the leader: a script's shell dies at once, while the server it started cleans up.
    deadline = time.monotonic() + STOP_GRACE
    while time.monotonic() < deadline and _group_alive(proc):
        time.sleep(0.05)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _group_alive(proc: subprocess.Popen[bytes]) -> bool:
    """Whether a live process is left in the service's group (zombies that no init reaps do not count)."""
    proc.poll()
    try:
        os.killpg(proc.pid, 0)
    except ProcessLookupError:
        return False
    proc_fs = Path('/proc')
    if not (proc_fs / 'self' / 'stat').exists():
        return True   # no procfs: trust killpg
    for stat in proc_fs.glob('[0-9]*/stat'):
        try:
            fields = stat.read_text().rsplit(')', 1)[1].split()   # after "pid (comm)": state ppid pgrp ...
        except (OSError, IndexError):
            continue
        if fields[0] != 'Z' and int(fields[2]) == proc.pid:
            return True
    return False
