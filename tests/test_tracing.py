"""Issue 21 item 6: OpenTelemetry traces of a run, sent over OTLP/HTTP when the standard endpoint variable is set,
to a receiver in the test (tests/support/otlp_receiver.py); nothing imported and nothing sent without it."""
from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from orch.standin.server import Standin
from tests.support.gitrepo import commit_all
from tests.support.orchtest import Host, edit_config, make_host
from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.support.realcodex import use_real_codex

CHECK = 'grep -q fixed src/x.py'
GATE = ('name: tests_gate\nscope: task\nroles: [implementer]\noutput: "{task_dir}/tests_gate.json"\n'
        'action:\n  shell: "grep -q fixed src/x.py"\n')


def usage(tokens_in: int, tokens_out: int) -> dict[str, int]:
    return {'input_tokens': tokens_in, 'cached_input_tokens': 0, 'output_tokens': tokens_out,
            'reasoning_output_tokens': 0}


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Any:
    with OtlpReceiver() as r:
        monkeypatch.delenv('OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', raising=False)
        monkeypatch.setenv('OTEL_EXPORTER_OTLP_ENDPOINT', r.endpoint)
        monkeypatch.setenv('OTEL_EXPORTER_OTLP_TIMEOUT', '60')   # the run's end waits for its spans, however slow
        yield r


def rounds_of(receiver: OtlpReceiver, task_id: str) -> list[ReceivedSpan]:
    return sorted(receiver.named(f'invoke_agent {task_id}'), key=lambda s: s.attributes['codex_orch.round'])


def test_a_run_is_one_trace_with_a_span_per_task_round_check_and_gate(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any, receiver: OtlpReceiver) -> None:
    host = make_host(tmp_path, monkeypatch, capsys, {'tasks': {
        'T1': [{'edits': {'src/x.py': 'broken\n'}, 'usage': usage(111, 22)},
               {'edits': {'src/x.py': 'fixed\n'}, 'usage': usage(333, 44)}],
        'T2': {'usage': usage(555, 66)}}})
    (host.repo / '.orchestrator' / 'rules').mkdir()
    (host.repo / '.orchestrator' / 'rules' / 'gate.yaml').write_text(GATE)
    host.write_plan({'version': 1, 'title': 'Traced', 'tasks': [
        {'id': 'T1', 'role': 'implementer', 'title': 'Fix x', 'description': 'Fix x.',
         'paths': ['src/*'], 'checks': [CHECK]},
        {'id': 'T2', 'role': 'reviewer', 'title': 'Review', 'description': 'Review.', 'depends_on': ['T1']}]})
    commit_all(host.repo, 'plan')
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--run-id', 'traced')
    assert rc == 0, out + err

    assert len({s.trace_id for s in receiver.spans}) == 1   # one trace for the run
    (root,) = receiver.named('codex-orch run')
    assert root.parent_span_id == '' and root.attributes['codex_orch.run.id'] == 'traced'
    assert root.resource['service.name'] == 'codex-orch'
    for task_id, role in (('T1', 'implementer'), ('T2', 'reviewer')):
        (task,) = receiver.named(f'task {task_id}')
        assert task.parent_span_id == root.span_id
        assert {k: task.attributes.get(k) for k in ('codex_orch.task.id', 'codex_orch.role', 'codex_orch.status',
                                                    'codex_orch.run.id')} == {
            'codex_orch.task.id': task_id, 'codex_orch.role': role, 'codex_orch.status': 'done',
            'codex_orch.run.id': 'traced'}
    # a span per round, each an agent invocation (GenAI conventions) with the tokens its worker reported
    launches = host.launches()
    threads = {e['task_id']: e['thread_id'] for e in launches}
    seen = [(s.attributes['codex_orch.round'], s.attributes['gen_ai.usage.input_tokens'],
             s.attributes['gen_ai.usage.output_tokens']) for s in rounds_of(receiver, 'T1')]
    assert seen == [('answer', 111, 22), ('repair 1', 333, 44)]
    assert [(s.attributes['codex_orch.round'], s.attributes['gen_ai.usage.input_tokens'])
            for s in rounds_of(receiver, 'T2')] == [('answer', 555)]
    for agent in receiver.named('invoke_agent T1') + receiver.named('invoke_agent T2'):
        task_id = agent.attributes['codex_orch.task.id']
        assert agent.attributes['gen_ai.operation.name'] == 'invoke_agent'
        assert agent.attributes['gen_ai.provider.name'] == agent.attributes['gen_ai.system'] == 'openai'
        assert agent.attributes['gen_ai.conversation.id'] == threads[task_id]
        assert f'task {task_id}' in [a.name for a in receiver.ancestors(agent)]
        (attempt,) = [s for s in receiver.spans if s.parent_span_id == agent.span_id]
        kind = 'initial' if agent.attributes['codex_orch.round'] == 'answer' else 'resume'
        assert attempt.name == f'codex exec {kind}' and attempt.attributes['codex_orch.attempt.outcome'] == 'ok'
    # the checks (failing, then passing after the repair) and the gate, under their task
    checks = receiver.named('check 1')
    assert sorted(c.status for c in checks) == [0, 2]   # unset (passed), error (failed)
    assert all(c.attributes['codex_orch.command'] == CHECK for c in checks)
    assert all('task T1' in [a.name for a in receiver.ancestors(c)] for c in checks)
    (gate,) = receiver.named('gate tests_gate')
    assert gate.attributes['codex_orch.task.id'] == 'T1' and gate.attributes['codex_orch.passed'] is True
    assert gate.parent_span_id == root.span_id
    # each worker had TRACEPARENT of its own round's span, in its task's trace
    agents = receiver.by_id()
    assert len(launches) == 3
    for launch in launches:
        version, trace_id, span_id, flags = launch['traceparent'].split('-')
        assert (version, trace_id) == ('00', root.trace_id) and int(flags, 16) & 1   # sampled
        assert agents[span_id].name == f'invoke_agent {launch["task_id"]}'

    # a second run (a redo of T2) is a trace of its own, with only what it ran in it
    before = len(receiver.spans)
    rc, out, err = host.cli('redo', 'T2', '--run-id', 'traced')
    assert rc == 0, out + err
    again = receiver.spans[before:]
    assert len({s.trace_id for s in again}) == 1 and again[0].trace_id != root.trace_id
    assert sorted(s.name for s in again if s.name.startswith(('codex-orch', 'task'))) == ['codex-orch run', 'task T2']


