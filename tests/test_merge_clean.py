"""`merge` (fast-forward the run's base branch to its result) and `clean` (remove worktrees and merged
branches), on real temporary repositories: what they change, and that a refusal changes nothing."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from orch.runstate.lock import RunLock
from tests.support.gitrepo import commit_all, file_tree, git, snapshot
from tests.support.orchtest import THREE_TASK_SCRIPT, Host, make_host, three_task_plan
from tests.support.usercheckout import orch_branches, user_view, worktree_paths


def host_with_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any, *, plan: dict[str, Any] | None = None,
                  script: dict[str, Any] | None = None, per_task: bool = False, rc: int = 0) -> tuple[Host, str]:
    host = make_host(tmp_path, monkeypatch, capsys, script or THREE_TASK_SCRIPT)
    cfg = host.repo / '.orchestrator' / 'orchestrator.yaml'
    text = cfg.read_text().replace('failure_retries: 1 ', 'failure_retries: 0 ')   # no 5 s backoff on failures
    if per_task:
        text = text.replace('use_single_workspace: true', 'use_single_workspace: false')
    cfg.write_text(text)
    host.write_plan(plan or three_task_plan())
    commit_all(host.repo, 'plan')
    got, out, err = host.cli('run', '--plan-file', 'plan.json', '--run-id', 'r1')
    assert got == rc, out + err
    return host, 'r1'


def frozen(host: Host) -> tuple[dict[str, str], dict[str, str]]:
    """Every ref, HEAD, status and worktree, plus every file of the main checkout."""
    tree = {k: v for k, v in file_tree(host.repo).items() if not k.startswith('.orchestrator/runs/')}
    return snapshot(host.repo), tree


# ---------------------------------------------------------------- merge

def test_merge_dry_run_changes_nothing_then_fast_forwards_the_checked_out_base(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    host, run_id = host_with_run(tmp_path, monkeypatch, capsys)
    before = frozen(host)
    view = user_view(host.repo)
    result = git(host.repo, 'rev-parse', host.shared_branch())
    rc, out, err = host.cli('merge', '--run-id', run_id)
    assert rc == 0, err
    assert 'would fast-forward main' in out and result[:12] in out and 'nothing was changed' in out
    assert 'T1' in out and 'Add greet()' in out
    assert frozen(host) == before
    rc, out, err = host.cli('merge', '--run-id', run_id, '--allow-automerge')
    assert rc == 0, err
    assert 'fast-forwarded main' in out
    assert git(host.repo, 'rev-parse', 'main') == result
    # the clean checkout of main followed: the run's files are there, nothing is left uncommitted
    assert (host.repo / 'src' / 'greet.py').read_text() == "def greet(name):\n    return f'Hello, {name}'\n"
    assert git(host.repo, 'status', '--porcelain') == ''
    assert git(host.repo, 'symbolic-ref', 'HEAD') == 'refs/heads/main'
    after = user_view(host.repo)
    assert after['refs'].replace(result, view['head']) == view['refs']   # only main moved
    # a second merge has nothing to do
    rc, out, err = host.cli('merge', '--run-id', run_id, '--allow-automerge')
    assert rc == 0 and 'already' in out


def test_merge_moves_the_recorded_base_not_what_is_checked_out_now(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    host, run_id = host_with_run(tmp_path, monkeypatch, capsys)
    git(host.repo, 'checkout', '--quiet', '-b', 'feature')
    before = user_view(host.repo)
    tree = file_tree(host.repo)
    rc, out, err = host.cli('merge', '--run-id', run_id, '--allow-automerge')
    assert rc == 0, err
    assert git(host.repo, 'rev-parse', 'main') == git(host.repo, 'rev-parse', host.shared_branch())
    after = user_view(host.repo)
    assert after['head'] == before['head'] and after['status'] == before['status']
    assert after['symbolic_head'] == 'refs/heads/feature'
    assert file_tree(host.repo) == tree


def test_merge_refuses_a_diverged_base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    host, run_id = host_with_run(tmp_path, monkeypatch, capsys)
    (host.repo / 'NEWS.md').write_text('news\n')
    commit_all(host.repo, 'meanwhile on main')
    before = frozen(host)
    for extra in ((), ('--allow-automerge',)):
        rc, out, err = host.cli('merge', '--run-id', run_id, *extra)
        assert rc == 1
        assert 'main has moved on' in err and '1 commit(s)' in err and 'Nothing was changed' in err
        assert frozen(host) == before


def test_merge_refuses_unfinished_tasks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    script = {'default': {'answer': 'auto'}, 'tasks': {**THREE_TASK_SCRIPT['tasks'], 'T2': {'fail': 'no'}}}
    host, run_id = host_with_run(tmp_path, monkeypatch, capsys, script=script, rc=1)
    before = frozen(host)
    rc, out, err = host.cli('merge', '--run-id', run_id, '--allow-automerge')
    assert rc == 1
    assert 'not every task' in err and 'T2 failed' in err and 'T3 pending' in err
    assert frozen(host) == before


def test_merge_refuses_a_dirty_checkout_of_the_base(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    host, run_id = host_with_run(tmp_path, monkeypatch, capsys)
    (host.repo / 'README.md').write_text('my own uncommitted edit\n')
    before = frozen(host)
    rc, out, err = host.cli('merge', '--run-id', run_id, '--allow-automerge')
    assert rc == 1
    assert 'uncommitted changes' in err and 'README.md' in err
    assert frozen(host) == before
    assert (host.repo / 'README.md').read_text() == 'my own uncommitted edit\n'


@pytest.mark.parametrize('per_task', [False, True], ids=['shared', 'per-task'])
def test_merge_refuses_a_result_without_a_task_commit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any, per_task: bool) -> None:
    """A worker that switched branches (or reset) leaves the run's branch without a task's commit:
    fast-forwarding to it would silently drop that task's work."""
    host, run_id = host_with_run(tmp_path, monkeypatch, capsys, per_task=per_task)
    t1, t2 = host.result('T1')['commit'], host.result('T2')['commit']
    assert t1 and t2 and host.result('T3')['commit'] is None
    worktrees = host.repo / '.orchestrator' / 'worktrees' / run_id
    # Move the branch the merge would fast-forward to (T3's in per-task mode) back to T1's commit.
    for wt in ([worktrees / 'T2', worktrees / 'T3'] if per_task else [worktrees]):
        git(wt, 'reset', '--quiet', '--hard', t1)
    before = frozen(host)
    for extra in ((), ('--allow-automerge',)):
        rc, out, err = host.cli('merge', '--run-id', run_id, *extra)
        assert rc == 1, out + err
        assert f'does not contain the commit of task T2 ({t2[:12]})' in err and 'Nothing was changed' in err
        assert 'T1 (' not in err
        assert frozen(host) == before


