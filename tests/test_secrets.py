"""Secrets in the environment reach the workers, and nothing codex-orch itself writes or prints.

Workers that echo a key back (in an error, a command's output, an invalid answer, their answer) must
not make codex-orch copy it into its records, reports, decisions, stdout/stderr or crash logs. The
worker's own raw logs (events.jsonl, stderr.log, last-message.txt) are the worker's.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from tests.support.gitrepo import git
from tests.support.orchtest import Host, make_host

SECRETS = {'OPENAI_API_KEY': 'sk-test-SECRET123', 'CODEX_API_KEY': 'codex-SECRET-456',
           'GITHUB_TOKEN': 'ghp_SECRET789xyz'}
WORKERS_OWN = {'events.jsonl', 'stderr.log', 'last-message.txt'}


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Host:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    h = make_host(tmp_path, monkeypatch, capsys, {'default': {'answer': 'auto'}})
    (h.repo / '.orchestrator' / 'orchestrator.yaml').write_text(
        'defaults:\n  failure_retries: 0\n  schema_retries: 1\n  retry_backoff: 0\n')
    return h


def _task(tid: str, **extra: object) -> dict:
    return {'id': tid, 'role': 'implementer', 'title': f'Task {tid}', 'description': f'Do {tid}.',
            'paths': [f'{tid.lower()}.txt'], **extra}


def _leaks(text: str) -> list[str]:
    return [name for name, value in SECRETS.items() if value in text]


def test_nothing_codex_orch_writes_or_prints_contains_a_secret(host: Host, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    step_summary = tmp_path / 'step-summary.md'
    monkeypatch.setenv('GITHUB_STEP_SUMMARY', str(step_summary))
    key, codex_key, token = SECRETS.values()
    answer = {'status': 'done', 'summary': f'Used {codex_key} to call the API.', 'files_changed': ['b.txt'],
              'decisions': [{'decision': f'Store the token {token}', 'rationale': f'because {key} expires'}],
              'follow_ups': [f'rotate {key}']}
    host.write_plan({'version': 1, 'tasks': [_task('A'), _task('B'), _task('C'), _task('D')]})
    host.script({'default': {'answer': 'auto'}, 'tasks': {
        'A': {'fail': f'401 Unauthorized: Incorrect API key provided: {key}'},
        'B': {'answer': answer, 'edits': {'b.txt': 'b\n'},
              'commands': ['echo "token is $GITHUB_TOKEN"', 'env | grep -c _KEY']},
        'C': {'answer': {'status': key, 'summary': token, 'files_changed': [], 'decisions': [], 'follow_ups': []}},
        'D': {'exit': 3, 'usage': {'input_tokens': 1, 'output_tokens': 1}},
    }})
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--continue', '-v')
    assert rc == 1
    # the workers did get the keys: the fake ran `echo $GITHUB_TOKEN` in its own log
    events = (host.run_dir() / 'tasks' / 'B' / 'attempt-1' / 'events.jsonl').read_text()
    assert token in events
    assert host.statuses()['B'] == 'done' and host.statuses()['A'] == 'failed'
    assert '[REDACTED]' in host.status()['tasks'][0]['reason']   # the reason is kept, minus the key
    rc2, out2, err2 = host.cli('status', '--json')
    rc3, out3, err3 = host.cli('report')
    printed = out + err + out2 + err2 + out3 + err3
    assert _leaks(printed) == [], printed

    checked = 0
    for path in host.run_dir().rglob('*'):
        if path.is_file() and path.name not in WORKERS_OWN:
            assert _leaks(path.read_bytes().decode('utf-8', 'replace')) == [], path
            checked += 1
    assert checked > 20
    names = {p.name for p in host.run_dir().rglob('*')}
    assert {'run.json', 'state.json', 'result.json', 'attempt.json', 'report.md', 'summary.json', 'junit.xml',
            'doit.db', 'prompt.txt'} <= names
    # the decisions entry and the commit codex-orch made
    wt = host.repo / '.orchestrator' / 'worktrees' / host.run_dir().name
    decisions = (wt / 'docs' / 'ai' / 'decisions.md').read_text()
    assert 'Store the token [REDACTED]' in decisions and _leaks(decisions) == []
    assert _leaks(git(wt, 'log', '-p', '--format=%B%n%an%n%ae')) == []
    assert _leaks(step_summary.read_text()) == []


def test_crash_log_holds_no_secret(host: Host, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import orch.commands.status as status_cmd
    key = SECRETS['OPENAI_API_KEY']

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError(f'unexpected: {key}')

    host.write_plan({'version': 1, 'tasks': [_task('A')]})
    assert host.cli('run', '--plan-file', 'plan.json')[0] == 0
    logs = tmp_path / 'logs'
    logs.mkdir()
    monkeypatch.setattr(tempfile, 'tempdir', str(logs))
    monkeypatch.setattr(status_cmd, 'status_document', boom)
    rc, out, err = host.cli('status')
    assert rc == 3 and 'internal error' in err and str(logs) in err
    assert _leaks(out + err) == []
    [log] = list(logs.glob('codex-orch-crash-*.log'))
    text = log.read_text()
    assert 'RuntimeError' in text and '[REDACTED]' in text and _leaks(text) == []


def test_redaction_rules() -> None:
    from orch.core.redact import MARK, redact, redact_obj, secret_values
    env = {'OPENAI_API_KEY': 'sk-abcdefgh', 'MY_TOKEN': 'tok-12345678', 'SHORT_KEY': '1',
           'SSH_AUTH_SOCK': '/tmp/ssh-x/agent.1', 'PATH': '/usr/bin', 'HOME_SECRET_NOT': 'abc',
           'DB_PASSWORD': 'hunter2hunter2', 'AUTH_INNER': 'sk-abc'}
    values = secret_values(env)
    assert values == ['hunter2hunter2', 'tok-12345678', 'sk-abcdefgh']
    assert redact('key sk-abcdefgh and tok-12345678.', values) == f'key {MARK} and {MARK}.'
    assert redact_obj({'a': ['x hunter2hunter2'], 'n': 3, 'sk-abcdefgh': None}, values) == \
        {'a': [f'x {MARK}'], 'n': 3, MARK: None}
    assert redact('/tmp/ssh-x/agent.1', values) == '/tmp/ssh-x/agent.1'
