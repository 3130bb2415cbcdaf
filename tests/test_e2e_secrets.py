"""Secrets stay out, with the real Codex CLI against the stand-in.

A worker's shell gets no secret-looking variable (orch/adapters/worker_env.py), and a secret a worker
quotes reaches none of codex-orch's records (orch/core/redact.py). The stand-in can only make edits
through `apply_patch`; here it is taught one more trick: a `write RUN` directive whose fenced block is
run as a shell command (`exec_command`), as a model running `env > env.txt` would.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import orch.standin.responses as standin_responses
from orch.adapters.codex_bin import find_codex
from orch.adapters.worker_env import worker_codex_args
from orch.core.config import Config
from orch.standin.server import API_KEY_ENV, Standin
from tests.support.gitrepo import commit_all, git
from tests.support.orchtest import Host, make_host
from tests.support.realcodex import use_real_codex

pytestmark = pytest.mark.e2e

TOKEN = 'ghp_e2eSECRETtoken0123456789abcdefghij'
NPM = 'npm_e2eSECRETnpm0123456789abcdefghijklm'
DATABASE_URL = 'postgres://u:pw@h/db'
SECRETS = {'GITHUB_TOKEN': TOKEN, 'DATABASE_URL': DATABASE_URL, 'NPM_TOKEN': NPM,
           'AWS_SECRET_ACCESS_KEY': 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY'}


def run_directive(command: str) -> str:
    return f'[[standin: write RUN]]\n```\n{command}\n```\n'


@pytest.fixture
def shell_standin(standin: Standin, monkeypatch: pytest.MonkeyPatch) -> Standin:
    """The stand-in, with `write RUN` running its block as a shell command instead of writing a file."""
    original = standin_responses.edit_call_item

    def edit_or_run(view: Any, writes: Sequence[tuple[str, str]], n_items: int) -> dict[str, Any]:
        item = original(view, writes, n_items)
        commands = [content for path, content in writes if path == 'RUN']
        if commands:
            item['arguments'] = json.dumps({'cmd': '\n'.join(commands)})
        return item

    monkeypatch.setattr(standin_responses, 'edit_call_item', edit_or_run)
    return standin


@pytest.fixture
def secrets_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv('ORCH_E2E_PLAIN', 'plain-value')


def env_names(dump: str) -> set[str]:
    return {line.split('=', 1)[0] for line in dump.splitlines() if '=' in line}


# ---------------------------------------------------------------------------------------------
# worker_codex_args with the real CLI: what a command the model runs sees


def codex_exec(tmp_path: Path, extra: list[str], prompt: str, resume: str | None = None) -> dict[str, Any]:
    binary = find_codex()
    assert binary
    workdir = tmp_path / 'wt'
    workdir.mkdir(exist_ok=True)
    argv = [binary, 'exec', '--json', '--skip-git-repo-check', '-C', str(workdir), '--sandbox', 'workspace-write',
            *extra, *(['resume', resume] if resume else []), '-']
    proc = subprocess.run(argv, input=prompt, capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert events[-1]['type'] == 'turn.completed'
    return {'thread': events[0].get('thread_id'), 'events': events}


def test_a_command_the_model_runs_sees_no_secret_and_codex_still_reaches_the_model(
        tmp_path: Path, shell_standin: Standin, secrets_env: None) -> None:
    config = Config.model_validate({'codex': {'pass_env': ['NPM_TOKEN']}})
    args = worker_codex_args(config)
    first = codex_exec(tmp_path, args, 'Dump it.\n' + run_directive('env > env.txt'))
    dump = (tmp_path / 'wt' / 'env.txt').read_text()
    names = env_names(dump)
    assert 'ORCH_E2E_PLAIN' in names and 'PATH' in names and 'HOME' in names   # the rest passes through
    assert not names & {'GITHUB_TOKEN', 'DATABASE_URL', 'AWS_SECRET_ACCESS_KEY', API_KEY_ENV}, sorted(names)
    assert TOKEN not in dump and 'pw@' not in dump
    assert f'NPM_TOKEN={NPM}' in dump                                          # codex.pass_env
    # codex itself had its key: the stand-in answered every request it got
    assert shell_standin.requests and all(r['status'] == 200 for r in shell_standin.requests)
    # a resumed thread restores no settings: the same arguments hold there too
    codex_exec(tmp_path, args, 'Again.\n' + run_directive('env > env2.txt'), resume=first['thread'])
    again = env_names((tmp_path / 'wt' / 'env2.txt').read_text())
    assert 'ORCH_E2E_PLAIN' in again and 'GITHUB_TOKEN' not in again and API_KEY_ENV not in again


def test_without_the_arguments_the_shell_sees_everything(tmp_path: Path, shell_standin: Standin,
                                                        secrets_env: None) -> None:
    """What the arguments fix (codex 0.169.0's default): proof that the test above can fail."""
    codex_exec(tmp_path, [], 'Dump it.\n' + run_directive('env > env.txt'))
    assert f'GITHUB_TOKEN={TOKEN}' in (tmp_path / 'wt' / 'env.txt').read_text()


# ---------------------------------------------------------------------------------------------
# codex-orch runs


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
         shell_standin: Standin, secrets_env: None) -> Host:
    h = make_host(tmp_path, monkeypatch, capsys)
    use_real_codex(h.repo, 'roles:\n  implementer:\n    failure_retries: 0\n')
    commit_all(h.repo, 'use the real codex')
    return h


