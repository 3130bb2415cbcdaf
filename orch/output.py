"""All of codex-orch's own printing goes through here (tests capture it in one place)."""
from __future__ import annotations

import os
import sys
import threading
from typing import TextIO

from orch.core.redact import redact

_lock = threading.Lock()


def write_line(text: str = '', *, err: bool = False) -> None:
    write(text + '\n', err=err)


def write(text: str, *, err: bool = False) -> None:
    stream = sys.stderr if err else sys.stdout
    text = redact(text)   # a worker's error text may quote an API key
    with _lock:
        emit(stream, text)


def emit(stream: TextIO, text: str) -> None:
    """Write and flush; a reader that went away (`codex-orch status | head -1`) silences the stream
    instead of aborting the command, so a run piped into `head` still finishes its work."""
    try:
        stream.write(text)
        stream.flush()
    except BrokenPipeError:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass

