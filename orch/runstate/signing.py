"""Signatures of files and directories as the no-op manifest (orch.runstate.manifest) keeps them: taking them,
and telling from a directory's times whether its entries are still those it had."""
from __future__ import annotations

import hashlib
import os
import stat
import time
from collections.abc import Iterable

from orch.filesig import is_racy
from orch.runstate.attempts import SUMMARY_FILE

# A file racy when signed (orch.filesig.is_racy) is compared by content every time.

# (path, mtime_ns, ctime_ns, size, inode, content hash, racy); a missing file is (path, None, ...).
FileSig = tuple[str, int | None, int | None, int | None, int | None, str | None, bool]
# (path, mtime_ns, hash of the sorted listing, racy, ctime_ns): the ctime too, since anyone can set an mtime back
# (`touch -r`, `cp -a`, `rsync -a` after adding an entry) but not a ctime
DirSig = tuple[str, int | None, str | None, bool, int | None]


def content_hash(path: str) -> str | None:
    """blake2b of a regular file's bytes; None when it is not a readable regular file."""
    h = hashlib.blake2b(digest_size=16)
    try:
        with open(path, 'rb') as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return None
            while chunk := f.read(1 << 20):
                h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()


# Files no listing counts: caches checked against what they summarize, written by any command that reads them
# (orch.runstate.attempts.SUMMARY_FILE). Their coming would otherwise change a task directory's listing. (Only as
# regular files: a task may be named so.)
UNLISTED = frozenset({SUMMARY_FILE})


def listing_hash(path: str) -> str | None:
    try:
        with os.scandir(path) as entries:
            names = sorted(e.name for e in entries if e.name not in UNLISTED or not e.is_file(follow_symlinks=False))
    except OSError:
        return None
    return hashlib.blake2b('\0'.join(names).encode('utf-8', 'surrogateescape'), digest_size=16).hexdigest()


def full_path(root: str, path: str) -> str:
    return path if os.path.isabs(path) else os.path.join(root, path)


def snapshot_files(root: str, paths: Iterable[str], *, previous: dict[str, FileSig] | None = None,
                   now_ns: int | None = None, settled: dict[str, FileSig] | None = None) -> list[FileSig]:
    """Signatures of `paths` (relative to root, or absolute). A file whose stat equals its entry in
    `previous` (and was not racy there) keeps that entry's hash instead of being read again.
    settled: signatures taken as they are, without a look at the file (see build)."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    previous = previous or {}
    settled = settled or {}
    out: list[FileSig] = []
    for path in dict.fromkeys(paths):
        known = settled.get(path)
        if known is not None:
            out.append(known)
            continue
        full = full_path(root, path)
        try:
            st = os.stat(full)
        except FileNotFoundError:
            out.append((path, None, None, None, None, None, False))
            continue
        except OSError:
            raise Unsignable(path) from None
        if not stat.S_ISREG(st.st_mode):
            raise Unsignable(path)
        key = (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)
        racy = is_racy(now_ns, st.st_mtime_ns, st.st_ctime_ns)
        old = previous.get(path)
        if old is not None and not old[6] and not racy and old[1:5] == key and old[5] is not None:
            digest: str | None = old[5]
        else:
            digest = content_hash(full)
            if digest is None:
                raise Unsignable(path)
        out.append((path, *key, digest, racy))
    return out


def snapshot_dirs(root: str, paths: Iterable[str], *, previous: dict[str, DirSig] | None = None,
                  now_ns: int | None = None, settled: dict[str, DirSig] | None = None) -> list[DirSig]:
    """Listings of directories (None for a missing one). An entry added or removed changes a
    directory's mtime and ctime, so a later check lists only a directory whose times moved (or were racy); so
    does this one, with the signatures of an earlier snapshot (`previous`)."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    previous = previous or {}
    settled = settled or {}
    out: list[DirSig] = []
    for path in dict.fromkeys(paths):
        if path in settled:
            out.append(settled[path])
            continue
        full = full_path(root, path)
        mtime: int | None
        ctime: int | None
        try:
            st = os.stat(full)
            mtime, ctime = st.st_mtime_ns, st.st_ctime_ns
        except OSError:
            mtime = ctime = None
        old = previous.get(path)
        if mtime is not None and old is not None and not old[3] and (old[1], old[4]) == (mtime, ctime) \
                and old[2] is not None:
            listing: str | None = old[2]
        else:
            listing = listing_hash(full) if mtime is not None else None
        racy = mtime is not None and ctime is not None and is_racy(now_ns, mtime, ctime)
        out.append((path, mtime, listing, racy, ctime))
    return out


def unchanged_dir(root: str, sig: DirSig) -> bool:
    """Whether a directory's entries are still those of its signature, known from its times alone (not racy)."""
    path, mtime, _listing, racy, ctime = sig
    if mtime is None or racy:
        return False
    try:
        st = os.stat(full_path(root, path))
    except OSError:
        return False
    return st.st_mtime_ns == mtime and st.st_ctime_ns == ctime


class Unsignable(Exception):
    """An input that cannot be given a signature (unreadable, not a regular file): no manifest."""
