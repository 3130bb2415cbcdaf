"""The no-op manifest: the signatures of every input of a run at a moment doit found nothing to do.

A run that ends with every step up to date (checked by doit's own Dependency.get_status, see
orch.engine.noop_record) records here the signature of each file and directory that could change what
would run or what `status` shows. While every signature still holds, a `status` or a no-op `resume` can
answer from the manifest without importing doit or loading the graph: the answer is the one doit gave.

Signatures are as strict as doit's md5 check, and stricter about time:
- a file is unchanged when (mtime_ns, ctime_ns, size, inode) are all equal; otherwise it is unchanged
  only when its content hash is equal (a checkout that only touched it is still a no-op, like doit's md5
  check). A file that was modified shortly before the manifest was written ("racy", as git calls it: a
  second write in the same clock tick keeps the mtime) is always compared by content;
- a missing file must still be missing, a present one still present;
- a directory is unchanged when its sorted listing is (new attempt directories, new rule files).

Anything that does not match exactly, or any doubt (an unreadable file, a manifest of another version
or format, a corrupt one), means "not known": the caller takes the full doit path. Nothing here imports
more than the standard library, so the check costs a stat per input and nothing else.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orch.core.redact import redact_shared
from orch.core.text import encode_utf8
from orch.filesig import is_racy
from orch.runstate import atomic
from orch.runstate.attempts import SUMMARY_FILE

MANIFEST = 'noop-manifest.json'
FORMAT = 4   # 2: the status document compact, an index; 3: rows have decisions; 4: listings without UNLISTED
_SLICE = 1 << 20   # characters of a long answer written at a time
# A file racy when signed (orch.filesig.is_racy) is compared by content every time.

# (path, mtime_ns, ctime_ns, size, inode, content hash, racy); a missing file is (path, None, ...).
FileSig = tuple[str, int | None, int | None, int | None, int | None, str | None, bool]
DirSig = tuple[str, int | None, str | None, bool]   # (path, mtime_ns, hash of the sorted listing, racy)


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


def _full(root: str, path: str) -> str:
    return path if os.path.isabs(path) else os.path.join(root, path)


def snapshot_files(root: str, paths: Iterable[str], *, previous: dict[str, FileSig] | None = None,
                   now_ns: int | None = None) -> list[FileSig]:
    """Signatures of `paths` (relative to root, or absolute). A file whose stat equals its entry in
    `previous` (and was not racy there) keeps that entry's hash instead of being read again."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    previous = previous or {}
    out: list[FileSig] = []
    for path in dict.fromkeys(paths):
        full = _full(root, path)
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
                  now_ns: int | None = None) -> list[DirSig]:
    """Listings of directories (None for a missing one). An entry added or removed changes a
    directory's mtime, so a later check lists only a directory whose mtime moved (or was racy); so does
    this one, with the signatures of an earlier snapshot (`previous`)."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    previous = previous or {}
    out: list[DirSig] = []
    for path in dict.fromkeys(paths):
        full = _full(root, path)
        try:
            mtime: int | None = os.stat(full).st_mtime_ns
        except OSError:
            mtime = None
        old = previous.get(path)
        if mtime is not None and old is not None and not old[3] and old[1] == mtime and old[2] is not None:
            listing: str | None = old[2]
        else:
            listing = listing_hash(full) if mtime is not None else None
        out.append((path, mtime, listing, mtime is not None and is_racy(now_ns, mtime, mtime)))
    return out


def unchanged_dir(root: str, sig: DirSig) -> bool:
    """Whether a directory's entries are still those of its signature, known from its mtime alone (not racy)."""
    path, mtime, _listing, racy = sig
    if mtime is None or racy:
        return False
    try:
        return os.stat(_full(root, path)).st_mtime_ns == mtime
    except OSError:
        return False


class Unsignable(Exception):
    """An input that cannot be given a signature (unreadable, not a regular file): no manifest."""


