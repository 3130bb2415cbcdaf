"""Reading an input file (plan, config, spec, rule, schema, prompt template): one reader for all of them.

Bad input is refused with one message and exit 2, and reading it is bounded:

- a directory, a device (`/dev/zero`), a FIFO or a socket is refused from a stat, before it is
  opened; the file actually opened is checked again (O_NONBLOCK: opening a FIFO never waits), so
  a file swapped in between is refused the same way;
- a regular file is read with its size limit enforced while reading (at most limit + 1 bytes), so a
  file that grows, or reports no size (`/proc`), never makes codex-orch hold more than the limit;
- nesting is bounded too: YAML is composed at most MAX_DEPTH levels deep, and JSON nested deeper
  than Python can parse is reported with the line and column where it passes MAX_DEPTH, instead of
  a RecursionError.
"""
from __future__ import annotations

import errno
import json
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
import yaml.composer

from orch.errors import InputError

MB = 2**20
MAX_DEPTH = 100   # levels of lists and mappings inside each other; real inputs use fewer than ten
_CHUNK = 1 << 20
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, 'O_NOCTTY', 0) | getattr(os, 'O_CLOEXEC', 0)


def read_input(path: Path | str, *, limit: int, what: str, fix: str, missing: str | None = None,
               error: type[InputError] = InputError, shown: str | None = None) -> bytes:
    """The bytes of an input file, at most `limit` of them, or `error` naming the file and the fix.

    what: the kind of file in messages ('plan' reads "plan file not found", "not a plan file").
    fix: what to do when it is not a readable regular file; missing: when it does not exist
    (default: fix). shown: how the file is named in messages (default: its path).
    """
    name = str(path) if shown is None else shown
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise error(f'{name}: {what} file not found ({missing or fix})') from None
    except OSError as exc:
        raise error(_unreadable(name, what, exc, fix)) from None
    _check_kind(path, st, name, what, fix, error)
    if st.st_size > limit:
        raise error(_too_large(name, what, limit))
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        raise error(_unreadable(name, what, exc, fix)) from None
    try:
        st = os.fstat(fd)   # the file opened, which a rename since the stat may have swapped
        _check_kind(path, st, name, what, fix, error)
        os.set_blocking(fd, True)
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(max(st.st_size + 1 - size, _CHUNK), limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise error(_unreadable(name, what, exc, fix)) from None
    finally:
        os.close(fd)
    if size > limit:
        raise error(_too_large(name, what, limit))
    return b''.join(chunks)


def universal_newlines(text: str) -> str:
    """Line ends as Python's text mode reads them (`\r\n` and `\r` become `\n`): what read_text() gave."""
    return text.replace('\r\n', '\n').replace('\r', '\n') if '\r' in text else text


def _check_kind(path: Path | str, st: os.stat_result, name: str, what: str, fix: str,
                error: type[InputError]) -> None:
    if stat.S_ISREG(st.st_mode):
        return
    kind = _kind(st.st_mode)
    link = f' (a symlink to {os.path.realpath(path)})' if os.path.islink(path) else ''
    if kind == 'directory':
        raise error(f'{name}: is a directory{link}, not a {what} file ({fix})')
    raise error(f'{name}: is a {kind}{link}, not a {what} file: only a regular file is read ({fix})')


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return 'directory'
    if stat.S_ISFIFO(mode):
        return 'FIFO (named pipe)'
    if stat.S_ISCHR(mode):
        return 'character device'
    if stat.S_ISBLK(mode):
        return 'block device'
    if stat.S_ISSOCK(mode):
        return 'socket'
    return 'special file'


def _too_large(name: str, what: str, limit: int) -> str:
    return f'{name}: {what} is larger than {limit // MB} MB'


def _unreadable(name: str, what: str, exc: OSError, fix: str) -> str:
    if exc.errno in (errno.EACCES, errno.EPERM):
        fix = 'check its permissions: codex-orch reads it as the user running it'
    return f'{name}: cannot read the {what} file: {exc.strerror or exc} ({fix})'


# ---- nesting

def too_deep_message(name: str, what: str, where: str = '') -> str:
    """The message for input nested deeper than codex-orch reads; `where` is 'line L column C: ' or ''."""
    return (f'{name}: {where}nested more than {MAX_DEPTH} levels deep (lists and mappings inside each other); '
            f'a {what} is never that deep: check that this is the right file')


_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


def json_too_deep_at(text: str, limit: int = MAX_DEPTH) -> str:
    """'line L column C: ' where JSON text first nests deeper than `limit`, or '' if it never does.

    Only for messages (after json raised RecursionError): strings are skipped, brackets counted."""
    depth = 0
    for match in _JSON_TOKEN.finditer(text):
        token = match.group()
        if token in '[{':
            depth += 1
            if depth > limit:
                pos = match.start()
                return f'line {text.count(chr(10), 0, pos) + 1} column {pos - text.rfind(chr(10), 0, pos)}: '
        elif token in ']}':
            depth -= 1
    return ''


def json_depth_exceeds(data: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether parsed JSON nests deeper than `limit` (iterative: any depth is fine to ask about)."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > limit:
                    return True
                stack.append((child, depth + 1))
    return False


class NestingError(yaml.composer.ComposerError):
    """YAML nested deeper than MAX_DEPTH; its problem_mark is where."""


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader whose composer (the only recursive part of PyYAML) stops at MAX_DEPTH levels."""

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self._depth >= MAX_DEPTH:
            raise NestingError(None, None, f'nested more than {MAX_DEPTH} levels deep', self.peek_event().start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load_yaml(text: str) -> Any:
    """yaml.safe_load, composed at most MAX_DEPTH levels deep: deeper raises NestingError (a YAMLError)."""
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def yaml_problem(exc: Exception) -> tuple[str, str]:
    """A YAML parse error as ('line L column C: ', problem); PyYAML's own text spans several lines."""
    mark = getattr(exc, 'problem_mark', None)
    where = f'line {mark.line + 1} column {mark.column + 1}: ' if mark else ''
    return where, getattr(exc, 'problem', None) or str(exc).splitlines()[0]


def read_yaml_input(path: Path, *, limit: int, what: str, fix: str, error: type[InputError], invalid: str) -> Any:
    """A YAML input file read and parsed (bounded in size and nesting), or `error` naming the file, the place
    and the fix. `invalid` starts the message of a parse error ('invalid YAML', 'not a valid YAML rule file')."""
    raw = read_input(path, limit=limit, what=what, error=error, fix=fix)
    try:
        return load_yaml(raw.decode('utf-8'))
    except UnicodeDecodeError as exc:
        raise error(f'{path}: not UTF-8 text: byte {exc.start} is invalid (save it as UTF-8)') from None
    except NestingError as exc:
        raise error(too_deep_message(str(path), what, yaml_problem(exc)[0])) from None
    except yaml.YAMLError as exc:
        where, problem = yaml_problem(exc)
        raise error(f'{path}: {where}{invalid}: {problem} '
                    '(only plain YAML is accepted: no tags that construct objects)') from None


def decode_json_input(raw: bytes, path: Path, *, what: str, error: type[InputError], utf8: str, fix: str,
                      loads: Callable[[str], Any] = json.loads) -> tuple[Any, str]:
    """JSON input bytes -> (data, text), or `error` naming the file, the place and the fix.

    utf8: the fix for text that is not UTF-8; fix: the fix for invalid JSON. Nesting too deep for Python's
    parser is reported where it passes MAX_DEPTH, never as a RecursionError."""
    try:
        text = raw.decode('utf-8')
    except UnicodeDecodeError as exc:
        raise error(f'{path}: {utf8.format(byte=exc.start)}') from exc
    try:
        return loads(text), text
    except RecursionError:
        raise error(too_deep_message(str(path), what, json_too_deep_at(text))) from None
    except json.JSONDecodeError as exc:
        raise error(f'{path}: line {exc.lineno} column {exc.colno}: not valid JSON: {exc.msg} ({fix})') from exc
