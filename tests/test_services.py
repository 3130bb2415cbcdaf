"""Helper services: scripts/start_codex_mem.sh runs for the length of a run and no longer."""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from orch.adapters import services
from orch.adapters.services import Services
from orch.core.config import Service
from tests.support.gitrepo import git
from tests.support.orchtest import Host, cli_subprocess, make_host
from tests.support.procs import pgid_alive, pid_alive, wait_for

START_SCRIPT = '''#!/bin/bash
# stand-in for the codex-mem MCP server: records its PID, then serves "forever"
mkdir -p .codex-mem
echo $$ > .codex-mem/pid
echo "codex-mem listening"
sleep 300 &
echo $! > .codex-mem/child
wait
'''


def gone(pid: int) -> bool:
    """Not running: no such process, or a zombie (this container's init may never reap orphans)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        return Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0] == 'Z'
    except (FileNotFoundError, IndexError):
        return True


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Host:
    files = {'README.md': 'hello\n', 'scripts/start_codex_mem.sh': START_SCRIPT}
    repo_pid = '"$ORCH_REPO_FOR_TEST/.codex-mem/pid"'
    probe = f'cp {repo_pid} seen-pid.txt && kill -0 "$(cat {repo_pid})" && echo alive >> seen-pid.txt'
    h = make_host(tmp_path, monkeypatch, capsys, {'default': {'answer': 'auto', 'commands': [probe]}}, files=files)
    monkeypatch.setenv('ORCH_REPO_FOR_TEST', str(h.repo))
    h.write_plan({'version': 1, 'tasks': [{'id': 'T1', 'role': 'implementer', 'title': 'Probe',
                                           'description': 'Look for codex-mem.'}]})
    return h


def test_codex_mem_runs_during_the_run_and_is_gone_after(host: Host) -> None:
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--run-id', 'mem')
    assert rc == 0, out + err
    pid = int((host.repo / '.codex-mem' / 'pid').read_text())
    seen = (host.repo / '.orchestrator' / 'worktrees' / 'mem' / 'seen-pid.txt').read_text().split()
    assert seen == [str(pid), 'alive']   # the worker saw the server running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert gone(int((host.repo / '.codex-mem' / 'child').read_text()))
    assert 'codex-mem listening' in (host.repo / '.codex-mem' / 'server.log').read_text()
    # its directory ignores itself: the user's checkout shows nothing new but the plan file
    assert git(host.repo, 'status', '--porcelain', '--untracked-files=all') == '?? plan.json'


def test_a_service_gets_time_to_clean_up_even_when_its_shell_dies_first(tmp_path: Path) -> None:
    server = ('import pathlib, signal, sys, time\n'
              'def stop(*_):\n'
              '    time.sleep(0.3); pathlib.Path("cleaned").write_text("yes"); sys.exit(0)\n'
              'signal.signal(signal.SIGTERM, stop)\n'
              'pathlib.Path("ready").write_text("")\n'
              'time.sleep(300)\n')
    (tmp_path / 'server.py').write_text(server)
    svc = Service(name='slow', command=['bash', '-c', 'python3 server.py & wait'], ready_seconds=0)
    running = Services(tmp_path, [svc], tmp_path / 'run')
    running.start()
    deadline = time.time() + 10
    while not (tmp_path / 'ready').exists() and time.time() < deadline:
        time.sleep(0.02)
    running.stop()
    assert (tmp_path / 'cleaned').read_text() == 'yes'
    assert (tmp_path / 'run' / 'service-slow.log').exists()


def test_a_service_ignoring_sigterm_is_killed_after_the_grace(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(services, 'STOP_GRACE', 0.3)
    svc = Service(name='stubborn', command=['bash', '-c', 'trap "" TERM; echo $$ > pid; sleep 300 & wait'],
                  ready_seconds=0.2)
    running = Services(tmp_path, [svc], tmp_path / 'run')
    running.start()
    pid = int((tmp_path / 'pid').read_text())
    started = time.time()
    running.stop()
    assert time.time() - started < 2.5
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_service_that_fails_to_start_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    svc = Service(name='broken', command=['bash', '-c', 'echo no config >&2; exit 3'], ready_seconds=0.3)
    running = Services(tmp_path, [svc], tmp_path / 'run')
    running.start()
    running.stop()
    err = capsys.readouterr().err
    assert 'service broken exited with 3' in err and 'service-broken.log' in err
    assert 'no config' in (tmp_path / 'run' / 'service-broken.log').read_text()


def test_a_service_and_its_grandchild_die_with_codex_orch_even_by_kill_9(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    h = make_host(tmp_path, monkeypatch, capsys, {'default': {'answer': 'auto', 'sleep': 60}})
    h.write_plan({'version': 1, 'tasks': [{'id': 'T1', 'role': 'implementer', 'title': 'Wait',
                                           'description': 'Take your time.'}]})
    marks = tmp_path / 'service'
    marks.mkdir()
    # The server ignores SIGTERM and is not the service's direct child: neither the parent-death
    # signal nor a forwarded SIGTERM reaches it, only a SIGKILL of the whole group does.
    script = (f'echo $$ > {marks}/leader; (trap "" TERM; exec sleep 300) & echo $! > {marks}/child; '
              'echo up; wait')
    service = {'name': 'stubborn', 'command': ['bash', '-c', script], 'ready_seconds': 0.1}
    cfg = h.repo / '.orchestrator' / 'orchestrator.yaml'
    text = cfg.read_text()
    assert 'services: []' in text
    cfg.write_text(text.replace('services: []', f'services: {json.dumps([service])}'))
    proc = cli_subprocess(h.repo, 'run', '--plan-file', 'plan.json', '--run-id', 'k9')
    try:
        attempt = h.repo / '.orchestrator' / 'runs' / 'k9' / 'tasks' / 'T1' / 'attempt-1'
        events = attempt / 'events.jsonl'
        wait_for(lambda: events.exists() and events.stat().st_size > 0)   # the run is well under way
        leader, child = (int((marks / name).read_text()) for name in ('leader', 'child'))
        worker_pgid = int((attempt / 'pid').read_text())
        assert pid_alive(leader) and pid_alive(child)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=10)
        wait_for(lambda: not pid_alive(leader) and not pid_alive(child), timeout=10)
        wait_for(lambda: not pgid_alive(leader) and not pgid_alive(worker_pgid), timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
