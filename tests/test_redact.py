"""orch.core.redact by value: environment secrets, tokens of well-known shapes, URL passwords."""
from __future__ import annotations

import random
import time

import pytest

from orch.core.redact import MARK, is_secret_variable, redact, redact_obj, redact_shared, secret_values

pytestmark = pytest.mark.unit   # the pure core: no processes, no git


def test_values_of_secret_looking_variables_are_redacted_wherever_they_appear() -> None:
    env = {'DATABASE_URL': 'postgres://u:pw@h/db', 'MY_PASSWD': 'correct-horse', 'SENTRY_DSN': 'https://k3y@o1.sentry.io/1',
           'GITLAB_PAT': 'abcdefgh12', 'DEPLOY_PRIVATE': 'blob-of-key-material', 'SESSION_COOKIE': 'c00kie-value',
           'GIT_AUTHOR_NAME': 'Jane Developer', 'XAUTHORITY': '/run/user/1/xauth', 'SHORT_TOKEN': 'abc',
           'PATH': '/usr/bin', 'LANG': 'en_US.UTF-8'}
    values = secret_values(env)
    assert set(values) == {'postgres://u:pw@h/db', 'correct-horse', 'https://k3y@o1.sentry.io/1', 'abcdefgh12',
                           'blob-of-key-material', 'c00kie-value'}
    assert values == sorted(values, key=len, reverse=True)
    text = 'db postgres://u:pw@h/db, pass correct-horse; dsn https://k3y@o1.sentry.io/1 by Jane Developer'
    assert redact(text, values) == f'db {MARK}, pass {MARK}; dsn {MARK} by Jane Developer'


def test_a_value_containing_another_is_replaced_whole() -> None:
    values = secret_values({'A_TOKEN': 'abcdefgh', 'B_TOKEN': 'xxabcdefghyy'})
    assert redact('1 xxabcdefghyy 2 abcdefgh', values) == f'1 {MARK} 2 {MARK}'


@pytest.mark.parametrize('text, expected', [
    ('DATABASE_URL=postgres://u:pw@h/db', f'DATABASE_URL=postgres://u:{MARK}@h/db'),
    ('redis://:s3cret@cache:6379/0', f'redis://:{MARK}@cache:6379/0'),
    ('clone https://bot:p@ss@git.example.com/x.git now', f'clone https://bot:{MARK}@git.example.com/x.git now'),
    ('"amqp://guest:guest@rabbit/"', f'"amqp://guest:{MARK}@rabbit/"'),
    ('pip -i https://__token__:pypi-AgEIcHlwaS5vcmc@host/simple', f'pip -i https://__token__:{MARK}@host/simple'),
])
def test_the_password_of_a_url_is_redacted_and_the_rest_kept(text: str, expected: str) -> None:
    assert redact(text, []) == expected


@pytest.mark.parametrize('text', [
    'https://example.com:443/path?q=1#frag and http://localhost:8080',
    'git@github.com:org/repo.git and ssh://git@github.com:22/org/repo',
    'mail me at jane@example.com: thanks',
    'the URL scheme "://" alone, or a:b@c without one',
])
def test_urls_without_a_password_are_kept(text: str) -> None:
    assert redact(text, []) == text


@pytest.mark.parametrize('token, shown', [
    ('sk-proj-abcDEF1234567890abcdefXYZ', 'sk-'),
    ('sk-ant-api03-abcdefghijklmnop1234', 'sk-'),
    ('ghp_' + 'a1B2' * 9, 'ghp_'),
    ('gho_abcdefghijklmnopqrst1234', 'gho_'),
    ('ghs_abcdefghijklmnopqrst1234', 'ghs_'),
    ('github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz', 'github_pat_'),
    ('glpat-abcdefghij1234567890', 'glpat-'),
    ('xoxb-1234567890-0987654321-abcdefghij', 'xoxb-'),
    ('xoxp-1234567890-abcdefghijkl', 'xoxp-'),
    ('npm_' + 'b7' * 18, 'npm_'),
    ('sk_live_abcdefghij0123456789', 'sk_live_'),
    ('AKIAIOSFODNN7EXAMPLE', ''),
    ('ASIAABCDEFGHIJKLMNOP', ''),
    ('AIzaSyA-1234567890abcdefghijklmnopqrstu', ''),
    ('eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U', 'ey'),
])
def test_tokens_of_well_known_shapes_are_redacted(token: str, shown: str) -> None:
    for text in (token, f'the key {token}.', f'"{token}"', f'key={token}\n', f'({token})'):
        redacted = redact(text, [])
        assert token not in redacted and token[len(shown):] not in redacted, text
        assert shown + MARK in redacted, redacted


