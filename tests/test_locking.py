"""One writer per run: a second run/resume/doit on a run in progress is refused at once, naming the PID;
a lock left by a dead process never blocks; different runs of one repository run side by side."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from orch.errors import LockedError
from orch.runstate.lock import RunLock, holder_pid
from tests.support.gitrepo import git
from tests.support.orchtest import REPO_ROOT, Host, cli_subprocess, make_host
from tests.support.procs import wait_for


def plan(prefix: str = 'T', n: int = 2) -> dict:
    return {'version': 1, 'tasks': [
        {'id': f'{prefix}{i}', 'role': 'implementer', 'title': f'Step {i}', 'description': f'Write {prefix}{i}.',
         'depends_on': [f'{prefix}{i - 1}'] if i > 1 else [], 'paths': [f'{prefix.lower()}{i}.txt']}
        for i in range(1, n + 1)]}


def script(sleep: float, sleep2: float = 0.0) -> dict:
    return {'default': {'answer': 'auto'}, 'tasks': {
        f'{p}{i}': {'edits': {f'{p.lower()}{i}.txt': f'{p}{i}\n'}, 'sleep': sleep if i == 1 else sleep2}
        for p in 'TU' for i in (1, 2)}}


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Host:
    h = make_host(tmp_path, monkeypatch, capsys, script(2))
    h.write_plan(plan())
    return h


# Caches that loading a run may (re)write: derived from the inputs only, written atomically.
CACHES = {'plan-schema-checked'}


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob('*')) if p.is_file() and 'attempt-' not in str(p)
            and not p.name.startswith('doit.db') and p.name not in CACHES}


def _start_busy_run(host: Host, run_id: str = 'busy') -> subprocess.Popen[str]:
    proc = cli_subprocess(host.repo, 'run', '--plan-file', 'plan.json', '--run-id', run_id)
    wait_for(lambda: (host.repo / '.orchestrator' / 'runs' / run_id / 'tasks' / 'T1' / 'attempt-1' / 'pid').exists())
    return proc


def _finish(proc: subprocess.Popen[str]) -> tuple[str, str]:
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return out, err


def test_second_writer_is_refused_at_once_naming_the_pid(host: Host) -> None:
    proc = _start_busy_run(host)
    run_dir = host.repo / '.orchestrator' / 'runs' / 'busy'
    try:
        assert holder_pid(run_dir) == proc.pid
        before = _hashes(run_dir)
        for argv in (('run', '--plan-file', 'plan.json', '--run-id', 'busy'),
                     ('resume', '--run-id', 'busy'),
                     ('resume',),                                           # the latest run is the busy one
                     ('resume', '--run-id', 'busy', '--spec-file', 'spec.md', '-j', '2')):
            started = time.monotonic()
            rc, out, err = host.cli(*argv)
            assert rc == 2, (argv, out, err)
            assert time.monotonic() - started < 3, 'not refused at once'
            assert f'PID {proc.pid}' in err and 'run busy is in use' in err, err
            assert len(err.strip().splitlines()) == 1
            assert _hashes(run_dir) == before   # run.json, state files: nothing rewritten
        # the status of a run in progress is readable meanwhile
        doc = host.status()
        assert doc['running'] is True and doc['run']['run_id'] == 'busy'
    finally:
        out, err = _finish(proc)
    assert proc.returncode == 0, out + err
    assert list(host.launched_tasks()) == ['T1', 'T2']   # the refused commands launched nothing


def _doit(host: Host, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, '-m', 'doit', *args], cwd=host.repo, capture_output=True, text=True,
                          env=os.environ.copy(), timeout=60)


def test_doit_run_on_a_run_in_progress_is_refused(host: Host) -> None:
    proc = _start_busy_run(host)
    run_dir = host.repo / '.orchestrator' / 'runs' / 'busy'
    try:
        before = _hashes(run_dir)
        started = time.monotonic()
        ran = _doit(host, 'run')
        assert time.monotonic() - started < 5
        assert ran.returncode != 0
        assert f'PID {proc.pid}' in ran.stderr and 'in use' in ran.stderr, ran.stdout + ran.stderr
        assert 'Traceback' not in ran.stderr
        assert _hashes(run_dir) == before
        listed = _doit(host, 'list')   # read-only doit commands still work during a run
        assert listed.returncode == 0 and 'work' in listed.stdout, listed.stderr
    finally:
        out, err = _finish(proc)
    assert proc.returncode == 0, out + err
    assert host.launched_tasks() == ['T1', 'T2']
    assert host.statuses() == {'T1': 'done', 'T2': 'done'}


def test_codex_orch_refuses_while_doit_runs(host: Host) -> None:
    host.script(script(0, 2))
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--run-id', 'viadoit')
    assert rc == 0, out + err
    plan2 = plan()
    plan2['tasks'][1]['description'] = 'Write T2 again.'
    host.write_plan(plan2)
    host.clear_log()
    proc = subprocess.Popen([sys.executable, '-m', 'doit', 'run'], cwd=host.repo, env=os.environ.copy(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        attempt2 = host.repo / '.orchestrator' / 'runs' / 'viadoit' / 'tasks' / 'T2' / 'attempt-2' / 'pid'
        wait_for(attempt2.exists)
        rc, out, err = host.cli('resume', '--run-id', 'viadoit')
        assert rc == 2 and f'PID {proc.pid}' in err, err
    finally:
        out, err = _finish(proc)
    assert proc.returncode == 0, out + err
    assert host.launched_tasks() == ['T2']


def test_lock_of_a_killed_process_does_not_block(host: Host) -> None:
    proc = _start_busy_run(host)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    run_dir = host.repo / '.orchestrator' / 'runs' / 'busy'
    assert (run_dir / 'lock').read_text().strip() == str(proc.pid)   # the stale PID is still in the file
    assert holder_pid(run_dir) is None
    assert host.status()['running'] is False
    host.script(script(0))
    rc, out, err = host.cli('resume', '--run-id', 'busy')
    assert rc == 0, out + err
    assert host.statuses() == {'T1': 'done', 'T2': 'done'}


def test_two_runs_of_one_repository_proceed_side_by_side(host: Host) -> None:
    host.script(script(1.0, 1.0))
    host.write_plan(plan('U'), 'plan-u.json')
    a = cli_subprocess(host.repo, 'run', '--plan-file', 'plan.json', '--run-id', 'ra')
    b = cli_subprocess(host.repo, 'run', '--plan-file', 'plan-u.json', '--run-id', 'rb')
    out_a, err_a = _finish(a)
    out_b, err_b = _finish(b)
    assert a.returncode == 0, out_a + err_a
    assert b.returncode == 0, out_b + err_b
    spans = {}
    for entry in host.launches():
        spans.setdefault(entry['task_id'][0], []).append((entry['started_at'], entry['ended_at']))
    (a0, a1), (b0, b1) = [(min(s for s, _ in v), max(e for _, e in v)) for v in (spans['T'], spans['U'])]
    assert a0 < b1 and b0 < a1, 'the two runs did not overlap: one waited for the other'
    for run_id, prefix in (('ra', 'T'), ('rb', 'U')):
        branch = json.loads((host.repo / '.orchestrator' / 'runs' / run_id / 'run.json').read_text())['shared_branch']
        subjects = git(host.repo, 'log', '--format=%s', branch).splitlines()
        assert subjects[:2] == [f'{prefix}2: Step 2', f'{prefix}1: Step 1']


# ---------------------------------------------------------------- probing never gets in an acquire's way

PROBER = '''
import sys, time
from pathlib import Path
from orch.runstate.lock import holder_pid
run_dir, seconds = Path(sys.argv[1]), float(sys.argv[2])
holder_pid(run_dir)
print('probing', flush=True)
end = time.monotonic() + seconds
while time.monotonic() < end:
    holder_pid(run_dir)
'''

HOLDER = '''
import sys, time
from pathlib import Path
from orch.runstate.lock import RunLock
with RunLock(Path(sys.argv[1])):
    print('holding', flush=True)
    sys.stdin.read()
'''


def _python(code: str, *args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, '-c', code, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env={**os.environ, 'PYTHONPATH': str(REPO_ROOT)})
    assert proc.stdout is not None
    proc.stdout.readline()   # 'probing' / 'holding': it is under way
    return proc


def _probers(run_dir: Path, seconds: float, processes: int = 4,
             threads: int = 2) -> tuple[list[subprocess.Popen[str]], list[threading.Thread]]:
    """Processes and threads that call holder_pid(run_dir) as fast as they can for `seconds`."""
    procs = [_python(PROBER, str(run_dir), str(seconds)) for _ in range(processes)]
    end = time.monotonic() + seconds

    def probe() -> None:
        while time.monotonic() < end:
            holder_pid(run_dir)

    workers = [threading.Thread(target=probe, daemon=True) for _ in range(threads)]
    for w in workers:
        w.start()
    return procs, workers


def _stop(procs: list[subprocess.Popen[str]], workers: list[threading.Thread]) -> None:
    for w in workers:
        w.join(timeout=30)
    for p in procs:
        try:
            p.communicate(timeout=30)
        finally:
            if p.poll() is None:
                p.kill()


def test_probing_the_lock_never_makes_an_acquire_fail(tmp_path: Path) -> None:
    """status (--watch), clean, merge and prune probe with holder_pid; a run starting meanwhile must get its lock."""
    run_dir = tmp_path / 'runs' / 'r1'
    with RunLock(run_dir):
        pass
    procs, workers = _probers(run_dir, seconds=4)
    refused, acquired = 0, 0
    try:
        while any(w.is_alive() for w in workers) and acquired < 3000:
            lock = RunLock(run_dir)
            try:
                lock.acquire()
            except LockedError:
                refused += 1
                continue
            try:
                assert holder_pid(run_dir) == os.getpid()   # and a probe still sees the holder
            finally:
                lock.release()
            acquired += 1
    finally:
        _stop(procs, workers)
    assert refused == 0, f'{refused} of {refused + acquired} acquires refused while nobody held the run'
    assert acquired > 100


def test_a_held_run_stays_refused_while_it_is_probed(tmp_path: Path) -> None:
    """The acquire's second try (after waiting out a probe) refuses a real holder all the same."""
    run_dir = tmp_path / 'runs' / 'r1'
    holder = _python(HOLDER, str(run_dir))
    procs, workers = _probers(run_dir, seconds=2)
    try:
        for _ in range(300):
            refused = f'in use by another codex-orch or doit process \\(PID {holder.pid}\\)'
            with pytest.raises(LockedError, match=refused):
                RunLock(run_dir).acquire()
            assert holder_pid(run_dir) == holder.pid
    finally:
        _stop(procs, workers)
        holder.communicate('', timeout=30)
    assert holder.returncode == 0
    with RunLock(run_dir):   # released with its holder
        assert holder_pid(run_dir) == os.getpid()
    assert holder_pid(run_dir) is None


