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
