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
from sys import intern
from typing import Any

from orch.collect import json_loads_uncollected
from orch.core.redact import redact_shared
from orch.core.text import encode_utf8
from orch.filesig import is_racy
from orch.runstate import atomic
from orch.runstate.signing import (
    DirSig,
    FileSig,
    Unsignable,
    content_hash,
    full_path,
    listing_hash,
    snapshot_dirs,
    snapshot_files,
)

MANIFEST = 'noop-manifest.json'
# The rest, read only when asked for (see save): the content hashes, the large answers and the delta index.
MORE = 'noop-manifest.more.json'
# An empty file in the run's directory, touched before racy signatures are settled: its mtime is the filesystem's
# clock (settle_racy). No input of any answer.
CLOCK = 'fs-clock'
# 2: the status document compact, an index; 3: rows have decisions; 4: listings without UNLISTED;
# 5: two files, the signatures grouped by directory, a directory's ctime
FORMAT = 5
_LATER = frozenset({'status_doc'})   # answers kept in the second file: only `status --json` and a resume read them
_SLICE = 1 << 20   # characters of a long answer written at a time
@dataclass(frozen=True)
class Manifest:
    """What a verified no-op run recorded: header values, signatures, and the answers it gave."""

    header: dict[str, Any]           # format, version, run id, repo, interpreter: must all match
    files: list[FileSig]
    dirs: list[DirSig]
    answers: dict[str, Any]          # what status and a no-op resume print (see orch.engine.noop_record)
    # what an answer after a plan edit is computed from (orch.runstate.delta); empty: none is
    index: dict[str, Any] = field(default_factory=dict)


def build(root: str, header: dict[str, Any], files: Iterable[str], dirs: Iterable[str], answers: dict[str, Any],
          *, previous: Manifest | None = None, as_read: tuple[dict[str, FileSig], dict[str, DirSig]] | None = None,
          settled: frozenset[str] = frozenset()) -> Manifest | None:
    """A manifest of these inputs now, or None when one of them cannot be given a signature.

    as_read: signatures taken when the run read its sources (config, plan, rules ...), used for those paths
    instead of new ones: a snapshot built so and compared with a new one (agrees) differs when a
    source was edited after the run read it, also when that was before this snapshot.
    settled: paths whose signatures are `previous`'s as they are, not looked at again: inputs the caller knows were
    as `previous` signed them, and whose answers are the ones given for those signatures (a change since then is
    a difference the next check finds)."""
    prev = {f[0]: f for f in previous.files} if previous is not None else None
    prev_dirs = {d[0]: d for d in previous.dirs} if previous is not None else None
    try:
        sigs = snapshot_files(root, files, previous=prev,
                              settled={p: prev[p] for p in settled if p in prev} if prev and settled else None)
    except Unsignable:
        return None
    dir_sigs = snapshot_dirs(root, dirs, previous=prev_dirs, settled={
        p: prev_dirs[p] for p in settled if p in prev_dirs} if prev_dirs and settled else None)
    if as_read is not None:
        read_files, read_dirs = as_read
        sigs = [read_files.get(sig[0], sig) for sig in sigs]
        dir_sigs = [read_dirs.get(sig[0], sig) for sig in dir_sigs]
    return Manifest({**header, 'format': FORMAT}, sigs, dir_sigs, answers)


