"""Atomic file writes: a reader sees the old content or the new, never half of one.

Text is written as UTF-8 and no write ever raises UnicodeEncodeError: a lone surrogate left in it
(a file name's undecodable byte, or text no one cleaned) is written by the rule of
orch.core.text.utf8_safe (`\\xNN` for a surrogateescape'd byte, else U+FFFD).
"""
from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
import re
import secrets
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from orch.core.redact import redact_bytes, redact_jsonl_line, redact_shared, secret_values
from orch.core.text import encode_utf8
from orch.failpoints import crash_point

# The characters and length of tempfile's random names, so _TEMP_NAME below matches both the names made
# here and those an older codex-orch (which used tempfile.mkstemp) left behind.
_TEMP_CHARS = 'abcdefghijklmnopqrstuvwxyz0123456789_'
_TEMP_TRIES = 100


def write_bytes(path: Path, data: bytes, *, durable: bool = True) -> None:
    """durable=False: still atomic, but not synced to disk (about 0.5 ms instead of 5): only for a cache whose
    every entry is checked against what it was made from, which a power cut may leave older or empty."""
    write_chunks(path, [data], durable=durable)


def write_chunks(path: Path, chunks: Iterable[bytes], *, durable: bool = True) -> None:
    """write_bytes of the chunks one after the other: a big file is never whole in memory (each chunk is made
    as it is written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, 'wb') as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        crash_point('write', path.name)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if durable:
        _fsync_dir(path.parent)


def write_chunks_if_changed(path: Path, chunks: Iterable[bytes]) -> bool:
    """write_if_changed of content made chunk by chunk, never whole in memory (summary.json at 10,000 tasks: 8 MB,
    three times over as text, lines and bytes). The chunks are compared with the file as they come; nothing is
    written while they are equal (an unchanged report is no write at all, on a full or read-only disk too). At the
    first difference the file is written: the equal part copied from the file itself, then the rest of the chunks.
    Returns True if written."""
    path = Path(path)
    rest = iter(chunks)
    old = _open_regular(path)
    if old is None:
        write_chunks(path, rest)
        return True
    with old:
        opened = _identity(os.fstat(old.fileno()))
        equal, first_different = 0, None
        for chunk in rest:
            if old.read(len(chunk)) != chunk:
                first_different = chunk
                break
            equal += len(chunk)
        if first_different is None and old.read(1) == b'':
            return False
        write_chunks(path, itertools.chain(_prefix(old, equal, opened, path),
                                           [first_different] if first_different is not None else [], rest))
    return True


def _open_regular(path: Path) -> BinaryIO | None:
    """The file at `path` open for reading if it is a regular file (a symlink's target counts), else None: absent, a
    directory, or a FIFO or device someone put there (opened without blocking, never read), all of which the write
    that follows replaces or fails on as it would without a file there."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, 'O_CLOEXEC', 0))
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return os.fdopen(fd, 'rb')


def _prefix(f: BinaryIO, size: int, opened: tuple[int, int, int, int], path: Path,
            block: int = 1 << 20) -> Iterator[bytes]:
    """The first `size` bytes of the open file, a block at a time. The run's lock keeps codex-orch's other writers
    out; a file changed in place since it was opened (`opened`: its _identity then) is an error, never copied."""
    f.seek(0)
    while size:
        data = f.read(min(size, block))
        if not data:
            break
        size -= len(data)
        yield data
    if size or _identity(os.fstat(f.fileno())) != opened:
        raise OSError(errno.EIO, 'changed while it was being rewritten', str(path))


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _create_temp(path: Path) -> tuple[int, str]:
    """Create '.<name>.<8 random chars>.tmp' next to `path`, exclusively, and open it for writing.

    Not tempfile.mkstemp: it forces mode 0600, and the file keeps that mode after the rename, so every
    file codex-orch wrote (the user's dodo.py and .orchestrator/ too) was private to its owner. Asking for
    0666 lets the kernel apply the umask (and a default ACL) exactly as for any file a program creates,
    at creation, with no need to read the umask (os.umask can only be read by setting it, which races
    with other threads creating files).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, 'O_CLOEXEC', 0)
    for _ in range(_TEMP_TRIES):
        name = ''.join(secrets.choice(_TEMP_CHARS) for _ in range(8))
        tmp = os.path.join(path.parent, f'.{path.name}.{name}.tmp')
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue   # another writer's temp file of the same name: draw again
    raise FileExistsError(errno.EEXIST, f'no free temporary name for {path.name} after {_TEMP_TRIES} tries',
                          str(path.parent))


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable: until the directory itself is synced, a power cut may bring back the old
    entry (or none) even though the new content is on disk."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, 'O_DIRECTORY', 0))
    except PermissionError:
        return   # a directory we may write but not read: nothing to sync it with
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some filesystems cannot sync a directory (EINVAL, e.g. some FUSE and network mounts); their
        # rename is as durable as they make it. Any other error is real and is raised.
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
    finally:
        os.close(fd)


_REDACT_CHUNK = 4 * 1024 * 1024


def redact_file(path: Path, *, jsonl: bool = False) -> bool:
    """Redact a log in place once its writer ended: replaced atomically, and only when a secret was in it.

    Read in pieces that end at a line break (memory stays flat); `jsonl`: line by line, each kept valid JSON
    (orch.core.redact.redact_jsonl_line). Returns True when the file changed; a missing file is no error."""
    path = Path(path)
    if not path.is_file():
        return False
    with open(path, 'rb') as src:   # most logs hold no secret: read them, write nothing
        if not _redact_copy(src, None, jsonl):
            return False
    fd, tmp = _create_temp(path)
    try:
        with open(path, 'rb') as src, os.fdopen(fd, 'wb') as out:
            changed = _redact_copy(src, out, jsonl)
            if changed:
                out.flush()
                os.fsync(out.fileno())
        if changed:
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    if changed:
        _fsync_dir(path.parent)
    return changed


def _redact_copy(src: BinaryIO, out: BinaryIO | None, jsonl: bool) -> bool:
    """Whether `src` holds a secret; with `out`, its redacted copy is written there (else the scan stops at the
    first secret)."""
    values = secret_values()
    changed = False
    rest = b''
    while True:
        chunk = src.read(_REDACT_CHUNK)
        data = rest + chunk
        cut = data.rfind(b'\n') + 1 if chunk else len(data)
        if not cut and len(data) > 4 * _REDACT_CHUNK:
            cut = len(data)   # a line this long is redacted in pieces
        piece, rest = data[:cut], data[cut:]
        if piece:
            redacted = (b'\n'.join(redact_jsonl_line(line, values) for line in piece.split(b'\n'))
                        if jsonl else redact_bytes(piece, values))
            changed = changed or redacted != piece
            if out is None:
                if changed:
                    return True
            else:
                out.write(redacted)
        if not chunk:
            return changed


def write_text(path: Path, text: str, *, durable: bool = True) -> None:
    write_bytes(path, encode_utf8(text), durable=durable)


def json_text(obj: Any) -> str:
    """Every JSON record codex-orch keeps (state, result, attempt, run) is this text: no secrets, and any
    string is written (the last line of defence: a lone surrogate is replaced, never raised)."""
    return json.dumps(redact_shared(obj), indent=2, sort_keys=True, ensure_ascii=False) + '\n'


def write_json(path: Path, obj: Any, *, durable: bool = True) -> None:
    write_text(path, json_text(obj), durable=durable)


def write_if_changed(path: Path, text: str) -> bool:
    """Write only when the content differs, so mtimes and md5 checks stay quiet. Returns True if written."""
    path = Path(path)
    data = encode_utf8(text)
    if _holds(path, data):
        return False
    write_bytes(path, data)
    return True


def _holds(path: Path, data: bytes, block: int = 1 << 20) -> bool:
    """Whether the file holds exactly `data` (read a block at a time: a report of 10,000 tasks is megabytes)."""
    f = _open_regular(path)
    if f is None:
        return False
    with f:
        if os.fstat(f.fileno()).st_size != len(data):
            return False
        view = memoryview(data)
        for start in range(0, len(data), block):
            if f.read(block) != view[start:start + block]:
                return False
        return f.read(1) == b''


# Temp names made by write_bytes (and by tempfile.mkstemp in older versions): '.<name>.<8 random chars>.tmp'
_TEMP_NAME = re.compile(r'^\..+\.[a-z0-9_]{8}\.tmp$')


def sweep_temp(directory: Path, *, recursive: bool = True) -> int:
    """Delete temp files that a killed write_bytes left behind; call it only while no write is underway
    (e.g. holding the run's lock). Returns how many were removed."""
    removed = 0
    walk: Iterable[tuple[str, list[str], list[str]]] = (
        os.walk(directory) if recursive else [(str(directory), [], _names(directory))])
    for root, _dirs, files in walk:
        for name in files:
            if _TEMP_NAME.match(name):
                try:
                    os.unlink(os.path.join(root, name))
                    removed += 1
                except FileNotFoundError:
                    pass
    return removed


def _names(directory: Path) -> list[str]:
    try:
        return os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
