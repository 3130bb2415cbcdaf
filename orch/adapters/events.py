"""Incremental understanding of the `codex exec --json` event stream (pure, no I/O).

The worker feeds stdout line by line into an `EventStream`; the stream keeps only what the
orchestrator needs (thread id, terminal state, the last agent message, usage, a short error
history, a one-line activity summary), so memory stays flat however long the stream gets.

Facts this relies on (docs: reference/codex-exec.md §2):
- one `codex exec` runs exactly one turn: thread.started → turn.started → items →
  turn.completed | turn.failed;
- the final answer is the LAST agent_message of a turn that COMPLETED; a retried stream repeats
  messages and a failed turn may still have emitted one, so nothing is trusted before
  turn.completed;
- `error` events are retry notices or the final failure text; `error` *items* are warnings.

Text the stream keeps for records (errors, warnings, activity, the thread id) is made UTF-8-safe
(orch.core.text.utf8_safe); the answer's text is kept as it came, and `parse_answer` turns every lone
surrogate in the parsed answer into U+FFFD, so a schema-valid answer can always be recorded.
"""
from __future__ import annotations

import json
import re
from typing import Any, TypeVar

from orch.core.text import clean_json, replace_surrogates, utf8_safe

MAX_ERRORS = 20
_ACTIVITY_MAX = 160
_T = TypeVar('_T')


class EventStream:
    """Running state of one `codex exec --json` stdout stream."""

    def __init__(self) -> None:
        self.thread_id: str | None = None
        self.turn_started: bool = False
        self.turn_completed: bool = False
        self.turn_failed_message: str | None = None
        self.error_messages: list[str] = []   # top-level `error` events, last MAX_ERRORS
        self.warnings: list[str] = []         # `error` items (non-fatal), last MAX_ERRORS
        self.messages_this_turn: int = 0      # count only: the text of earlier ones is dropped
        self.last_message: str | None = None  # text of the latest agent_message
        self.usage: dict[str, Any] | None = None
        self.events: int = 0
        self.garbage_lines: int = 0
        self.last_activity: str | None = None

    def feed_line(self, line: bytes | str) -> dict[str, Any] | None:
        """Parse one JSONL line and update the state; garbage is counted, never raised."""
        event = _parse_line(line)
        if event is None:
            if _is_blank(line):
                return None
            self.garbage_lines += 1
            return None
        self.events += 1
        self._apply(event)
        return event

    def note_garbage(self, count: int = 1) -> None:
        """Count lines the caller dropped unread (e.g. a line too long to buffer)."""
        self.garbage_lines += count

    def final_answer(self) -> str | None:
        """The last agent message, only when the turn completed (never from a failed turn)."""
        if not self.turn_completed or self.turn_failed_message is not None:
            return None
        return self.last_message

    def _apply(self, event: dict[str, Any]) -> None:
        kind = event.get('type')
        if kind == 'thread.started':
            thread_id = event.get('thread_id')
            self.thread_id = utf8_safe(thread_id) if isinstance(thread_id, str) else self.thread_id
        elif kind == 'turn.started':
            self._start_turn()
        elif kind == 'turn.completed':
            self.turn_completed = True
            usage = event.get('usage')
            self.usage = dict(usage) if isinstance(usage, dict) else None
        elif kind == 'turn.failed':
            self.turn_failed_message = utf8_safe(_error_text(event.get('error')) or 'turn failed')
        elif kind == 'error':
            _push(self.error_messages, _str_or(event.get('message'), 'error'))
        elif isinstance(kind, str) and kind.startswith('item.'):
            self._apply_item(kind, event.get('item'))

    def _start_turn(self) -> None:
        # One exec runs one turn, but reset anyway so a second turn never inherits messages.
        self.turn_started = True
        self.messages_this_turn = 0
        self.last_message = None

    def _apply_item(self, kind: str, item: object) -> None:
        if not isinstance(item, dict):
            return
        item_type = item.get('type')
        if item_type == 'agent_message' and kind == 'item.completed':
            self.messages_this_turn += 1
            self.last_message = _str_or(item.get('text'), '')
            self.last_activity = 'message'
        elif item_type == 'error' and kind == 'item.completed':
            _push(self.warnings, _str_or(item.get('message'), 'warning'))
        else:
            activity = describe_item(item)
            if activity is not None:
                self.last_activity = activity


