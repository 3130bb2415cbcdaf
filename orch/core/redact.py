"""Secrets never reach what codex-orch writes: its files, its stdout/stderr, its crash logs.

codex gets the whole environment (it needs its provider's key), and a worker may echo a key back in
an error message, a command's output or even its answer. Everything codex-orch records from a
worker passes through here first, and three kinds of secret become `[REDACTED]`:

- the values (8 characters or more, not a path) of the environment's secret-looking variables:
  names containing KEY, TOKEN, SECRET, PASSW, PASSPHRASE, CREDENTIAL, AUTH (not AUTHOR), PRIVATE,
  COOKIE, DATABASE_URL or DSN, or ending in _PAT;
- tokens of well-known shapes wherever they come from: `sk-…` (OpenAI, Anthropic), `ghp_`/`gho_`/
  `ghu_`/`ghs_`/`ghr_`/`github_pat_` (GitHub), `glpat-` (GitLab), `xox[abposr]-` (Slack), `AKIA`/`ASIA`
  (AWS key ids), `AIza` (Google), `npm_`, `sk_live_`/`sk_test_`/`rk_live_` (Stripe), JWTs, PEM private
  key blocks, and what follows `Bearer `;
- the password of a URL: `scheme://user:PASSWORD@host` keeps everything but the password.

One regular expression does it all, compiled once per set of environment values (found again only when the
environment changed); it runs on every JSON record written, so it is built to be fast (about 10 ms per MB of
text, linear even on adversarial input: no lazy scans, no nested repetition). The worker's own logs are redacted too:
events.jsonl line by line as it arrives (`redact_jsonl_line`: each line stays the JSON it was), stderr.log,
last-message.txt and the logs of gates, checks and setup commands in place once their writer ended
(orch.runstate.atomic.redact_file, by `redact_bytes`).

`is_secret_variable` is the wider test for what workers' shells must not inherit (see
orch/adapters/worker_env.py): it adds the families GITHUB_*, GH_*, AWS_* and AZURE_*, whose values
are often no secret (a commit sha, a region) and so are not redacted from text.
"""
from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from orch.core.text import clean_json, encode_utf8

MARK = '[REDACTED]'
MIN_LENGTH = 8   # shorter values ("1", "true") are not secrets and would mangle ordinary text
_MIN_MATCH = 6   # the shortest text a fixed shape can match ('://:p@'): shorter strings are skipped

SECRET_NAME = re.compile(r'KEY|TOKEN|SECRET|PASSW|PASSPHRASE|CREDENTIAL|AUTH(?!OR)|PRIVATE|COOKIE|DATABASE_URL|'
                         r'DSN|_PAT$', re.IGNORECASE)
# Not redacted by value (GITHUB_SHA is a commit id, AWS_REGION a region), but kept from workers' shells.
_SECRET_FAMILY = re.compile(r'(?:AWS|GITHUB|GH|AZURE)_', re.IGNORECASE)

# The alternatives are grouped by their first character, and each starts with a literal one: the
# regex engine then skips over text that cannot start a secret, and tries few alternatives where
# it can. A token is matched from the separator after its prefix (the rarer character), the prefix
# checked by look-behind, with no token character before it: `task-…` holds no `sk-…` token.
_NOT_AFTER = '(?<![A-Za-z0-9_-]{})'


def _token(prefix: str, body: str) -> str:
    return f'(?<={prefix}){_NOT_AFTER.format(prefix)}{body}'


