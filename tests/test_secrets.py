"""Secrets in the environment reach codex, not its workers' shells, and nothing codex-orch writes or prints.

Workers that echo a key back (in an error, a command's output, an invalid answer, their answer) must
not make codex-orch copy it into its records, reports, decisions, stdout/stderr or crash logs, nor into
the worker's own logs (events.jsonl, stderr.log, last-message.txt: tests/test_redact_everywhere.py). What workers'
shells get is Codex's shell_environment_policy, set by orch/adapters/worker_env.py (the fake codex
here ignores it; tests/test_e2e_secrets.py runs the real one), and `codex-orch doctor` says which
variables they will not get and whether the model provider's key is there.
"""
from __future__ import annotations

import json
import tempfile
import tomllib
from pathlib import Path

import pytest

from orch.adapters.worker_env import codex_settings, provider_key, withheld_variables, worker_codex_args
from orch.core.config import Config
from tests.support.gitrepo import git
from tests.support.orchtest import Host, make_host

SECRETS = {'OPENAI_API_KEY': 'sk-test-SECRET123', 'CODEX_API_KEY': 'codex-SECRET-456',
           'GITHUB_TOKEN': 'ghp_SECRET789xyz'}


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
    # the workers did get the keys: the fake ran `echo $GITHUB_TOKEN`, and its log has it redacted
    events = (host.run_dir() / 'tasks' / 'B' / 'attempt-1' / 'events.jsonl').read_text()
    assert 'token is [REDACTED]' in events
    assert host.statuses()['B'] == 'done' and host.statuses()['A'] == 'failed'
    assert '[REDACTED]' in host.status()['tasks'][0]['reason']   # the reason is kept, minus the key
    rc2, out2, err2 = host.cli('status', '--json')
    rc3, out3, err3 = host.cli('report')
    printed = out + err + out2 + err2 + out3 + err3
    assert _leaks(printed) == [], printed

    checked = 0
    for path in host.run_dir().rglob('*'):
        if path.is_file():
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
    monkeypatch.setenv('CODEX_ORCH_FULL_CHECK', '1')   # the no-op fast path would answer without it
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


# ---------------------------------------------------------------------------------------------
# What workers' shells get: orch/adapters/worker_env.py


# Always given to workers: /tmp and $TMPDIR are no writable roots of theirs (orch.adapters.worker_env).
TMP_EXCLUDED = ('-c', 'sandbox_workspace_write.exclude_slash_tmp=true',
                '-c', 'sandbox_workspace_write.exclude_tmpdir_env_var=true')
NO_SUB_AGENTS = ('--disable=multi_agent', '--disable=multi_agent_v2')   # and, by default, no sub-agents


def _exclude(args: list[str]) -> list[str]:
    """The exclude list the `-c` arguments set."""
    values = [a.partition('=')[2] for a in args if a.startswith('shell_environment_policy.exclude=')]
    assert len(values) == 1, args
    return tomllib.loads(f'v = {values[0]}')['v']


def _codex_home(tmp_path: Path, text: str) -> Path:
    home = tmp_path / 'codex-home'
    home.mkdir(exist_ok=True)
    (home / 'config.toml').write_text(text)
    return home


WORKER_ENV = {'PATH': '/usr/bin', 'HOME': '/home/u', 'LANG': 'C.UTF-8', 'GITHUB_TOKEN': 'ghp_x', 'GITHUB_SHA': 'abc',
              'DATABASE_URL': 'postgres://u:pw@h/db', 'REDIS_URL': 'redis://:pw@cache', 'NPM_TOKEN': 'npm_x',
              'SERVICE_URL': 'http://localhost:8080', 'OPENAI_API_KEY': 'sk-x', 'AWS_PROFILE': 'dev'}


def test_worker_codex_args_withhold_every_secret_looking_variable_by_name(tmp_path: Path) -> None:
    home = _codex_home(tmp_path, 'model_provider = "corp"\n[model_providers.corp]\nname = "corp"\n'
                                 'base_url = "http://h/v1"\nenv_key = "CORP_LLM"\n'
                                 '[shell_environment_policy]\nexclude = ["MY_OWN_*"]\n')
    env = {**WORKER_ENV, 'CODEX_HOME': str(home), 'CORP_LLM': 'plain'}
    args = worker_codex_args(Config(), env)
    assert args[:4] == list(TMP_EXCLUDED) and args[4] == '-c' and args[6:] == list(NO_SUB_AGENTS)
    assert _exclude(args) == ['MY_OWN_*', 'AWS_PROFILE', 'CORP_LLM', 'DATABASE_URL', 'GITHUB_SHA', 'GITHUB_TOKEN',
                              'NPM_TOKEN', 'OPENAI_API_KEY', 'REDIS_URL']   # the user's own patterns stay
    # pass_env lets a named variable through (globs too), and codex's own name filter cannot undo it
    config = Config.model_validate({'codex': {'pass_env': ['NPM_TOKEN', 'GITHUB_*']}})
    args = worker_codex_args(config, env)
    assert 'NPM_TOKEN' not in _exclude(args) and 'GITHUB_TOKEN' not in _exclude(args)
    assert 'DATABASE_URL' in _exclude(args)
    assert args[-2:] == ['-c', 'shell_environment_policy.ignore_default_excludes=true']
    assert withheld_variables(config, env) == ['AWS_PROFILE', 'CORP_LLM', 'DATABASE_URL', 'OPENAI_API_KEY',
                                               'REDIS_URL']


