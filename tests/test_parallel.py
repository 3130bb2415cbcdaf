"""Parallel runs (`-j N`, config `jobs`): independent tasks run at once unless their `paths` overlap,
and in the shared worktree each task's commit holds only its own changes."""
from __future__ import annotations

import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from orch.engine.scheduler import Scheduler
from tests.support.gitrepo import commit_all, git
from tests.support.orchtest import Host, edit_config, make_host
from tests.support.usercheckout import user_view


def make(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any, tasks: list[dict[str, Any]],
         script: dict[str, Any], config: dict[str, str] | None = None) -> Host:
    """A host with the plan committed; `config` replaces text in the default orchestrator.yaml."""
    host = make_host(tmp_path, monkeypatch, capsys, script)
    edit_config(host.repo, config)
    host.write_plan({'version': 1, 'title': 'Parallel', 'tasks': tasks})
    commit_all(host.repo, 'plan')
    return host


def task(tid: str, paths: list[str], deps: list[str] | None = None) -> dict[str, Any]:
    return {'id': tid, 'role': 'implementer', 'title': f'Task {tid}', 'description': f'Do {tid}.',
            'depends_on': deps or [], 'paths': paths}


def answer(*files: str) -> dict[str, Any]:
    return {'status': 'done', 'summary': 'done', 'files_changed': list(files), 'decisions': [], 'follow_ups': []}


def intervals(host: Host) -> dict[str, tuple[float, float]]:
    return {e['task_id']: (e['started_at'], e['ended_at']) for e in host.launches()}


def overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def commit_files(host: Host, tid: str) -> list[str]:
    return git(host.repo, 'show', '--format=', '--name-only', host.result(tid)['commit']).splitlines()


def test_disjoint_tasks_run_at_once_and_commit_only_their_own_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    script = {'default': {'answer': 'auto'}, 'tasks': {
        'X': {'edits': {'src/x.py': 'x = 1\n'}, 'sleep': 2,
              'decisions': [{'decision': 'X uses ints', 'rationale': 'simple'}]},
        'Y': {'edits': {'lib/y.py': 'y = 2\n'}, 'sleep': 2,
              'decisions': [{'decision': 'Y uses ints too', 'rationale': 'consistent'}]}}}
    host = make(tmp_path, monkeypatch, capsys, [task('X', ['src/*.py']), task('Y', ['lib/*.py'])], script)
    before = user_view(host.repo)
    stdout = sys.stdout
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '-j', '2')
    assert rc == 0, out + err
    assert sys.stdout is stdout   # doit's capture left nothing behind
    spans = intervals(host)
    assert overlap(spans['X'], spans['Y']), spans
    # every progress line reached the terminal (none was swallowed by another thread's capture)
    assert 'done   work:X' in out and 'done   work:Y' in out
    decisions = 'docs/ai/decisions.md'
    assert commit_files(host, 'X') == [decisions, 'src/x.py']
    assert commit_files(host, 'Y') == [decisions, 'lib/y.py']
    for tid, other in (('X', 'Y uses ints too'), ('Y', 'X uses ints')):   # its own entry, not the other's
        diff = git(host.repo, 'show', '--format=', host.result(tid)['commit'], '--', decisions)
        assert other not in '\n'.join(line for line in diff.splitlines() if line.startswith('+'))
    final = git(host.repo, 'show', f'{host.shared_branch()}:{decisions}')
    assert 'X uses ints' in final and 'Y uses ints too' in final
    assert git(host.repo / '.orchestrator' / 'worktrees' / host.run_dir().name, 'status', '--porcelain') == ''
    assert user_view(host.repo) == before


def test_config_jobs_runs_tasks_in_parallel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    script = {'default': {'answer': 'auto', 'sleep': 1}, 'tasks': {
        'X': {'edits': {'x.txt': 'x\n'}, 'sleep': 1}, 'Y': {'edits': {'y.txt': 'y\n'}, 'sleep': 1}}}
    host = make(tmp_path, monkeypatch, capsys, [task('X', ['x.txt']), task('Y', ['y.txt'])], script,
                config={'\njobs: 1 ': '\njobs: 2 '})
    before = user_view(host.repo)
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 0, out + err
    assert user_view(host.repo) == before
    spans = intervals(host)
    assert overlap(spans['X'], spans['Y']), spans
    assert commit_files(host, 'X') == ['x.txt'] and commit_files(host, 'Y') == ['y.txt']


