"""What the stand-in answers: the SSE stream of a response (a message or an edit's tool call),
the answer text a request's directives ask for, its token usage, and the error bodies.
"""
from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from orch.standin.request import AGENT_CALL_PREFIX, CALL_ID_PREFIX, Directive, RequestView
from orch.standin.schema_document import FALLBACK_DOCUMENT, build_document

# What a request without an output schema gets, and what an empty schema (`{}`) gets.
PROSE_ANSWER = ('I had a look at the task and made the changes it asked for. '
                'Everything seems to be in order now.')

QUOTA_BODY = {'error': {'type': 'insufficient_quota', 'code': 'insufficient_quota',
                        'message': 'You exceeded your current quota'}}
RATE_LIMIT_BODY = {'error': {'type': 'rate_limit_exceeded', 'code': 'rate_limit_exceeded',
                             'message': 'Rate limit reached'}}
SERVER_ERROR_BODY = {'error': {'type': 'server_error', 'code': 'server_error',
                               'message': 'The stand-in failed on purpose'}}


# --------------------------------------------------------------------------------------------
# Usage


@dataclass(frozen=True)
class Usage:
    """Token counts reported for one POST, in the Responses API's terms."""

    input: int = 120
    cached: int = 20
    output: int = 30
    reasoning: int = 10

    def to_api(self) -> dict[str, Any]:
        return {'input_tokens': self.input,
                'input_tokens_details': {'cached_tokens': self.cached},
                'output_tokens': self.output,
                'output_tokens_details': {'reasoning_tokens': self.reasoning},
                'total_tokens': self.input + self.output}

    def to_record(self) -> dict[str, int]:
        """The shape codex prints in turn.completed, so tests compare like with like."""
        return {'input_tokens': self.input, 'cached_input_tokens': self.cached,
                'output_tokens': self.output, 'reasoning_output_tokens': self.reasoning}


DEFAULT_USAGE = Usage()


# --------------------------------------------------------------------------------------------
# Building answers


def sse(events: Iterable[Mapping[str, Any]]) -> bytes:
    return ''.join(f'event: {e["type"]}\ndata: {json.dumps(e)}\n\n' for e in events).encode()


def new_id(prefix: str) -> str:
    return f'{prefix}_{uuid.uuid4().hex[:24]}'


def stream(items: list[dict[str, Any]], usage: Usage) -> bytes:
    response_id = new_id('resp')
    events: list[dict[str, Any]] = [{'type': 'response.created', 'response': {'id': response_id}}]
    events += [{'type': 'response.output_item.done', 'item': item} for item in items]
    # response.id is required: without it codex treats the stream as broken and retries.
    events.append({'type': 'response.completed',
                   'response': {'id': response_id, 'usage': usage.to_api()}})
    return sse(events)


def message_item(text: str) -> dict[str, Any]:
    return {'type': 'message', 'role': 'assistant', 'id': new_id('msg'), 'status': 'completed',
            'content': [{'type': 'output_text', 'text': text, 'annotations': []}]}


def build_patch(writes: Sequence[tuple[str, str]]) -> str:
    """One apply_patch text adding (or replacing) each (path, content)."""
    lines = ['*** Begin Patch']
    for path, content in writes:
        lines.append(f'*** Add File: {path}')
        lines += ['+' + line for line in content.splitlines()]
    lines.append('*** End Patch')
    return '\n'.join(lines) + '\n'


def edit_call_item(view: RequestView, writes: Sequence[tuple[str, str]],
                    n_items: int) -> dict[str, Any]:
    # The heredoc form works for every model kind; content lines all start with '+', so the
    # EOF delimiter cannot occur inside. The call_id is derived from the request, so a retry
    # of the same request gets the same call.
    cmd = "apply_patch <<'EOF'\n" + build_patch(writes) + 'EOF\n'
    digest = uuid.uuid5(uuid.NAMESPACE_URL, f'{view.thread_id}/{n_items}').hex[:16]
    call_id = f'{CALL_ID_PREFIX}{digest}'
    return {'type': 'function_call', 'call_id': call_id, 'name': 'exec_command',
            'arguments': json.dumps({'cmd': cmd})}


