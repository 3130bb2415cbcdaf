"""Process groups (orch.adapters.procgroup) with real processes: spawn, stop, reap, leftovers,
the watchdog after `kill -9` of their parent, and stale groups that must prove who they are."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orch.adapters import procgroup, procgroup_identity
from orch.adapters.procgroup_identity import Identity
from orch.adapters.worker_attempts import PROCESS_FILE, kill_stale_attempts
from tests.support.procs import pgid_alive, pid_alive, wait_for

REPO_ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not sys.platform.startswith('linux'), reason='needs /proc')


def read_pid(path: Path) -> int:
    wait_for(lambda: path.exists() and path.read_text().strip() != '', timeout=10)
    return int(path.read_text())


# --- spawn, stop, reap ---------------------------------------------------------------------------

def test_spawn_terminate_reap() -> None:
    group = procgroup.spawn(['sleep', '30'], kind='test')
    try:
        assert os.getpgid(group.pgid) == group.pgid and os.getsid(group.pgid) == group.pgid
        assert group.pgid in procgroup.live_pgids(kinds=('test',))
        assert group.alive() and not group.exited() and group.exit_status() is None
        assert group.identity.start_time == procgroup_identity.process_start_time(group.pgid) is not None
        group.terminate(grace=5)
        assert group.exited() and not group.alive()
    finally:
        code = group.reap()
    assert code == -signal.SIGTERM
    assert group.pgid not in procgroup.live_pgids()


def test_a_group_ignoring_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    group = procgroup.spawn(['sh', '-c', 'trap "" TERM; echo ready > ready; sleep 30 & wait'], kind='test',
                            cwd=tmp_path)
    wait_for(lambda: (tmp_path / 'ready').exists(), timeout=10)
    started = time.monotonic()
    group.terminate(grace=0.3)
    assert 0.25 < time.monotonic() - started < 3
    assert group.reap() == -signal.SIGKILL
    assert not pgid_alive(group.pgid)


def test_exit_status_is_seen_without_reaping() -> None:
    group = procgroup.spawn(['sh', '-c', 'exit 7'], kind='test')
    assert group.wait_exit(10)
    assert group.exit_status() == 7
    assert group.proc.returncode is None   # still a zombie: the pgid cannot be reused under us
    assert group.reap() == 7


def test_kill_all_picks_by_kind() -> None:
    mine = procgroup.spawn(['sleep', '30'], kind='test-a')
    other = procgroup.spawn(['sleep', '30'], kind='test-b')
    try:
        assert procgroup.kill_all(grace=2, kinds=('test-a',)) == 1
        assert mine.wait_exit(5) and not other.exited()
    finally:
        mine.reap()
        other.reap()


def test_a_missing_command_raises_and_registers_nothing(tmp_path: Path) -> None:
    before = procgroup.live_pgids()
    with pytest.raises(FileNotFoundError):
        procgroup.spawn([str(tmp_path / 'nope')], kind='test')
    assert procgroup.live_pgids() == before


# --- run_to_end (gates) --------------------------------------------------------------------------

def test_run_to_end_returns_the_exit_code_and_logs_both_streams(tmp_path: Path) -> None:
    log = tmp_path / 'gate.log'
    with open(log, 'wb') as out:
        code = procgroup.run_to_end(['/bin/sh', '-c', 'echo out; echo err >&2; exit 3'], cwd=tmp_path,
                                    env=dict(os.environ), stdout=out, timeout=10)
    assert code == 3
    assert log.read_text().split() == ['out', 'err']


def test_run_to_end_kills_a_background_grandchild_when_the_command_ends(tmp_path: Path) -> None:
    started = time.monotonic()
    code = procgroup.run_to_end(['/bin/sh', '-c', 'sleep 300 & echo $! > child; exit 0'], cwd=tmp_path,
                                env=None, stdout=subprocess.DEVNULL, timeout=10)
    assert code == 0 and time.monotonic() - started < 3
    child = read_pid(tmp_path / 'child')
    wait_for(lambda: not pid_alive(child), timeout=5)


def test_run_to_end_times_out_and_kills_the_group(tmp_path: Path) -> None:
    started = time.monotonic()
    code = procgroup.run_to_end(['/bin/sh', '-c', 'echo $$ > leader; sleep 300 & echo $! > child; wait'],
                                cwd=tmp_path, env=None, stdout=subprocess.DEVNULL, timeout=3)
    assert code is None and 3 <= time.monotonic() - started < 10
    # What the command had started by then (on a loaded machine maybe not all of it) is dead, its group too.
    written = {name: int(text) for name in ('leader', 'child')
               if (tmp_path / name).exists() and (text := (tmp_path / name).read_text().strip())}
    assert written, 'the command wrote no pid in 3 s'
    for pid in written.values():
        assert not pid_alive(pid)
    if 'leader' in written:
        assert not pgid_alive(written['leader'])


def test_run_to_end_stops_on_cancel(tmp_path: Path) -> None:
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    started = time.monotonic()
    code = procgroup.run_to_end(['sleep', '300'], cwd=tmp_path, env=None, stdout=subprocess.DEVNULL,
                                timeout=None, cancel=cancel)
    assert code is None and time.monotonic() - started < 3


def test_run_to_end_without_a_limit_waits_for_the_end(tmp_path: Path) -> None:
    started = time.monotonic()
    assert procgroup.run_to_end(['sleep', '0.3'], cwd=tmp_path, env=None, stdout=subprocess.DEVNULL,
                                timeout=None) == 0
    assert time.monotonic() - started >= 0.3


# --- the watchdog: kill -9 of the parent ---------------------------------------------------------

PARENT = textwrap.dedent('''
    import sys, time
    from orch.adapters import procgroup
    procgroup.spawn(['sh', '-c', sys.argv[1]], kind='service', cwd=sys.argv[2], grace=0.5)
    open(sys.argv[2] + '/spawned', 'w').close()
    time.sleep(300)
''')

# The grandchild ignores SIGTERM, so neither the parent-death signal (the shell's, SIGTERM) nor the
# watchdog's SIGTERM ends it: only the watchdog's SIGKILL after the grace does.
STUBBORN_GROUP = 'echo $$ > leader; (trap "" TERM; exec sleep 300) & echo $! > child; wait'


def test_the_group_dies_with_its_parent_even_by_kill_9(tmp_path: Path) -> None:
    env = {**os.environ, 'PYTHONPATH': str(REPO_ROOT)}
    parent = subprocess.Popen([sys.executable, '-c', PARENT, STUBBORN_GROUP, str(tmp_path)], env=env,
                              start_new_session=True)
    try:
        leader, child = read_pid(tmp_path / 'leader'), read_pid(tmp_path / 'child')
        wait_for(lambda: (tmp_path / 'spawned').exists(), timeout=10)
        assert pid_alive(leader) and pid_alive(child)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        wait_for(lambda: not pid_alive(leader) and not pid_alive(child), timeout=5)
        assert not pgid_alive(leader)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


# --- stale groups: killed only when they prove to be ours ----------------------------------------

@pytest.fixture
def stale(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A group that is not in our registry, as one left by an earlier codex-orch would be."""
    # SIGUSR1 makes its leader touch `alive` (a leader killed before never does); `wait` ends at each trapped signal
    proc = subprocess.Popen(['sh', '-c', "trap 'touch alive' USR1; sleep 300 & echo $! > child; "
                             'while true; do wait; done'], cwd=tmp_path, start_new_session=True)
    read_pid(tmp_path / 'child')
    yield proc
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_a_stale_group_with_another_start_time_is_left_alone(stale: subprocess.Popen[bytes],
                                                             tmp_path: Path) -> None:
    real = procgroup_identity.identity_of(stale.pid)
    assert real.start_time is not None
    assert not procgroup_identity.kill_stale(Identity(stale.pid, real.start_time + 1, real.boot_id), grace=0.2)
    assert not procgroup_identity.kill_stale(Identity(stale.pid, real.start_time, 'another-boot'), grace=0.2)
    assert not procgroup_identity.kill_stale(Identity(stale.pid, None), grace=0.2)
    os.kill(stale.pid, signal.SIGUSR1)   # after any signal kill_stale sent: a killed leader never answers it
    wait_for(lambda: (tmp_path / 'alive').exists(), timeout=10)
    assert pid_alive(stale.pid) and pid_alive(read_pid(tmp_path / 'child'))


