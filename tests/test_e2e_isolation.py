"""Private checkouts and landing with the real Codex CLI (pinned) against the local model stand-in: a file outside
a task's paths lands in its own commit under -j 2, and a conflict is resolved in the worker's own thread."""
from __future__ import annotations

from pathlib import Path

import pytest

from orch.standin.server import Standin
from tests.support.gitrepo import commit_all, git
from tests.support.orchtest import Host, make_host
from tests.support.realcodex import use_real_codex

pytestmark = pytest.mark.e2e


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
         standin: Standin) -> Host:
    h = make_host(tmp_path, monkeypatch, capsys, files={'README.md': 'hello\n', 'shared.txt': 'base\n'})
    use_real_codex(h.repo)
    commit_all(h.repo, 'use the real codex')
    return h


def write(path: str, content: str, at: int | None = None) -> str:
    directive = f'write-at {at} {path}' if at else f'write {path}'
    return f'[[standin: {directive}]]\n```\n{content}```\n'


def files_of(host: Host, sha: str) -> list[str]:
    return sorted(git(host.repo, 'show', '--format=', '--name-only', sha).splitlines())


def test_a_file_outside_its_paths_lands_in_its_own_commit(host: Host, standin: Standin) -> None:
    host.write_plan({'version': 1, 'title': 'Parallel', 'tasks': [
        {'id': 'X', 'role': 'implementer', 'title': 'X', 'paths': ['src/*'],
         'description': 'Do X.\n[[standin: slow 1]]\n' + write('src/x.py', 'x = 1\n') + write('notes/x.md', 'x\n')},
        {'id': 'Y', 'role': 'implementer', 'title': 'Y', 'paths': ['lib/*'],
         'description': 'Do Y.\n[[standin: slow 1]]\n' + write('lib/y.py', 'y = 2\n')}]})
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '-j', '2')
    assert rc == 0, out + err
    assert files_of(host, host.result('X')['commit']) == ['notes/x.md', 'src/x.py']
    assert files_of(host, host.result('Y')['commit']) == ['lib/y.py']
    assert 'warning: X changed files outside its paths, committed with it: notes/x.md' in err


def test_a_conflict_round_in_the_worker_s_own_thread(host: Host, standin: Standin) -> None:
    # Ordered without timing: X answers once Y's worker (its checkout made) asked; Y once X's result is there.
    x_done = host.repo / '.orchestrator' / 'runs' / 'c' / 'tasks' / 'X' / 'result.json'
    host.write_plan({'version': 1, 'title': 'Conflict', 'tasks': [
        {'id': 'X', 'role': 'implementer', 'title': 'X', 'paths': ['x.txt'],
         'description': 'Do X.\n[[standin: wait-seen Do Y.]]\n' + write('x.txt', 'x\n')
         + write('shared.txt', 'theirs\n')},
        {'id': 'Y', 'role': 'implementer', 'title': 'Y', 'paths': ['y.txt'],
         'description': f'Do Y.\n[[standin: wait-for {x_done}]]\n' + write('y.txt', 'y\n')
         + write('shared.txt', 'mine\n') + write('shared.txt', 'theirs\nmine\n', at=2)}]})
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '-j', '2', '--run-id', 'c')
    assert rc == 0, out + err
    y = host.result('Y')
    assert y['conflict_rounds'] == 1
    assert len(standin.requests_for(y['thread_id'])) >= 2   # the same thread, resumed
    branch = host.shared_branch()
    assert git(host.repo, 'show', f'{branch}:shared.txt') == 'theirs\nmine'
    assert git(host.repo, 'rev-parse', f'{y["commit"]}~1') == host.result('X')['commit']


GATE = ('name: tests_gate\nscope: task\nroles: [implementer]\noutput: "{task_dir}/tests_gate.json"\n'
        'action:\n  shell: "if grep -q broken marker.txt 2>/dev/null; then echo marker is broken; exit 1; fi"\n')


def test_a_gate_blames_the_task_that_broke_it_and_one_resume_finishes(host: Host, standin: Standin) -> None:
    (host.repo / '.orchestrator' / 'rules').mkdir()
    (host.repo / '.orchestrator' / 'rules' / 'gate.yaml').write_text(GATE)
    commit_all(host.repo, 'gate')

    def plan(marker: str) -> dict:
        return {'version': 1, 'title': 'Blame', 'tasks': [
            {'id': 'T1', 'role': 'tester', 'title': 'Tests', 'paths': ['tests/*'],
             'description': 'Add tests.\n' + write('tests/t.txt', 't\n') + write('marker.txt', f'{marker}\n')},
            {'id': 'T2', 'role': 'implementer', 'title': 'Docs', 'paths': ['docs/*'],
             'description': 'Write docs.\n' + write('docs/d.md', 'd\n')}]}
    host.write_plan(plan('broken'))
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--run-id', 'g')
    assert rc == 1, out + err
    rows = {t['id']: t for t in host.status()['tasks']}
    assert rows['T1']['status'] == 'failed' and 'gate tests_gate (run for T2)' in rows['T1']['reason']
    assert rows['T2']['status'] == 'pending' and rows['T2']['reason'] == 'waiting: gate tests_gate broken by T1'
    host.write_plan(plan('fixed'))
    before = len(standin.requests)
    rc, out, err = host.cli('resume', '--run-id', 'g')
    assert rc == 0, out + err
    assert host.statuses('g') == {'T1': 'done', 'T2': 'done'}
    # the model was asked only for T1 again (a new thread); T2's gate ran again without a model call
    assert len(standin.requests) - before == len(standin.requests_for(host.result('T1')['thread_id'])) > 0