def agent_call_item(view: RequestView, n_items: int) -> dict[str, Any] | None:
    """The spawn-agent directive's next call: spawn a sub-agent (its task the directive's text, without the
    parent's history), then wait for it; None once both were made (then the answer)."""
    directive = view.first('spawn-agent')
    if directive is None:
        return None
    digest = uuid.uuid5(uuid.NAMESPACE_URL, f'{view.thread_id}/{n_items}').hex[:16]
    args: dict[str, Any]
    if 'spawn_agent' not in view.agent_calls:
        name, args = 'spawn_agent', {'task_name': 'helper', 'fork_turns': 'none',
                                     'message': directive.args.strip() or 'Reply with one word.'}
    elif 'wait_agent' not in view.agent_calls:
        name, args = 'wait_agent', {'timeout_ms': 30000}
    else:
        return None
    return {'type': 'function_call', 'call_id': f'{AGENT_CALL_PREFIX}{digest}', 'name': name,
            'namespace': 'collaboration', 'arguments': json.dumps(args)}


def edits_for(view: RequestView) -> list[tuple[str, str]]:
    """The edits this request should make: the thread's n-th prompt's `write-at n`, else (once) `write`."""
    if view.follow_up:
        return []
    numbered = [d for d in view.directives if d.name == 'write-at']
    if numbered:
        if view.edits_since_last_prompt:
            return []
        at = [d for d in numbered if d.args.split(None, 1)[0] == str(len(view.prompts))]
        if at:
            return _writes_of([dataclasses.replace(d, args=d.args.split(None, 1)[1] if ' ' in d.args else '')
                               for d in at])
    if view.edits_since_directives:
        return []
    return _writes_of([d for d in view.directives if d.name == 'write'])


def _writes_of(directives: list[Directive]) -> list[tuple[str, str]]:
    """(path, content) for each write directive; raises ValueError on an unusable one."""
    writes: list[tuple[str, str]] = []
    for d in directives:
        path = d.args.strip()
        if not path or path.startswith('/') or any(c in path for c in '\r\n\t'):
            raise ValueError(f'write directive needs a relative path, got {d.args!r}')
        if d.block is None:
            raise ValueError(f'write {path}: no fenced code block follows the directive')
        writes.append((path, d.block))
    return writes


def answer_text(view: RequestView) -> str:
    answer = view.first('answer')
    if answer is not None:
        return answer.args
    if view.has('prose-first') and len(view.prompts) <= 1:
        return PROSE_ANSWER
    if view.schema is None:
        return json.dumps(FALLBACK_DOCUMENT)
    document = build_document(view.schema, files_changed=view.edited_paths)
    review = view.first('review-once')
    if review is not None and isinstance(document, dict) and 'verdict' in document:
        first = len(view.prompts) <= 1
        document['verdict'] = 'request_changes' if first else 'approve'
        if 'findings' in document:
            finding: dict[str, Any] = {'severity': 'major', 'file': '', 'message': review.args.strip()}
            if 'line' in _finding_fields(view.schema):   # the default reviewer schema's, nullable
                finding['line'] = None
            document['findings'] = [finding] if first else []
    return json.dumps(document)


def _finding_fields(schema: object) -> dict[str, Any]:
    props = schema.get('properties') if isinstance(schema, dict) else None
    findings = props.get('findings') if isinstance(props, dict) else None
    items = findings.get('items') if isinstance(findings, dict) else None
    fields = items.get('properties') if isinstance(items, dict) else None
    return fields if isinstance(fields, dict) else {}


def usage_of(view: RequestView) -> Usage:
    d = view.first('usage')
    if d is None:
        return DEFAULT_USAGE
    numbers = [int(x) for x in d.args.split()]
    if len(numbers) != 4 or min(numbers) < 0:
        raise ValueError(f'usage needs 4 non-negative integers, got {d.args!r}')
    return Usage(*numbers)


def error_payload(body: object) -> tuple[str, bytes]:
    """(content type, bytes) for an error body: text as is, anything else as JSON."""
    if isinstance(body, str):
        return 'text/plain; charset=utf-8', body.encode()
    return 'application/json', json.dumps(body).encode()

