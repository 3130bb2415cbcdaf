"""Issue 20 end to end, with the real Codex CLI (pinned) against the local model stand-in and real git remotes:
repository A pays for a 4-task plan (a check, a reviewer round) and pushes its cache; a fresh clone B with no
provider key and no reachable model builds the same tree from the cache, its checks running in B."""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from orch.standin.server import API_KEY_ENV, Standin
from tests.support.gitrepo import bare_origin, commit_all, git
from tests.support.orchtest import Host, make_host
from tests.support.realcodex import use_real_codex

pytestmark = pytest.mark.e2e

GREET = "def greet(name):\n    return f'Hello, {name}'\n"
CHECK = 'grep -q "def greet" src/greet.py && echo "check ran in $(pwd)" >&2'


def plan(doc_description: str = 'Write the docs.') -> dict[str, Any]:
    def write(path: str, body: str) -> str:
        return f'[[standin: write {path}]]\n```\n{body}```\n'
    return {'version': 1, 'title': 'Greeting', 'tasks': [
        {'id': 'T1', 'role': 'implementer', 'title': 'Add greet()', 'paths': ['src/greet.py'], 'checks': [CHECK],
         'description': 'Create src/greet.py.\n' + write('src/greet.py', GREET)},
        {'id': 'T2', 'role': 'tester', 'title': 'Test greet()', 'depends_on': ['T1'], 'paths': ['tests/test_greet.py'],
         'description': 'Add a test.\n' + write('tests/test_greet.py', 'import src.greet\n')},
        {'id': 'T3', 'role': 'implementer', 'title': 'Docs', 'paths': ['docs/greet.md'],
         'description': doc_description + '\n' + write('docs/greet.md', '# greet\n')},
        {'id': 'T4', 'role': 'reviewer', 'title': 'Review', 'depends_on': ['T2', 'T3'],
         'description': 'Review.\n[[standin: review-once name the parameter better]]\n'},
    ]}


def test_a_clone_without_key_or_model_builds_the_plan_from_the_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        standin: Standin) -> None:
    a = make_host(tmp_path, monkeypatch, capsys)
    use_real_codex(a.repo, 'cache: {remote: origin}\n')
    a.write_plan(plan())
    commit_all(a.repo, 'plan, with the real codex and the cache')
    remote = bare_origin(a.repo, tmp_path)

    rc, out, err = a.cli('run', '--plan-file', 'plan.json', '--run-id', 'ra')
    assert rc == 0, out + err
    assert a.result('T4')['review_rounds'] >= 1
    paid = len(standin.requests)
    assert paid >= 5
    assert len(git(remote, 'for-each-ref', 'refs/codex-orch/cache/').splitlines()) == 4   # pushed after the run

    b_repo = tmp_path / 'b'
    subprocess.run(['git', 'clone', '--quiet', '--branch', 'main', str(remote), str(b_repo)], check=True)
    for key, value in (('user.name', 'T'), ('user.email', 't@example.com')):
        git(b_repo, 'config', key, value)
    b = Host(repo=b_repo, bin=a.bin, capsys=capsys)
    standin.close()                      # no reachable model
    monkeypatch.delenv(API_KEY_ENV)      # and no provider key
    rc, out, err = b.cli('run', '--plan-file', 'plan.json', '--run-id', 'rb')   # pulls the cache first
    assert rc == 0, out + err
    assert len(standin.requests) == paid
    assert b.statuses('rb') == dict.fromkeys(('T1', 'T2', 'T3', 'T4'), 'done')
    a_tree = git(a.repo, 'rev-parse', f'{a.shared_branch()}^{{tree}}')
    assert git(b.repo, 'rev-parse', f'{b.shared_branch()}^{{tree}}') == a_tree
    for task in ('T1', 'T2', 'T3', 'T4'):
        assert b.result(task)['cache']['hit'], task
    log = (b.run_dir('rb') / 'tasks' / 'T1' / 'checks' / 'round-0' / 'check-1.log').read_text()
    assert f'check ran in {b_repo}' in log   # the check ran in B, in a checkout of B

    # one task's description edited, still no key: exactly it misses; nothing is launched; exit 2
    b.write_plan(plan('Write the docs, briefly.'))
    commit_all(b.repo, 'edit T3')
    rc, out, err = b.cli('run', '--plan-file', 'plan.json', '--run-id', 'rb2')
    assert rc == 2, out + err
    assert len(standin.requests) == paid
    rows = {r['id']: r for r in b.status('rb2')['tasks']}
    assert rows['T3']['status'] == 'deferred' and 'the rendered prompt' in rows['T3']['reason']
    assert rows['T1']['status'] == rows['T2']['status'] == 'done'
    assert rows['T4']['status'] == 'pending'
