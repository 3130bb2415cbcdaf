"""Every file codex-orch writes is redacted: its records, and the logs of workers and commands too.

A secret (a `*_TOKEN` variable's value) is placed everywhere a run can pick one up: in a task's title, in
a worker's answer and its decisions, in its event stream (a command's output), on codex's stderr, in a
check's output and in a gate's output. After the run, no file under .orchestrator (the run's directory,
the worktrees) and no commit holds it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orch.core.redact import redact_jsonl_line
from orch.runstate.atomic import redact_file
from tests.support.gitrepo import commit_all, git
from tests.support.orchtest import make_host

SECRET = 'tok-EVERYWHERE-0123456789abcdef'

GATE = """name: echo_gate
scope: task
roles: [implementer]
output: "{task_dir}/echo_gate.json"
action:
  shell: "echo gate saw $SERVICE_TOKEN"
"""


def files_holding(root: Path, needle: bytes) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob('*') if p.is_file() and needle in p.read_bytes())


def test_a_secret_reaches_no_file_and_no_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    monkeypatch.setenv('SERVICE_TOKEN', SECRET)
    answer = {'status': 'done', 'summary': f'Logged in with {SECRET}.', 'files_changed': ['x.txt'],
              'decisions': [{'decision': f'Keep {SECRET}', 'rationale': f'{SECRET} works'}],
              'follow_ups': [f'rotate {SECRET}']}
    host = make_host(tmp_path, monkeypatch, capsys, {'tasks': {'T1': {
        'answer': answer, 'edits': {'x.txt': 'x\n'}, 'stderr': f'warning: token {SECRET} expires soon',
        'commands': [f'echo the token is {SECRET}']}}})
    (host.repo / '.orchestrator' / 'rules').mkdir(exist_ok=True)
    (host.repo / '.orchestrator' / 'rules' / 'gate.yaml').write_text(GATE)
    # The check may see the secret (a sandboxed check gets no secret-like variable unless passed): its log is
    # what must be redacted.
    config = host.repo / '.orchestrator' / 'orchestrator.yaml'
    config.write_text(config.read_text().replace('  pass_env: []', '  pass_env: [SERVICE_TOKEN]'))
    commit_all(host.repo, 'gate')
    host.write_plan({'version': 1, 'tasks': [{
        'id': 'T1', 'role': 'implementer', 'title': f'Log in with {SECRET}', 'description': f'Use {SECRET}.',
        'paths': ['x.txt'], 'checks': ['echo check saw $SERVICE_TOKEN']}]})
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 0, out + err
    assert SECRET not in out + err
    run = host.run_dir()
    attempt = run / 'tasks' / 'T1' / 'attempt-1'
    # the secret went everywhere it could: redacted where it would have been
    assert b'the token is [REDACTED]' in (attempt / 'events.jsonl').read_bytes()
    assert b'token [REDACTED] expires' in (attempt / 'stderr.log').read_bytes()
    assert 'Logged in with [REDACTED]' in (attempt / 'last-message.txt').read_text()
    assert [p.read_text() for p in run.rglob('check-1.log')] == ['check saw [REDACTED]\n']
    assert (run / 'tasks' / 'T1' / 'echo_gate.log').read_text() == 'gate saw [REDACTED]\n'
    for line in (attempt / 'events.jsonl').read_text().splitlines():
        json.loads(line)   # still the JSON codex printed
    assert files_holding(host.repo / '.orchestrator', SECRET.encode()) == []
    log = git(host.repo, 'log', '-p', '--all', '--format=%H%n%B%n%an <%ae>')
    assert 'Log in with [REDACTED]' in log and 'Keep [REDACTED]' in log   # the commit and decisions.md
    assert SECRET not in log
    assert host.statuses() == {'T1': 'done'}


def test_a_secret_written_with_json_escapes_is_found_and_the_line_stays_json(monkeypatch: pytest.MonkeyPatch) -> None:
    value = 'pass"word\\with-escapes'
    line = json.dumps({'type': 'item.completed', 'item': {'text': f'it is {value}!'}}).encode()
    assert value.encode() not in line   # only its escaped form is in the line
    redacted = redact_jsonl_line(line, [value])
    assert json.loads(redacted) == {'type': 'item.completed', 'item': {'text': 'it is [REDACTED]!'}}
    plain = b'{"type":"turn.started"}'
    assert redact_jsonl_line(plain, [value]) is plain                      # nothing to redact: the same bytes
    assert redact_jsonl_line(b'not json \xff ' + value.encode(), [value]) == b'not json \xff [REDACTED]'


def test_redacting_a_log_in_place_keeps_what_is_no_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv('SERVICE_TOKEN', SECRET)
    log = tmp_path / 'logs' / 'check.log'
    log.parent.mkdir()
    data = b'\xff\xfe binary\n' + (b'line\n' * 300_000) + f'end {SECRET}'.encode()
    log.write_bytes(data)
    assert redact_file(log)
    assert log.read_bytes() == data.replace(SECRET.encode(), b'[REDACTED]')
    before = log.stat().st_mtime_ns
    assert not redact_file(log) and log.stat().st_mtime_ns == before   # nothing left: not rewritten
    assert not redact_file(log.parent / 'missing.log')
    assert [p.name for p in log.parent.iterdir()] == ['check.log']       # no temporary file left behind


def test_a_log_without_a_secret_is_only_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every check's and gate's log is redacted when it ends: one without a secret is scanned, never copied."""
    from orch.runstate import atomic

    def no_copy(path: Path) -> Any:
        raise AssertionError(f'{path} was copied, though it holds no secret')
    monkeypatch.setenv('SERVICE_TOKEN', SECRET)
    monkeypatch.setattr(atomic, '_create_temp', no_copy)
    log = tmp_path / 'check.log'
    log.write_bytes(b'line\n' * 300_000)
    assert not redact_file(log)
    (tmp_path / 'events.jsonl').write_bytes(b'{"type":"turn.started"}\n' * 1000)
    assert not redact_file(tmp_path / 'events.jsonl', jsonl=True)
