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


class Services:
    def __init__(self, repo: Path, configured: list[Any], run_dir: Path) -> None:
        self.repo = repo
        self.specs: list[tuple[str, list[str], Path, float]] = []
        for svc in configured:
            self.specs.append((svc.name, list(svc.command), run_dir / f'service-{svc.name}.log', svc.ready_seconds))
        if (repo / CODEX_MEM_SCRIPT).is_file() and not any(name == 'codex-mem' for name, *_ in self.specs):
            self.specs.append(('codex-mem', ['bash', CODEX_MEM_SCRIPT], repo / '.codex-mem' / 'server.log', 0.5))
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self) -> None:
        for name, command, log_path, ready in self.specs:
            log_path.parent.mkdir(parents=True, exist_ok=True)
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


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the whole group, give it a moment, then SIGKILL whatever is left of it."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=3.0)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