def run_branch_log(host: Host) -> str:
    return git(host.repo, 'log', '-p', '--format=%H%n%B%n%an <%ae>', host.shared_branch())


def test_a_worker_dumping_its_environment_commits_no_token(host: Host) -> None:
    host.write_plan({'version': 1, 'tasks': [{
        'id': 'T1', 'role': 'implementer', 'title': 'Dump the environment', 'paths': ['env.txt'],
        'description': 'Write the environment to env.txt.\n' + run_directive('env > env.txt')}]})
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 0, out + err
    log = run_branch_log(host)
    committed = set(re.findall(r'^\+([A-Za-z_][A-Za-z0-9_]*)=', log, re.MULTILINE))   # variables in env.txt
    assert 'ORCH_E2E_PLAIN' in committed            # the command ran, and its output was committed
    assert TOKEN not in log and not _has_pw(log)
    assert not committed & {*SECRETS, API_KEY_ENV}, sorted(committed)


def _records(host: Host) -> dict[str, str]:
    run = host.run_dir()
    found = {str(p.relative_to(run)): p.read_text() for p in run.rglob('*')
             if p.name in ('result.json', 'state.json', 'report.md', 'summary.json', 'junit.xml', 'run.json',
                           'attempt.json', 'task.json')}
    assert {'report.md', 'summary.json', 'junit.xml', 'tasks/T1/result.json', 'tasks/T1/state.json'} <= set(found)
    found['git log -p'] = run_branch_log(host)
    return found


def _has_pw(text: str) -> bool:
    return re.search(r'(?<![A-Za-z0-9])pw(?![A-Za-z0-9])', text) is not None


def test_a_password_a_worker_quotes_reaches_none_of_codex_orchs_records(host: Host, shell_standin: Standin) -> None:
    other = 'mysql://admin:hunter2@db.internal/app'   # in no variable: only its shape gives it away
    answer = {'status': 'done', 'summary': f'Connected with DATABASE_URL={DATABASE_URL} and {other}.',
              'files_changed': ['notes.txt'],
              'decisions': [{'decision': f'Use {DATABASE_URL}', 'rationale': f'{TOKEN} can read it'}],
              'follow_ups': [f'rotate the password of {other}']}
    shell_standin.forced = f'[[standin: answer {json.dumps(answer)}]]'   # never in the plan or the prompt
    host.write_plan({'version': 1, 'tasks': [{
        'id': 'T1', 'role': 'implementer', 'title': 'Connect', 'paths': ['notes.txt'],
        'description': 'Connect to the database.\n[[standin: write notes.txt]]\n```\nconnected\n```\n'}]})
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 0, out + err
    rc2, out2, err2 = host.cli('report')
    assert rc2 == 0, out2 + err2
    records = _records(host)
    for where, text in {**records, 'output': out + err + out2 + err2}.items():
        assert not _has_pw(text) and 'hunter2' not in text and TOKEN not in text, where
    result = json.loads(records['tasks/T1/result.json'])
    assert result['answer']['summary'] == \
        'Connected with DATABASE_URL=[REDACTED] and mysql://admin:[REDACTED]@db.internal/app.'
    assert 'Use [REDACTED]' in records['git log -p']   # the decisions entry, committed with the task


def test_a_password_in_a_task_title_stays_out_of_the_commit_message(host: Host) -> None:
    host.write_plan({'version': 1, 'tasks': [{
        'id': 'T1', 'role': 'implementer', 'title': 'Point the app at mysql://admin:hunter2@db.internal/app',
        'paths': ['notes.txt'],
        'description': 'Note it.\n[[standin: write notes.txt]]\n```\nnoted\n```\n'}]})
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 0, out + err
    message = git(host.repo, 'log', '-1', '--format=%B', host.shared_branch())
    assert message.startswith('T1: Point the app at mysql://admin:[REDACTED]@db.internal/app'), message