@dataclass(frozen=True)
class Manifest:
    """What a verified no-op run recorded: header values, signatures, and the answers it gave."""

    header: dict[str, Any]           # format, version, run id, repo, interpreter: must all match
    files: list[FileSig]
    dirs: list[DirSig]
    answers: dict[str, Any]          # what status and a no-op resume print (see orch.engine.noop_record)
    # what an answer after a plan edit is computed from (orch.runstate.delta); empty: none is
    index: dict[str, Any] = field(default_factory=dict)

    def json_chunks(self, per_chunk: int = 4096) -> Iterator[bytes]:
        """Its JSON text, compact, in chunks of `per_chunk` file signatures: at 10,000 tasks the whole is 20 MB, and
        as one string and its bytes it was the peak of a resume's memory."""
        def dump(value: Any) -> bytes:
            return encode_utf8(json.dumps(value, separators=(',', ':'), ensure_ascii=False))
        yield b'{"header":' + dump(self.header) + b',"files":['
        for start in range(0, len(self.files), per_chunk):
            yield (b',' if start else b'') + dump(self.files[start:start + per_chunk])[1:-1]
        yield b'],"dirs":' + dump(self.dirs)
        # the answers are printed redacted: kept so (the header and the paths are compared as they are); a long
        # one (the status document) a slice at a time (JSON escapes a string character by character)
        yield b',"answers":{'
        for i, (key, answer) in enumerate(self.answers.items()):
            yield (b',' if i else b'') + dump(redact_shared(key)) + b':'
            value = redact_shared(answer)
            if isinstance(value, str):
                yield b'"'
                yield from (dump(value[at:at + _SLICE])[1:-1] for at in range(0, len(value), _SLICE))
                yield b'"'
            else:
                yield dump(value)
        yield b'},"index":' + dump(self.index) + b'}'


def build(root: str, header: dict[str, Any], files: Iterable[str], dirs: Iterable[str], answers: dict[str, Any],
          *, previous: Manifest | None = None, as_read: tuple[dict[str, FileSig], dict[str, DirSig]] | None = None
          ) -> Manifest | None:
    """A manifest of these inputs now, or None when one of them cannot be given a signature.

    as_read: signatures taken when the run read its sources (config, plan, rules ...), used for those paths
    instead of new ones: a snapshot built so and compared with a new one (agrees) differs when a
    source was edited after the run read it, also when that was before this snapshot."""
    prev = {f[0]: f for f in previous.files} if previous is not None else None
    try:
        sigs = snapshot_files(root, files, previous=prev)
    except Unsignable:
        return None
    dir_sigs = snapshot_dirs(root, dirs, previous={d[0]: d for d in previous.dirs} if previous is not None else None)
    if as_read is not None:
        read_files, read_dirs = as_read
        sigs = [read_files.get(sig[0], sig) for sig in sigs]
        dir_sigs = [read_dirs.get(sig[0], sig) for sig in dir_sigs]
    return Manifest({**header, 'format': FORMAT}, sigs, dir_sigs, answers)


def agrees(first: Manifest, later: Manifest) -> bool:
    """Whether a later snapshot of all or some of `first`'s inputs saw each as `first` did (stat and content):
    nothing of it changed between them."""
    files = {f[0]: f[:6] for f in first.files}
    dirs = {d[0]: d[:3] for d in first.dirs}
    return all(files.get(f[0]) == f[:6] for f in later.files) and all(dirs.get(d[0]) == d[:3] for d in later.dirs)


def header(repo: Path, run_id: str) -> dict[str, Any]:
    """What must be equal for a manifest to apply at all: this codex-orch (its version and where it is
    installed: another checkout or venv of the same version has other code), this Python and environment,
    this run, this repository (a moved checkout has other paths)."""
    import orch
    from orch.core.redact import secret_values
    # The secrets the environment holds decide what is redacted, so what a stored task entry is compared with:
    # another set of them is another environment (their digest only: the manifest never holds one).
    secrets = hashlib.blake2b('\0'.join(secret_values()).encode('utf-8', 'surrogateescape'), digest_size=16)
    return {'codex_orch': orch.__version__, 'orch_path': os.path.realpath(os.path.dirname(orch.__file__)),
            'python': sys.version, 'prefix': os.path.realpath(sys.prefix), 'run_id': run_id,
            'repo': os.path.realpath(repo), 'secrets': secrets.hexdigest()}


def path_of(run_dir: Path) -> Path:
    return Path(run_dir) / MANIFEST


