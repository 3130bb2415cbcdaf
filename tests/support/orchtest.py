"""Helpers for tests that drive codex-orch end to end on a real repository with a fake codex."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from orch.main import main
from orch.runstate.state import read_result
from tests.support.fake_codex import LOG_FILE, install_fake_codex, read_log, write_script
from tests.support.gitrepo import commit_all, git, make_repo
from tests.support.procs import wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]


def three_task_plan() -> dict[str, Any]:
    return {'version': 1, 'title': 'Greeting', 'tasks': [
        {'id': 'T1', 'role': 'implementer', 'title': 'Add greet()', 'description': 'Create src/greet.py.',
         'depends_on': [], 'paths': ['src/greet.py'], 'acceptance': ["greet('x') == 'Hello, x'"]},
        {'id': 'T2', 'role': 'tester', 'title': 'Test greet()', 'description': 'Test src/greet.py.',
         'depends_on': ['T1'], 'paths': ['tests/test_greet.py']},
        {'id': 'T3', 'role': 'reviewer', 'title': 'Review', 'description': 'Review the change.',
         'depends_on': ['T2']},
    ]}


THREE_TASK_SCRIPT = {'default': {'answer': 'auto'}, 'tasks': {
    'T1': {'edits': {'src/greet.py': "def greet(name):\n    return f'Hello, {name}'\n"}},
    'T2': {'edits': {'tests/test_greet.py': 'from src.greet import greet\n'}},
}}


@dataclass
class Host:
    """A host repository with codex-orch initialised and a fake codex first on PATH."""

    repo: Path
    bin: Path
    capsys: Any

    def cli(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        cwd = os.getcwd()
        os.chdir(self.repo)
        try:
            rc = main(list(args))
        finally:
            os.chdir(cwd)
        out = self.capsys.readouterr()
        return rc, out.out, out.err

    def write_plan(self, plan: dict[str, Any], name: str = 'plan.json') -> Path:
        path = self.repo / name
        path.write_text(json.dumps(plan, indent=2))
        return path

    def script(self, script: dict[str, Any]) -> None:
        write_script(self.bin, script)

    def launches(self) -> list[dict[str, Any]]:
        return read_log(self.bin)

    def launched_tasks(self) -> list[str]:
        return [entry['task_id'] for entry in self.launches()]

    def clear_log(self) -> None:
        (self.bin / 'fake-codex-log.jsonl').unlink(missing_ok=True)

    def run_dir(self, run_id: str | None = None) -> Path:
        runs = self.repo / '.orchestrator' / 'runs'
        if run_id:
            return runs / run_id
        dirs = sorted(runs.iterdir(), key=lambda p: json.loads((p / 'run.json').read_text())['created'])
        return dirs[-1]

    def result(self, task_id: str) -> dict[str, Any]:
        # result.json with its execution.json merged in: the whole record of the task's latest result
        found = read_result(self.run_dir() / 'tasks' / task_id)
        assert found is not None, f'{task_id} has no result'
        return found

    def status(self, run_id: str | None = None) -> dict[str, Any]:
        rc, out, err = self.cli('status', '--json', *(['--run-id', run_id] if run_id else []))
        assert rc == 0, err
        return json.loads(out)

    def statuses(self, run_id: str | None = None) -> dict[str, str]:
        return {t['id']: t['status'] for t in self.status(run_id)['tasks']}

    def branch_log(self, branch: str) -> list[str]:
        return git(self.repo, 'log', '--format=%s', branch).splitlines()

    def shared_branch(self) -> str:
        return json.loads((self.run_dir() / 'run.json').read_text())['shared_branch']


def make_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any,
              script: dict[str, Any] | None = None, files: dict[str, str] | None = None) -> Host:
    repo = make_repo(tmp_path, files or {'README.md': 'hello\n', 'spec.md': '# Spec\nGreet people.\n'})
    bin_dir = install_fake_codex(tmp_path / 'bin', script)
    monkeypatch.setenv('PATH', f'{bin_dir}{os.pathsep}{os.environ["PATH"]}')
    host = Host(repo=repo, bin=bin_dir, capsys=capsys)
    rc, _, err = host.cli('init')
    assert rc == 0, err
    commit_all(repo, 'codex-orch init')
    return host


def host_after_a_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any, run_id: str = 'r1') -> Host:
    """A host that ran the three-task plan to the end as run `run_id`, its launch log cleared."""
    host = make_host(tmp_path, monkeypatch, capsys, THREE_TASK_SCRIPT)
    host.write_plan(three_task_plan())
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--spec-file', 'spec.md', '--run-id', run_id)
    assert rc == 0, out + err
    host.clear_log()
    return host


def files_snapshot(root: Path) -> dict[str, str]:
    """Every file and directory under root -> content digest and mtime: a rewrite of the same bytes shows too,
    so equal snapshots prove a command wrote nothing there."""
    return {str(p.relative_to(root)): f'{hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"} '
                                      f'{p.stat().st_mtime_ns}' for p in sorted(root.rglob('*'))}


def edit_config(repo: Path, replacements: dict[str, str] | None) -> None:
    """Replace text in the host's orchestrator.yaml (each old text must be there)."""
    path = repo / '.orchestrator' / 'orchestrator.yaml'
    text = path.read_text()
    for old, new in (replacements or {}).items():
        assert old in text, old
        text = text.replace(old, new)
    path.write_text(text)


def cli_subprocess(repo: Path, *args: str, env: dict[str, str] | None = None,
                   **kwargs: Any) -> subprocess.Popen[str]:
    """codex-orch in its own process (for kill tests)."""
    return subprocess.Popen([sys.executable, '-m', 'orch', *args], cwd=repo, env=env or os.environ.copy(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            **kwargs)


def crashed_run(host: Host, run_id: str, crash_at: str | None = None, *,
                kill_when: Callable[[], bool] | None = None, settle: float = 0.0, timeout: float = 120) -> None:
    """`codex-orch run` in a subprocess that dies by SIGKILL: at a fault point (`crash_at`), or when
    `kill_when()` holds (then `settle` seconds later)."""
    env = os.environ.copy()
    if crash_at:
        env['ORCH_TEST_CRASH_AT'] = crash_at
    proc = cli_subprocess(host.repo, 'run', '--plan-file', 'plan.json', '--run-id', run_id, env=env)
    try:
        if kill_when is not None:
            wait_for(kill_when, timeout=60)
            time.sleep(settle)
            os.kill(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, f'codex-orch was not killed (rc {proc.returncode}):\n{out}\n{err}'
    # Its workers end by their parent-death signal, each logging its launch as it goes: wait for them, so that the
    # log read next is the killed run's whole log (on a busy machine they end after codex-orch itself).
    wait_for(lambda: not fakes_alive(host.bin), timeout=30)


def fakes_alive(bin_dir: Path) -> bool:
    """Whether a fake codex of this host still runs (its environment names this host's launch log)."""
    marker = f'FAKE_CODEX_LOG={Path(bin_dir).absolute() / LOG_FILE}'.encode()
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open(f'/proc/{entry}/environ', 'rb') as f:
                if marker in f.read().split(b'\0'):
                    return True
        except OSError:
            continue
    return False
