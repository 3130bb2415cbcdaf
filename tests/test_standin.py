"""The model stand-in: pure checks of its document builder and routing, then the real Codex CLI
run against it (marked e2e; skipped when no codex binary is found)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from orch.standin.request import parse_directives, view_request
from orch.standin.responses import PROSE_ANSWER
from orch.standin.schema_document import FALLBACK_DOCUMENT, build_document
from orch.standin.server import Standin, write_codex_home

REPO_ROOT = Path(__file__).resolve().parents[1]

WORKER_SCHEMA: dict[str, Any] = {
    'type': 'object',
    'properties': {
        'status': {'type': 'string', 'enum': ['blocked', 'failed', 'done']},
        'summary': {'type': 'string', 'minLength': 1},
        'files_changed': {'type': 'array', 'items': {'type': 'string'}},
        'notes': {'type': ['string', 'null']},
    },
    'required': ['status', 'summary', 'files_changed', 'notes'],
    'additionalProperties': False,
}


# --------------------------------------------------------------------------------------------
# Pure: document builder


def test_worker_schema_document_validates_and_reads_well() -> None:
    doc = build_document(WORKER_SCHEMA, files_changed=['a.py', 'b/c.txt'])
    jsonschema.validate(doc, WORKER_SCHEMA)
    assert doc['status'] == 'done'
    assert doc['files_changed'] == ['a.py', 'b/c.txt']
    assert doc['summary'].endswith('.') and ' ' in doc['summary']
    assert build_document(WORKER_SCHEMA)['files_changed'] == []


@pytest.mark.parametrize('schema', [
    {'type': 'object', 'properties': {'verdict': {'enum': ['reject', 'approve']},
                                      'score': {'type': 'integer', 'minimum': 3, 'maximum': 9},
                                      'ratio': {'type': 'number', 'exclusiveMinimum': 0.5},
                                      'ok': {'type': 'boolean'},
                                      'kind': {'const': 'review'}},
     'required': ['verdict', 'score', 'ratio', 'ok', 'kind'], 'additionalProperties': False},
    {'type': 'object', 'properties': {'x': {'anyOf': [{'type': 'null'}, {'type': 'integer'}]},
                                      'y': {'oneOf': [{'type': 'string', 'maxLength': 3},
                                                      {'type': 'integer'}]}},
     'required': ['x', 'y']},
    {'$defs': {'finding': {'type': 'object', 'properties': {'file': {'type': 'string'}},
                           'required': ['file']}},
     'type': 'object', 'properties': {'findings': {'type': 'array', 'minItems': 1,
                                                   'items': {'$ref': '#/$defs/finding'}}},
     'required': ['findings']},
    {'allOf': [{'type': 'object', 'properties': {'a': {'type': 'string'}}, 'required': ['a']},
               {'properties': {'b': {'type': 'integer', 'minimum': 0.5}}, 'required': ['b']}]},
    {'type': 'array', 'items': {'type': 'string'}, 'minItems': 1},
    {'type': 'string', 'minLength': 40},
    {'type': 'object', 'required': ['extra'], 'additionalProperties': {'type': 'integer'}},
])
def test_document_validates(schema: dict[str, Any]) -> None:
    jsonschema.validate(build_document(schema), schema)


def test_status_prefers_a_good_verdict_and_no_schema_gets_fallback() -> None:
    schema = {'type': 'object', 'properties': {'status': {'enum': ['fail', 'pass']}},
              'required': ['status']}
    assert build_document(schema) == {'status': 'pass'}
    assert build_document(None) == FALLBACK_DOCUMENT
    assert build_document({}) == FALLBACK_DOCUMENT
    assert build_document([1, 2]) == FALLBACK_DOCUMENT  # not a schema; must not crash


# --------------------------------------------------------------------------------------------
# Pure: directives and request reading


def test_directives_parse_answer_json_and_write_blocks() -> None:
    text = ('Do the thing.\n[[standin: answer {"a": [[1]], "b": "]]"}]]\n'
            '[[standin: write src/x.py]]\n\n```python\nprint("hi")\n```\n'
            'tail [[standin: slow 0.1]] and [[standin: usage 1 2 3 4]]\n')
    found = parse_directives(text)
    assert [(d.name, d.args) for d in found] == [
        ('answer', '{"a": [[1]], "b": "]]"}'), ('write', 'src/x.py'),
        ('slow', '0.1'), ('usage', '1 2 3 4')]
    assert found[1].block == 'print("hi")\n'
    assert parse_directives('[[standin: write a.txt]] no block here')[0].block is None


def _user(text: str) -> dict[str, Any]:
    return {'type': 'message', 'role': 'user', 'content': [{'type': 'input_text', 'text': text}]}


def test_view_ignores_codex_context_and_looks_back_for_directives() -> None:
    env = _user('<environment_context>\n  <cwd>/x</cwd>\n</environment_context>')
    first = _user('Task [[standin: prose-first]]')
    answer = {'type': 'message', 'role': 'assistant',
              'content': [{'type': 'output_text', 'text': 'prose'}]}
    view = view_request({'input': [env, first], 'prompt_cache_key': 't1'})
    assert view.prompts == ['Task [[standin: prose-first]]'] and view.scenario == 'prose-first'
    assert view_request({'input': [_user('<task>x</task>')]}).prompts == ['<task>x</task>']
    resumed = view_request({'input': [env, first, answer, env, _user('Please answer JSON.')]})
    assert resumed.scenario == 'prose-first' and not resumed.directives_from_last
    assert len(resumed.prompts) == 2 and resumed.thread_id == 'unknown'
    follow = view_request({'input': [first, {'type': 'function_call_output', 'call_id': 'c',
                                             'output': 'ok'}]})
    assert follow.follow_up


# --------------------------------------------------------------------------------------------
# Server without the CLI


def _post(url: str, data: bytes) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=data, headers={'content-type': 'application/json'})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_server_survives_odd_input_and_routes_by_content() -> None:
    with Standin() as standin:
        url = standin.base_url + '/responses'
        assert _post(url, b'{not json')[0] == 400
        assert _post(url, b'[1, 2]')[0] == 400
        assert _post(url, json.dumps({'input': 'nope'}).encode())[0] == 400
        body = json.dumps({'input': [_user('[[standin: usage 5 1 2 0]] hi')],
                           'prompt_cache_key': 'T'}).encode()
        # The same request twice (a retry) gets the same kind of answer: no hidden counter.
        for _ in range(2):
            status, data = _post(url, body)
            assert status == 200 and b'response.completed' in data
        ok = [r for r in standin.requests if r['status'] == 200]
        assert [r['usage']['input_tokens'] for r in ok] == [5, 5]
        assert len(standin.requests) == 5


def test_cli_writes_port_file_and_stops_on_sigterm(tmp_path: Path) -> None:
    port_file, log = tmp_path / 'port', tmp_path / 'log.jsonl'
    proc = subprocess.Popen([sys.executable, '-m', 'orch.standin.server', '--port', '0',
                             '--port-file', str(port_file), '--log', str(log)],
                            cwd=REPO_ROOT, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not port_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        port = int(port_file.read_text())
        body = json.dumps({'input': [_user('hello')]}).encode()
        assert _post(f'http://127.0.0.1:{port}/v1/responses', body)[0] == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        assert json.loads(log.read_text().splitlines()[0])['status'] == 200
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# --------------------------------------------------------------------------------------------
# The real CLI


def find_codex() -> str | None:
    explicit = os.environ.get('CODEX_BIN')
    if explicit:
        return explicit if shutil.which(explicit) else None
    bundled = REPO_ROOT / 'tools' / 'codex-cli' / 'node_modules' / '.bin' / 'codex'
    if bundled.exists():
        return str(bundled)
    return shutil.which('codex')


@dataclass
class CodexRun:
    rc: int | None  # None: killed after the timeout
    events: list[dict[str, Any]]
    stderr: str
    last: str

    @property
    def thread_id(self) -> str:
        return next(e['thread_id'] for e in self.events if e['type'] == 'thread.started')

    def final(self, kind: str) -> dict[str, Any]:
        return next(e for e in reversed(self.events) if e['type'] == kind)

    def items(self, kind: str) -> list[dict[str, Any]]:
        return [e['item'] for e in self.events
                if e['type'] == 'item.completed' and e['item']['type'] == kind]


class CodexHarness:
    """Runs `codex exec --json` in a fresh git repo against one stand-in."""

    def __init__(self, codex: str, standin: Standin, root: Path) -> None:
        self.codex, self.standin, self.root = codex, standin, root
        self.repo = root / 'repo'
        self.repo.mkdir()
        subprocess.run(['git', 'init', '-q', str(self.repo)], check=True)
        self.schema = root / 'schema.json'
        self.schema.write_text(json.dumps(WORKER_SCHEMA))
        self.env = {**os.environ, **write_codex_home(root / 'codex-home', standin.base_url)}
        self.after_start: Callable[[subprocess.Popen[str]], None] | None = None

    def configure(self, **options: Any) -> None:
        home = self.root / 'codex-home'
        self.env.update(write_codex_home(home, self.standin.base_url, **options))

    def run(self, prompt: str, *, resume: str | None = None, timeout: float = 30,
            last_name: str = 'last.txt', on_timeout: Callable[[], None] | None = None) -> CodexRun:
        last = self.root / last_name
        cmd = [self.codex, 'exec', '--json', '--skip-git-repo-check', '-C', str(self.repo),
               '--sandbox', 'workspace-write', '--output-schema', str(self.schema), '-o', str(last)]
        cmd += ['resume', resume, '-'] if resume else ['-']
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=self.env,
                                start_new_session=True)
        rc: int | None
        try:
            out, err = proc.communicate(prompt, timeout=timeout)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            if on_timeout is not None:
                on_timeout()
            os.killpg(proc.pid, signal.SIGKILL)  # the whole group: the Node launcher's child too
            out, err = proc.communicate()
            rc = None
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        events = [json.loads(line) for line in out.splitlines() if line.strip()]
        return CodexRun(rc, events, err, last.read_text() if last.exists() else '')


@pytest.fixture(scope='module')
def codex_bin() -> str:
    found = find_codex()
    if not found:
        where = os.environ.get('CODEX_BIN') or 'tools/codex-cli/node_modules/.bin/codex or PATH'
        pytest.skip(f'codex CLI not found at {where} (set CODEX_BIN, or run npm ci in tools/codex-cli)')
    return found


@pytest.fixture
def standin() -> Iterator[Standin]:
    with Standin() as server:
        yield server


@pytest.fixture
def harness(codex_bin: str, standin: Standin, tmp_path: Path) -> CodexHarness:
    return CodexHarness(codex_bin, standin, tmp_path)


def _sum_usage(records: list[dict[str, Any]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for record in records:
        for key, value in (record['usage'] or {}).items():
            total[key] = total.get(key, 0) + value
    return total


def _reported(run: CodexRun) -> dict[str, int]:
    usage = run.final('turn.completed')['usage']
    return {k: usage[k] for k in ('input_tokens', 'cached_input_tokens', 'output_tokens',
                                  'reasoning_output_tokens')}


@pytest.mark.e2e
def test_default_answer_validates_and_usage_matches(harness: CodexHarness) -> None:
    run = harness.run('Implement the feature.\n[[standin: usage 1000 400 50 7]]\n')
    assert run.rc == 0, run.stderr
    jsonschema.validate(json.loads(run.last), WORKER_SCHEMA)
    records = harness.standin.requests_for(run.thread_id)
    assert len(records) == 1 and records[0]['scenario'] == 'default'
    assert _reported(run) == _sum_usage(records) == {
        'input_tokens': 1000, 'cached_input_tokens': 400, 'output_tokens': 50,
        'reasoning_output_tokens': 7}


@pytest.mark.e2e
def test_write_creates_files_in_the_workspace(harness: CodexHarness) -> None:
    (harness.repo / 'README.md').write_text('old\n')
    prompt = ('Edit please.\n[[standin: write README.md]]\n```\nnew readme\n```\n'
              '[[standin: write pkg/mod.py]]\n```python\nVALUE = 1\n```\n')
    run = harness.run(prompt)
    assert run.rc == 0, run.stderr
    assert (harness.repo / 'README.md').read_text() == 'new readme\n'
    assert (harness.repo / 'pkg' / 'mod.py').read_text() == 'VALUE = 1\n'
    [change] = run.items('file_change')
    assert change['status'] == 'completed'
    doc = json.loads(run.last)
    jsonschema.validate(doc, WORKER_SCHEMA)
    assert doc['files_changed'] == ['README.md', 'pkg/mod.py']
    records = harness.standin.requests_for(run.thread_id)
    assert [(r['action'], r['follow_up']) for r in records] == [('tool-call', False),
                                                                 ('answer', True)]
    assert _reported(run) == _sum_usage(records)


@pytest.mark.e2e
def test_prose_first_then_valid_after_resume(harness: CodexHarness) -> None:
    first = harness.run('Do it.\n[[standin: prose-first]]\n')
    assert first.rc == 0 and first.last == PROSE_ANSWER
    with pytest.raises(json.JSONDecodeError):
        json.loads(first.last)
    second = harness.run('Your answer was not valid JSON. Answer with the JSON document.\n',
                         resume=first.thread_id, last_name='last2.txt')
    assert second.rc == 0, second.stderr
    assert second.thread_id == first.thread_id
    jsonschema.validate(json.loads(second.last), WORKER_SCHEMA)
    records = harness.standin.requests_for(first.thread_id)
    assert [r['prompts'] for r in records] == [1, 2]
    # turn.completed is cumulative over the thread: both POSTs.
    assert _reported(second) == _sum_usage(records)


@pytest.mark.e2e
def test_http500_once_is_retried_by_codex(harness: CodexHarness) -> None:
    harness.configure(request_max_retries=1)
    run = harness.run('Go.\n[[standin: http500-once]]\n')
    assert run.rc == 0, run.stderr
    jsonschema.validate(json.loads(run.last), WORKER_SCHEMA)
    records = harness.standin.requests_for(run.thread_id)
    assert [r['status'] for r in records] == [500, 200]
    assert _reported(run) == _sum_usage(records)


@pytest.mark.e2e
@pytest.mark.parametrize(('directive', 'expected'), [
    ('quota', 'quota'),
    ('rate-limit', '429'),
    ('turn-fail the schema is bad', 'the schema is bad'),
    ('http500-always', 'high demand'),
])
def test_failures_end_the_turn(harness: CodexHarness, directive: str, expected: str) -> None:
    run = harness.run(f'Go.\n[[standin: {directive}]]\n')
    assert run.rc == 1
    assert expected in run.final('turn.failed')['error']['message'].lower()
    assert run.last == ''
    assert all(r['usage'] is None for r in harness.standin.requests_for(run.thread_id))


def _handler_threads() -> int:
    return sum('process_request' in t.name for t in threading.enumerate())


def _wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


@pytest.mark.e2e
@pytest.mark.parametrize('close_first', [True, False], ids=['close-then-kill', 'kill-then-close'])
def test_hang_headers_does_not_block_shutdown(harness: CodexHarness, close_first: bool) -> None:
    closed_in: list[float] = []

    def close() -> None:
        start = time.monotonic()
        harness.standin.close()
        closed_in.append(time.monotonic() - start)

    def on_timeout() -> None:
        assert [r['action'] for r in harness.standin.requests] == ['hang-headers']
        assert _handler_threads() == 1  # the handler is really stuck in its hang
        if close_first:
            close()  # close() must release the hung handler itself

    run = harness.run('Go.\n[[standin: hang-headers]]\n', timeout=5, on_timeout=on_timeout)
    assert run.rc is None  # codex never gave up on its own
    if not close_first:
        # codex is dead: the handler notices the hangup without waiting for close().
        assert _wait_for(lambda: _handler_threads() == 0, 2)
        close()
    assert closed_in[0] < 1.0
    assert _wait_for(lambda: _handler_threads() == 0, 2)


@pytest.mark.e2e
def test_silent_stream_hits_the_idle_timeout(harness: CodexHarness) -> None:
    harness.configure(idle_timeout_ms=1000)
    run = harness.run('Go.\n[[standin: silent-stream]]\n', timeout=15)
    assert run.rc == 1
    assert 'idle timeout' in run.final('turn.failed')['error']['message']


@pytest.mark.e2e
def test_parallel_workers_share_one_server(harness: CodexHarness, tmp_path: Path) -> None:
    results: dict[int, CodexRun] = {}

    def work(n: int) -> None:
        results[n] = harness.run(f'Worker {n}.\n[[standin: usage {n} 0 {n} 0]]\n'
                                 '[[standin: slow 0.3]]\n', last_name=f'last{n}.txt')

    threads = [threading.Thread(target=work, args=(n,)) for n in (11, 22, 33)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for n, run in results.items():
        assert run.rc == 0, run.stderr
        assert _reported(run)['input_tokens'] == n
        assert harness.standin.requests_for(run.thread_id)[0]['usage']['output_tokens'] == n
    assert len({run.thread_id for run in results.values()}) == 3
