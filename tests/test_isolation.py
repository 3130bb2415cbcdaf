"""Every task in a checkout of its own, its commits landed on the run's one branch (shared mode): exact
attribution under -j, conflicts resolved in the worker's own thread, nothing of anyone's lost on a resume, and
the user's uncommitted edits in the run's worktree never touched."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.gitrepo import commit_all, git
from tests.support.orchtest import Host, crashed_run, edit_config, make_host
from tests.support.usercheckout import user_view


def make(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any, tasks: list[dict[str, Any]],
         script: dict[str, Any], config: dict[str, str] | None = None) -> Host:
    host = make_host(tmp_path, monkeypatch, capsys, script, files={'README.md': 'hello\n', 'shared.txt': 'base\n'})
    edit_config(host.repo, config)
    host.write_plan({'version': 1, 'title': 'Isolation', 'tasks': tasks})
    commit_all(host.repo, 'plan')
    return host


def task(tid: str, paths: list[str], deps: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {'id': tid, 'role': 'implementer', 'title': f'Task {tid}', 'description': f'Do {tid}.',
            'depends_on': deps or [], 'paths': paths, **extra}


def commit_files(host: Host, sha: str) -> list[str]:
    return git(host.repo, 'show', '--format=', '--name-only', sha).splitlines()


def spans(host: Host) -> dict[str, list[tuple[float, float]]]:
    out: dict[str, list[tuple[float, float]]] = {}
    for e in host.launches():
        out.setdefault(e['task_id'], []).append((e['started_at'], e['ended_at']))
    return out


def overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def worktree(host: Host) -> Path:
    return host.repo / '.orchestrator' / 'worktrees' / host.run_dir().name


def test_a_file_outside_its_paths_is_in_its_own_commit_every_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    """-j 2: X also writes notes/x.md, outside its paths, while Y runs beside it. Ten runs: the file is in X's
    commit with a warning each time, never in Y's, never lost; no warning names codex-orch's decisions log;
    the two ran at the same time (each answers only once the other's turn began)."""
    def script(n: int) -> dict[str, Any]:
        x_on, y_on = str(tmp_path / f'x-started-{n}'), str(tmp_path / f'y-started-{n}')
        return {'default': {'answer': 'auto'}, 'tasks': {
            'X': {'edits': {'src/x.py': 'x = 1\n', 'notes/x.md': 'x\n'}, 'touch': x_on, 'wait_for': y_on,
                  'wait_timeout': 60, 'decisions': [{'decision': 'X decided', 'rationale': 'because'}]},
            'Y': {'edits': {'lib/y.py': 'y = 2\n'}, 'touch': y_on, 'wait_for': x_on, 'wait_timeout': 60,
                  'decisions': [{'decision': 'Y decided', 'rationale': 'because'}]}}}
    host = make(tmp_path, monkeypatch, capsys, [task('X', ['src/*.py']), task('Y', ['lib/*.py'])], script(0))
    before = user_view(host.repo)
    for n in range(10):
        host.clear_log()
        host.script(script(n))
        rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--run-id', f'r{n}', '-j', '2')
        assert rc == 0, out + err
        x, y = host.result('X'), host.result('Y')
        assert sorted(commit_files(host, x['commit'])) == ['docs/ai/decisions.md', 'notes/x.md', 'src/x.py']
        assert sorted(commit_files(host, y['commit'])) == ['docs/ai/decisions.md', 'lib/y.py']
        assert 'warning: X changed files outside its paths, committed with it: notes/x.md' in err
        assert 'decisions.md' not in ''.join(line for line in err.splitlines() if 'warning' in line)
        assert x['warnings'] and not y['warnings']
        decisions = git(host.repo, 'show', f'{host.shared_branch()}:docs/ai/decisions.md')
        assert 'X decided' in decisions and 'Y decided' in decisions
        s = spans(host)
        assert overlap(s['X'][0], s['Y'][0]), s
    assert user_view(host.repo) == before


RUN = 'c'
CONFLICT_PLAN = [task('X', ['x.txt']), task('Y', ['y.txt'], checks=['grep -q mine shared.txt'])]


def conflict_script(tmp_path: Path, resolution: dict[str, Any]) -> dict[str, Any]:
    """X and Y both change shared.txt (outside their paths: a wrong guess); X lands first: it answers only once Y's
    turn began (Y's checkout is made before X lands), Y only once X's result is there (run `c`)."""
    y_on = str(tmp_path / 'y-started')
    x_result = str(tmp_path / 'repo' / '.orchestrator' / 'runs' / RUN / 'tasks' / 'X' / 'result.json')
    return {'default': {'answer': 'auto'}, 'tasks': {
        'X': {'edits': {'x.txt': 'x\n', 'shared.txt': 'theirs\n'}, 'wait_for': y_on, 'wait_timeout': 60},
        'Y': [{'edits': {'y.txt': 'y\n', 'shared.txt': 'mine\n'}, 'touch': y_on, 'wait_for': x_result,
               'wait_timeout': 60}, resolution]}}


def test_a_conflict_gets_a_round_in_the_worker_s_own_thread_then_lands(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    host = make(tmp_path, monkeypatch, capsys, CONFLICT_PLAN,
                conflict_script(tmp_path, {'edits': {'shared.txt': 'theirs\nmine\n'}}))
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--run-id', RUN, '-j', '2')
    assert rc == 0, out + err
    calls = [e for e in host.launches() if e['task_id'] == 'Y']
    assert len(calls) == 2 and calls[1]['resume'] and calls[1]['thread_id'] == calls[0]['thread_id']
    assert 'shared.txt' in calls[1]['prompt'] and 'conflict round 1 of 2' in calls[1]['prompt']
    y, x = host.result('Y'), host.result('X')
    assert y['conflict_rounds'] == 1
    branch = host.shared_branch()
    assert git(host.repo, 'show', f'{branch}:shared.txt') == 'theirs\nmine'
    assert git(host.repo, 'rev-parse', f'{y["commit"]}~1') == x['commit']   # replayed on top of X's
    assert sorted(commit_files(host, y['commit'])) == ['shared.txt', 'y.txt']
    assert any(c['command'] == 'grep -q mine shared.txt' and c['passed'] for c in y['checks'])
    # the run's worktree shows the tip
    assert git(worktree(host), 'rev-parse', 'HEAD') == git(host.repo, 'rev-parse', branch)


def test_a_conflict_that_persists_fails_the_task_naming_the_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    host = make(tmp_path, monkeypatch, capsys, CONFLICT_PLAN, conflict_script(tmp_path, {'edits': {'y.txt': 'y2\n'}}),
                config={'conflict_rounds: 2 ': 'conflict_rounds: 1 '})
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--run-id', RUN, '-j', '2')
    assert rc == 1
    row = {t['id']: t for t in host.status()['tasks']}['Y']
    assert row['status'] == 'failed' and 'shared.txt' in row['reason'] and 'after 1 conflict round' in row['reason']
    assert host.statuses()['X'] == 'done'
    assert git(host.repo, 'show', f'{host.shared_branch()}:shared.txt') == 'theirs'   # nothing half-landed
    junit = (host.run_dir() / 'junit.xml').read_text()
    assert 'cannot land' in junit


def test_a_check_failing_on_the_new_tip_is_resolved_like_a_conflict(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    """Y replays cleanly onto X's work but its check fails there (X removed what Y's check needs): a conflict
    round with the check's evidence, then it lands."""
    y_on = str(tmp_path / 'y-started')
    x_result = str(tmp_path / 'repo' / '.orchestrator' / 'runs' / RUN / 'tasks' / 'X' / 'result.json')
    script = {'default': {'answer': 'auto'}, 'tasks': {
        'X': {'edits': {'README.md': 'bye\n'}, 'wait_for': y_on, 'wait_timeout': 60},
        'Y': [{'edits': {'y.txt': 'hello\n'}, 'touch': y_on, 'wait_for': x_result, 'wait_timeout': 60},
              {'edits': {'README.md': 'bye\nhello\n'}}]}}
    tasks = [task('X', ['README.md']), task('Y', ['y.txt'], checks=['grep -q hello README.md'])]
    host = make(tmp_path, monkeypatch, capsys, tasks, script)
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--run-id', RUN, '-j', '2')
    assert rc == 0, out + err
    calls = [e for e in host.launches() if e['task_id'] == 'Y']
    assert len(calls) == 2 and 'grep -q hello README.md' in calls[1]['prompt']
    assert git(host.repo, 'show', f'{host.shared_branch()}:README.md') == 'bye\nhello'


def test_killed_in_a_repair_round_a_resume_keeps_its_edits_and_pays_nothing_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    """Killed right after T2's repair turn completed; the resume starts T3 beside it: T2's round edit is kept,
    its round is not asked again, no task fails."""
    script = {'default': {'answer': 'auto'}, 'tasks': {
        'T2': [{'edits': {'a/one.txt': '1\n'}}, {'edits': {'a/fixed.txt': 'fixed\n'}}],
        'T3': {'edits': {'b/three.txt': '3\n'}, 'sleep': 0.5}}}
    tasks = [task('T2', ['a/*'], checks=['test -f a/fixed.txt']), task('T3', ['b/*'])]
    host = make(tmp_path, monkeypatch, capsys, tasks, script)

    def repair_turn_done() -> bool:
        return sum(1 for e in host.launches() if e['task_id'] == 'T2') >= 2
    crashed_run(host, 'kill', kill_when=repair_turn_done)
    paid = [e for e in host.launches() if e['task_id'] == 'T2']
    assert len(paid) == 2
    host.clear_log()
    rc, out, err = host.cli('resume', '--run-id', 'kill', '-j', '2')
    assert rc == 0, out + err
    assert [e['task_id'] for e in host.launches()] in (['T3'], [])   # T2 is asked nothing again
    assert host.statuses('kill') == {'T2': 'done', 'T3': 'done'}
    files = commit_files(host, host.result('T2')['commit'])
    assert 'a/fixed.txt' in files and 'a/one.txt' in files


def test_user_edits_in_the_run_s_worktree_survive_resumes_and_prune(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    """The run's worktree only shows the tip: tasks never work there, resumes never discard or adopt what the
    user left there, and a landing that would overwrite it leaves the worktree behind (detached) and says so."""
    script = {'default': {'answer': 'auto'}, 'tasks': {
        'T1': {'edits': {'src/one.py': '1\n'}},
        'T2': [{'fail': 'model down'}, {'edits': {'src/two.py': '2\n', 'README.md': 'from T2\n'}}],
        'T3': {'edits': {'src/three.py': '3\n'}}}}
    tasks = [task('T1', ['src/one.py']), task('T2', ['src/two.py', 'README.md'], ['T1']),
             task('T3', ['src/three.py'], ['T2'])]
    host = make(tmp_path, monkeypatch, capsys, tasks, script,
                config={'  failure_retries: 1': '  failure_retries: 0'})
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--run-id', 'u')
    assert rc == 1 and host.statuses('u')['T2'] == 'failed'
    wt = worktree(host)
    (wt / 'README.md').write_text('my own edit\n')          # T2 will change it too
    (wt / 'scratch.txt').write_text('my notes\n')            # untracked, nobody's
    for _ in range(3):
        rc, out, err = host.cli('resume', '--run-id', 'u')
        assert (wt / 'README.md').read_text() == 'my own edit\n'
        assert (wt / 'scratch.txt').read_text() == 'my notes\n'
    assert host.statuses('u') == {'T1': 'done', 'T2': 'done', 'T3': 'done'}
    assert 'did not follow' in json.dumps(host.result('T2')['warnings'])
    branch = host.shared_branch()
    assert git(host.repo, 'show', f'{branch}:README.md') == 'from T2'
    assert git(host.repo, 'show', f'{branch}:src/three.py') == '3'
    assert 'README.md' not in commit_files(host, host.result('T3')['commit'])   # the user's edit stays theirs
    rc, out, err = host.cli('prune', '--run-id', 'u', '--apply', '--resume')
    assert (wt / 'README.md').read_text() == 'my own edit\n'
    assert (wt / 'scratch.txt').read_text() == 'my notes\n'


def test_the_run_s_worktree_follows_the_tip_keeping_unrelated_user_edits(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    script = {'default': {'answer': 'auto'}, 'tasks': {
        'T1': {'edits': {'src/one.py': '1\n'}}, 'T2': {'edits': {'src/two.py': '2\n'}}}}
    host = make(tmp_path, monkeypatch, capsys, [task('T1', ['src/one.py']), task('T2', ['src/two.py'], ['T1'])],
                {**script, 'tasks': {**script['tasks'], 'T2': [{'fail': 'down'}, script['tasks']['T2']]}},
                config={'  failure_retries: 1': '  failure_retries: 0'})
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--run-id', 'f')
    wt = worktree(host)
    (wt / 'README.md').write_text('edited by the user\n')
    rc, out, err = host.cli('resume', '--run-id', 'f')
    assert rc == 0, out + err
    assert (wt / 'src' / 'two.py').read_text() == '2\n'          # it followed the tip
    assert (wt / 'README.md').read_text() == 'edited by the user\n'
    assert git(wt, 'symbolic-ref', '--short', 'HEAD') == host.shared_branch()
    assert 'did not follow' not in err


def test_a_commit_the_worker_made_itself_is_never_landed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    """Under danger-full-access a worker can run `git commit` in its checkout: codex-orch knows where it left the
    checkout's HEAD, refuses to commit on top of the worker's commit, and lands nothing."""
    sneak = 'echo x > sneaky.txt && git add -A && git -c user.name=w -c user.email=w@w commit -qm "sneaky"'
    script = {'default': {'answer': 'auto'}, 'tasks': {
        'T1': {'edits': {'src/one.py': '1\n'}, 'commands': [sneak]}}}
    host = make(tmp_path, monkeypatch, capsys, [task('T1', ['src/*'])], script)
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 1
    row = host.status()['tasks'][0]
    assert row['status'] == 'failed' and 'committed' in row['reason'], row['reason']
    branch = host.shared_branch()
    assert 'sneaky' not in git(host.repo, 'log', '--format=%s', branch)
    assert 'sneaky.txt' not in git(host.repo, 'ls-tree', '-r', '--name-only', branch)