# ---------------------------------------------------------------- stale git locks of a repository whose .git is a file

def test_stale_git_locks_are_cleared_when_the_git_dir_is_elsewhere(host: Host, tmp_path: Path) -> None:
    """`git init --separate-git-dir` leaves a `.git` file: the branches are in the directory it names, and a
    ref lock a killed git left there must be cleared as in `<repo>/.git`, or every commit of the run fails."""
    elsewhere = tmp_path / 'elsewhere.git'
    git(host.repo, 'init', '--quiet', f'--separate-git-dir={elsewhere}')   # moves the repository's .git there
    assert (host.repo / '.git').is_file()
    host.script({'default': {'answer': 'auto'},
                 'tasks': {'T1': {'answer': {'status': 'done', 'summary': 'missing fields'}}}})
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--run-id', 'sep')
    assert rc == 1, out + err   # T1 failed: nothing committed yet
    run_dir = host.repo / '.orchestrator' / 'runs' / 'sep'
    branch = json.loads((run_dir / 'run.json').read_text())['shared_branch']
    wt = host.repo / '.orchestrator' / 'worktrees' / 'sep'
    common = Path(git(wt, 'rev-parse', '--path-format=absolute', '--git-common-dir'))
    gitdir = Path(git(wt, 'rev-parse', '--path-format=absolute', '--git-dir'))
    assert common == elsewhere.resolve()
    locks = [common / 'refs' / 'heads' / f'{branch}.lock', gitdir / 'index.lock']
    for lock in locks:   # what git killed mid-commit leaves behind
        lock.parent.mkdir(parents=True, exist_ok=True)
        lock.write_text('')
    host.script(script(0))
    rc, out, err = host.cli('resume', '--run-id', 'sep')
    assert rc == 0, out + err
    assert host.statuses() == {'T1': 'done', 'T2': 'done'}
    assert [lock for lock in locks if lock.exists()] == []
    assert git(host.repo, 'log', '--format=%s', branch).splitlines()[:2] == ['T2: Step 2', 'T1: Step 1']
