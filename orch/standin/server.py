"""A local stand-in for the part of the OpenAI Responses API that `codex exec` uses.

codex-orch drives the real Codex CLI. Tests and the demo need that CLI to talk to a model that
answers instantly, deterministically and for free, and that can also misbehave on demand (HTTP
errors, quota, hangs). This module is that model: a small stdlib HTTP server answering
`POST /v1/responses` with the SSE streams the CLI 0.169.0 accepts (see
shared/reference/codex-model-standin.md), plus `write_codex_home()` to point a CODEX_HOME at it.

What to answer is decided from the request *content* only. codex resends the very same request
on a retry and several workers share one server, so a request counter would route wrongly. The
prompt carries directives, one per `[[standin: NAME ARGS]]` marker, anywhere in the text:

    (none)                     answer a JSON document built to validate against the output schema
    answer {json}              answer exactly this text (the rest of the marker)
    write <rel/path>           followed by a fenced block: first make that edit through an
                               `exec_command` `apply_patch` heredoc, then answer the schema document
                               (files_changed lists the written paths)
    prose-first                answer prose while the thread has one prompt, the schema document
                               once a later prompt (a resume reminder) follows
    write-at <n> <rel/path>    followed by a fenced block: like write, but only for the thread's n-th
                               prompt (e.g. 2: the fix a repair round asks for)
    review-once <message>      while the thread has one prompt, answer the schema document with
                               verdict request_changes and this finding; later prompts approve
    http500-once               the first POST of the thread gets HTTP 500, later ones succeed
    http500-always             every POST gets HTTP 500
    quota                      HTTP 429 insufficient_quota
    rate-limit                 HTTP 429 without retry-after
    hang-headers               read the request, never answer (released by close() or hangup)
    silent-stream              send headers and response.created, then nothing
    turn-fail <message>        HTTP 400 whose body is the message
    slow <seconds>             wait before answering (combines with the others)
    usage <in> <cached> <out> <reasoning>   token counts reported per POST

A resume reminder usually carries no directive; then the most recent earlier prompt that has some
is used, because the resumed request replays the whole thread.

Run it standalone with `python -m orch.standin.server --port 0 --port-file F [--log F]`.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import http.server
import json
import re
import select
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orch.runstate.atomic import write_text
from orch.standin.schema_document import FALLBACK_DOCUMENT, build_document

API_KEY_ENV = 'STANDIN_API_KEY'
API_KEY_VALUE = 'standin'
PROVIDER_ID = 'standin'

# What a request without an output schema gets, and what an empty schema (`{}`) gets.
PROSE_ANSWER = ('I had a look at the task and made the changes it asked for. '
                'Everything seems to be in order now.')

# The stand-in's own tool calls are recognisable in replayed history by this call_id prefix.
CALL_ID_PREFIX = 'call_standin_'
FOLLOW_UP_TYPES = frozenset({'function_call_output', 'custom_tool_call_output'})
MAX_BODY_BYTES = 64 * 1024 * 1024

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


# --------------------------------------------------------------------------------------------
# Building answers


def _sse(events: Iterable[Mapping[str, Any]]) -> bytes:
    return ''.join(f'event: {e["type"]}\ndata: {json.dumps(e)}\n\n' for e in events).encode()


def _new_id(prefix: str) -> str:
    return f'{prefix}_{uuid.uuid4().hex[:24]}'


def _stream(items: list[dict[str, Any]], usage: Usage) -> bytes:
    response_id = _new_id('resp')
    events: list[dict[str, Any]] = [{'type': 'response.created', 'response': {'id': response_id}}]
    events += [{'type': 'response.output_item.done', 'item': item} for item in items]
    # response.id is required: without it codex treats the stream as broken and retries.
    events.append({'type': 'response.completed',
                   'response': {'id': response_id, 'usage': usage.to_api()}})
    return _sse(events)


def _message_item(text: str) -> dict[str, Any]:
    return {'type': 'message', 'role': 'assistant', 'id': _new_id('msg'), 'status': 'completed',
            'content': [{'type': 'output_text', 'text': text, 'annotations': []}]}


def build_patch(writes: Sequence[tuple[str, str]]) -> str:
    """One apply_patch text adding (or replacing) each (path, content)."""
    lines = ['*** Begin Patch']
    for path, content in writes:
        lines.append(f'*** Add File: {path}')
        lines += ['+' + line for line in content.splitlines()]
    lines.append('*** End Patch')
    return '\n'.join(lines) + '\n'


def _edit_call_item(view: RequestView, writes: Sequence[tuple[str, str]],
                    n_items: int) -> dict[str, Any]:
    # The heredoc form works for every model kind; content lines all start with '+', so the
    # EOF delimiter cannot occur inside. The call_id is derived from the request, so a retry
    # of the same request gets the same call.
    cmd = "apply_patch <<'EOF'\n" + build_patch(writes) + 'EOF\n'
    digest = uuid.uuid5(uuid.NAMESPACE_URL, f'{view.thread_id}/{n_items}').hex[:16]
    call_id = f'{CALL_ID_PREFIX}{digest}'
    return {'type': 'function_call', 'call_id': call_id, 'name': 'exec_command',
            'arguments': json.dumps({'cmd': cmd})}


def _edits_for(view: RequestView) -> list[tuple[str, str]]:
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


def _answer_text(view: RequestView) -> str:
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
            document['findings'] = [{'severity': 'major', 'file': '', 'message': review.args.strip()}] if first else []
    return json.dumps(document)


def _usage_of(view: RequestView) -> Usage:
    d = view.first('usage')
    if d is None:
        return DEFAULT_USAGE
    numbers = [int(x) for x in d.args.split()]
    if len(numbers) != 4 or min(numbers) < 0:
        raise ValueError(f'usage needs 4 non-negative integers, got {d.args!r}')
    return Usage(*numbers)


# --------------------------------------------------------------------------------------------
# HTTP server


class _Reply(Exception):
    """Raised inside a handler to send an error body (JSON, or text for a str) and stop."""

    def __init__(self, status: int, body: object, action: str) -> None:
        super().__init__(action)
        self.status, self.body, self.action = status, body, action


class _Drop(Exception):
    """Raised inside a handler to close the connection without (further) reply."""


def _error_payload(body: object) -> tuple[str, bytes]:
    """(content type, bytes) for an error body: text as is, anything else as JSON."""
    if isinstance(body, str):
        return 'text/plain; charset=utf-8', body.encode()
    return 'application/json', json.dumps(body).encode()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # the stdlib's signature
        pass  # the JSONL request log replaces the stderr access log

    def do_GET(self) -> None:  # the stdlib's naming
        self._send(404, *_error_payload({'error': {'message': 'not found'}}))

    def do_POST(self) -> None:  # the stdlib's naming
        record: dict[str, Any] = {'time': time.time(), 'path': self.path, 'thread': None,
                                  'scenario': None, 'prompt': None, 'follow_up': None,
                                  'action': None, 'usage': None, 'status': None}
        self.close_connection = True
        answer: tuple[int, str, bytes] | None = None
        try:
            answer = self._serve_post(record)
        except _Reply as reply:
            record.update(action=reply.action, status=reply.status)
            answer = (reply.status, *_error_payload(reply.body))
        except _Drop:
            pass
        except OSError:  # the client went away mid-request
            record['action'] = record['action'] or 'client-gone'
        except Exception as exc:  # never let odd input kill the handler thread
            record.update(action='error', status=400, error=f'{type(exc).__name__}: {exc}')
            answer = (400, *_error_payload({'error': {'type': 'invalid_request_error',
                                                      'message': f'standin: {exc}'}}))
        # Record before answering: whoever has seen the answer then also finds it in .requests.
        self.server.standin._record(record)
        if answer is not None:
            with contextlib.suppress(OSError):  # the client is gone; nothing to tell it
                self._send(*answer)

    # -- the request

    def _serve_post(self, record: dict[str, Any]) -> tuple[int, str, bytes]:
        """(status, content type, body) to send; raises _Reply/_Drop for the other endings."""
        if not self.path.rstrip('/').endswith('/responses'):
            raise _Reply(404, {'error': {'message': f'no route {self.path}'}}, 'not-found')
        body = self._read_json()
        view = view_request(body, {k.lower(): v for k, v in self.headers.items()})
        forced = self.server.standin.forced
        if forced:
            view = dataclasses.replace(view, directives=[*view.directives, *parse_directives(forced)])
        record.update(thread=view.thread_id, scenario=view.scenario, prompt=view.last_prompt,
                      follow_up=view.follow_up, prompts=len(view.prompts))
        usage = _usage_of(view)
        slow = view.first('slow')
        if slow is not None and self._wait_stopped(float(slow.args or 0)):
            record['action'] = 'shutdown'
            raise _Drop
        self._maybe_fail(view, record)
        writes = _edits_for(view)
        if writes:
            items = [_edit_call_item(view, writes, len(body['input']))]
            record['action'] = 'tool-call'
            record['writes'] = [p for p, _ in writes]
        else:
            items = [_message_item(_answer_text(view))]
            record['action'] = 'answer'
        record.update(usage=usage.to_record(), status=200)
        return 200, 'text/event-stream', _stream(items, usage)

    def _maybe_fail(self, view: RequestView, record: dict[str, Any]) -> None:
        """Send the misbehaviour a directive asks for, if any (raises _Reply or returns)."""
        standin = self.server.standin
        if view.has('hang-headers'):
            record['action'] = 'hang-headers'
            standin._record_live(record)
            self._hang()
            raise _Drop
        if view.has('silent-stream'):
            record.update(action='silent-stream', status=200)
            self._start_stream()
            standin._record_live(record)
            self._hang()
            raise _Drop  # headers are out: nothing more can be said, just hang up
        if view.has('http500-always') or (view.has('http500-once')
                                          and standin._first_time(view.thread_id)):
            raise _Reply(500, SERVER_ERROR_BODY, 'http-500')
        if view.has('quota'):
            raise _Reply(429, QUOTA_BODY, 'quota')
        if view.has('rate-limit'):
            raise _Reply(429, RATE_LIMIT_BODY, 'rate-limit')
        fail = view.first('turn-fail')
        if fail is not None:
            raise _Reply(400, fail.args or 'standin turn failure', 'turn-fail')

    def _read_json(self) -> dict[str, Any]:
        if 'chunked' in self.headers.get('transfer-encoding', '').lower():
            raw = self._read_chunked()
        else:
            length = int(self.headers.get('content-length') or 0)
            if length < 0 or length > MAX_BODY_BYTES:
                raise _Reply(413, {'error': {'message': 'body too large'}}, 'too-large')
            raw = self.rfile.read(length)
        body = json.loads(raw.decode('utf-8'))
        if not isinstance(body, dict):
            raise ValueError('request body must be a JSON object')
        return body

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            size = int(self.rfile.readline().split(b';')[0].strip() or b'0', 16)
            if size == 0:
                self.rfile.readline()
                return b''.join(chunks)
            total += size
            if total > MAX_BODY_BYTES:
                raise _Reply(413, {'error': {'message': 'body too large'}}, 'too-large')
            chunks.append(self.rfile.read(size))
            self.rfile.readline()

    # -- sending

    def _send(self, status: int, content_type: str, data: bytes) -> None:
        self.send_response(status)
        self.send_header('content-type', content_type)
        self.send_header('content-length', str(len(data)))
        self.send_header('connection', 'close')
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header('content-type', 'text/event-stream')
        self.send_header('connection', 'close')
        self.end_headers()
        self.wfile.write(_sse([{'type': 'response.created', 'response': {'id': _new_id('resp')}}]))
        self.wfile.flush()

    # -- waiting

    def _wait_stopped(self, seconds: float) -> bool:
        """Sleep up to seconds; True if the server is shutting down meanwhile."""
        return self.server.standin._stop.wait(max(0.0, seconds))

    def _hang(self) -> None:
        """Block until close() or until the client hangs up, so no thread outlives either."""
        stop = self.server.standin._stop
        while not stop.wait(0.2):
            try:
                readable, _, _ = select.select([self.connection], [], [], 0)
                if readable and not self.connection.recv(1, socket.MSG_PEEK):
                    return
            except OSError:
                return


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    # A hung handler must never hold up close(); daemon threads are not joined anyway.
    block_on_close = False
    server_address: tuple[str, int]  # an AF_INET server: getsockname() is (host, port)

    def __init__(self, address: tuple[str, int], standin: Standin) -> None:
        self.standin = standin
        super().__init__(address, _Handler)


class Standin:
    """The stand-in server, listening on 127.0.0.1 from construction until close()."""

    def __init__(self, port: int = 0, *, host: str = '127.0.0.1',
                 log_path: Path | str | None = None) -> None:
        self._lock = threading.Lock()
        self._requests: list[dict[str, Any]] = []
        self._failed_threads: set[str] = set()
        self._stop = threading.Event()
        self._log_path = Path(log_path) if log_path else None
        self._closed = False
        # Directives applied to every request on top of the prompt's, e.g. '[[standin: quota]]'
        # for "the account is out of quota" until a test sets it back to ''.
        self.forced = ''
        self._server = _Server((host, port), self)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={'poll_interval': 0.05},
                                        name=f'standin-{self.port}', daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f'http://{self._server.server_address[0]}:{self.port}/v1'

    @property
    def requests(self) -> list[dict[str, Any]]:
        """A snapshot of the per-POST records, oldest first."""
        with self._lock:
            return [dict(r) for r in self._requests]

    def requests_for(self, thread_id: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r.get('thread') == thread_id]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()  # releases hanging handlers
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Standin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- used by handlers

    def _first_time(self, thread_id: str) -> bool:
        with self._lock:
            if thread_id in self._failed_threads:
                return False
            self._failed_threads.add(thread_id)
            return True

    def _record_live(self, record: dict[str, Any]) -> None:
        """List a request before it finishes (a hang may never finish); _record replaces it."""
        with self._lock:
            record['_slot'] = len(self._requests)
            self._requests.append({k: v for k, v in record.items() if k != '_slot'})

    def _record(self, record: dict[str, Any]) -> None:
        record['duration'] = round(time.time() - record['time'], 4)
        with self._lock:
            # Handlers own their record dict; only copies are shared, so snapshots never race.
            slot = record.pop('_slot', None)
            if slot is None:
                self._requests.append(dict(record))
            else:
                self._requests[slot] = dict(record)
            if self._log_path is not None:
                with self._log_path.open('a', encoding='utf-8') as f:
                    f.write(json.dumps(record, sort_keys=True, default=str) + '\n')


# --------------------------------------------------------------------------------------------
# CODEX_HOME


def write_codex_home(codex_home: Path, base_url: str, *, fast_fail: bool = True,
                     idle_timeout_ms: int | None = None, request_max_retries: int = 0,
                     stream_max_retries: int = 0) -> dict[str, str]:
    """Create codex_home with a config.toml whose model provider is the stand-in at base_url.

    With fast_fail the provider's retry counts are written (0 by default: a failure ends the
    turn after one request instead of ~30 requests over ~25 s); without it codex's own
    defaults apply. Returns the environment variables a caller must set for codex.
    """
    codex_home = Path(codex_home)
    codex_home.mkdir(parents=True, exist_ok=True)
    lines = [f'model_provider = "{PROVIDER_ID}"', '', f'[model_providers.{PROVIDER_ID}]',
             f'name = {_toml_str(PROVIDER_ID)}', f'base_url = {_toml_str(base_url)}',
             f'env_key = {_toml_str(API_KEY_ENV)}', 'wire_api = "responses"']
    if fast_fail:
        lines += [f'request_max_retries = {int(request_max_retries)}',
                  f'stream_max_retries = {int(stream_max_retries)}']
    if idle_timeout_ms is not None:
        lines.append(f'stream_idle_timeout_ms = {int(idle_timeout_ms)}')
    write_text(codex_home / 'config.toml', '\n'.join(lines) + '\n')
    return {'CODEX_HOME': str(codex_home), API_KEY_ENV: API_KEY_VALUE}


def _toml_str(value: str) -> str:
    # A JSON string is a valid TOML basic string for everything a URL or name holds.
    return json.dumps(value)


# --------------------------------------------------------------------------------------------
# CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m orch.standin.server',
                                     description='Serve the local Responses API stand-in.')
    parser.add_argument('--port', type=int, default=0, help='port to listen on (0: any free one)')
    parser.add_argument('--port-file', type=Path, help='write the chosen port here once listening')
    parser.add_argument('--log', type=Path, help='append one JSON line per request here')
    args = parser.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with Standin(args.port, log_path=args.log) as standin:
        if args.port_file is not None:
            write_text(args.port_file, f'{standin.port}\n')
        # Short waits keep the main thread responsive to signals.
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