_STRIPE = ('sk_live_', 'rk_live_', 'sk_test_')
_FIXED = '|'.join([
    '-(?:' + '|'.join([
        _token('sk-', r'(?=[A-Za-z0-9_-]*[0-9])[A-Za-z0-9_-]{20,}'),      # OpenAI (sk-proj-…), Anthropic
        _token('glpat-', r'[A-Za-z0-9_-]{20,}'),                            # GitLab
        _token('xox[abposr]-', r'[A-Za-z0-9-]{10,}'),                       # Slack
        # a PEM private key: header, base64 lines (also with escaped line breaks) and footer; cut off
        # before its footer, all that could be key after the header goes (linear: no lazy scan)
        r'----BEGIN [A-Z0-9 ]*PRIVATE KEY-----[A-Za-z0-9+/=\s\\]*(?:-----END [A-Z0-9 ]*PRIVATE KEY-----)?',
    ]) + ')',
    '_(?:' + '|'.join([
        _token('gh[pousr]_', r'[A-Za-z0-9]{20,}'),                          # GitHub
        _token('github_pat_', r'[A-Za-z0-9_]{20,}'),
        _token('npm_', r'[A-Za-z0-9]{36}'),
        f'(?<={"|".join(_STRIPE)})' + ''.join(_NOT_AFTER.format(p) for p in _STRIPE) + r'[A-Za-z0-9]{16,}',
    ]) + ')',
    # AWS access key ids, Google API keys
    r'A(?<![A-Za-z0-9_-]A)(?:KIA[A-Z0-9]{16}(?![A-Za-z0-9])|SIA[A-Z0-9]{16}(?![A-Za-z0-9])|Iza[A-Za-z0-9_-]{35})',
    # a JWT (matched from its 'J': 'e' is the commonest letter there is)
    'J' + _token('eyJ', r'[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}'),
    # the token after "Bearer " (with a digit in it, so that prose like "bearer tokenization" stays)
    *(word + r'\s+(?=[A-Za-z0-9._~+/-]*[0-9])[A-Za-z0-9._~+/-]{8,}=*' for word in ('Bearer', 'bearer', 'BEARER')),
    # a URL's password: '://' user ':' password '@' (the password may itself hold an unescaped '@')
    r"""://[^\s:/?#@"'<>]*:[^\s/?#"'<>]+@""",
])

Redactor = Callable[[str], str]


@functools.lru_cache(maxsize=32)
def _redactor(values: tuple[str, ...]) -> Redactor:
    """One compiled regex for these environment values and every fixed shape, and its substitution."""
    literals = frozenset(v for v in values if v)
    # Environment values first, longest first: a value containing another is replaced whole.
    pattern = re.compile('|'.join([*(re.escape(v) for v in sorted(literals, key=len, reverse=True)), _FIXED]))

    def replace(match: re.Match[str]) -> str:
        text = match.group(0)
        if text in literals or text.startswith('-----'):
            return MARK
        if text[0] in '-_':                      # a token after its prefix: keep the separator
            return text[0] + MARK
        if text.startswith('://'):               # keep scheme and user
            return text[:text.index(':', 3) + 1] + MARK + '@'
        if text[:6].lower() == 'bearer':
            return text[:6] + ' ' + MARK
        return MARK

    shortest = min([_MIN_MATCH, *map(len, literals)])

    def redactor(text: str) -> str:
        return text if len(text) < shortest else pattern.sub(replace, text)

    return redactor


_FIXED_SHAPES = re.compile(_FIXED)


def secret_name(name: str) -> bool:
    """A name whose value is redacted wherever it appears."""
    return bool(SECRET_NAME.search(name))


def secret_value_shape(value: str) -> bool:
    """The value holds a token of a well-known shape or a URL with a password."""
    return _FIXED_SHAPES.search(value) is not None


def is_secret_variable(name: str, value: str) -> bool:
    """An environment variable workers' shells must not inherit (wider than what is redacted)."""
    return secret_name(name) or bool(_SECRET_FAMILY.match(name)) or secret_value_shape(value)


def secret_values(env: Mapping[str, str] | None = None) -> list[str]:
    """Values to hide, longest first (so a key containing another is replaced whole)."""
    env = os.environ if env is None else env
    found = {value for name, value in env.items()
             if len(value) >= MIN_LENGTH and SECRET_NAME.search(name)
             and not value.startswith(('/', '~', '.'))}   # paths (SSH_AUTH_SOCK, XAUTHORITY) are not secrets
    return sorted(found, key=len, reverse=True)


