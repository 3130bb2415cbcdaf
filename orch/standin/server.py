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
    spawn-agent <task>         call Codex's spawn_agent (a sub-agent given <task>, none of the parent's
                               history), then wait_agent, then answer; the sub-agent's own requests
                               come in its own thread (with sub-agents disabled both calls fail)
    slow <seconds>             wait before answering (combines with the others)
    wait-for <path>            hold the answer until the file exists (at most WAIT_LIMIT s)
    wait-seen <text>           hold the answer until a request whose last prompt contains <text> came in
                               (another worker's: two workers ordered without timing)
    usage <in> <cached> <out> <reasoning>   token counts reported per POST

A resume reminder usually carries no directive; then the most recent earlier prompt that has some
is used, because the resumed request replays the whole thread.

The directives are read in orch.standin.request and answered with what orch.standin.responses
builds; this module is the HTTP server (`Standin`), `write_codex_home()` and the command line.

Run it standalone with `python -m orch.standin.server --port 0 --port-file F [--log F]`.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import http.server
import json
import select
import signal
import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orch.runstate.atomic import write_text
from orch.standin import responses

# CALL_ID_PREFIX, Directive, DEFAULT_USAGE, PROSE_ANSWER, Usage, build_patch, FALLBACK_DOCUMENT and
# build_document are re-exported for callers that import them from here.
from orch.standin.request import (  # noqa: F401
    CALL_ID_PREFIX,
    Directive,
    RequestView,
    parse_directives,
    view_request,
)
from orch.standin.responses import (  # noqa: F401
    DEFAULT_USAGE,
    PROSE_ANSWER,
    QUOTA_BODY,
    RATE_LIMIT_BODY,
    SERVER_ERROR_BODY,
    Usage,
    build_patch,
)
from orch.standin.schema_document import FALLBACK_DOCUMENT, build_document  # noqa: F401

API_KEY_ENV = 'STANDIN_API_KEY'
WAIT_LIMIT = 60.0   # seconds a wait-for / wait-seen directive holds an answer at most
API_KEY_VALUE = 'standin'
PROVIDER_ID = 'standin'
MAX_BODY_BYTES = 64 * 1024 * 1024


# --------------------------------------------------------------------------------------------
# HTTP server


class _Reply(Exception):
    """Raised inside a handler to send an error body (JSON, or text for a str) and stop."""

    def __init__(self, status: int, body: object, action: str) -> None:
        super().__init__(action)
        self.status, self.body, self.action = status, body, action


class _Drop(Exception):
    """Raised inside a handler to close the connection without (further) reply."""


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # the stdlib's signature
        pass  # the JSONL request log replaces the stderr access log

    def do_GET(self) -> None:  # the stdlib's naming
        self._send(404, *responses.error_payload({'error': {'message': 'not found'}}))

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
            answer = (reply.status, *responses.error_payload(reply.body))
        except _Drop:
            pass
        except OSError:  # the client went away mid-request
            record['action'] = record['action'] or 'client-gone'
        except Exception as exc:  # never let odd input kill the handler thread
            record.update(action='error', status=400, error=f'{type(exc).__name__}: {exc}')
            answer = (400, *responses.error_payload({'error': {'type': 'invalid_request_error',
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
        usage = responses.usage_of(view)
        self.server.standin._seen(view.last_prompt)
        slow = view.first('slow')
        if slow is not None and self._wait_stopped(float(slow.args or 0)):
            record['action'] = 'shutdown'
            raise _Drop
        if not self._wait_until(view):
            record['action'] = 'shutdown'
            raise _Drop
        self._maybe_fail(view, record)
        writes = responses.edits_for(view)
        agent_call = responses.agent_call_item(view, len(body['input']))
        if agent_call is not None:
            items = [agent_call]
            record['action'] = 'agent-call'
        elif writes:
            items = [responses.edit_call_item(view, writes, len(body['input']))]
            record['action'] = 'tool-call'
            record['writes'] = [p for p, _ in writes]
        else:
            items = [responses.message_item(responses.answer_text(view))]
            record['action'] = 'answer'
        record.update(usage=usage.to_record(), status=200)
        return 200, 'text/event-stream', responses.stream(items, usage)

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
        self.wfile.write(responses.sse([{'type': 'response.created', 'response': {'id': responses.new_id('resp')}}]))
        self.wfile.flush()

    # -- waiting

    def _wait_until(self, view: RequestView) -> bool:
        """Hold the answer until what `wait-for` / `wait-seen` name is there (at most WAIT_LIMIT s: a test that
        orders two workers by it then fails on its own assertions); False if the server shuts down meanwhile."""
        standin = self.server.standin
        path, text = view.first('wait-for'), view.first('wait-seen')
        deadline = time.monotonic() + WAIT_LIMIT
        while time.monotonic() < deadline:
            if (path is None or Path(path.args.strip()).exists()) and \
                    (text is None or standin._has_seen(text.args.strip(), besides=view.last_prompt)):
                return True
            if standin._stop.wait(0.05):
                return False
        return True

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
        self._prompts_seen: list[str] = []   # the last prompt of every request received, answered or not
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

    def _seen(self, prompt: str) -> None:
        with self._lock:
            self._prompts_seen.append(prompt)

    def _has_seen(self, text: str, besides: str) -> bool:
        """Did a request with another last prompt than `besides` (the asker's own, which names `text`) name it?"""
        with self._lock:
            return any(text in prompt and prompt != besides for prompt in self._prompts_seen)

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
