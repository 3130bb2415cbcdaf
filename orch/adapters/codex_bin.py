"""Finding the codex executable: the config's `codex.binary`, $CODEX_BIN, PATH, or the pinned dev copy."""
from __future__ import annotations

import os
import shutil
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