def test_nothing_to_withhold_adds_no_argument(tmp_path: Path) -> None:
    assert worker_codex_args(Config(), {'PATH': '/usr/bin', 'HOME': str(tmp_path)}) == [*TMP_EXCLUDED, *NO_SUB_AGENTS]


def test_worker_codex_args_default_to_the_environment_codex_gets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv('SOME_SECRET', 'x')
    config = Config.model_validate({'codex': {'env': {'EXTRA_TOKEN': 'y'}}})
    assert {'SOME_SECRET', 'EXTRA_TOKEN'} <= set(_exclude(worker_codex_args(config)))


def test_pass_env_must_name_variables(tmp_path: Path) -> None:
    from orch.core.config import load_config
    from orch.errors import ConfigError
    path = tmp_path / 'orchestrator.yaml'
    path.write_text('codex:\n  pass_env: ["NPM_TOKEN", "A B"]\n')
    with pytest.raises(ConfigError, match=r"codex\.pass_env: 'A B' is not an environment variable name"):
        load_config(path)


def test_codex_settings_read_config_toml_then_the_profile_then_extra_args(tmp_path: Path) -> None:
    home = _codex_home(tmp_path, 'model_provider = "a"\nprofile = "p1"\n[profiles.p1]\nmodel_provider = "b"\n'
                                 '[profiles.p2]\nmodel_provider = "c"\n')
    env = {'CODEX_HOME': str(home)}
    assert codex_settings(Config(), env)['model_provider'] == 'b'
    config = Config.model_validate({'codex': {'extra_args': ['--profile', 'p2']}})
    assert codex_settings(config, env)['model_provider'] == 'c'
    (home / 'p2.config.toml').write_text('model_provider = "d"\n')   # 0.169.0 layers this file for -p p2
    assert codex_settings(config, env)['model_provider'] == 'd'
    config = Config.model_validate({'codex': {'extra_args': [
        '-p', 'p2', '-c', 'model_provider=e', '--config=model_providers.e.env_key="E_KEY"', '-cfoo.bar=[1, 2]',
        '-c', 'plain=not toml']}})
    settings = codex_settings(config, env)
    assert settings['model_provider'] == 'e' and settings['model_providers'] == {'e': {'env_key': 'E_KEY'}}
    assert settings['foo'] == {'bar': [1, 2]} and settings['plain'] == 'not toml'
    assert provider_key(config, {**env, 'E_KEY': 'k'}).found == 'E_KEY'


def test_provider_key_for_the_builtin_openai_provider(tmp_path: Path) -> None:
    home = tmp_path / 'codex-home'
    home.mkdir()
    env = {'CODEX_HOME': str(home)}
    key = provider_key(Config(), {**env, 'OPENAI_API_KEY': 'sk-x'})
    assert key.provider == 'openai' and key.found is None and key.problem
    assert 'OPENAI_API_KEY is set, but codex exec does not read it' in key.problem
    assert 'export it as CODEX_API_KEY' in key.problem and str(home / 'auth.json') in key.problem
    assert provider_key(Config(), {**env, 'CODEX_API_KEY': 'sk-x'}).found == 'CODEX_API_KEY'
    (home / 'auth.json').write_text(json.dumps({'auth_mode': 'apikey', 'OPENAI_API_KEY': 'sk-x'}))
    key = provider_key(Config(), env)
    assert key.found == str(home / 'auth.json') and key.problem is None and 'workers can read' in key.note
    # without CODEX_HOME, codex looks in ~/.codex
    assert provider_key(Config(), {'HOME': str(tmp_path / 'nobody')}).problem
    # a keyring login cannot be checked without asking the keyring: not a failure
    (home / 'auth.json').unlink()
    (home / 'config.toml').write_text('cli_auth_credentials_store = "keyring"\n')
    assert provider_key(Config(), env).problem is None


