"""A file's stat signature, and when it tells the file's content.

Used wherever codex-orch keeps something read from files while they stay as they were: the no-op manifest
(orch.runstate.manifest), the tasks' rows and attempt summaries (orch.runstate.known_rows, orch.runstate.attempts)
and git's kept config listings (orch.adapters.git.run).
"""
from __future__ import annotations

import os

Sig = tuple[int, int, int, int] | None   # (inode, size, mtime_ns, ctime_ns); None: no such file

# A file modified this close to the moment it is signed is "racy" (git's word): a second write within the same
# clock tick would keep its times, so its stat does not tell its content. Linux file times come from a coarse
# clock (a few ms); a time on a whole second is taken for a filesystem with coarse times (FAT: 2 s) and is racy
# too.
RACY_NS = 1_000_000_000


def file_sig(path: str | os.PathLike[str]) -> Sig:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def sig_is_racy(now_ns: int, sig: Sig) -> bool:
    """is_racy of a file signed as `sig` (a missing file is not racy: its coming shows)."""
    return sig is not None and is_racy(now_ns, sig[2], sig[3])


def is_racy(now_ns: int, mtime_ns: int, ctime_ns: int) -> bool:
    return now_ns - max(mtime_ns, ctime_ns) < RACY_NS or mtime_ns % 1_000_000_000 == 0