# The environment's values and their redactor, with the environment they were found in: each redaction of the
# environment's values compares the environment with it (a dict comparison, about 1 us) instead of testing every
# variable's name again (about 100 us), and a variable set, changed or removed since is still seen.
_environment: tuple[dict[Any, Any], Redactor] | None = None


def _environment_redactor() -> Redactor:
    global _environment
    env = os.environ
    # os.environ's own mapping (bytes on POSIX): compared without decoding a name or a value
    raw: Mapping[Any, Any] = getattr(env, '_data', env)
    known = _environment
    if known is not None and known[0] == raw:
        return known[1]
    snapshot = dict(raw)   # taken first: a change while the values are found shows at the next comparison
    redactor = _redactor(tuple(secret_values(env)))
    _environment = (snapshot, redactor)
    return redactor


def redact(text: str, values: list[str] | None = None) -> str:
    return _values(values)(text)


def redact_obj(obj: Any, values: list[str] | None = None) -> Any:
    """A copy of JSON-like data with every string redacted (keys too)."""
    return clean_json(obj, _values(values))


def redact_shared(obj: Any, values: list[str] | None = None) -> Any:
    """`redact_obj(obj)` for reading only (rendering, writing): what has nothing to redact is `obj`'s own, shared.

    A summary of 10,000 tasks is close to a million values: walking them all costs half a second, while its JSON
    text (C-encoded) is checked in milliseconds. Without a backslash in that text every string stands in it as it
    is, between quotes, which no secret pattern reads or crosses (none matches a quote, and a quote is neither a
    token character nor a blank for their look-arounds): then the text has a secret if and only if a string does.
    The check is made on the whole, then on each member and each item; only what fails it is walked."""
    return _redact_shared(obj, _values(values), 2)


def _redact_shared(obj: Any, redactor: Redactor, depth: int) -> Any:
    if isinstance(obj, str):
        return redactor(obj)   # (the very string when it has nothing to redact)
    try:
        text = json.dumps(obj, ensure_ascii=False)
    except (TypeError, ValueError):
        return clean_json(obj, redactor)
    if '\\' not in text and redactor(text) == text:
        return obj
    if depth and isinstance(obj, dict):
        return {clean_json(k, redactor): _redact_shared(v, redactor, depth - 1) for k, v in obj.items()}
    if depth and isinstance(obj, list):
        return [_redact_shared(v, redactor, depth - 1) for v in obj]
    return clean_json(obj, redactor)


def _values(values: list[str] | None) -> Redactor:
    return _environment_redactor() if values is None else _redactor(tuple(values))


def redact_bytes(data: bytes, values: list[str] | None = None) -> bytes:
    """Bytes of text (a log) with secrets redacted; every other byte, even one that is no UTF-8, kept."""
    text = data.decode('utf-8', 'surrogateescape')
    redacted = _values(values)(text)
    return data if redacted == text else redacted.encode('utf-8', 'surrogateescape')


def redact_jsonl_line(line: bytes, values: list[str] | None = None) -> bytes:
    """One line of a JSONL log (no line break) with secrets redacted, still the JSON it was.

    A JSON line is redacted as data (a secret written with JSON escapes is found, and no replacement can end
    a string early); one without a backslash and without anything to redact is kept byte for byte."""
    redactor = _values(values)
    text = line.decode('utf-8', 'surrogateescape')
    if '\\' not in text and redactor(text) == text:
        return line
    try:
        data = json.loads(text)
    except ValueError:
        return redact_bytes(line, values)    # not JSON (garbage codex printed): redacted as text
    redacted = clean_json(data, redactor)
    if redacted == data:
        return line
    return encode_utf8(json.dumps(redacted, ensure_ascii=False, separators=(',', ':')))


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
