"""Reading a request to the stand-in: the `[[standin: NAME ARGS]]` directives in its prompts and
what else about the POSTed Responses API body decides the answer (its thread, its prompts, its
output schema, the edits the stand-in already made in the thread). The directives themselves are
listed in orch.standin.server.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# The stand-in's own tool calls are recognisable in replayed history by this call_id prefix.
CALL_ID_PREFIX = 'call_standin_'
AGENT_CALL_PREFIX = 'call_agentstandin_'   # the spawn-agent directive's collaboration calls
FOLLOW_UP_TYPES = frozenset({'function_call_output', 'custom_tool_call_output'})


# --------------------------------------------------------------------------------------------
# Directives


@dataclass(frozen=True)
class Directive:
    name: str
    args: str = ''
    # For `write`: the content of the fenced block right after the marker, else None.
    block: str | None = None


_MARKER_START = re.compile(r'\[\[standin:[ \t]*')
_FENCE_OPEN = re.compile(r'[ \t]*(`{3,}|~{3,})[^\n]*\n')


def parse_directives(text: str) -> list[Directive]:
    """All `[[standin: NAME ARGS]]` markers in text, in order.

    A marker's args run to the last `]]` before the next marker on the same line, so an
    `answer` JSON may itself contain `]]`.
    """
    found: list[Directive] = []
    starts = list(_MARKER_START.finditer(text))
    for i, start in enumerate(starts):
        line_end = text.find('\n', start.end())
        limit = len(text) if line_end < 0 else line_end
        if i + 1 < len(starts):
            limit = min(limit, starts[i + 1].start())
        close = text.rfind(']]', start.end(), limit)
        if close < 0:
            continue
        inner = text[start.end():close].strip()
        if not inner:
            continue
        name, _, args = inner.partition(' ')
        name = name.strip().lower()
        block = _fenced_block_after(text, close + 2) if name in ('write', 'write-at') else None
        found.append(Directive(name=name, args=args.strip(), block=block))
    return found


def _fenced_block_after(text: str, pos: int) -> str | None:
    """The content of a ``` (or ~~~) fenced block opening on a line after pos (blank lines
    may come between), or None."""
    rest_of_line = text.find('\n', pos)
    if rest_of_line < 0 or text[pos:rest_of_line].strip():
        return None  # the fence must start on a later line
    cursor = rest_of_line + 1
    while True:
        nl = text.find('\n', cursor)
        if nl < 0 or text[cursor:nl].strip():
            break
        cursor = nl + 1  # skip blank lines
    opening = _FENCE_OPEN.match(text, cursor)
    if not opening:
        return None
    fence = opening.group(1)
    body_start = opening.end()
    closing = re.compile(r'^[ \t]*' + re.escape(fence[0]) + '{' + str(len(fence)) + r',}[ \t]*$',
                         re.MULTILINE)
    end = closing.search(text, body_start)
    if not end:
        return None
    return text[body_start:end.start()]


# --------------------------------------------------------------------------------------------
# Reading a request


@dataclass
class RequestView:
    """What the stand-in needs to know about one POSTed body."""

    thread_id: str
    prompts: list[str]  # the real user prompts in order (codex's own context messages removed)
    follow_up: bool  # the last input item is a tool output: this is a tool round's follow-up
    directives: list[Directive]  # from the last prompt, else the latest earlier one with any
    directives_from_last: bool
    schema: object  # body.text.format.schema, or None
    edits_since_directives: bool  # a stand-in edit call already follows the directive prompt
    edited_paths: list[str] = field(default_factory=list)  # written by the stand-in in this thread
    edits_since_last_prompt: bool = False  # a stand-in edit call follows the thread's last prompt
    agent_calls: list[str] = field(default_factory=list)  # the stand-in's collaboration calls in this thread

    @property
    def last_prompt(self) -> str:
        return self.prompts[-1] if self.prompts else ''

    def has(self, name: str) -> bool:
        return any(d.name == name for d in self.directives)

    def first(self, name: str) -> Directive | None:
        return next((d for d in self.directives if d.name == name), None)

    @property
    def scenario(self) -> str:
        names = [d.name for d in self.directives if d.name not in ('usage', 'slow')]
        return '+'.join(dict.fromkeys(names)) or 'default'


# codex adds its own context as user messages (<environment_context>…, AGENTS.md instructions);
# those are not prompts and must not count as one. Only known tags: a caller's prompt may well
# be wrapped in a tag of its own.
_CODEX_CONTEXT_TAGS = ('environment_context', 'user_instructions', 'user_shell_command',
                       'turn_aborted', 'subagent_notification', 'skill')
_CONTEXT_MESSAGE = re.compile(r'^\s*<(' + '|'.join(_CODEX_CONTEXT_TAGS) + r')>.*</\1>\s*$',
                              re.DOTALL)


def _is_codex_context(text: str) -> bool:
    return (bool(_CONTEXT_MESSAGE.match(text))
            or text.lstrip().startswith('# AGENTS.md instructions'))


def _message_text(item: Mapping[str, Any]) -> str:
    content = item.get('content')
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ''
    parts = [p.get('text', '') for p in content if isinstance(p, dict)]
    return ''.join(p for p in parts if isinstance(p, str))


def view_request(body: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> RequestView:
    """Analyse a Responses API request body; raises ValueError on a body that isn't one."""
    items = body.get('input')
    if not isinstance(items, list):
        raise ValueError('body.input must be a list')
    items = [it for it in items if isinstance(it, dict)]
    prompts: list[tuple[int, str]] = []  # (index in items, text)
    for index, item in enumerate(items):
        if item.get('role') == 'user' and item.get('type', 'message') == 'message':
            text = _message_text(item)
            if not _is_codex_context(text):
                prompts.append((index, text))
    follow_up = bool(items) and items[-1].get('type') in FOLLOW_UP_TYPES
    source_index, directives = -1, []
    for index, text in reversed(prompts):
        directives = parse_directives(text)
        if directives:
            source_index = index
            break
    own_calls = [(i, it) for i, it in enumerate(items) if _is_own_edit_call(it)]
    return RequestView(
        thread_id=_thread_id(body, headers or {}),
        prompts=[text for _, text in prompts],
        follow_up=follow_up,
        directives=directives,
        directives_from_last=bool(prompts) and source_index == prompts[-1][0],
        schema=_schema_of(body),
        edits_since_directives=any(i > source_index for i, _ in own_calls) and source_index >= 0,
        edited_paths=list(dict.fromkeys(p for _, it in own_calls for p in _patched_paths(it))),
        edits_since_last_prompt=bool(prompts) and any(i > prompts[-1][0] for i, _ in own_calls),
        agent_calls=[str(it.get('name')) for it in items if it.get('type') == 'function_call'
                     and str(it.get('call_id', '')).startswith(AGENT_CALL_PREFIX)],
    )


def _thread_id(body: Mapping[str, Any], headers: Mapping[str, str]) -> str:
    key = body.get('prompt_cache_key')
    if isinstance(key, str) and key:
        return key
    for name in ('session-id', 'thread-id'):
        value = headers.get(name)
        if value:
            return value
    return 'unknown'


def _schema_of(body: Mapping[str, Any]) -> object:
    text = body.get('text')
    fmt = text.get('format') if isinstance(text, dict) else None
    return fmt.get('schema') if isinstance(fmt, dict) else None


def _is_own_edit_call(item: Mapping[str, Any]) -> bool:
    return (item.get('type') == 'function_call'
            and str(item.get('call_id', '')).startswith(CALL_ID_PREFIX))


_ADDED_FILE = re.compile(r'^\*\*\* Add File: (.+)$', re.MULTILINE)


def _patched_paths(call: Mapping[str, Any]) -> list[str]:
    try:
        cmd = json.loads(call.get('arguments') or '{}').get('cmd', '')
    except (ValueError, AttributeError):
        return []
    return _ADDED_FILE.findall(cmd) if isinstance(cmd, str) else []
