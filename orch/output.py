"""All of codex-orch's own printing goes through here (tests capture it in one place)."""
from __future__ import annotations

import sys
import threading

from orch.redact import redact

_lock = threading.Lock()


def write_line(text: str = '', *, err: bool = False) -> None:
    stream = sys.stderr if err else sys.stdout
    text = redact(text)   # a worker's error text may quote an API key
    with _lock:
        stream.write(text + '\n')
        stream.flush()


def write(text: str, *, err: bool = False) -> None:
    stream = sys.stderr if err else sys.stdout
    text = redact(text)
    with _lock:
        stream.write(text)
        stream.flush()