def test_bearer_tokens_are_redacted_and_the_scheme_kept() -> None:
    assert redact('Authorization: Bearer abc123def456ghi789', []) == f'Authorization: Bearer {MARK}'
    assert redact('authorization: bearer eyJabc.def123.ghi456', []) == f'authorization: bearer {MARK}'
    prose = 'bearer tokenization and the Bearer of bad news'
    assert redact(prose, []) == prose


def test_pem_private_keys_are_redacted_whole_also_escaped_or_cut_off() -> None:
    pem = '-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA1234+/==\nabcd\n-----END RSA PRIVATE KEY-----\n'
    assert redact(f'key:\n{pem}done.', []) == f'key:\n{MARK}\ndone.'
    escaped = pem.replace('\n', '\\n')
    assert redact(f'"{escaped}"', []) == f'"{MARK}\\n"'
    cut = '-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAA'
    assert redact(cut, []) == MARK
    public = '-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----'
    assert redact(public, []) == public


@pytest.mark.parametrize('text', [
    'task-abcdefghijklmnopqrstuvw12 and disk-abcdefghijklmnopqrstuvwxyz1',   # sk- inside a word
    'sk-learn-compatible-estimators-and-pipelines',                          # no digit: a word, not a key
    'gh_pages, ghp_short, npm_config_cache, self._private_attr, snake_case_name',
    'AKIA is the prefix of AWS key ids; XAKIAIOSFODNN7EXAMPLE is not one',
    'commit e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 on refs/heads/main',
    'the reference says: see https://docs.example.com/a-b_c and "x-y-z"',
    MARK, f'postgres://u:{MARK}@h/db',
])
def test_ordinary_text_is_kept(text: str) -> None:
    assert redact(text, []) == text


def test_redacting_twice_changes_nothing_more() -> None:
    text = 'Bearer abc123def456ghi postgres://u:pw@h/db ghp_abcdefghijklmnopqrstuvwxyz01 s3cr3t-value-1'
    once = redact(text, ['s3cr3t-value-1'])
    assert redact(once, ['s3cr3t-value-1']) == once
    assert 'pw@' not in once and 's3cr3t' not in once


def test_redact_obj_walks_keys_values_lists_and_tuples_and_keeps_other_types() -> None:
    obj = {'summary': 'used postgres://u:pw@h/db', 'n': 3, 'ok': True, 'none': None,
           'files': ['a.py', ('ghp_abcdefghijklmnopqrstuvwxyz01',)], 'sk-abcdefghijklmnopqrstuv12': 'key',
           'nested': {'k': ['hunter2hunter2']}}
    assert redact_obj(obj, ['hunter2hunter2']) == {
        'summary': f'used postgres://u:{MARK}@h/db', 'n': 3, 'ok': True, 'none': None,
        'files': ['a.py', [f'ghp_{MARK}']], f'sk-{MARK}': 'key', 'nested': {'k': [MARK]}}


def test_the_environment_is_read_when_no_values_are_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv('SOME_API_KEY', 'plain-value-42')
    monkeypatch.setenv('DATABASE_URL', 'mysql://root:rootpw@db/app')
    assert redact('plain-value-42 / mysql://root:rootpw@db/app') == f'{MARK} / {MARK}'
    assert redact_obj({'x': 'plain-value-42'}) == {'x': MARK}
    # short explicit values still count (the caller chose them)
    assert redact('pw=abc', ['abc']) == f'pw={MARK}'


def test_a_change_of_the_environment_is_seen_at_the_next_redaction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv('SOME_API_KEY', 'first-value-42')
    assert redact_obj({'x': 'first-value-42'}) == {'x': MARK}
    monkeypatch.setenv('SOME_API_KEY', 'second-value-42')   # changed: the new value goes, the old one is text
    assert redact_obj({'x': 'first-value-42 second-value-42'}) == {'x': f'first-value-42 {MARK}'}
    monkeypatch.setenv('OTHER_TOKEN', 'third-value-42')      # added
    assert redact('third-value-42') == MARK
    monkeypatch.delenv('SOME_API_KEY')                        # removed
    assert redact('second-value-42 third-value-42') == f'second-value-42 {MARK}'


def test_the_environment_is_searched_for_secrets_once_per_state_of_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from orch.core import redact as module
    monkeypatch.setenv('SOME_API_KEY', 'plain-value-42')
    calls: list[int] = []
    real = module.secret_values

    def counted(env: object = None) -> list[str]:
        calls.append(1)
        return real(env)   # type: ignore[arg-type]
    monkeypatch.setattr(module, 'secret_values', counted)
    for _ in range(100):
        assert redact_obj({'x': 'plain-value-42'}) == {'x': MARK}
    assert len(calls) <= 1
    monkeypatch.setenv('SOME_API_KEY', 'plain-value-43')
    for _ in range(100):
        assert redact('plain-value-43') == MARK
    assert len(calls) <= 2   # it was 200: 0.1 ms each, 0.3 s for the 3,000 task entries of a resume of 1,000 tasks


