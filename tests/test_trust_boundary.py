"""Issue 11: what a worker writes does not reach outside its sandbox through codex-orch: control files,
symlinks out of the worktree."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orch.standin.server import Standin
from tests.support.gitrepo import commit_all, git
from tests.support.orchtest import Host, make_host
from tests.support.realcodex import use_real_codex

CONFIG_EDIT = 'codex:\n  binary: codex\ndefaults:\n  sandbox: danger-full-access\n'


def plan(description: str, **extra: Any) -> dict[str, Any]:
    return {'version': 1, 'title': 'Trust', 'tasks': [
        {'id': 'T1', 'role': 'implementer', 'title': 'Do it', 'description': description, **extra}]}


@pytest.mark.e2e
def test_a_worker_editing_the_config_fails_its_task_and_nothing_is_committed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any, standin: Standin) -> None:
    host = make_host(tmp_path, monkeypatch, capsys)
    use_real_codex(host.repo)
    host.write_plan(plan('Loosen the sandbox.\n[[standin: write .orchestrator/orchestrator.yaml]]\n'
                         f'```yaml\n{CONFIG_EDIT}```\n[[standin: write src/ok.py]]\n```\nok = 1\n```\n'))
    commit_all(host.repo, 'plan')
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 1, out + err
    row = host.status()['tasks'][0]
    assert row['status'] == 'failed'
    assert row['reason'].startswith('the worker changed codex-orch control files: .orchestrator/orchestrator.yaml;')
    branch = host.shared_branch()
    assert git(host.repo, 'rev-list', '--count', f'HEAD..{branch}') == '0'   # nothing of it is committed
    assert 'danger-full-access' not in (host.repo / '.orchestrator' / 'orchestrator.yaml').read_text()


def test_a_task_may_change_control_files_when_the_plan_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: Any) -> None:
    host = make_host(tmp_path, monkeypatch, capsys, {'tasks': {'T1': {'edits': {'dodo.py': '# changed\n'}}}})
    host.write_plan(plan('Change dodo.py.', control_files=True))
    commit_all(host.repo, 'plan')
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 0, out + err
    assert host.result('T1')['files_changed'] == ['dodo.py']


@pytest.mark.parametrize('command', [
    'mkdir -p docs && ln -s "$OUTSIDE" docs/ai',                       # the directory, out of the worktree
    'mkdir -p docs/ai && ln -s "$OUTSIDE/secret.md" docs/ai/decisions.md',   # the file itself
])
def test_codex_orch_follows_no_symlink_a_worker_planted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: Any, command: str) -> None:
    outside = tmp_path / 'outside'
    outside.mkdir()
    (outside / 'secret.md').write_text('private notes\n')
    monkeypatch.setenv('OUTSIDE', str(outside))
    decisions = [{'decision': 'use ints', 'rationale': 'simple'}]
    host = make_host(tmp_path, monkeypatch, capsys, {'tasks': {'T1': {'commands': [command],
                                                                      'decisions': decisions}}})
    host.write_plan(plan('Record a decision.'))
    commit_all(host.repo, 'plan')
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 1, out + err
    assert sorted(p.name for p in outside.iterdir()) == ['secret.md']   # nothing written outside
    assert (outside / 'secret.md').read_text() == 'private notes\n'
    reason = host.status()['tasks'][0]['reason']
    assert 'is a symlink' in reason and 'does not follow symlinks' in reason
    log = git(host.repo, 'log', '-p', host.shared_branch())
    assert 'private notes' not in log


def _parallel_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any, script: dict[str, Any]) -> Host:
    host = make_host(tmp_path, monkeypatch, capsys, script)
    host.write_plan({'version': 1, 'title': 'Parallel', 'tasks': [
        {'id': 'A', 'role': 'implementer', 'title': 'A', 'description': 'a', 'paths': ['a/*']},
        {'id': 'B', 'role': 'implementer', 'title': 'B', 'description': 'b', 'paths': ['b/*']}]})
    commit_all(host.repo, 'plan')
    return host


def _files(host: Host, tid: str) -> list[str]:
    return git(host.repo, 'show', '--format=', '--name-only', host.result(tid)['commit']).splitlines()


def test_an_edit_outside_the_task_paths_is_committed_with_a_warning(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: Any) -> None:
    answer = {'status': 'done', 'summary': 'A', 'files_changed': ['a/one.txt', 'notes/stray.txt'],
              'decisions': [], 'follow_ups': []}
    host = _parallel_host(tmp_path, monkeypatch, capsys, {'tasks': {
        'A': {'edits': {'a/one.txt': 'A\n', 'notes/stray.txt': 'A wrote this too\n'}, 'answer': answer, 'sleep': 1},
        'B': {'edits': {'b/two.txt': 'B\n'}, 'sleep': 0.5}}})
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '-j', '2')
    assert rc == 0, out + err
    assert _files(host, 'A') == ['a/one.txt', 'notes/stray.txt'] and _files(host, 'B') == ['b/two.txt']
    warning = 'changed files outside its paths, committed with it: notes/stray.txt'
    assert f'warning: A {warning}' in err
    assert any(warning in w for w in host.result('A')['warnings'])
    assert warning in (host.run_dir() / 'report.md').read_text()


def test_a_file_in_a_running_task_s_paths_belongs_to_the_task_that_wrote_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    """A writes b/two.txt, inside the paths of B running beside it: each task works in its own checkout, so the file
    is in A's commit (with a warning), never in B's, and B's own file is B's."""
    a_started, b_started, a_wrote = (tmp_path / name for name in ('a-started', 'b-started', 'a-wrote'))
    # A writes b/two.txt only once B runs (else its commit lacks the file and the test fails), and B ends only
    # after A wrote it: the two turns overlap, whatever the machine's load.
    write = f'test -e {b_started} && mkdir -p b && printf "A was here\\n" > b/two.txt && touch {a_wrote}'
    host = _parallel_host(tmp_path, monkeypatch, capsys, {'tasks': {
        'A': {'edits': {'a/one.txt': 'A\n'}, 'touch': str(a_started), 'wait_for': str(b_started),
              'wait_timeout': 60, 'commands': [write]},
        'B': {'edits': {'b/other.txt': 'B\n'}, 'touch': str(b_started), 'wait_for': str(a_wrote),
              'wait_timeout': 60}}})
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '-j', '2')
    assert rc == 0, out + err
    assert sorted(_files(host, 'A')) == ['a/one.txt', 'b/two.txt'] and _files(host, 'B') == ['b/other.txt']
    assert 'warning: A changed files outside its paths, committed with it: b/two.txt' in err


def test_user_edits_in_a_run_worktree_survive_resume_and_prune(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: Any) -> None:
    """Shared mode: the run's worktree is the user's to look at and edit; tasks work in their own checkouts, so a
    resume neither refuses over the user's edits nor takes them into a commit, and prune keeps the run."""
    invalid = {'answer': {'status': 'done'}}   # not valid for the schema: the task fails, nothing edited
    host = make_host(tmp_path, monkeypatch, capsys, {'tasks': {'T1': invalid}})
    host.write_plan(plan('Do it.', paths=['src/*']))
    commit_all(host.repo, 'plan')
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--run-id', 'r1')
    assert rc == 1, out + err
    worktree = host.repo / '.orchestrator' / 'worktrees' / 'r1'
    (worktree / 'src').mkdir()
    (worktree / 'src' / 'mine.py').write_text('my own work\n')          # the user's, uncommitted
    (worktree / 'README.md').write_text('edited by hand\n')
    host.script({'tasks': {'T1': {'edits': {'src/x.py': 'x\n'}}}})
    rc, out, err = host.cli('resume')
    assert rc == 0, out + err
    assert _files(host, 'T1') == ['src/x.py']
    assert (worktree / 'src' / 'mine.py').read_text() == 'my own work\n'
    assert (worktree / 'README.md').read_text() == 'edited by hand\n'
    assert (worktree / 'src' / 'x.py').read_text() == 'x\n'   # the worktree followed the run's tip
    rc, out, err = host.cli('prune', '--run-id', 'r1', '--apply')
    assert 'uncommitted changes' in out and (worktree / 'src' / 'mine.py').is_file()