def test_merge_bad_usage_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    host = make_host(tmp_path, monkeypatch, capsys)
    before = frozen(host)
    with pytest.raises(SystemExit) as exc:
        host.cli('merge')
    assert exc.value.code == 2
    rc, out, err = host.cli('merge', '--run-id', 'nope')
    assert rc == 2 and 'nope' in err
    rc, out, err = host.cli('clean', '--run-id', '../x')
    assert rc == 2
    assert frozen(host) == before


DIAMOND = {'version': 1, 'title': 'Diamond', 'tasks': [
    {'id': t, 'role': 'implementer', 'title': f'Task {t}', 'description': t, 'depends_on': deps,
     'paths': [f'{t.lower()}.txt']}
    for t, deps in (('A', []), ('B', ['A']), ('C', ['A']), ('D', ['B', 'C']))]}
DIAMOND_SCRIPT = {'default': {'answer': 'auto'},
                  'tasks': {t: {'edits': {f'{t.lower()}.txt': f'{t}\n'}} for t in 'ABCD'}}


def test_per_task_merge_fast_forwards_to_the_final_branch_and_clean_removes_everything(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    host, run_id = host_with_run(tmp_path, monkeypatch, capsys, plan=DIAMOND, script=DIAMOND_SCRIPT, per_task=True)
    d_branch = next(b for b in orch_branches(host.repo) if b.endswith('/D'))
    rc, out, err = host.cli('merge', '--run-id', run_id, '--allow-automerge')
    assert rc == 0, err
    assert d_branch in out
    assert git(host.repo, 'rev-parse', 'main') == git(host.repo, 'rev-parse', d_branch)
    assert {'a.txt', 'b.txt', 'c.txt', 'd.txt'} <= set(file_tree(host.repo))
    assert git(host.repo, 'status', '--porcelain') == ''
    view = user_view(host.repo)
    rc, out, err = host.cli('clean', '--run-id', run_id)
    assert rc == 0, err
    assert orch_branches(host.repo) == [] and worktree_paths(host.repo) == []
    assert out.count('deleted branch') == 4 and out.count('removed worktree') == 4
    assert not (host.repo / '.orchestrator' / 'worktrees' / run_id).exists()
    assert (host.run_dir(run_id) / 'tasks' / 'D' / 'result.json').exists() and 'kept the run directory' in out
    assert user_view(host.repo) == view


def test_per_task_merge_refuses_separate_lines_of_work(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    plan = {'version': 1, 'title': 'Two', 'tasks': [DIAMOND['tasks'][0], {**DIAMOND['tasks'][1], 'depends_on': []}]}
    host, run_id = host_with_run(tmp_path, monkeypatch, capsys, plan=plan, script=DIAMOND_SCRIPT, per_task=True)
    before = frozen(host)
    rc, out, err = host.cli('merge', '--run-id', run_id, '--allow-automerge')
    assert rc == 1
    assert 'not linear' in err and 'A, B' in err
    assert frozen(host) == before


# ---------------------------------------------------------------- clean

def test_clean_keeps_unmerged_branches_unless_forced(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    host, run_id = host_with_run(tmp_path, monkeypatch, capsys)
    branch = host.shared_branch()
    view = user_view(host.repo)
    rc, out, err = host.cli('clean', '--run-id', run_id, '--keep-branches')
    assert rc == 0, err
    assert worktree_paths(host.repo) == [] and orch_branches(host.repo) == [branch]
    assert 'removed worktree' in out and 'kept the run directory' in out
    rc, out, err = host.cli('clean', '--run-id', run_id)
    assert rc == 0, err
    assert orch_branches(host.repo) == [branch]
    assert f'kept branch {branch}: 2 commit(s) not merged into main' in out
    rc, out, err = host.cli('clean', '--run-id', run_id, '--force')
    assert rc == 0, err
    assert orch_branches(host.repo) == [] and f'deleted branch {branch}' in out
    assert (host.run_dir(run_id) / 'report.md').exists()
    assert user_view(host.repo) == view


def test_clean_handles_a_worktree_deleted_by_hand_and_keeps_a_dirty_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    host, run_id = host_with_run(tmp_path, monkeypatch, capsys, plan=DIAMOND, script=DIAMOND_SCRIPT, per_task=True)
    rc, out, err = host.cli('merge', '--run-id', run_id, '--allow-automerge')
    assert rc == 0, err
    view = user_view(host.repo)
    worktrees = host.repo / '.orchestrator' / 'worktrees' / run_id
    shutil.rmtree(worktrees / 'A')
    (worktrees / 'B' / 'scratch.txt').write_text('unsaved work\n')
    rc, out, err = host.cli('clean', '--run-id', run_id)
    assert rc == 0, err
    assert 'worktree .orchestrator/worktrees/r1/A (its directory was already gone)' in out
    assert 'kept worktree .orchestrator/worktrees/r1/B' in out and 'scratch.txt' in out
    assert [p.name for p in worktree_paths(host.repo)] == ['B']
    assert [b.rsplit('/', 1)[1] for b in orch_branches(host.repo)] == ['B']   # checked out in the kept worktree
    assert 'checked out in' in out
    assert (worktrees / 'B' / 'scratch.txt').read_text() == 'unsaved work\n'
    rc, out, err = host.cli('clean', '--run-id', run_id, '--force')
    assert rc == 0, err
    assert worktree_paths(host.repo) == [] and orch_branches(host.repo) == []
    assert not worktrees.exists()
    assert user_view(host.repo) == view


def test_clean_refuses_a_run_in_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    host, run_id = host_with_run(tmp_path, monkeypatch, capsys)
    before = frozen(host)
    with RunLock(host.run_dir(run_id)):
        rc, out, err = host.cli('clean', '--run-id', run_id, '--force')
        assert rc == 2 and 'in use' in err and 'Nothing was changed' in err
        rc, out, err = host.cli('merge', '--run-id', run_id, '--allow-automerge')
        assert rc == 1 and 'in progress' in err
    assert frozen(host) == before


def test_merge_ignores_unrelated_untracked_files_but_not_ones_it_would_overwrite(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    host, run_id = host_with_run(tmp_path, monkeypatch, capsys)
    (host.repo / 'notes.txt').write_text('mine\n')                 # unrelated: no obstacle
    (host.repo / 'src').mkdir()
    (host.repo / 'src' / 'greet.py').write_text('my own draft\n')   # the merge would overwrite it
    before = frozen(host)
    rc, out, err = host.cli('merge', '--run-id', run_id, '--allow-automerge')
    assert rc == 1 and 'untracked files the merge would overwrite (src/greet.py)' in err
    assert frozen(host) == before
    (host.repo / 'src' / 'greet.py').unlink()
    rc, out, err = host.cli('merge', '--run-id', run_id, '--allow-automerge')
    assert rc == 0, err
    assert (host.repo / 'notes.txt').read_text() == 'mine\n'
    assert git(host.repo, 'rev-parse', 'main') == git(host.repo, 'rev-parse', host.shared_branch())