def test_a_stale_group_that_matches_is_killed_whole(stale: subprocess.Popen[bytes], tmp_path: Path) -> None:
    path = tmp_path / 'process.json'
    procgroup_identity.save_identity(path, procgroup_identity.identity_of(stale.pid))
    identity = procgroup_identity.load_identity(path)
    assert identity is not None and identity.matches()
    assert procgroup_identity.kill_stale(identity, grace=1)
    wait_for(lambda: not pgid_alive(stale.pid), timeout=5)
    assert not pid_alive(read_pid(tmp_path / 'child'))


def test_identity_files(tmp_path: Path) -> None:
    assert procgroup_identity.load_identity(tmp_path / 'missing') is None
    (tmp_path / 'old').write_text('12345\n')
    assert procgroup_identity.load_identity(tmp_path / 'old') == Identity(12345, None)
    (tmp_path / 'junk').write_text('{"pid": "x"}')
    assert procgroup_identity.load_identity(tmp_path / 'junk') is None


def test_kill_stale_attempts_verifies_before_it_kills(stale: subprocess.Popen[bytes], tmp_path: Path) -> None:
    task_dir = tmp_path / 'task'
    real = procgroup_identity.identity_of(stale.pid)
    assert real.start_time is not None
    old_format, finished, reused, orphan = (task_dir / f'attempt-{n}' for n in range(1, 5))
    for adir in (old_format, finished, reused, orphan):
        adir.mkdir(parents=True)
        (adir / 'pid').write_text(f'{stale.pid}\n')
    # only a pid (before process.json existed): cannot be verified, so not killed
    # finished: attempt.json says it ended; the pid is someone else's now
    procgroup_identity.save_identity(finished / PROCESS_FILE, real)
    (finished / 'attempt.json').write_text(json.dumps({'outcome': 'ok'}))
    # the pid was reused by a process that started at another time
    procgroup_identity.save_identity(reused / PROCESS_FILE, Identity(stale.pid, real.start_time - 1, real.boot_id))
    assert kill_stale_attempts(task_dir) == 0
    assert pid_alive(stale.pid)
    procgroup_identity.save_identity(orphan / PROCESS_FILE, real)
    assert kill_stale_attempts(task_dir) == 1
    wait_for(lambda: not pgid_alive(stale.pid), timeout=5)