def settle_racy(root: str, files: list[FileSig], clock: Path | None = None) -> list[FileSig]:
    """The signatures with each racy one (taken too soon after a write for its stat to tell its content) made a plain
    one where it can be now: the file's stat is still the one signed, its content is still the one signed, and it is
    no longer recent. Otherwise every later check would hash it (the run's doit.db and reports: tens of MB at 10,000
    tasks, at every status). The stat is taken before the content: a write after it gets a later time.

    No longer recent: a second old by this process's clock, or, with `clock` (a file in the run's directory, touched
    here before any stat), older than the filesystem's own clock now. A file on the clock's filesystem whose times
    are both before the clock's mtime was last written in an earlier tick of the clock its times come from: any write
    after the stat taken here gets a later time, so its stat tells its content from now on. That settles doit.db
    written a few ms before a big run's manifest, which the second kept racy (then hashed, 28 MB, by every status)."""
    now = time.time_ns()
    fs_now = _filesystem_now(clock) if clock is not None else None
    out: list[FileSig] = []
    for sig in files:
        path, mtime, ctime, size, ino, digest, racy = sig
        if racy and mtime is not None and ctime is not None:
            full = full_path(root, path)
            try:
                st = os.stat(full)
            except OSError:
                st = None
            if st is not None and (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino) == (mtime, ctime, size, ino) \
                    and (not is_racy(now, mtime, ctime) or _before(st, fs_now)) and content_hash(full) == digest:
                sig = (path, mtime, ctime, size, ino, digest, False)
        out.append(sig)
    return out


