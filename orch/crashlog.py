"""Crash logs: what a bug report needs, written where the user will look, secrets redacted."""
from __future__ import annotations

import datetime as dt
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

from orch import __version__
from orch.core.redact import redact


def _version_of(argv: list[str]) -> str:
    if shutil.which(argv[0]) is None and not os.path.isfile(argv[0]):
        return 'not found'
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=5, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as exc:
        return f'unknown ({exc})'
    return (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr).strip() else '?'


def crash_text(codex: str | None = None) -> str:
    """The versions, platform, argv and the traceback of the exception being handled."""
    lines = [
        f'codex-orch {__version__} crashed at {dt.datetime.now().isoformat(timespec="seconds")}',
        f'python: {sys.version.split()[0]} ({sys.executable})',
        f'platform: {platform.platform()}',
        f'git: {_version_of(["git", "--version"])}',
        f'codex: {_version_of([codex, "--version"]) if codex else "(not configured)"}',
        f'argv: {" ".join(sys.argv)}',
        f'cwd: {os.getcwd()}',
        '',
        traceback.format_exc(),
    ]
    return redact('\n'.join(lines))


def write_crash_log(directory: Path | None, codex: str | None = None) -> Path:
    """Write the log of the exception being handled; in `directory` (a run's) when it can, else in /tmp."""
    text = crash_text(codex)
    if directory is not None:
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd, path = tempfile.mkstemp(prefix=f'crash-{dt.datetime.now():%Y%m%d-%H%M%S}-', suffix='.log',
                                        dir=directory)
            with os.fdopen(fd, 'w', encoding='utf-8') as f:
                f.write(text)
            return Path(path)
        except OSError:
            pass   # e.g. the disk is full there: /tmp may still take it
    fd, path = tempfile.mkstemp(prefix='codex-orch-crash-', suffix='.log')
    with os.fdopen(fd, 'w', encoding='utf-8') as f:
        f.write(text)
    return Path(path)