def test_overlapping_paths_never_run_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    script = {'default': {'answer': 'auto'}, 'tasks': {
        'X': {'edits': {'src/a.py': 'a\n'}, 'sleep': 1},
        'Y': {'edits': {'src/sub/b.py': 'b\n'}, 'sleep': 1},
        'Z': {'edits': {'z.txt': 'z\n'}, 'sleep': 1}}}
    tasks = [task('X', ['src/']), task('Y', ['src/sub/*.py']), task('Z', ['z.txt'])]
    host = make(tmp_path, monkeypatch, capsys, tasks, script)
    before = user_view(host.repo)
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '-j', '3')
    assert rc == 0, out + err
    spans = intervals(host)
    assert not overlap(spans['X'], spans['Y']), spans
    assert overlap(spans['Z'], spans['X']) or overlap(spans['Z'], spans['Y']), spans
    assert commit_files(host, 'X') == ['src/a.py']
    assert commit_files(host, 'Y') == ['src/sub/b.py']
    assert commit_files(host, 'Z') == ['z.txt']
    assert user_view(host.repo) == before


def test_a_task_without_paths_runs_beside_the_others(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: Any) -> None:
    """Every task has a checkout of its own: one that declares no paths no longer serialises the run, and its
    commit still holds exactly what it changed."""
    script = {'default': {'answer': 'auto', 'sleep': 1}, 'tasks': {
        'X': {'edits': {'x.txt': 'x\n'}, 'sleep': 1}, 'Y': {'edits': {'anything.txt': 'y\n'}, 'sleep': 1},
        'Z': {'edits': {'z.txt': 'z\n'}, 'sleep': 1}}}
    tasks = [task('X', ['x.txt']), task('Y', []), task('Z', ['z.txt'])]
    host = make(tmp_path, monkeypatch, capsys, tasks, script)
    before = user_view(host.repo)
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '-j', '3')
    assert rc == 0, out + err
    assert user_view(host.repo) == before
    spans = intervals(host)
    assert overlap(spans['Y'], spans['X']) and overlap(spans['Y'], spans['Z']), spans
    assert overlap(spans['X'], spans['Z']), spans
    assert commit_files(host, 'Y') == ['anything.txt']
    assert commit_files(host, 'X') == ['x.txt'] and commit_files(host, 'Z') == ['z.txt']


def test_allowed_overlap_runs_at_once_and_a_starting_task_keeps_the_others_edits(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    # X edits docs/x.md at once and keeps running; Y starts later (after W) and resets its own scope
    # before it runs: docs/* is allowed to overlap, so Y must not wipe X's docs/x.md.
    script = {'default': {'answer': 'auto'}, 'tasks': {
        'X': {'edits': {'x.txt': 'x\n', 'docs/x.md': 'x\n'}, 'sleep': 3, 'answer': answer('x.txt', 'docs/x.md')},
        'W': {'edits': {'w.txt': 'w\n'}, 'sleep': 0.3},
        'Y': {'edits': {'y.txt': 'y\n', 'docs/y.md': 'y\n'}, 'answer': answer('y.txt', 'docs/y.md')}}}
    tasks = [task('X', ['x.txt', 'docs/*']), task('W', ['w.txt']), task('Y', ['y.txt', 'docs/*'], ['W'])]
    host = make(tmp_path, monkeypatch, capsys, tasks, script, config={'allow: []': 'allow: ["docs/*"]'})
    before = user_view(host.repo)
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '-j', '2')
    assert rc == 0, out + err
    assert user_view(host.repo) == before
    spans = intervals(host)
    assert overlap(spans['X'], spans['Y']), spans
    assert commit_files(host, 'X') == ['docs/x.md', 'x.txt']
    assert commit_files(host, 'Y') == ['docs/y.md', 'y.txt']
    assert git(host.repo, 'show', f'{host.shared_branch()}:docs/x.md') == 'x'


# ---------------------------------------------------------------- the scheduler on its own

def _enters(sched: Any, holder: Any, other: Any) -> bool:
    """Whether `other` gets a slot while `holder` has one (then both are released)."""
    entered = threading.Event()
    release = threading.Event()

    def second() -> None:
        with sched.slot(other):
            entered.set()
            release.wait(5)
    with sched.slot(holder):
        thread = threading.Thread(target=second)
        thread.start()
        got = entered.wait(0.3)
    release.set()
    thread.join(5)
    assert entered.is_set()   # it always gets one once the holder is done
    return got


@pytest.mark.parametrize('config, together', [
    ({}, False),                                  # both declare deps.lock
    ({'ignore': ['*.lock']}, True),               # ignored: left out of the check
    ({'allow': ['deps.lock']}, True),             # allowed to overlap
])
def test_scheduler_overlap_with_ignore_and_allow(config: dict[str, list[str]], together: bool) -> None:
    sched = Scheduler(allow=config.get('allow', []), ignore=config.get('ignore', []))
    x, y = SimpleNamespace(id='X', paths=['a.txt', 'deps.lock']), SimpleNamespace(id='Y', paths=['b.txt', 'deps.lock'])
    assert _enters(sched, x, y) is together
    assert _enters(sched, x, SimpleNamespace(id='Z', paths=[])) is True   # no paths: beside any other