def test_per_task_a_refusal_over_user_edits_holds_on_every_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: Any) -> None:
    """Per-task mode: the user's edits in a task's worktree are refused, not adopted as the task's leftovers by
    the next resume (or the one after)."""
    invalid = {'answer': {'status': 'done'}}
    host = make_host(tmp_path, monkeypatch, capsys, {'tasks': {'T1': invalid}})
    config = host.repo / '.orchestrator' / 'orchestrator.yaml'
    config.write_text(config.read_text().replace('use_single_workspace: true', 'use_single_workspace: false'))
    host.write_plan(plan('Do it.', paths=['src/*']))
    commit_all(host.repo, 'plan')
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--run-id', 'r1')
    assert rc == 1, out + err
    worktree = host.repo / '.orchestrator' / 'worktrees' / 'r1' / 'T1'
    (worktree / 'src').mkdir()
    (worktree / 'src' / 'mine.py').write_text('my own work\n')
    host.script({'tasks': {'T1': {'edits': {'src/x.py': 'x\n'}}}})
    host.clear_log()
    for _ in range(3):
        rc, out, err = host.cli('resume')
        assert rc == 1, out + err
        assert host.launches() == []   # refused before paying
        reason = host.status()['tasks'][0]['reason']
        assert 'that codex-orch did not make: src/mine.py' in reason and '--discard-changes' in reason
        assert (worktree / 'src' / 'mine.py').read_text() == 'my own work\n'
    rc, out, err = host.cli('resume', '--discard-changes')
    assert rc == 0, out + err
    assert not (worktree / 'src' / 'mine.py').exists() and host.statuses() == {'T1': 'done'}