def test_provider_key_for_other_providers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = _codex_home(tmp_path, 'model_provider = "corp"\n[model_providers.corp]\nenv_key = "CORP_KEY"\n'
                                 '[model_providers.local]\nname = "local"\n')
    env = {'CODEX_HOME': str(home)}
    key = provider_key(Config(), env)
    assert key.problem == "model provider 'corp' reads its key from CORP_KEY, which is not set in the environment " \
                          'codex gets'
    assert provider_key(Config(), {**env, 'CORP_KEY': 'x'}).found == 'CORP_KEY'
    # by default the environment is what codex gets: ours plus the config's codex.env
    monkeypatch.setenv('CODEX_HOME', str(home))
    monkeypatch.delenv('CORP_KEY', raising=False)
    assert provider_key(Config()).problem
    assert provider_key(Config.model_validate({'codex': {'env': {'CORP_KEY': 'x'}}})).found == 'CORP_KEY'
    local = Config.model_validate({'codex': {'extra_args': ['-c', 'model_provider="local"']}})
    assert provider_key(local, env).problem is None and provider_key(local, env).found is None
    unknown = Config.model_validate({'codex': {'extra_args': ['-c', 'model_provider=nope']}})
    assert "model provider 'nope' is not defined" in (provider_key(unknown, env).problem or '')


def _doctor_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                 config: str = '') -> Host:
    host = make_host(tmp_path, monkeypatch, capsys)
    (host.repo / '.orchestrator' / 'orchestrator.yaml').write_text(config)
    for name in ('OPENAI_API_KEY', 'CODEX_API_KEY', 'GITHUB_TOKEN', 'NPM_TOKEN', 'DATABASE_URL'):
        monkeypatch.delenv(name, raising=False)
    return host


def _line(out: str, check: str) -> str:
    [line] = [line for line in out.splitlines() if line[6:].startswith(check + ':')]
    return line


def test_doctor_checks_the_providers_key_and_names_what_workers_shells_will_not_get(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    host = _doctor_host(tmp_path, monkeypatch, capsys, 'codex:\n  pass_env: [NPM_TOKEN]\n')
    home = _codex_home(tmp_path, 'model_provider = "mock"\n[model_providers.mock]\nname = "mock"\n'
                                 'base_url = "http://127.0.0.1:9/v1"\nenv_key = "MOCK_API_KEY"\n')
    monkeypatch.setenv('CODEX_HOME', str(home))
    monkeypatch.delenv('MOCK_API_KEY', raising=False)
    monkeypatch.setenv('GITHUB_TOKEN', 'ghp_doctor0123456789abcdefghijklmnop')
    monkeypatch.setenv('DATABASE_URL', 'postgres://u:pw@h/db')
    monkeypatch.setenv('NPM_TOKEN', 'npm_x')
    rc, out, err = host.cli('doctor')
    assert rc == 1, out + err
    assert _line(out, 'model provider key') == ("FAIL  model provider key: model provider 'mock' reads its key from "
                                                'MOCK_API_KEY, which is not set in the environment codex gets')
    workers = _line(out, 'worker environment')
    assert workers.startswith("ok    worker environment: ") and 'withheld from workers\' shells: ' in workers
    assert 'DATABASE_URL' in workers and 'GITHUB_TOKEN' in workers
    assert workers.endswith('passed through by codex.pass_env: NPM_TOKEN')
    assert 'ghp_doctor' not in out and 'pw@' not in out          # names only, never values
    monkeypatch.setenv('MOCK_API_KEY', 'mock-key-value')
    rc, out, err = host.cli('doctor')
    assert rc == 0, out + err
    assert _line(out, 'model provider key') == \
        "ok    model provider key: model provider 'mock': key MOCK_API_KEY is set"
    assert 'MOCK_API_KEY' in _line(out, 'worker environment') and 'mock-key-value' not in out


def test_doctor_says_codex_exec_does_not_read_openai_api_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    host = _doctor_host(tmp_path, monkeypatch, capsys)
    monkeypatch.setenv('OPENAI_API_KEY', 'sk-test-doctor0123456789')
    rc, out, err = host.cli('doctor')
    assert rc == 1
    line = _line(out, 'model provider key')
    assert line.startswith("FAIL  model provider key: model provider 'openai' needs CODEX_API_KEY")
    assert 'printenv OPENAI_API_KEY | codex login --with-api-key' in line and 'sk-test-doctor' not in out
    monkeypatch.setenv('CODEX_API_KEY', 'sk-test-doctor0123456789')
    rc, out, err = host.cli('doctor')
    assert rc == 0, out
    assert _line(out, 'model provider key') == \
        "ok    model provider key: model provider 'openai': key CODEX_API_KEY is set"
    monkeypatch.setenv('CODEX_HOME', str(tmp_path / 'missing'))
    rc, out, err = host.cli('doctor')
    assert rc == 1 and 'codex refuses to start' in _line(out, 'model provider key')
