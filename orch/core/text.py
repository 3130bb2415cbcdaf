"""Text from outside codex-orch made safe to record and to show (pure, no I/O).

Workers, plans and file systems hand codex-orch strings that UTF-8 cannot encode or a terminal would
obey. The policy, applied where such text enters records and output:

- a lone surrogate is not a character: in a worker's *answer* every one becomes U+FFFD
  (`replace_surrogates`, `clean_json`);
- a *file name* is bytes: codex-orch decodes it with `os.fsdecode` (surrogateescape), so it still
  round-trips to git and the file system; where it is recorded or shown, each undecodable byte (a
  surrogate U+DC80..U+DCFF) is written as the four characters `\\xNN` (`display_path`);
- anything written as UTF-8 (`utf8_safe`, used by every atomic write and by the terminal output)
  applies the file-name rule to U+DC80..U+DCFF and U+FFFD to any other lone surrogate, so no write
  ever raises UnicodeEncodeError;
- on a terminal and in a commit subject, ANSI escape sequences are removed and every other control
  character (C0, DEL, C1, bidirectional overrides) is shown as `\\u00NN` (`terminal_safe`,
  `one_line`). Records keep control characters: JSON escapes them, but not ANSI escape sequences: an
  output tail, a reason or a report has them removed (`plain`); the raw logs keep the bytes.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

REPLACEMENT = '\ufffd'

_SURROGATE = re.compile('[\ud800-\udfff]')
# ECMA-48 sequences, 7-bit (ESC ...) and 8-bit (C1) forms: CSI, the string commands (OSC, DCS, SOS, PM,
# APC, each ended by BEL or ST), then the short escapes (nF, Fp, Fe, Fs).
_ANSI = re.compile(
    r'(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]'
    r'|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)'
    r'|\x1b[ -/]*[0-~]')
_C1_STRING = re.compile('[\x90\x98\x9d\x9e\x9f]')
# What a terminal obeys rather than shows: C0 but tab and newline, DEL, C1, and the bidirectional
# embeddings, overrides and isolates (they reorder what is displayed around them).
_CONTROL = re.compile('[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]')
# One line: every kind of line or paragraph break and other whitespace controls become a space.
_BREAKS = re.compile('[\t\n\v\f\r\x1c-\x1e\x85\u2028\u2029]')


def _surrogate_as_text(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f'\\x{code - 0xDC00:02x}' if 0xDC80 <= code <= 0xDCFF else REPLACEMENT


def replace_surrogates(text: str) -> str:
    """Every lone surrogate becomes U+FFFD (for a worker's answer: text, not bytes)."""
    return _SURROGATE.sub(REPLACEMENT, text) if _has_surrogate(text) else text


def display_path(path: str) -> str:
    """A file name decoded with os.fsdecode, for records and output: each undecodable byte as `\\xNN`."""
    return utf8_safe(path)


def utf8_safe(text: str) -> str:
    """`text` that UTF-8 can encode: surrogateescape'd bytes as `\\xNN`, any other lone surrogate U+FFFD."""
    return _SURROGATE.sub(_surrogate_as_text, text) if _has_surrogate(text) else text


def encode_utf8(text: str) -> bytes:
    """UTF-8 bytes of `text`; never raises (see `utf8_safe`)."""
    try:
        return text.encode('utf-8')
    except UnicodeEncodeError:
        return utf8_safe(text).encode('utf-8')


def clean_json(obj: Any, fix: Callable[[str], str] = replace_surrogates) -> Any:
    """JSON-like data with `fix` applied to every string, keys too; unchanged data is returned as is."""
    if isinstance(obj, str):
        return fix(obj)
    if isinstance(obj, dict):
        return {clean_json(k, fix): clean_json(v, fix) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_json(v, fix) for v in obj]
    return obj


def _escape_control(match: re.Match[str]) -> str:
    return f'\\u{ord(match.group()):04x}'


def terminal_safe(text: str) -> str:
    """Text a terminal shows rather than obeys: line breaks and tabs kept, ANSI escape sequences removed,
    other control characters as `\\u00NN`, lone surrogates as in `utf8_safe`."""
    text = utf8_safe(text)
    if not _needs_terminal_work(text):
        return text
    text = text.replace('\r\n', '\n')
    return _CONTROL.sub(_escape_control, _ANSI.sub('', text))


def plain(text: str) -> str:
    """Text recorded for people or machines (check and gate output tails, reasons, reports): ANSI escape
    sequences removed, and an ESC that starts none (a cut-off sequence) too; the rest as it is."""
    if '\x1b' not in text and '\x9b' not in text and not _C1_STRING.search(text):
        return text
    return _ANSI.sub('', text).replace('\x1b', '').replace('\x9b', '')


def plain_json(obj: Any) -> Any:
    """JSON-like data with `plain` applied to every string (a report's summary, a status row)."""
    return clean_json(obj, plain)


def one_line(text: str) -> str:
    """One line of plain text, e.g. a commit subject from a task title: ANSI escape sequences removed, line
    breaks and other whitespace runs as one space, other control characters as `\\u00NN`, lone surrogates
    as in `utf8_safe`, no leading or trailing space."""
    text = utf8_safe(text)
    if _needs_terminal_work(text):
        text = _ANSI.sub('', text)
        text = _CONTROL.sub(_escape_control, _BREAKS.sub(' ', text))
    return ' '.join(text.split())


def _has_surrogate(text: str) -> bool:
    # The common case, checked at C speed: a string UTF-8 can encode has no lone surrogate.
    try:
        text.encode('utf-8')
    except UnicodeEncodeError:
        return True
    return False


def _needs_terminal_work(text: str) -> bool:
    return not text.isprintable() and _CONTROL.search(text) is not None