def test_without_the_endpoint_nothing_is_imported_and_a_dead_endpoint_fails_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    host = make_host(tmp_path, monkeypatch, capsys, {'default': {'answer': 'auto'}})
    host.write_plan({'version': 1, 'title': 'One', 'tasks': [
        {'id': 'T1', 'role': 'implementer', 'title': 'Do it', 'description': 'Do it.', 'paths': ['src/*']}]})
    commit_all(host.repo, 'plan')
    env = {k: v for k, v in __import__('os').environ.items() if not k.startswith('OTEL_')}
    proc = subprocess.run([sys.executable, '-X', 'importtime', '-m', 'orch', 'run', '--plan-file', 'plan.json',
                           '--run-id', 'plain'], cwd=host.repo, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'orch.adapters.tracing' in proc.stderr   # importtime lists what was imported
    assert 'opentelemetry' not in proc.stderr
    # an endpoint where nothing listens: the run goes on, its exit code untouched
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    monkeypatch.setenv('OTEL_EXPORTER_OTLP_ENDPOINT', f'http://127.0.0.1:{port}')
    rc, out, err = host.cli('redo', 'T1', '--run-id', 'plain')
    assert rc == 0, out + err
    assert host.statuses('plain') == {'T1': 'done'} and len(host.launches()) == 2


@pytest.mark.e2e
def test_the_real_codex_s_rounds_carry_the_tokens_the_stand_in_reported(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any, standin: Standin,
        receiver: OtlpReceiver) -> None:
    host: Host = make_host(tmp_path, monkeypatch, capsys)
    use_real_codex(host.repo)
    edit_config(host.repo, None)
    write = '[[standin: write-at {n} src/x.py]]\n```\n{text}\n```\n'
    host.write_plan({'version': 1, 'title': 'Real', 'tasks': [
        {'id': 'T1', 'role': 'implementer', 'title': 'Fix x', 'paths': ['src/*'], 'checks': [CHECK],
         'description': 'Fix x.\n[[standin: usage 70 7 30 3]]\n' + write.format(n=1, text='broken')
         + write.format(n=2, text='fixed')}]})
    commit_all(host.repo, 'plan')
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 0, out + err
    result = host.result('T1')
    assert result['repair_rounds'] == 1
    rounds = rounds_of(receiver, 'T1')
    assert [r.attributes['codex_orch.round'] for r in rounds] == ['answer', 'repair 1']
    reported = [r['usage'] for r in standin.requests_for(result['thread_id']) if r.get('usage')]
    assert reported and all(u['input_tokens'] == 70 for u in reported)
    for key in ('input_tokens', 'output_tokens'):
        assert sum(r.attributes[f'gen_ai.usage.{key}'] for r in rounds) == sum(u[key] for u in reported)
    assert all(r.attributes['gen_ai.usage.input_tokens'] > 0 for r in rounds)
    assert {r.attributes['gen_ai.conversation.id'] for r in rounds} == {result['thread_id']}
