"""What git's own small files say, read without starting git: where a checkout's git dir is, the common dir it
shares, and the commit a detached HEAD is at. Each is read as git reads it; anything unusual returns None, and the
caller asks git."""
from __future__ import annotations

import os
import re
from pathlib import Path


def linked_git_dir(checkout: Path) -> Path | None:
    """The git dir a `.git` file names ("gitdir: PATH", PATH absolute or relative to the checkout), as a
    linked worktree, a submodule and a `git init --separate-git-dir` checkout have; None without one."""
    named = _named_path(checkout / '.git', b'gitdir: ')
    return checkout / named if named else None


def common_dir_of(git_dir: Path) -> Path:
    """Where the branches and the shared config live, by git's rule: the directory a `commondir` file in `git_dir`
    names (relative to git_dir; a linked worktree's git dir has one), else git_dir itself."""
    named = _named_path(git_dir / 'commondir', b'')
    return git_dir / named if named else git_dir


def linked_git_dir_file(path: Path) -> str | None:
    """The path a linked worktree's `gitdir` file (in its git dir) names: where git registered the worktree."""
    return _named_path(path, b'')


def _named_path(path: Path, prefix: bytes) -> str | None:
    """The path a `.git` file or a `commondir` file names, parsed as git parses it: the prefix at the very start,
    then everything but the line ends at its end (a trailing space is part of the name)."""
    try:
        with open(path, 'rb') as fh:
            data = fh.read()
    except OSError:
        return None
    if not data.startswith(prefix) or b'\0' in data:
        return None
    return os.fsdecode(data[len(prefix):].rstrip(b'\r\n')) or None


def git_dir_at(checkout: Path) -> Path | None:
    """The git dir of the checkout whose top is `checkout`, from its `.git` entry; None when it has none, or when git
    would not take it as one: its common dir must hold `objects` and `refs` (a `.git` directory without them
    sends git further up; a `.git` file naming one is an error to git)."""
    dot_git = checkout / '.git'
    git_dir = dot_git if dot_git.is_dir() else linked_git_dir(checkout)
    if git_dir is None:
        return None
    common = common_dir_of(git_dir)
    return git_dir if (common / 'objects').is_dir() and (common / 'refs').is_dir() else None


def pointer(path: Path) -> object:
    """What a `.git` entry or a `commondir` file says: a file's bytes, a directory's identity, None when absent."""
    try:
        with open(path, 'rb') as fh:
            return fh.read()
    except IsADirectoryError:
        st = os.stat(path)
        return ('directory', st.st_dev, st.st_ino)
    except OSError:
        return None


_DETACHED = re.compile(rb'([0-9a-f]{40}|[0-9a-f]{64})\n?')


def detached_head(path: Path, git_dir: Path | None = None) -> str | None:
    """The commit a detached HEAD at `path` names, read from the git dir's HEAD file as git reads it: codex-orch's
    task checkouts are detached, and their HEAD is asked for a dozen times a task. None when HEAD is on a branch,
    is not such a file (a reftable store's HEAD names no commit; a symlinked HEAD is an old form of a branch) or
    `path` is not the top of a checkout: ask git."""
    git_dir = git_dir or git_dir_at(Path(path))   # a pinned checkout's git dir is given (orch.adapters.git.run)
    if git_dir is None:
        return None
    try:
        fd = os.open(git_dir / 'HEAD', os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, 'rb') as fh:
        content = fh.read(66)
    return content.rstrip(b'\n').decode('ascii') if _DETACHED.fullmatch(content) else None
