"""The control files of a worktree's repository, sealed (orch.steps.git_seal): what makes git run commands."""
from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from orch.adapters.git.run import locate
from orch.errors import GitError

# What in a repository's git directories makes git run commands or read other files: filter and diff drivers
# and includes (config), a worktree's own config, attributes, where its repository is (commondir), borrowed
# objects (alternates). A worker must not have changed any of it by the time codex-orch runs git on its work.
_CONTROL_FILES = (('common', 'config'), ('common', 'info/attributes'), ('common', 'objects/info/alternates'),
                  ('own', 'config.worktree'), ('own', 'commondir'))


def control_digest(worktree: Path) -> dict[str, str]:
    """What the worktree's `.git` entry is (its type and inode) and a hash of each control file of its
    repository, keyed `.git` and `.git/<name>` (for a linked worktree, in its repository's git directory)."""
    worktree = Path(worktree)
    st = os.lstat(worktree / '.git')
    loc = locate(worktree)
    seal = {'.git': f'{stat.S_IFMT(st.st_mode)}:{st.st_dev}:{st.st_ino}'}
    for where, name in _CONTROL_FILES:
        path = (loc.common_dir if where == 'common' else loc.git_dir) / name
        try:
            seal[f'.git/{name}'] = hashlib.sha256(path.read_bytes()).hexdigest()
        except FileNotFoundError:
            seal[f'.git/{name}'] = '-'
        except OSError as exc:
            seal[f'.git/{name}'] = f'? {exc}'
    return seal


def control_changes(worktree: Path, sealed: Mapping[str, str]) -> list[str]:
    """Which of `sealed` (a control_digest) differ now; `.git` itself when it cannot be read at all."""
    try:
        now = control_digest(worktree)
    except (OSError, GitError):
        return ['.git']
    return [name for name in sealed if now.get(name) != sealed[name]]