def _filesystem_now(clock: Path) -> tuple[int, int] | None:
    """(device, mtime in ns) of `clock` touched now: the time its filesystem gives a write at this moment. None when
    it cannot be touched, or is no regular file (a FIFO someone put there would block the open; a symlink is not
    followed)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK | getattr(os, 'O_NOFOLLOW', 0) | getattr(os, 'O_CLOEXEC', 0)
    try:
        fd = os.open(clock, flags, 0o666)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        os.utime(fd)
        st = os.fstat(fd)
    except OSError:
        return None
    finally:
        os.close(fd)
    return st.st_dev, st.st_mtime_ns


def _before(st: os.stat_result, fs_now: tuple[int, int] | None) -> bool:
    """Whether the file's times are both before the filesystem clock's `fs_now` (same device; not a time on a whole
    second, which filesig.is_racy takes for one of a filesystem with coarse times)."""
    return fs_now is not None and st.st_dev == fs_now[0] and max(st.st_mtime_ns, st.st_ctime_ns) < fs_now[1] \
        and st.st_mtime_ns % 1_000_000_000 != 0


def agrees(first: Manifest, later: Manifest) -> bool:
    """Whether a later snapshot of all or some of `first`'s inputs saw each as `first` did (stat and content):
    nothing of it changed between them."""
    files = {f[0]: f[:6] for f in first.files}
    dirs = {d[0]: (d[1], d[2], d[4]) for d in first.dirs}
    return all(files.get(f[0]) == f[:6] for f in later.files) \
        and all(dirs.get(d[0]) == (d[1], d[2], d[4]) for d in later.dirs)


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
    """Two files: the second (MORE) holds what the no-op check reads only when a stat differs or an answer asks for
    it (content hashes, the status document, the delta index); the first holds its hash, and is written last.

    The first is what every `status` parses: at 10,000 tasks 7 MB, where the whole was 22 MB. Its file signatures
    are grouped by directory, each directory's path written once."""
    groups = _grouped(manifest.files)
    h = hashlib.blake2b(digest_size=16)

    def hashed(chunks: Iterator[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            h.update(chunk)
            yield chunk
    # Not synced: a manifest lost or cut short by a power cut is none (the next command takes the full path), and
    # syncing 20 MB (10,000 tasks) cost up to a second on a busy disk.
    atomic.write_chunks(Path(run_dir) / MORE, hashed(_more_chunks(manifest, groups)), durable=False)
    atomic.write_chunks(path_of(run_dir), _main_chunks(manifest, groups, h.hexdigest()), durable=False)


def _grouped(files: Iterable[FileSig]) -> list[tuple[str, list[FileSig]]]:
    """The signatures by directory ('a/b/' for 'a/b/c', '' for a name without one), each directory where its first
    file is."""
    out: dict[str, list[FileSig]] = {}
    for sig in files:
        path = sig[0]
        out.setdefault(path[:path.rfind('/') + 1], []).append(sig)
    return list(out.items())


def _dump(value: Any) -> bytes:
    return encode_utf8(json.dumps(value, separators=(',', ':'), ensure_ascii=False))


_PER_CHUNK = 4096   # file signatures made into text at a time: as one string and its bytes, the whole was the peak
                    # of a resume's memory at 10,000 tasks


def _main_chunks(m: Manifest, groups: list[tuple[str, list[FileSig]]], more: str) -> Iterator[bytes]:
    yield b'{"header":' + _dump(m.header) + b',"more":' + _dump(more) + b',"files":['
    for n, part in enumerate(_parts(groups)):
        yield (b',' if n else b'') + _dump([[directory, [_stored(sig, len(directory)) for sig in sigs]]
                                            for directory, sigs in part])[1:-1]
    yield b'],"dirs":' + _dump(m.dirs) + b',"answers":'
    yield from _answer_chunks({k: v for k, v in m.answers.items() if k not in _LATER})
    yield b'}'


def _stored(sig: FileSig, cut: int) -> list[Any]:
    """A file's signature as the first file keeps it (see Group): its name in its directory, the ctime as its distance
    from the mtime (0 for a file written and not touched since: 1 byte, not 19), racy as 0 or 1."""
    path, mtime, ctime, size, ino, _digest, racy = sig
    return [path[cut:], mtime, ctime - mtime if ctime is not None and mtime is not None else ctime, size, ino,
            1 if racy else 0]


def _parts(groups: list[tuple[str, list[FileSig]]]) -> Iterator[list[tuple[str, list[FileSig]]]]:
    """The groups a few thousand signatures at a time (a directory's files may be split over two parts: it is then
    two groups of the same directory, one after the other)."""
    part: list[tuple[str, list[FileSig]]] = []
    count = 0
    for directory, sigs in groups:
        for start in range(0, len(sigs), _PER_CHUNK):
            piece = sigs[start:start + _PER_CHUNK]
            part.append((directory, piece))
            count += len(piece)
            if count >= _PER_CHUNK:
                yield part
                part, count = [], 0
    if part:
        yield part


def _more_chunks(m: Manifest, groups: list[tuple[str, list[FileSig]]]) -> Iterator[bytes]:
    yield b'{"digests":['
    n = 0
    for part in _parts(groups):
        digests = [sig[5] for _directory, sigs in part for sig in sigs]
        if digests:
            yield (b',' if n else b'') + _dump(digests)[1:-1]
            n += 1
    yield b'],"answers":'
    yield from _answer_chunks({k: v for k, v in m.answers.items() if k in _LATER})
    yield b',"index":' + _dump(m.index) + b'}'


def _answer_chunks(answers: dict[str, Any]) -> Iterator[bytes]:
    # the answers are printed redacted: kept so (the header and the paths are compared as they are); a long one
    # (the status document) a slice at a time (JSON escapes a string character by character)
    yield b'{'
    for i, (key, answer) in enumerate(answers.items()):
        yield (b',' if i else b'') + _dump(redact_shared(key)) + b':'
        value = redact_shared(answer)
        if isinstance(value, str):
            yield b'"'
            yield from (_dump(value[at:at + _SLICE])[1:-1] for at in range(0, len(value), _SLICE))
            yield b'"'
        else:
            yield _dump(value)
    yield b'}'


# One group of a manifest as read: a directory ('' or ending in '/') and its files' (name, mtime_ns, ctime_ns minus
# mtime_ns, size, inode, racy), in the manifest's order; their content hashes are in the second file, in that order.
# (A missing file: all None.)
Group = tuple[str, list[list[Any]]]   # (as JSON has them: lists)


class Signed:
    """A manifest as `status` reads it: the signatures' stats, the directories and the small answers; the content
    hashes, the large answers and the index (the second file, checked against the hash the first holds) only
    when asked for."""

    def __init__(self, header: dict[str, Any], groups: list[Group], dirs: list[Any], answers: dict[str, Any],
                 more: str, where: Path) -> None:
        self.header, self.groups, self.dirs, self.answers = header, groups, dirs, answers
        self._more_hash, self._where = more, where
        self._more: tuple[list[str | None], dict[str, Any], dict[str, Any]] | None = None
        self._whole: Manifest | None = None

    def _rest(self) -> tuple[list[str | None], dict[str, Any], dict[str, Any]] | None:
        """(content hashes, the answers kept apart, the index); None when the second file is not the one the
        first was written with (gone, replaced, cut short)."""
        if self._more is None:
            try:
                text = (self._where / MORE).read_bytes()
            except OSError:
                return None
            if hashlib.blake2b(text, digest_size=16).hexdigest() != self._more_hash:
                return None
            try:
                data = json_loads_uncollected(text)
                digests, answers, index = data['digests'], data['answers'], data['index']
            except (ValueError, KeyError, TypeError, RecursionError):   # (nested too deep: not ours)
                return None
            if not isinstance(digests, list) or len(digests) != sum(len(g[1]) for g in self.groups) \
                    or not isinstance(answers, dict) or not isinstance(index, dict):
                return None
            self._more = (digests, answers, index)
        return self._more

    def digest(self, at: int) -> str | None:
        """The content hash of the `at`-th file (None: not known, or the file was missing)."""
        rest = self._rest()
        found = rest[0][at] if rest is not None else None
        return found if isinstance(found, str) else None

    def all_answers(self) -> dict[str, Any] | None:
        """Every answer, the second file's too (None: it cannot be read)."""
        rest = self._rest()
        return None if rest is None else {**self.answers, **rest[1]}

    def whole(self) -> Manifest | None:
        """The manifest with everything it holds, as written (its files in the order of their directories)."""
        if self._whole is None:
            rest = self._rest()
            if rest is None:
                return None
            digests, answers, index = rest
            files: list[FileSig] = []
            try:
                for directory, entries in self.groups:
                    if not isinstance(directory, str) or not isinstance(entries, list) \
                            or not all(isinstance(e, list) and len(e) == 6 and isinstance(e[0], str) for e in entries):
                        return None   # a signature of the wrong shape: the file was damaged
                    # (a ctime equal to the mtime, as nearly all are, is the mtime's own int: 32 bytes less each)
                    # (the path interned: the compiled steps name most of these files with the same string)
                    files += [(intern(directory + name), mtime,
                               None if mtime is None else mtime if ctime == 0 else mtime + ctime,
                               size, ino, digests[len(files) + i], bool(racy))
                              for i, (name, mtime, ctime, size, ino, racy) in enumerate(entries)]
                dirs: list[DirSig] = [tuple(d) for d in self.dirs]
            except (TypeError, ValueError):
                return None
            if not all(len(d) == 5 and isinstance(d[0], str) for d in dirs):
                return None
            self._whole = Manifest(self.header, files, dirs, {**self.answers, **answers}, index)
        return self._whole


# The manifest last read, by the stat of its file: a command that asks twice (the fast path, then the resume it
# could not answer) parses it once (0.3 s at 10,000 tasks). A manifest is only ever replaced whole (a new inode).
_last_read: tuple[tuple[str, int, int, int, int], Signed | None] | None = None


def invalidate(run_dir: Path) -> None:
    """Remove the manifest: called by every writer before it changes anything in the run, so a writer
    killed half-way never leaves a manifest that vouches for the state before it."""
    global _last_read
    _last_read = None   # (what it held is gone)
    for name in (MANIFEST, MORE):   # the first first: without it the second is no manifest
        with contextlib.suppress(FileNotFoundError):
            os.unlink(Path(run_dir) / name)


def peek(run_dir: Path, header: dict[str, Any]) -> Signed | None:
    """The run's manifest as `status` reads it (Signed) if it is there, well-formed and its header matches `header`;
    else None."""
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
                found = _parse(f.read(), Path(run_dir))
                _last_read = (key, found)
    except OSError:
        return None
    return found if found is not None and found.header == {**header, 'format': FORMAT} else None


def load(run_dir: Path, header: dict[str, Any]) -> Manifest | None:
    """The run's whole manifest if it is there, well-formed, both its files as written, and its header matches."""
    found = peek(run_dir, header)
    return found.whole() if found is not None else None


def _parse(text: bytes, run_dir: Path) -> Signed | None:
    try:
        data = json_loads_uncollected(text)
        if not isinstance(data, dict) or not isinstance(data.get('header'), dict):
            return None
        groups, dirs, answers, more = data['files'], data['dirs'], data['answers'], data['more']
        # (each signature is checked where it is read, not here: one of the wrong shape is a difference, see
        # _differing; the whole manifest is none, see Signed.whole)
        if not isinstance(answers, dict) or not isinstance(more, str) or not isinstance(groups, list) \
                or not isinstance(dirs, list):
            return None
    except (ValueError, KeyError, TypeError, RecursionError):   # (RecursionError: nested too deep, not ours)
        return None
    return Signed(data['header'], groups, dirs, answers, more, run_dir)


def first_difference(root: str, manifest: Manifest | Signed) -> str | None:
    """The first input that differs from the manifest (its path), or None when every one still matches."""
    try:
        return next(_differing(root, manifest), None)
    except _Malformed:
        return '(the manifest)'


def differences(root: str, manifest: Manifest | Signed, *, limit: int) -> list[str] | None:
    """The files that differ from the manifest; None when a directory differs (an entry came or went) or more than
    `limit` files differ: the caller then takes the full path without looking further."""
    out: list[str] = []
    try:
        for path in _differing(root, manifest, dirs_as=None):
            if path is None or len(out) == limit:
                return None
            out.append(path)
    except _Malformed:
        return None
    return out


class _Malformed(Exception):
    """A signature in the manifest that is not one (the file was damaged): everything differs."""


def _differing(root: str, manifest: Manifest | Signed, *, dirs_as: str | None = '') -> Iterator[str | None]:
    """The path of each input that differs, files first (a directory: its path, or `dirs_as` when that is None).
    The loop every `status` runs over every input (84,000 at 10,000 tasks), in which the stat calls are most of the
    time: written for speed. Raises _Malformed for a signature of the wrong shape."""
    if isinstance(manifest, Signed):
        groups, digest = manifest.groups, manifest.digest
    else:
        files = manifest.files
        groups = [('', [_stored(sig, 0) for sig in files])]

        def digest(at: int) -> str | None:
            return files[at][5]
    at = -1
    stat_, isreg = os.stat, stat.S_ISREG
    under = root + '/'
    try:
        for directory, entries in groups:
            prefix = directory if directory[:1] == '/' else under + directory
            for name, mtime, ctime, size, ino, racy in entries:
                at += 1
                full = name if name[:1] == '/' else prefix + name
                try:
                    st = stat_(full)
                except FileNotFoundError:
                    if mtime is not None:
                        yield directory + name
                    continue
                except OSError:
                    yield directory + name
                    continue
                if mtime is None or not isreg(st.st_mode):
                    yield directory + name   # appeared, or is no longer a regular file
                elif (racy or st.st_mtime_ns != mtime or st.st_ctime_ns != mtime + ctime or st.st_size != size
                      or st.st_ino != ino) and (st.st_size != size or content_hash(full) != digest(at)):
                    yield directory + name   # (a stat that does not tell: by content)
        for path, mtime, listing, racy, ctime in manifest.dirs:
            full = path if path[:1] == '/' else under + path
            try:
                st = stat_(full)
            except OSError:
                if mtime is not None:
                    yield path if dirs_as is not None else None
                continue
            if mtime is None or ((racy or st.st_mtime_ns != mtime or st.st_ctime_ns != ctime)
                                 and listing_hash(full) != listing):
                yield path if dirs_as is not None else None
    except (TypeError, ValueError) as exc:   # a name not a string, a signature of another length ...
        raise _Malformed from exc
