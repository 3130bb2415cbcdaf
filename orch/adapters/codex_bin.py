"""Finding the codex executable: the config's `codex.binary`, $CODEX_BIN, PATH, or the pinned dev copy."""
from __future__ import annotations

import os
import platform
import shutil
import sys
from pathlib import Path

from orch.errors import LaunchError

PINNED_VERSION = '0.169.0'
INSTALL_HINT = (f'install it with `npm install -g @openai/codex@{PINNED_VERSION}`, or set codex.binary '
                'in .orchestrator/orchestrator.yaml to its path')
# A source checkout installs the pinned CLI here (tools/codex-cli/package.json).
_DEV_COPY = Path(__file__).resolve().parents[2] / 'tools' / 'codex-cli' / 'node_modules' / '.bin' / 'codex'


def find_codex(configured: str = 'codex', repo: Path | None = None) -> str | None:
    """An absolute path to an executable codex, or None."""
    if '/' in configured:
        path = Path(configured)
        if not path.is_absolute() and repo is not None:
            path = repo / path
        return str(path) if os.access(path, os.X_OK) and path.is_file() else None
    if configured != 'codex':
        return shutil.which(configured)
    for candidate in (os.environ.get('CODEX_BIN'), shutil.which('codex'), str(_DEV_COPY)):
        if candidate and os.access(candidate, os.X_OK) and Path(candidate).is_file():
            return str(Path(candidate).absolute())
    return None


def require_codex(configured: str, repo: Path) -> str:
    """The codex executable, or a LaunchError (exit 2) before a run creates anything."""
    binary = find_codex(configured, repo)
    if binary is None:
        raise LaunchError(f'codex executable {configured!r} not found: {INSTALL_HINT}')
    return binary


# The npm package's launcher is a node script that starts the platform's native binary, shipped in an optional
# package beside it (@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex for 0.169.0).
_NATIVE = {('linux', 'x86_64'): ('codex-linux-x64', 'x86_64-unknown-linux-musl'),
           ('linux', 'aarch64'): ('codex-linux-arm64', 'aarch64-unknown-linux-musl')}


def native_codex(binary: str) -> str:
    """The native executable behind the npm launcher when it can be found, else `binary` itself. For a command run
    per check (`codex sandbox`), skipping node's start-up saves about 0.1 s each (docs/benchmarks.md)."""
    try:
        script = Path(binary).resolve()
    except OSError:
        return binary
    if script.suffix != '.js' or script.parent.name != 'bin':
        return binary
    native = _NATIVE.get((sys.platform, platform.machine()))
    if native is None:
        return binary
    package, triple = native
    candidate = script.parent.parent.parent / package / 'vendor' / triple / 'bin' / 'codex'
    return str(candidate) if candidate.is_file() and os.access(candidate, os.X_OK) else binary
