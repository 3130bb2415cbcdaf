"""Helper services started for a run (e.g. the codex-mem server) and stopped after it.

`scripts/start_codex_mem.sh`, when the host has it, is a service even without config.
Each runs in its own process group (orch.adapters.procgroup) with its log under `.codex-mem/`
(or `.orchestrator/runs/<id>/`). A service is its whole group: a script that puts its server in
the background and exits keeps running as the server until stop(); and like a worker it dies with
codex-orch, even after `kill -9` of it.
"""
from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from orch import output
from orch.adapters import procgroup
from orch.adapters.procgroup import Group

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
        self.groups: list[tuple[str, Group]] = []

    def start(self) -> None:
        for name, command, log_path, ready in self.specs:
            _make_log_dir(log_path.parent)
            with open(log_path, 'ab') as log:
                try:
                    group = procgroup.spawn(command, kind='service', cwd=self.repo, stdout=log,
                                            stderr=subprocess.STDOUT, grace=STOP_GRACE)
                except OSError as exc:
                    output.write_line(f'service {name} could not start: {exc}', err=True)
                    continue
            self.groups.append((name, group))
            ready_at = time.monotonic() + ready
            group.wait_exit(ready)
            # Not reaped: its zombie keeps the pgid ours for stop(), which also ends what it left running.
            code = group.exit_status()
            if code is not None and code != 0:
                output.write_line(f'service {name} exited with {code}; see {log_path}', err=True)
            elif code == 0:
                # A start script that put its server in the background: give the server its time.
                time.sleep(max(ready_at - time.monotonic(), 0.0))

    def stop(self) -> None:
        for _name, group in reversed(self.groups):
            # Not just the leader: a script's shell dies at once, while the server it started cleans up.
            group.terminate(STOP_GRACE)
            group.reap()
        self.groups = []


def _make_log_dir(path: Path) -> None:
    """The log directory; `.codex-mem/` in the user's checkout ignores itself, so `git status` stays clean."""
    path.mkdir(parents=True, exist_ok=True)
    if path.name == CODEX_MEM_DIR and not (path / '.gitignore').exists():
        (path / '.gitignore').write_text('*\n')
