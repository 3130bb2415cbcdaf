"""`codex-orch prune`: a dry run changes nothing; --apply sweeps old runs and keeps unmerged work."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from orch.runstate.lock import RunLock
from tests.support.gitrepo import git
from tests.support.orchtest import Host, make_host

SCRIPT = {'default': {'answer': 'auto'}, 'tasks': {'T1': {'edits': {'a.txt': 'a\n'}}}}
INVALID = {'answer': {'status': 'done', 'summary': 'missing fields'}}


def one_task(role: str = 'implementer', tid: str = 'T1') -> dict[str, Any]:
    return {'version': 1, 'tasks': [{'id': tid, 'role': role, 'title': 'One', 'description': 'Write a.txt',
                                     'paths': ['a.txt']}]}


def two_tasks() -> dict[str, Any]:
    plan = one_task()
    plan['tasks'].append({'id': 'T2', 'role': 'reviewer', 'title': 'Two', 'description': 'Review',
                          'depends_on': ['T1']})
    return plan


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Host:
    return make_host(tmp_path, monkeypatch, capsys, SCRIPT)


def start(host: Host, run_id: str, plan: dict[str, Any], *, age_days: float = 0, expect: int = 0) -> None:
    host.write_plan(plan, f'{run_id}.json')
    rc, out, err = host.cli('run', '--plan-file', f'{run_id}.json', '--run-id', run_id, '--continue')
    assert rc == expect, out + err
    if age_days:
        path = host.run_dir(run_id) / 'run.json'
        info = json.loads(path.read_text())
        info['created'] = (dt.datetime.now() - dt.timedelta(days=age_days)).isoformat(timespec='microseconds')
        path.write_text(json.dumps(info))


def tree(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every file and link under root: size, mtime and content digest."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() and not path.is_symlink() else ''
            out[path.relative_to(root).as_posix()] = (st.st_size if digest else 0, st.st_mtime_ns, digest)
    return out


def refs(host: Host) -> str:
    return git(host.repo, 'for-each-ref', '--format=%(refname) %(objectname)')


def branch(host: Host, run_id: str) -> str:
    return json.loads((host.run_dir(run_id) / 'run.json').read_text())['shared_branch']


def worktree(host: Host, run_id: str) -> Path:
    return host.repo / '.orchestrator' / 'worktrees' / run_id


def test_dry_run_changes_nothing_and_apply_sweeps_old_runs(host: Host) -> None:
    start(host, 'old-work', one_task(), age_days=10)               # commits a.txt: its branch is unmerged
    start(host, 'old-review', one_task('reviewer', 'R1'), age_days=10)   # no commit: its branch is merged
    start(host, 'recent', one_task(), age_days=1)
    branches = {rid: branch(host, rid) for rid in ('old-work', 'old-review', 'recent')}
    before = tree(host.repo / '.orchestrator'), refs(host), git(host.repo, 'worktree', 'list', '--porcelain')

    rc, out, err = host.cli('prune', '--older-than', '7')
    assert rc == 0, err
    assert (tree(host.repo / '.orchestrator'), refs(host), git(host.repo, 'worktree', 'list', '--porcelain')) == before
    assert 'dry run' in out and 'old-work' in out and 'old-review' in out and 'recent' not in out
    assert f'branch {branches["old-work"]}: 1 commit(s) not merged: to keep' in out
    assert f'branch {branches["old-review"]}: merged into' in out
    assert 'worktree .orchestrator/worktrees/old-work' in out and ' KB' in out

    rc, out, err = host.cli('prune', '--older-than', '7', '--apply')
    assert rc == 0, err
    assert 'pruned 2 of 2 run(s)' in out
    assert f'  {branches["old-work"]} (1 commit(s) not merged)' in out
    for rid in ('old-work', 'old-review'):
        assert not host.run_dir(rid).exists() and not worktree(host, rid).exists()
    assert host.run_dir('recent').is_dir() and worktree(host, 'recent').is_dir()
    heads = git(host.repo, 'for-each-ref', '--format=%(refname:short)', 'refs/heads').splitlines()
    assert branches['old-work'] in heads and branches['recent'] in heads
    assert branches['old-review'] not in heads
    listed = git(host.repo, 'worktree', 'list', '--porcelain')
    assert 'old-work' not in listed and 'old-review' not in listed and 'recent' in listed
    assert git(host.repo, 'log', '-1', '--format=%s', branches['old-work']) == 'T1: One'


def test_apply_resumes_unfinished_runs_first(host: Host) -> None:
    host.script({'default': {'answer': 'auto'}, 'tasks': {'T1': INVALID}})
    start(host, 'broken', two_tasks(), expect=1)
    host.script(SCRIPT)
    host.clear_log()
    rc, out, err = host.cli('prune', '--run-id', 'broken')
    assert 'unfinished tasks: swept as they are (--resume to finish them first)' in out   # opt-in: it spends
    rc, out, err = host.cli('prune', '--run-id', 'broken', '--resume')
    assert 'T1 failed' in out and 'T2 pending' in out and 'unfinished tasks: resumed first' in out
    assert host.launches() == []
    rc, out, err = host.cli('prune', '--run-id', 'broken', '--apply', '--resume')
    assert rc == 0, out + err
    assert host.launched_tasks() == ['T1', 'T2']
    assert not host.run_dir('broken').exists()
    # the resumed work was committed on the run's branch, which is kept
    assert 'T1: One' in git(host.repo, 'log', '--format=%s', '--all')
    assert 'kept branches with unmerged work' in out


def test_no_resume_sweeps_as_it_is(host: Host) -> None:
    host.script({'default': {'answer': 'auto'}, 'tasks': {'T1': INVALID}})
    start(host, 'broken', two_tasks(), expect=1)
    host.clear_log()
    rc, out, err = host.cli('prune', '--run-id', 'broken', '--apply')   # the default: no resume
    assert rc == 0, out + err
    assert host.launches() == []
    assert not host.run_dir('broken').exists()
    # nothing was committed: the branch was merged into the base, so it is gone too
    assert git(host.repo, 'for-each-ref', 'refs/heads/orch') == ''


def test_locked_and_dirty_runs_are_kept(host: Host) -> None:
    start(host, 'busy', one_task())
    with RunLock(host.run_dir('busy')):
        before = tree(host.repo / '.orchestrator'), refs(host)
        rc, out, err = host.cli('prune', '--run-id', 'busy', '--apply')
        assert (tree(host.repo / '.orchestrator'), refs(host)) == before
    assert rc == 0, err
    assert f'in use by PID {os.getpid()}' in out and 'pruned 0 of 1' in out

    (worktree(host, 'busy') / 'notes.txt').write_text('my own notes\n')
    rc, out, err = host.cli('prune', '--run-id', 'busy', '--apply')
    assert rc == 0, err
    assert 'kept run busy: uncommitted changes in .orchestrator/worktrees/busy' in out
    assert (worktree(host, 'busy') / 'notes.txt').exists() and host.run_dir('busy').is_dir()


def test_task_runs_are_pruned_too(host: Host) -> None:
    host.script({'tasks': {'task': {'edits': {'x.txt': 'x\n'}}}})
    rc, out, err = host.cli('task', '--role', 'implementer', 'Write x', '--run-id', 'one-off')
    assert rc == 0, err
    rc, out, err = host.cli('prune', '--run-id', 'one-off', '--apply')
    assert rc == 0, err
    assert not host.run_dir('one-off').exists() and not worktree(host, 'one-off').exists()


@pytest.mark.parametrize('args, fragment', [
    ([], 'no runs selected; choose them with --older-than DAYS and/or --run-id'),
    (['--run-id', 'nope'], "run 'nope' does not exist"),
    (['--older-than', '-1'], '--older-than -1: the age must be 0 days or more'),
    (['--older-than', '1', '--spec-file', 'missing.md'], '--spec-file missing.md: file not found'),
])
def test_bad_selection_exits_2(host: Host, args: list[str], fragment: str) -> None:
    start(host, 'r1', one_task(), age_days=30)
    before = tree(host.repo / '.orchestrator'), refs(host)
    rc, out, err = host.cli('prune', *args, '--apply')
    assert rc == 2 and fragment in err
    assert (tree(host.repo / '.orchestrator'), refs(host)) == before


def test_nothing_old_enough(host: Host) -> None:
    start(host, 'r1', one_task())
    rc, out, err = host.cli('prune', '--older-than', '1', '--apply')
    assert rc == 0 and 'nothing to prune' in out
    assert host.run_dir('r1').is_dir()


def test_per_task_worktrees_and_branches(host: Host) -> None:
    config = host.repo / '.orchestrator' / 'orchestrator.yaml'
    config.write_text(config.read_text().replace('use_single_workspace: true', 'use_single_workspace: false'))
    plan = one_task()
    plan['tasks'].append({'id': 'R1', 'role': 'reviewer', 'title': 'Look', 'description': 'Look around'})
    start(host, 'per-task', plan)
    info = json.loads((host.run_dir('per-task') / 'run.json').read_text())
    t1, r1 = (info['task_branch_template'].format(date=info['date'], run_id='per-task', task_id=t)
              for t in ('T1', 'R1'))
    assert (worktree(host, 'per-task') / 'T1').is_dir() and (worktree(host, 'per-task') / 'R1').is_dir()
    rc, out, err = host.cli('prune', '--run-id', 'per-task', '--apply')
    assert rc == 0, err
    assert 'pruned run per-task: 2 worktree(s) removed' in out and f'merged branch deleted: {r1}' in out
    heads = git(host.repo, 'for-each-ref', '--format=%(refname:short)', 'refs/heads').splitlines()
    assert t1 in heads and r1 not in heads
    assert not worktree(host, 'per-task').exists() and not host.run_dir('per-task').exists()


def test_a_run_whose_plan_is_gone_is_still_swept(host: Host) -> None:
    start(host, 'orphan', one_task(), age_days=30)
    (host.repo / 'orphan.json').unlink()
    rc, out, err = host.cli('prune', '--older-than', '7')
    assert rc == 0, err
    assert 'tasks: unknown (' in out and 'orphan.json' in out
    rc, out, err = host.cli('prune', '--older-than', '7', '--apply')
    assert rc == 0, err
    assert not host.run_dir('orphan').exists() and not worktree(host, 'orphan').exists()


def test_a_branch_merged_into_the_base_branch_since_is_deleted(host: Host) -> None:
    start(host, 'merged', one_task())
    git(host.repo, 'merge', '--ff-only', '--quiet', branch(host, 'merged'))   # the user took the work
    rc, out, err = host.cli('prune', '--run-id', 'merged')
    assert f'branch {branch(host, "merged")}: merged into main: to delete' in out
    rc, out, err = host.cli('prune', '--run-id', 'merged', '--apply')
    assert rc == 0, err
    assert git(host.repo, 'for-each-ref', 'refs/heads/orch') == ''


def _mangle(host: Host, run_id: str, text: str) -> None:
    (host.run_dir(run_id) / 'run.json').write_text(text)


def _old_format(host: Host, run_id: str) -> str:
    """run.json as another codex-orch version might have written it: a key missing, one unknown."""
    info = json.loads((host.run_dir(run_id) / 'run.json').read_text())
    del info['plan_digest']
    info['flavour'] = 'vintage'
    return json.dumps(info)


def test_unreadable_run_records_are_listed_and_skipped(host: Host) -> None:
    for rid in ('good', 'corrupt', 'oldformat'):
        start(host, rid, one_task('reviewer', 'R1'), age_days=10)
    _mangle(host, 'corrupt', '{"run_id": "corrupt", "created": ')   # cut short, as by a full disk
    _mangle(host, 'oldformat', _old_format(host, 'oldformat'))
    (host.repo / '.orchestrator' / 'runs' / 'listy').mkdir()
    _mangle(host, 'listy', '[]\n')
    (host.repo / '.orchestrator' / 'runs' / 'bare').mkdir()   # e.g. a run killed before it wrote run.json
    kept = {rid: tree(host.run_dir(rid)) for rid in ('corrupt', 'oldformat', 'listy', 'bare')}

    rc, out, err = host.cli('prune', '--older-than', '7')
    assert rc == 0, out + err
    assert 'run corrupt: cannot read its record (not valid JSON: Expecting value: line 1' in out
    assert 'run oldformat: cannot read its record (not a record of this codex-orch version: ' in out
    assert "'plan_digest'" in out or "'flavour'" in out
    assert 'run listy: cannot read its record (not a record of this codex-orch version: ' in out
    assert 'run bare: cannot read its record (run.json is missing); skipped' in out
    assert out.count('); skipped') == 4
    assert 'would prune 1 run(s)' in out and 'run good (created' in out

    rc, out, err = host.cli('prune', '--older-than', '7', '--apply')
    assert rc == 0, out + err
    assert 'pruned run good:' in out and 'pruned 1 of 1 run(s)' in out and out.count('); skipped') == 4
    assert not host.run_dir('good').exists() and not worktree(host, 'good').exists()
    assert {rid: tree(host.run_dir(rid)) for rid in kept} == kept   # left exactly as they were
    assert worktree(host, 'corrupt').is_dir() and worktree(host, 'oldformat').is_dir()


def test_a_named_unreadable_run_is_skipped_and_the_others_pruned(host: Host) -> None:
    start(host, 'good', one_task('reviewer', 'R1'))
    start(host, 'oldformat', one_task('reviewer', 'R1'))
    _mangle(host, 'oldformat', _old_format(host, 'oldformat'))
    rc, out, err = host.cli('prune', '--run-id', 'oldformat', 'good', '--apply')
    assert rc == 0, out + err
    assert 'run oldformat: cannot read its record (not a record of this codex-orch version: ' in out
    assert 'pruned 1 of 1 run(s)' in out and not host.run_dir('good').exists()
    assert host.run_dir('oldformat').is_dir()

    rc, out, err = host.cli('prune', '--run-id', 'oldformat', '--apply')
    assert rc == 0, out + err
    assert '); skipped' in out and 'no readable run selected; nothing to prune' in out
    assert host.run_dir('oldformat').is_dir()
