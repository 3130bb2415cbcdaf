"""A real local Dask cluster for tests: `dask scheduler` and `dask worker --resources codex=1` processes.

Each worker has its own CODEX_HOME pointing at a stand-in of the model API and the pinned Codex CLI, and may
run in a mount namespace where the given directories are hidden (an empty tmpfs over each), so that it
cannot read the host repository. Every process runs in its own process group, killed at teardown.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from orch.adapters.codex_bin import find_codex
from orch.standin.server import write_codex_home
from tests.support.procs import pgid_alive, wait_for

DASK = Path(sys.executable).parent / 'dask'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return int(s.getsockname()[1])


def mount_namespace_works() -> str | None:
    """None when `unshare --mount` with a tmpfs works here, else why not."""
    if shutil.which('unshare') is None:
        return 'unshare is not installed'
    probe = subprocess.run(['unshare', '--mount', '--propagation', 'private', 'sh', '-c',
                            'mount -t tmpfs none /mnt && echo ok'], capture_output=True, text=True, timeout=10)
    if probe.returncode != 0 or 'ok' not in probe.stdout:
        return f'no mount namespace here: {probe.stderr.strip() or probe.returncode}'
    return None


@dataclass
class Cluster:
    address: str
    root: Path
    scheduler: subprocess.Popen[bytes]
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    hidden: tuple[Path, ...] = ()
    units: Path | None = None

    def worker_pid(self, name: str) -> int:
        return self.workers[name].pid

    def kill_worker(self, name: str) -> None:
        """SIGKILL the worker's whole process group (the machine is gone, its codex too)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.workers[name].pid, signal.SIGKILL)
        self.workers[name].wait(timeout=10)

    def pgids(self) -> list[int]:
        return [self.scheduler.pid, *(p.pid for p in self.workers.values())]


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f'dask scheduler exited ({proc.returncode}):\n{log.read_text()}')
        with contextlib.suppress(OSError), socket.create_connection(('127.0.0.1', port), timeout=0.2):
            return
        time.sleep(0.05)
    raise AssertionError(f'dask scheduler did not listen on {port}:\n{log.read_text()}')


@contextlib.contextmanager
def outside_tmp(name: str) -> Iterator[Path]:
    """A fresh directory outside /tmp and $TMPDIR (under this user's cache), removed afterwards: a unit's
    scratch directory must not be where Codex's sandbox lets the agent write (orch.remote.run_unit.unit_root),
    and pytest's directories are under /tmp."""
    import pwd
    import tempfile
    home = pwd.getpwuid(os.getuid()).pw_dir   # the user's own: the tests' HOME is a pytest directory
    base = Path(os.environ.get('CODEX_ORCH_TEST_UNITS') or Path(home) / '.cache' / 'codex-orch-tests')
    base.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f'{name}-', dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def worker_env(root: Path, name: str, base_url: str, units: Path | None = None) -> dict[str, str]:
    """The worker machine's own environment: its CODEX_HOME, key, codex and git settings (nothing of the
    coordinator's run)."""
    home = root / name / 'home'
    home.mkdir(parents=True, exist_ok=True)
    (home / '.gitconfig').write_text('')
    binary = find_codex()
    assert binary is not None
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(('CODEX', 'GIT_', 'ORCH_', 'MOCK', 'PYTEST'))}
    env.update(write_codex_home(root / name / 'codex-home', base_url))
    env.update({'HOME': str(home), 'GIT_CONFIG_GLOBAL': str(home / '.gitconfig'), 'GIT_CONFIG_NOSYSTEM': '1',
                'CODEX_BIN': binary, 'PATH': f'{Path(binary).parent}{os.pathsep}{os.environ["PATH"]}',
                'TMPDIR': str(root / name / 'tmp'), 'DASK_DISTRIBUTED__WORKER__DAEMON': 'False'})
    if units is not None:   # where its units make their scratch directories (not under /tmp, as pytest's are)
        env['CODEX_ORCH_UNIT_DIR'] = str(units / name)
    (root / name / 'tmp').mkdir(exist_ok=True)
    return env


def start_worker(cluster: Cluster, name: str, base_url: str) -> None:
    root = cluster.root
    env = worker_env(root, name, base_url, cluster.units)
    argv = [str(DASK), 'worker', cluster.address, '--name', name, '--resources', 'codex=1', '--nthreads', '2',
            '--no-nanny', '--no-dashboard', '--local-directory', str(root / name / 'dask')]
    if cluster.hidden:
        mounts = ' && '.join(f'mount -t tmpfs none {p}' for p in cluster.hidden)
        argv = ['unshare', '--mount', '--propagation', 'private', 'sh', '-c', f'{mounts} && exec "$@"', 'sh', *argv]
    log = open(root / f'{name}.log', 'wb')   # noqa: SIM115 - lives as long as the process
    cluster.workers[name] = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, start_new_session=True)


def wait_workers(cluster: Cluster, count: int, timeout: float = 60) -> None:
    from distributed import Client
    with Client(cluster.address, timeout=10, set_as_default=False) as client:
        try:
            client.wait_for_workers(count, timeout=timeout)
        except Exception as exc:
            logs = '\n'.join(p.read_text(errors='replace')[-2000:] for p in cluster.root.glob('*.log'))
            raise AssertionError(f'{count} dask workers did not join: {exc}\n{logs}') from None


@contextlib.contextmanager
def local_cluster(root: Path, base_url: str, *, workers: int = 2, hidden: tuple[Path, ...] = (),
                  scheduler_env: dict[str, str] | None = None) -> Iterator[Cluster]:
    """`dask scheduler` plus `workers` workers, torn down (process groups killed) on exit."""
    if not DASK.exists():
        pytest.skip("the dask extra is not installed (pip install -e '.[dev,dask]')")
    if find_codex() is None:
        pytest.skip('the Codex CLI is not installed (run .ci/run, or npm install in tools/codex-cli)')
    root.mkdir(parents=True, exist_ok=True)
    with outside_tmp('units') as units:
        yield from _local_cluster(root, base_url, workers, hidden, scheduler_env, units)


def _local_cluster(root: Path, base_url: str, workers: int, hidden: tuple[Path, ...],
                   scheduler_env: dict[str, str] | None, units: Path) -> Iterator[Cluster]:
    port = free_port()
    log = root / 'scheduler.log'
    with open(log, 'wb') as out:
        scheduler = subprocess.Popen([str(DASK), 'scheduler', '--host', '127.0.0.1', '--port', str(port),
                                      '--no-dashboard'], stdout=out, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(scheduler_env or {})},
                                     stdin=subprocess.DEVNULL, start_new_session=True)
    cluster = Cluster(f'tcp://127.0.0.1:{port}', root, scheduler, hidden=hidden, units=units)
    try:
        _wait_port(port, scheduler, log)
        for i in range(1, workers + 1):
            start_worker(cluster, f'w{i}', base_url)
        wait_workers(cluster, workers)
        yield cluster
    finally:
        stop(cluster)


def stop(cluster: Cluster) -> None:
    procs = [*cluster.workers.values(), cluster.scheduler]
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.time() + 1.5   # a graceful close may take longer; nothing of a test needs it
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.1, deadline - time.time()))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
    wait_for(lambda: not any(pgid_alive(p.pid) for p in procs), timeout=10)
