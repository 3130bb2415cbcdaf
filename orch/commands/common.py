"""What several subcommands share: finding the repository, running a run to its end."""
from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from orch import git, output
from orch.errors import EXIT_DEFERRED, EXIT_INTERNAL, EXIT_OK, EXIT_TASK_FAILED, OrchError
from orch.runs import ORCH_DIR, latest_run_id
from orch.runtime import Runtime, open_run


def find_repo(start: Path | None = None) -> Path:
    return git.repo_root(Path(start or Path.cwd()))


def ensure_orchestrator(repo: Path) -> None:
    """First use in a repository: write the defaults, as `init` would."""
    if not (repo / ORCH_DIR).is_dir():
        from orch.commands.init import write_defaults
        write_defaults(repo, force=False)
        output.write_line(f'created {ORCH_DIR}/ with the default config, schemas and prompts', err=True)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM stops a run like Ctrl-C: workers killed, finished work kept, exit 130."""
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt
    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:   # not the main thread (e.g. embedded): leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def pushd(path: Path) -> contextlib.AbstractContextManager[None]:
    return contextlib.chdir(path)


def open_latest_for_dodo(start: Path) -> Runtime | None:
    try:
        repo = find_repo(start)
        return open_run(repo, latest_run_id(repo))
    except OrchError as exc:
        output.write_line(f'codex-orch: no run to show ({exc})', err=True)
        return None


def exit_code(rows: list[dict[str, Any]], doit_rc: int) -> int:
    statuses = {r['status'] for r in rows}
    if statuses <= {'done'}:
        return EXIT_OK
    if 'failed' in statuses:
        return EXIT_TASK_FAILED
    if 'deferred' in statuses:
        return EXIT_DEFERRED
    if doit_rc == 3:
        return EXIT_INTERNAL
    return EXIT_TASK_FAILED


def env_flag(name: str) -> bool:
    return os.environ.get(name, '') not in ('', '0', 'false')
