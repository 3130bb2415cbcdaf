"""Live progress: plain lines when piped, a status block redrawn in place on a terminal."""
from __future__ import annotations

import io
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orch.engine import progress
from orch.engine.progress import Progress, describe_event
from tests.support.orchtest import THREE_TASK_SCRIPT, Host, make_host, three_task_plan
from tests.support.procs import wait_for

CLEAR_LINE = '\x1b[F\x1b[2K'


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Host:
    h = make_host(tmp_path, monkeypatch, capsys, THREE_TASK_SCRIPT)
    h.write_plan(three_task_plan())
    return h


def test_piped_output_is_one_line_per_event_with_every_start_and_end(host: Host) -> None:
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 0, err
    assert '\x1b' not in out
    lines = out.splitlines()
    for tid in ('T1', 'T2', 'T3'):
        starts = [i for i, line in enumerate(lines) if line == f'start  work:{tid}']
        ends = [i for i, line in enumerate(lines) if line.startswith(f'done   work:{tid} (')]
        assert len(starts) == 1 and len(ends) == 1 and starts[0] < ends[0], out
    assert lines.index('start  work:T2') > lines.index('start  work:T1')


def test_tasks_blocked_by_a_failure_are_not_reported_as_failed(host: Host) -> None:
    host.script({'default': {'answer': 'auto'}, 'tasks': {'T1': {'answer': {'status': 'done', 'summary': 'bad'}}}})
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--continue')
    assert rc == 1
    assert 'FAILED work:T1 (' in out
    assert 'blocked work:T2: a task it depends on did not finish' in out
    assert 'FAILED work:T2' not in out and 'FAILED work:T3' not in out


def test_piped_verbose_output_shows_worker_activity_on_single_lines(host: Host) -> None:
    host.script({'default': {'answer': 'auto', 'commands': ['echo one\necho two']}})
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '-v')
    assert rc == 0, err
    assert "       work:T1: running: /bin/bash -lc 'echo one echo two'" in out
    assert '       work:T1: answered' in out


def read_all(fd: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> str:
    chunks = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                data = os.read(fd, 65536)
            except OSError:   # EIO: every writer of the terminal is gone
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    return b''.join(chunks).decode('utf-8', 'replace')


def test_terminal_output_redraws_the_status_block_in_place(host: Host) -> None:
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([sys.executable, '-m', 'orch', 'run', '--plan-file', 'plan.json'], cwd=host.repo,
                                stdin=subprocess.DEVNULL, stdout=slave, stderr=subprocess.PIPE)
        os.close(slave)
        text = read_all(master, proc)
        _, err = proc.communicate(timeout=60)
    finally:
        os.close(master)
    assert proc.returncode == 0, text + err.decode()
    assert CLEAR_LINE in text
    assert '[1/3 tasks done (0 up to date), 0 failed, 1 running]' in text
    assert '  work:T2     0s ' in text
    # the block is erased before the summary: the last block's lines are cleared
    assert text.rstrip().splitlines()[-1].startswith('report: ')


def test_terminal_block_keeps_ticking_while_a_worker_is_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, 'TICK_SECONDS', 0.02)
    stream = io.StringIO()
    p = Progress(1, stream=stream, tty=True)
    p.started('work:T1')
    time.sleep(0.3)
    p.close()
    draws = stream.getvalue().count('[0/1 tasks done (0 up to date), 0 failed, 1 running')
    assert draws >= 5
    time.sleep(0.1)   # nothing is drawn after close
    assert stream.getvalue().count('[0/1 tasks done (0 up to date), 0 failed, 1 running') == draws
    assert stream.getvalue().endswith(CLEAR_LINE * 2)


def test_block_lines_fit_one_terminal_row(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    p = Progress(1, stream=stream, tty=True, verbosity=0)
    name = 'work:' + 'T' * 100
    p.started(name)
    p.worker_event('T' * 100, {'type': 'item.started',
                               'item': {'type': 'command_execution', 'command': 'cat <<EOF\nline\nEOF'}})
    p.close()
    block_lines = [line for line in stream.getvalue().replace(CLEAR_LINE, '\n').splitlines() if line]
    assert block_lines and all(len(line) < 80 for line in block_lines)


def test_describe_event_is_one_line() -> None:
    event = {'type': 'item.started', 'item': {'type': 'command_execution', 'command': "bash -lc 'a &&\n  b'"}}
    assert describe_event(event) == "running: bash -lc 'a && b'"
    assert describe_event({'type': 'thread.started'}) is None


def test_a_task_waiting_for_its_slot_is_not_said_to_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Under -j 2, T1 and T2 share their paths: doit gives both a thread at once, but the second waits for the
    first's slot. While the first one's worker is held, only it has been said to start."""
    go = tmp_path / 'go'
    script = {'tasks': {f'T{n}': {'edits': {'src/x.py': f'{n}\n'}, 'touch': str(tmp_path / f'running-{n}'),
                                  'wait_for': str(go), 'wait_timeout': 60} for n in (1, 2)}}
    host = make_host(tmp_path, monkeypatch, capsys, script)
    host.write_plan({'version': 1, 'title': 'Slots', 'tasks': [
        {'id': f'T{n}', 'role': 'implementer', 'title': f'T{n}', 'description': 'x', 'paths': ['src/x.py']}
        for n in (1, 2)]})
    out_file = tmp_path / 'out.txt'
    with out_file.open('w') as out:
        proc = subprocess.Popen([sys.executable, '-m', 'orch', 'run', '--plan-file', 'plan.json', '-j', '2'],
                                cwd=host.repo, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: any((tmp_path / f'running-{n}').exists() for n in (1, 2)), timeout=60)
        starts = [line for line in out_file.read_text().splitlines() if line.startswith('start  work:')]
        assert len(starts) == 1, out_file.read_text()   # the other one waits, unannounced
    finally:
        go.touch()
        assert proc.wait(120) == 0, out_file.read_text()
    assert sum(line.startswith('start  work:') for line in out_file.read_text().splitlines()) == 2


def test_the_terminal_block_shows_each_task_s_round_and_tokens() -> None:
    stream = io.StringIO()
    p = Progress(1, stream=stream, tty=True, verbosity=0)
    p.details = lambda name: 'repair round 1, 1,234 tokens' if name == 'work:T1' else ''
    p.started('work:T1')
    p.close()
    assert '  work:T1     0s [repair round 1, 1,234 tokens]' in stream.getvalue()
