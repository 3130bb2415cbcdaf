"""Ctrl-C and SIGTERM: workers killed, finished work kept, exit 130, and a resume finishes the rest."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.support.orchtest import Host, cli_subprocess, make_host
from tests.support.procs import wait_for
from tests.test_kill import chain_plan


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Host:
    script = {'default': {'answer': 'auto'},
              'tasks': {'T1': {'edits': {'f1.txt': '1\n'}}, 'T2': {'edits': {'f2.txt': '2\n'}, 'sleep': 30}}}
    h = make_host(tmp_path, monkeypatch, capsys, script)
    h.write_plan(chain_plan(2))
    return h


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_run_keeps_finished_work(host: Host, sig: signal.Signals) -> None:
    proc = cli_subprocess(host.repo, 'run', '--plan-file', 'plan.json', '--run-id', 'r')
    tasks = host.repo / '.orchestrator' / 'runs' / 'r' / 'tasks'
    wait_for(lambda: (tasks / 'T2' / 'attempt-1' / 'pid').exists())
    time.sleep(0.5)
    started = time.time()
    os.kill(proc.pid, sig)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, out + err
    assert time.time() - started < 10
    assert 'resume' in err
    # the sleeping worker is gone
    pgid = int((tasks / 'T2' / 'attempt-1' / 'pid').read_text())
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)
    rows = {t['id']: t for t in host.status()['tasks']}
    assert rows['T1']['status'] == 'done'
    assert rows['T2']['status'] == 'pending' and 'interrupted' in rows['T2']['reason']
    host.script({'default': {'answer': 'auto'}, 'tasks': {'T2': {'edits': {'f2.txt': '2\n'}}}})
    host.clear_log()
    rc, out, err = host.cli('resume', '--run-id', 'r')
    assert rc == 0, out + err
    assert host.launched_tasks() == ['T2']
