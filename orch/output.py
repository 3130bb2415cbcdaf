"""All of codex-orch's own printing goes through here (tests capture it in one place).

What is printed may quote a worker (its answer, its errors, its file names) or a plan (titles): it is
made terminal-safe (orch.core.text.terminal_safe) so that no control character or ANSI escape sequence
reaches the terminal, and a character the stream cannot encode is written as a backslash escape.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import sys
import threading
from collections.abc import Iterator
from typing import Any, TextIO

from orch.core.redact import redact, redact_shared
from orch.core.text import terminal_safe

_lock = threading.Lock()


@contextlib.contextmanager
def workflow_commands_paused() -> Iterator[None]:
    """Under GitHub Actions a printed line starting with `::` is a workflow command, and what a run prints may
    quote a worker (its answer, its errors): the runner ignores commands between `::stop-commands::TOKEN` and
    `::TOKEN::`, the token one nobody can guess."""
    if os.environ.get('GITHUB_ACTIONS') != 'true':
        yield
        return
    token = secrets.token_hex(16)
    write_line(f'::stop-commands::{token}')
    try:
        yield
    finally:
        write_line(f'::{token}::')


def write_line(text: str = '', *, err: bool = False) -> None:
    write(text + '\n', err=err)


def write_json(data: Any) -> None:
    """JSON for machines on stdout, indented: redacted as data first (in its text a secret holding a quote or a
    backslash is escaped, and the text redaction below would miss it)."""
    write_line(json.dumps(redact_shared(data), indent=2, sort_keys=True))


def write(text: str, *, err: bool = False) -> None:
    stream = sys.stderr if err else sys.stdout
    text = terminal_safe(redact(text))   # a worker's error text may quote an API key, or move the cursor
    with _lock:
        emit(stream, text)


def emit(stream: TextIO, text: str) -> None:
    """Write and flush; a reader that went away (`codex-orch status | head -1`) silences the stream
    instead of aborting the command, so a run piped into `head` still finishes its work."""
    try:
        try:
            stream.write(text)
        except UnicodeEncodeError:   # e.g. LANG=C with an ASCII stdout: say it with escapes instead
            encoding = getattr(stream, 'encoding', None) or 'ascii'
            stream.write(text.encode(encoding, 'backslashreplace').decode(encoding, 'replace'))
        stream.flush()
    except BrokenPipeError:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass

