"""Secrets never reach what codex-orch writes: its files, its stdout/stderr, its crash logs.

Workers get the whole environment (API keys must reach codex), and a worker may echo a key back in
an error message, a command's output or even its answer. Everything codex-orch records from a
worker passes through here first: the values of secret-looking environment variables
(`*KEY*`, `*TOKEN*`, `*SECRET*`, `*PASSW*`, `*CREDENTIAL*`, `*AUTH*`) become `[REDACTED]`. The
worker's own raw logs (events.jsonl, stderr.log, last-message.txt) are the worker's and are kept
as they came.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, TextIO

MARK = '[REDACTED]'
_SECRET_NAME = re.compile(r'KEY|TOKEN|SECRET|PASSW|CREDENTIAL|AUTH', re.IGNORECASE)
_MIN_LENGTH = 8   # shorter values ("1", "true") are not secrets and would mangle ordinary text


def secret_values(env: Mapping[str, str] | None = None) -> list[str]:
    """Values to hide, longest first (so a key containing another is replaced whole)."""
    env = os.environ if env is None else env
    found = {value for name, value in env.items()
             if _SECRET_NAME.search(name) and len(value) >= _MIN_LENGTH
             and not value.startswith(('/', '~', '.'))}   # paths (SSH_AUTH_SOCK, XAUTHORITY) are not secrets
    return sorted(found, key=len, reverse=True)


def redact(text: str, values: list[str] | None = None) -> str:
    for value in secret_values() if values is None else values:
        if value in text:
            text = text.replace(value, MARK)
    return text


def redact_obj(obj: Any, values: list[str] | None = None) -> Any:
    """A copy of JSON-like data with every string redacted (keys too)."""
    values = secret_values() if values is None else values
    if not values:
        return obj
    if isinstance(obj, str):
        return redact(obj, values)
    if isinstance(obj, dict):
        return {redact_obj(k, values): redact_obj(v, values) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact_obj(v, values) for v in obj]
    return obj


class RedactingStream:
    """A text stream that redacts what is written to it (for the live progress display)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        from orch.output import emit
        emit(self._stream, redact(text))
        return len(text)

    def flush(self) -> None:
        pass   # emit() flushed already

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)
