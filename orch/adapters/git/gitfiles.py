"""What git's own small files say, read without starting git: where a checkout's git dir is, the common dir it
shares, the commit a detached HEAD is at and the one a branch's loose ref names. Each is read as git reads it;
anything unusual returns None, and the caller asks git."""
from __future__ import annotations

import os
import re
import stat
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


def _small_regular_file(path: Path) -> bytes | None:
    """The first 4 KiB of `path` if it is a regular file (not through a symlink, never blocking on a FIFO); None for
    anything else or nothing there."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        return os.read(fd, 4096) if stat.S_ISREG(os.fstat(fd).st_mode) else None
    except OSError:
        return None
    finally:
        os.close(fd)


# A full sha1. A 64-digit one is left to git: only a sha256 repository takes it, and a sha1 one calls it broken.
_DETACHED = re.compile(rb'[0-9a-f]{40}\n?')


def detached_head(path: Path, git_dir: Path | None = None) -> str | None:
    """The commit a detached HEAD at `path` names, read from the git dir's HEAD file as git reads it: codex-orch's
    task checkouts are detached, and their HEAD is asked for a dozen times a task. None when HEAD is on a branch,
    is not such a file (a reftable store's HEAD names no commit; a symlinked HEAD is an old form of a branch) or
    `path` is not the top of a checkout: ask git."""
    git_dir = git_dir or git_dir_at(Path(path))   # a pinned checkout's git dir is given (orch.adapters.git.run)
    if git_dir is None:
        return None
    content = _small_regular_file(git_dir / 'HEAD')   # (a FIFO or a directory there is no HEAD of ours)
    return content.rstrip(b'\n').decode('ascii') if content is not None and _DETACHED.fullmatch(content) else None


# A branch's ref name whose loose file is read directly: plain components only (git refuses `..`, a leading dot,
# a `.lock` end and control characters in a ref name; anything else is left to git).
_BRANCH_REF = re.compile(r'refs/heads(?:/[A-Za-z0-9_+@-][A-Za-z0-9_.+@-]*)+')
_LOOSE_REF = re.compile(rb'[0-9a-f]{40}\n')


def loose_branch(common_dir: Path, ref: str) -> str | None:
    """The commit a branch's loose ref file names (`<common dir>/refs/heads/...`), read as git's files backend reads
    it, where a loose ref wins over a packed one: the run branch's tip is asked three times a task. None when there
    is no such file or it is not exactly one line with a full sha1 (a packed ref, a symbolic ref, a symlink, a
    directory of refs, a reftable store, whose `refs/heads` is a file), or the name is one git refuses: ask git."""
    if not _plain_branch(ref):
        return None
    content = _small_regular_file(common_dir / ref)
    return content[:-1].decode('ascii') if content is not None and _LOOSE_REF.fullmatch(content) else None


def _plain_branch(ref: str) -> bool:
    """A branch's ref name of plain components that git takes as it is (git refuses `..`, a leading dot, a trailing
    dot and a `.lock` end; anything else is left to git)."""
    return (_BRANCH_REF.fullmatch(ref) is not None and '..' not in ref and not ref.endswith('.')
            and not any(part.endswith('.lock') for part in ref.split('/')))


class Unusual(Exception):
    """Something git's own files hold that these readers do not follow: ask git."""


def worktree_branches(common_dir: Path) -> list[tuple[Path, str | None, bool]] | None:
    """(path, branch checked out or None, prunable) of each worktree of the repository whose common dir is
    `common_dir`, the main one first, as `git worktree list --porcelain` gives them: every landing asks which checkout
    has the run's branch. None when anything is unusual (a bare repository or a separate git dir, a HEAD that is a
    symlink or names a symbolic ref, a relative or odd worktree record, a reftable store): ask git."""
    if common_dir.name != '.git':
        return None
    try:
        out = [(common_dir.parent, _head_branch(common_dir, common_dir), False)]
        try:
            names = sorted(os.listdir(common_dir / 'worktrees'))
        except FileNotFoundError:
            names = []
        for name in names:
            git_dir = common_dir / 'worktrees' / name
            try:
                with open(git_dir / 'gitdir', 'rb') as fh:
                    record = fh.read()
            except (FileNotFoundError, NotADirectoryError):
                continue   # git lists no worktree without its record
            gitdir = os.fsdecode(record.rstrip(b'\r\n'))
            if not os.path.isabs(gitdir) or gitdir != gitdir.strip() or '\0' in gitdir:
                raise Unusual(gitdir)
            path = Path(gitdir.removesuffix('/.git'))
            locked = os.path.lexists(git_dir / 'locked')
            # (git's test is lstat: a .git that is a dangling symlink is there)
            prunable = (not locked and not os.path.lexists(gitdir)) or not path.exists()
            out.append((path, _head_branch(git_dir, common_dir), prunable))
    except (Unusual, OSError):
        return None
    return out


def _head_branch(git_dir: Path, common_dir: Path) -> str | None:
    """The branch a worktree's HEAD file names (None: detached); Unusual for anything but those two plain forms, or a
    branch file that git could read as a symbolic ref (one, a symlink: git would name its target) or that is not a
    regular file."""
    content = _small_regular_file(git_dir / 'HEAD')
    if content is None:
        raise Unusual('HEAD')
    if _DETACHED.fullmatch(content):
        return None
    if not content.startswith(b'ref: refs/heads/') or not content.endswith(b'\n'):
        raise Unusual('HEAD')
    ref = os.fsdecode(content[5:-1])
    if not _plain_branch(ref):
        raise Unusual(ref)   # (a reftable store's HEAD names refs/heads/.invalid)
    branch = Path(common_dir) / ref
    if os.path.lexists(branch):   # (absent: packed, or a branch not born yet: HEAD names it all the same)
        named = _small_regular_file(branch)
        if named is None or named.startswith(b'ref:'):
            raise Unusual(ref)
    return ref.removeprefix('refs/heads/')