def save(run_dir: Path, manifest: Manifest) -> None:
    # Not synced: a manifest lost or cut short by a power cut is none (the next command takes the full path), and
    # syncing 20 MB (10,000 tasks) cost up to a second on a busy disk.
    atomic.write_chunks(path_of(run_dir), manifest.json_chunks(), durable=False)


# The manifest last read, by the stat of its file: a command that asks twice (the fast path, then the resume it
# could not answer) parses it once (0.3 s at 10,000 tasks). A manifest is only ever replaced whole (a new inode).
_last_read: tuple[tuple[str, int, int, int, int], Manifest | None] | None = None


def invalidate(run_dir: Path) -> None:
    """Remove the manifest: called by every writer before it changes anything in the run, so a writer
    killed half-way never leaves a manifest that vouches for the state before it."""
    global _last_read
    _last_read = None   # (what it held is gone)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path_of(run_dir))


def load(run_dir: Path, header: dict[str, Any]) -> Manifest | None:
    """The run's manifest if it is there, well-formed and its header matches `header`; else None."""
    global _last_read
    path = path_of(run_dir)
    try:
        with open(path, 'rb') as f:
            st = os.fstat(f.fileno())
            key = (os.path.realpath(path), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            known = _last_read
            if known is not None and known[0] == key:
                found = known[1]
            else:
                found = _parse(f.read())
                _last_read = (key, found)
    except OSError:
        return None
    return found if found is not None and found.header == {**header, 'format': FORMAT} else None


def _parse(text: bytes) -> Manifest | None:
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or not isinstance(data.get('header'), dict):
            return None
        files = [tuple(f) for f in data['files']]
        dirs = [tuple(d) for d in data['dirs']]
        answers = data['answers']
        index = data.get('index') or {}
        if not isinstance(answers, dict) or not isinstance(index, dict) \
                or not all(len(f) == 7 and isinstance(f[0], str) for f in files) \
                or not all(len(d) == 4 and isinstance(d[0], str) for d in dirs):
            return None
    except (ValueError, KeyError, TypeError):
        return None
    return Manifest(data['header'], files, dirs, answers, index)


def first_difference(root: str, manifest: Manifest) -> str | None:
    """The first input that differs from the manifest (its path), or None when every one still matches."""
    for path, mtime, ctime, size, ino, digest, racy in manifest.files:
        if file_differs(root, path, mtime, ctime, size, ino, digest, racy):
            return path
    for path, dir_mtime, listing, dir_racy in manifest.dirs:
        if dir_differs(root, path, dir_mtime, listing, dir_racy):
            return path
    return None


def differences(root: str, manifest: Manifest, *, limit: int) -> list[str] | None:
    """The files that differ from the manifest, in its order; None when a directory differs (an entry came or
    went) or more than `limit` files differ: the caller then takes the full path without looking further."""
    out: list[str] = []
    for path, mtime, ctime, size, ino, digest, racy in manifest.files:
        if len(out) > limit:
            return None
        if file_differs(root, path, mtime, ctime, size, ino, digest, racy):
            out.append(path)
    if len(out) > limit:
        return None
    for path, mtime, listing, racy in manifest.dirs:
        if dir_differs(root, path, mtime, listing, racy):
            return None
    return out


def file_differs(root: str, path: str, mtime: int | None, ctime: int | None, size: int | None, ino: int | None,
                  digest: str | None, racy: bool) -> bool:
    full = _full(root, path)
    try:
        st = os.stat(full)
    except FileNotFoundError:
        return mtime is not None
    except OSError:
        return True
    if mtime is None or not stat.S_ISREG(st.st_mode):
        return True   # appeared, or is no longer a regular file
    if not racy and (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino) == (mtime, ctime, size, ino):
        return False
    return st.st_size != size or content_hash(full) != digest


def dir_differs(root: str, path: str, mtime: int | None, listing: str | None, racy: bool) -> bool:
    full = _full(root, path)
    try:
        now = os.stat(full).st_mtime_ns
    except OSError:
        return mtime is not None
    if mtime is None:
        return True
    return (racy or now != mtime) and listing_hash(full) != listing