def test_a_task_s_own_leftovers_are_discarded_without_asking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: Any) -> None:
    host = make_host(tmp_path, monkeypatch, capsys, {'tasks': {'T1': {'edits': {'src/x.py': 'broken\n'}}}})
    host.write_plan(plan('Do it.', paths=['src/*'], checks=['grep -q fixed src/x.py']))
    commit_all(host.repo, 'plan')
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--run-id', 'r1')
    assert rc == 1, out + err   # checks failed: the worker's unverified edits are left uncommitted
    host.script({'tasks': {'T1': {'edits': {'src/x.py': 'fixed\n'}}}})
    rc, out, err = host.cli('resume')
    assert rc == 0, out + err
    assert host.statuses() == {'T1': 'done'}


def test_a_git_filter_a_worker_plants_never_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A worker whose sandbox can write the repository's .git (a repository under /tmp) plants a clean filter:
    codex-orch would run it at `git add`, outside the sandbox. It is refused before git stages anything."""
    marker = tmp_path / 'filter-ran'
    host = make_host(tmp_path, monkeypatch, capsys, {'tasks': {'T1': {
        'edits': {'src/x.py': 'x = 1\n', '.gitattributes': '*.py filter=x\n'},
        'commands': [f"git config filter.x.clean 'touch {marker}; cat'"]}}})
    host.write_plan({'version': 1, 'tasks': [{'id': 'T1', 'role': 'implementer', 'title': 'X', 'description': 'x',
                                              'paths': ['src/x.py', '.gitattributes']}]})
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--run-id', 'r1')
    assert rc == 1
    row = host.status()['tasks'][0]
    assert row['status'] == 'failed' and row['reason'].startswith('git-config-changed: .git/config of the repository')
    assert not marker.exists()
    assert host.branch_log(host.shared_branch())[0] != 'T1: X'          # nothing committed
    # still refused until someone looked: the seal stays
    assert host.cli('resume')[0] == 1 and not marker.exists()
    git(host.repo, 'config', '--unset', 'filter.x.clean')
    (host.run_dir() / 'tasks' / 'T1' / 'git-seal.json').unlink()
    host.script({'tasks': {'T1': {'edits': {'src/x.py': 'x = 1\n'}}}})
    rc, out, err = host.cli('resume', '--discard-changes')
    assert rc == 0, out + err
    assert not (host.run_dir() / 'tasks' / 'T1' / 'git-seal.json').exists()