@pytest.mark.parametrize('name, value, secret', [
    ('GITHUB_TOKEN', 'ghp_x', True), ('GH_TOKEN', 'x', True), ('NPM_TOKEN', 'x', True),
    ('OPENAI_API_KEY', 'sk-1', True), ('AWS_SECRET_ACCESS_KEY', 'x', True), ('MY_APIKEY', 'x', True),
    ('DB_PASSWORD', 'x', True), ('LDAP_PASSWD', 'x', True), ('GOOGLE_APPLICATION_CREDENTIALS', '/k.json', True),
    ('SSH_PRIVATE_KEY', 'x', True), ('DATABASE_URL', 'postgres://localhost/db', True),
    ('GITHUB_SHA', 'e3b0c442', True), ('AWS_REGION', 'eu-west-1', True), ('GH_HOST', 'github.com', True),
    ('REDIS_URL', 'redis://:pw@cache', True), ('SOME_VAR', 'ghp_abcdefghijklmnopqrstuvwxyz01', True),
    ('PATH', '/usr/bin', False), ('HOME', '/root', False), ('LANG', 'C.UTF-8', False),
    ('GIT_AUTHOR_NAME', 'Jane', False), ('CODEX_HOME', '/x/.codex', False), ('SERVICE_URL', 'http://h:80/', False),
])
def test_which_variables_workers_shells_must_not_inherit(name: str, value: str, secret: bool) -> None:
    assert is_secret_variable(name, value) is secret


def test_a_megabyte_is_redacted_quickly_even_when_it_is_made_of_near_misses() -> None:
    prose = ('The worker updated src/greet.py: def greet(name) -> str, see https://example.com:443/a-b_c '
             'and task-abc_def; sk-learn, gh_pages, AKIA, Bearer of news, eyJ. ') * 8000
    texts = [prose[:1_000_000], '-' * 1_000_000, '_' * 1_000_000, ':/' * 500_000, 'A' * 1_000_000,
             'sk-' * 333_333, '-----BEGIN PRIVATE KEY-----!' * 36_000]
    values = ['sk-test-SECRET123abcdef', 'hunter2hunter2', 'postgres://u:pw@h/db']
    for text in texts:
        started = time.perf_counter()
        redacted = redact(text, values)
        assert time.perf_counter() - started < 1.0, text[:40]   # about 10-50 ms here; linear, no backtracking
        assert redacted == (text if 'BEGIN' not in text else f'{MARK}!' * 36_000)


SHARED_SECRETS = ['correct-horse-battery', 'with"quote-secret', 'back\\slash-secret', 'ünïcode-secret-ü']
SHARED_PIECES = ['', 'ok', 'T00001', 'a\nb', 'quote " here', 'sk-proj-abcdefghij0123456789XYZ', 'ghp_' + 'a1' * 12,
                 'Bearer abc123def456', 'https://bot:pw@host/x', 'AKIAABCDEFGHIJKLMNOP', '"', '\\', 'ü',
                 *SHARED_SECRETS]


def _shared_sample(rnd: random.Random, depth: int = 0) -> object:
    kind = rnd.randrange(7 if depth < 3 else 4)
    if kind == 0:
        return rnd.choice([None, True, 3, 2.5])
    if kind <= 3:   # a string: pieces glued together, so that a secret can sit at either end or inside
        return ''.join(rnd.choice(SHARED_PIECES) for _ in range(rnd.randint(0, 3)))
    if kind <= 5:
        return {str(_shared_sample(rnd, 3)): _shared_sample(rnd, depth + 1) for _ in range(rnd.randint(0, 4))}
    return [_shared_sample(rnd, depth + 1) for _ in range(rnd.randint(0, 4))]


def test_redact_shared_redacts_exactly_what_redact_obj_does() -> None:
    rnd = random.Random(11)
    changed = 0
    for _ in range(3000):
        data = {'tasks': [_shared_sample(rnd) for _ in range(rnd.randint(0, 4))], 'run': _shared_sample(rnd)}
        expected = redact_obj(data, SHARED_SECRETS)
        assert redact_shared(data, SHARED_SECRETS) == expected, data
        changed += expected != data
    assert changed > 500   # the samples do hold secrets, in every place


def test_redact_shared_shares_what_it_need_not_change() -> None:
    clean = {'id': 'T1', 'summary': 'Done.'}
    leaky = {'id': 'T2', 'summary': 'key sk-proj-abcdefghij0123456789XYZ'}
    data = {'tasks': [clean, leaky], 'run': {'run_id': 'r'}}
    out = redact_shared(data, [])
    assert out['tasks'][0] is clean and out['run'] is data['run']
    assert out['tasks'][1] == {'id': 'T2', 'summary': f'key sk-{MARK}'} and leaky['summary'].endswith('XYZ')
    assert redact_shared(clean, []) is clean