def describe_item(item: dict[str, Any]) -> str | None:
    """Human one-liner for an item that shows progress, or None for uninteresting ones."""
    item_type = item.get('type')
    if item_type == 'command_execution':
        return _clip(f'running: {_str_or(item.get("command"), "?")}')
    if item_type == 'file_change':
        return _describe_changes(item.get('changes'))
    if item_type == 'reasoning':
        return 'thinking'
    if item_type == 'agent_message':
        return 'message'
    if item_type == 'mcp_tool_call':
        return _clip(f'tool: {item.get("server")}.{item.get("tool")}')
    if item_type == 'web_search':
        return _clip(f'searching: {_str_or(item.get("query"), "?")}')
    return None


def _describe_changes(changes: object) -> str | None:
    if not isinstance(changes, list) or not changes:
        return None
    first = changes[0] if isinstance(changes[0], dict) else {}
    more = f' (+{len(changes) - 1} more)' if len(changes) > 1 else ''
    return _clip(f'edited: {_str_or(first.get("path"), "?")}{more}')


def _parse_line(line: bytes | str) -> dict[str, Any] | None:
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def _is_blank(line: bytes | str) -> bool:
    return not line.strip()


def _error_text(error: object) -> str | None:
    if isinstance(error, dict):
        message = error.get('message')
        return message if isinstance(message, str) else None
    return error if isinstance(error, str) else None


def _str_or(value: object, default: _T) -> str | _T:
    return value if isinstance(value, str) else default


def _push(bounded: list[str], text: str) -> None:
    bounded.append(utf8_safe(text))
    del bounded[:-MAX_ERRORS]


def _clip(text: str) -> str:
    one_line = ' '.join(utf8_safe(text).split())
    return one_line if len(one_line) <= _ACTIVITY_MAX else one_line[:_ACTIVITY_MAX - 1] + '…'


# ---------------------------------------------------------------------------------------------
# The answer: models sometimes wrap the JSON in a fence or a sentence although the schema forbids it.

_FENCE = re.compile(r'```[ \t]*(?:json|JSON)?[ \t]*\r?\n(.*?)```', re.DOTALL)
_MAX_BRACE_TRIES = 200


def parse_answer(text: str) -> object:
    """Parse the agent's final message as JSON.

    Accepts plain JSON, a fenced ```json block, or one JSON object surrounded by prose.
    Raises ValueError with a readable reason otherwise. Every lone surrogate in the result (a JSON
    `"\\ud800"`, or one in the text itself) is U+FFFD: the answer is recorded as UTF-8.
    """
    return clean_json(_parse_answer(text), replace_surrogates)


def _parse_answer(text: str) -> object:
    stripped = text.strip()
    if not stripped:
        raise ValueError('the answer is empty; expected a JSON object')
    try:
        return json.loads(stripped)
    except ValueError:
        pass
    for candidate in _fenced_blocks(stripped):
        try:
            return json.loads(candidate)
        except ValueError:
            continue
    found = _embedded_object(stripped)
    if found is not None:
        return found
    start = _clip(replace_surrogates(stripped[:80]))
    raise ValueError(f'the answer is not JSON (expected one JSON object); it starts with: {start!r}')


def _fenced_blocks(text: str) -> list[str]:
    return [m.group(1).strip() for m in _FENCE.finditer(text)]


def _embedded_object(text: str) -> dict[str, Any] | None:
    """The first `{...}` that decodes as a JSON object, scanning from each '{'."""
    decoder = json.JSONDecoder()
    start = text.find('{')
    tries = 0
    while start != -1 and tries < _MAX_BRACE_TRIES:
        tries += 1
        try:
            obj, _end = decoder.raw_decode(text, start)
        except ValueError:
            start = text.find('{', start + 1)
            continue
        if isinstance(obj, dict):
            return obj
        start = text.find('{', start + 1)
    return None


# ---------------------------------------------------------------------------------------------
# Failure classification: a usage limit is not the task's fault and retrying now only burns quota.

_DEFERRED = re.compile(
    r'quota|usage[ _-]limit|rate[ _-]?limit|too many requests|\b429\b',
    re.IGNORECASE,
)


def classify_failure(text: str | None) -> str | None:
    """'deferred' for usage-limit / rate-limit / quota failures, else None."""
    if text and _DEFERRED.search(text):
        return 'deferred'
    return None