RESTARTED = textwrap.dedent('''
    import os, signal, sys, time
    from orch.adapters import procgroup
    first = procgroup.spawn(['sh', '-c', sys.argv[1]], kind='test', cwd=sys.argv[2] + '/a', grace=0.5)
    os.kill(procgroup._WATCHDOG._proc.pid, signal.SIGKILL)   # someone kills the watchdog
    procgroup._WATCHDOG._proc.wait()
    procgroup.spawn(['sh', '-c', sys.argv[1]], kind='test', cwd=sys.argv[2] + '/b', grace=0.5)
    open(sys.argv[2] + '/spawned', 'w').close()
    time.sleep(300)
''')


def test_a_killed_watchdog_is_replaced_and_told_every_live_group(tmp_path: Path) -> None:
    for name in ('a', 'b'):
        (tmp_path / name).mkdir()
    env = {**os.environ, 'PYTHONPATH': str(REPO_ROOT)}
    parent = subprocess.Popen([sys.executable, '-c', RESTARTED, STUBBORN_GROUP, str(tmp_path)], env=env,
                              start_new_session=True)
    try:
        wait_for(lambda: (tmp_path / 'spawned').exists(), timeout=10)
        pids = [read_pid(tmp_path / d / f) for d in ('a', 'b') for f in ('leader', 'child')]
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        wait_for(lambda: not any(pid_alive(pid) for pid in pids), timeout=5)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
