"""The Dask executor, through a real local cluster: `dask scheduler` and two `dask worker --resources codex=1`
processes, each with its own CODEX_HOME on a stand-in of the model API, running the real Codex CLI."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orch.adapters.codex_bin import find_codex
from orch.standin.server import Standin, write_codex_home
from tests.support.dask_cluster import Cluster, local_cluster, mount_namespace_works
from tests.support.gitrepo import commit_all, git
from tests.support.orchtest import Host, make_host
from tests.support.procs import wait_for
from tests.support.realcodex import use_real_codex

# One cluster for the module: under xdist (`--dist loadgroup`) its tests stay on one process.
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group('dask-cluster')]


def write(path: str, text: str, extra: str = '') -> str:
    return f'{extra}[[standin: write {path}]]\n```python\n{text}```\n'


def diamond_plan(slow: str = '') -> dict:
    """T1 -> (T2, T3) -> T4; T2 and T3 run at once, one on each worker."""
    return {'version': 1, 'title': 'Diamond', 'tasks': [
        {'id': 'T1', 'role': 'implementer', 'title': 'Base', 'paths': ['src/a.py'],
         'description': 'Write a.\n' + write('src/a.py', "A = 'a'\n")},
        {'id': 'T2', 'role': 'implementer', 'title': 'Left', 'depends_on': ['T1'], 'paths': ['src/b.py'],
         'description': 'Write b.\n' + write('src/b.py', "B = 'b'\n", slow)},
        {'id': 'T3', 'role': 'implementer', 'title': 'Right', 'depends_on': ['T1'], 'paths': ['src/c.py'],
         'description': 'Write c.\n' + write('src/c.py', "C = 'c'\n", slow)},
        {'id': 'T4', 'role': 'tester', 'title': 'Join', 'depends_on': ['T2', 'T3'], 'paths': ['tests/test_abc.py'],
         'description': 'Test.\n' + write('tests/test_abc.py', 'from src import a, b, c\n'),
         # runs on the worker, in its scratch repository: the upstream work is there
         'checks': ["test -f src/a.py && test -f src/b.py && test -f src/c.py && test -f tests/test_abc.py"]},
    ]}


@pytest.fixture(scope='module')
def worker_standin() -> Iterator[Standin]:
    server = Standin()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope='module')
def hosts_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where this module's host repositories (and the coordinator's CODEX_HOME) live: hidden from the workers."""
    return tmp_path_factory.mktemp('hosts')


@pytest.fixture(scope='module')
def cluster(tmp_path_factory: pytest.TempPathFactory, worker_standin: Standin, hosts_root: Path) -> Iterator[Cluster]:
    hidden = (hosts_root,) if mount_namespace_works() is None else ()
    with local_cluster(tmp_path_factory.mktemp('cluster'), worker_standin.base_url, hidden=hidden) as c:
        yield c


@pytest.fixture
def coordinator_standin(hosts_root: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
                        ) -> Iterator[Standin]:
    """The coordinator's own codex config points here: it must see no request."""
    server = Standin()
    env = write_codex_home(hosts_root / f'coordinator-home-{request.node.name}', server.base_url)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    try:
        yield server
    finally:
        server.close()


def dask_host(root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], address: str | None,
              name: str) -> Host:
    base = root / name
    base.mkdir()
    real = find_codex()   # before make_host puts its fake codex first on PATH
    assert real is not None
    monkeypatch.setenv('CODEX_BIN', real)
    h = make_host(base, monkeypatch, capsys)
    extra = f'executor:\n  kind: dask\n  address: {address}\n  connect_timeout: 5\n' if address else ''
    use_real_codex(h.repo, extra)
    commit_all(h.repo, 'use the real codex')
    return h


def exec_ids(host: Host, branch: str) -> list[str]:
    text = git(host.repo, 'log', '--format=%(trailers:key=Orch-Exec,valueonly)', branch)
    return [line.strip() for line in text.splitlines() if line.strip()]


def tree_listing(repo: Path, branch: str) -> list[str]:
    """The branch's files (the config differs: one has the executor section)."""
    return [line for line in git(repo, 'ls-tree', '-r', branch).splitlines()
            if not line.endswith('\t.orchestrator/orchestrator.yaml')]


def test_diamond_plan_on_two_workers(cluster: Cluster, worker_standin: Standin, coordinator_standin: Standin,
                                     hosts_root: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    host = dask_host(hosts_root, monkeypatch, capsys, cluster.address, 'diamond')
    host.write_plan(diamond_plan('[[standin: slow 1]]\n'))
    before = len(worker_standin.requests)
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--run-id', 'r1', '-j', '2')
    assert rc == 0, out + err
    assert out.count('ran on Dask worker tcp://127.0.0.1:') == 4, out   # progress names the worker
    assert host.statuses() == {'T1': 'done', 'T2': 'done', 'T3': 'done', 'T4': 'done'}
    # every model request made by the workers, none by the coordinator
    assert len(worker_standin.requests) > before
    assert coordinator_standin.requests == []
    # one commit per task on the run branch, each with its own execution
    branch = host.shared_branch()
    subjects = host.branch_log(branch)
    assert sorted(subjects[:4]) == ['T1: Base', 'T2: Left', 'T3: Right', 'T4: Join']
    ids = exec_ids(host, branch)
    assert len(ids) == 4 == len(set(ids))
    for tid in ('T1', 'T2', 'T3', 'T4'):
        result = host.result(tid)
        assert result['commit'] and result['exec_id'] in ids
        assert git(host.repo, 'rev-parse', f'{result["commit"]}^{{tree}}')   # a commit of the repository
        assert result['attempts'] >= 1
        attempts = sorted((host.run_dir() / 'tasks' / tid).glob('attempt-*/events.jsonl'))
        assert attempts, tid   # the worker's events came back
    assert host.result('T4')['checks'][0]['passed'] is True
    # the worktree's files follow the branch
    worktree = Path(json.loads((host.run_dir() / 'worktree.json').read_text())['path'])
    worktree = worktree if worktree.is_absolute() else host.repo / worktree
    assert (worktree / 'src' / 'b.py').read_text() == "B = 'b'\n"
    assert git(worktree, 'status', '--porcelain') == ''
    # status shows which worker ran each task, and both did
    rows = {t['id']: t for t in host.status()['tasks']}
    workers = {rows[t]['worker'] for t in rows}
    assert all(w and w.startswith('tcp://127.0.0.1:') for w in workers), rows
    assert len({rows['T2']['worker'], rows['T3']['worker']}) == 2, rows

    # the same plan run locally (same run id) gives the same tree
    local = dask_host(hosts_root, monkeypatch, capsys, None, 'local')
    local.write_plan(diamond_plan())
    monkeypatch.setenv('CODEX_HOME', str(cluster.root / 'w1' / 'codex-home'))   # a local codex, on the stand-in
    rc, out, err = local.cli('run', '--plan-file', 'plan.json', '--run-id', 'r1')
    assert rc == 0, out + err
    assert tree_listing(local.repo, local.shared_branch()) == tree_listing(host.repo, branch)


def test_workers_cannot_read_the_host_repository(cluster: Cluster, coordinator_standin: Standin, hosts_root: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    why = mount_namespace_works()
    if why is not None:
        pytest.skip(why)
    host = dask_host(hosts_root, monkeypatch, capsys, cluster.address, 'hidden')
    probe = host.repo / 'README.md'
    assert probe.exists()
    from distributed import Client
    with Client(cluster.address, timeout=10, set_as_default=False) as client:
        seen = client.run(os.path.exists, str(probe))
    assert seen and not any(seen.values()), seen
    host.write_plan({'version': 1, 'tasks': [
        {'id': 'T1', 'role': 'implementer', 'title': 'Write', 'paths': ['src/x.py'],
         'description': write('src/x.py', 'X = 1\n'),
         'checks': [f'test ! -e {probe} && test -f README.md']}]})
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 0, out + err
    assert host.statuses() == {'T1': 'done'}
    assert git(host.repo, 'show', f'{host.shared_branch()}:src/x.py') == 'X = 1'
    assert coordinator_standin.requests == []


def test_bad_executor_config_is_one_clear_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    host = make_host(tmp_path, monkeypatch, capsys)
    host.write_plan({'version': 1, 'tasks': [{'id': 'T1', 'role': 'implementer', 'title': 'x', 'description': 'x'}]})
    config = host.repo / '.orchestrator' / 'orchestrator.yaml'
    original = config.read_text()
    config.write_text(original + 'executor:\n  kind: dask\n')
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 2 and 'executor.address is required' in err and 'Traceback' not in err, err
    assert not (host.repo / '.orchestrator' / 'runs').exists()
    # unreachable scheduler
    from tests.support.dask_cluster import free_port
    config.write_text(original + f'executor:\n  kind: dask\n  address: tcp://127.0.0.1:{free_port()}\n'
                                 '  connect_timeout: 1\n')
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 2 and 'cannot reach the Dask scheduler' in err and 'Traceback' not in err, err
    assert not (host.repo / '.orchestrator' / 'runs').exists()
    # the dask extra not installed
    config.write_text(original + 'executor:\n  kind: dask\n  address: tcp://127.0.0.1:1\n')
    with monkeypatch.context() as m:
        m.setitem(sys.modules, 'distributed', None)
        rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 2 and "pip install 'codex-orch[dask]'" in err and 'Traceback' not in err, err
    assert not (host.repo / '.orchestrator' / 'runs').exists()
    # --executor dask without an address
    config.write_text(original)
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--executor', 'dask')
    assert rc == 2 and 'executor.address' in err, err
    assert not (host.repo / '.orchestrator' / 'runs').exists()


def test_worker_killed_mid_task_then_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    server = Standin()
    # Dask gives up on a unit whose worker died at once (allowed-failures 0): codex-orch's own resubmission
    # runs it on the other worker.
    try:
        with local_cluster(tmp_path / 'cluster', server.base_url,
                           scheduler_env={'DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES': '0'}) as cluster:
            coordinator = Standin()
            try:
                for key, value in write_codex_home(tmp_path / 'coordinator-home', coordinator.base_url).items():
                    monkeypatch.setenv(key, value)
                host = dask_host(tmp_path, monkeypatch, capsys, cluster.address, 'killed')
                config = host.repo / '.orchestrator' / 'orchestrator.yaml'
                config.write_text(config.read_text() + '  resubmits: 1\n')
                commit_all(host.repo, 'resubmit once')
                # (4 s a request: T2 and T3 overlap long enough to be seen side by side on a busy machine)
                host.write_plan(diamond_plan('[[standin: slow 4]]\n'))
                env = {**os.environ, 'PYTHONPATH': str(Path(__file__).resolve().parents[1])}
                proc = subprocess.Popen([sys.executable, '-m', 'orch', 'run', '--plan-file', 'plan.json',
                                         '-j', '2'], cwd=host.repo, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, start_new_session=True)
                try:
                    # a worker is in the middle of T2 or T3 (its codex waits on the slow stand-in): kill it
                    victim = _worker_running_codex(cluster, timeout=60, workers=2)
                    cluster.kill_worker(victim)
                    out, err = proc.communicate(timeout=120)
                finally:
                    if proc.poll() is None:
                        os.killpg(proc.pid, signal.SIGKILL)
                        proc.wait()
                # the lost worker's unit was submitted again and ran on the other one
                assert proc.returncode == 0, out + err
                keys = {t: json.loads((host.run_dir() / 'tasks' / t / 'state.json').read_text())['remote']['key']
                        for t in ('T1', 'T2', 'T3', 'T4')}
                assert sum(k.endswith('-resubmit-1') for k in keys.values()) == 1, keys
                rc, out2, err2 = host.cli('resume')
                assert rc == 0, out + err + out2 + err2
                assert host.statuses() == {'T1': 'done', 'T2': 'done', 'T3': 'done', 'T4': 'done'}
                ids = exec_ids(host, host.shared_branch())
                assert len(ids) == len(set(ids)) == 4, ids
                log = host.branch_log(host.shared_branch())
                assert sorted(log[:4]) == ['T1: Base', 'T2: Left', 'T3: Right', 'T4: Join'], log
                assert log[4] == 'resubmit once', log   # one commit per task, none twice
                assert coordinator.requests == []
            finally:
                coordinator.close()
    finally:
        server.close()


def _codex_running(cluster: Cluster) -> list[str]:
    """The workers with a live codex process among their descendants."""
    import psutil
    found: list[str] = []
    for name, proc in cluster.workers.items():
        try:
            children = psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            continue
        with contextlib.suppress(psutil.Error):
            if any(_is_codex(c.cmdline()) for c in children if _alive(c)):
                found.append(name)
    return found


def _is_codex(cmdline: list[str]) -> bool:
    """The Codex CLI (its npm launcher or native binary), not codex-orch's own watchdog."""
    return any(os.path.basename(arg).startswith('codex') and 'codex-orch' not in arg for arg in cmdline[:2])


def _worker_running_codex(cluster: Cluster, timeout: float, workers: int = 1) -> str:
    """A worker in the middle of a unit: running a codex process in two looks half a second apart (one look may catch
    a unit's short `codex --version` probe, orch.remote.run_unit, or a codex at the end of its life, gone by the time
    its worker is killed). workers=2: wait until two workers are (the diamond's T2 and T3 side by side, one codex unit
    a worker: a codex seen alone there may be T1's, ending)."""
    previous: set[str] = set()
    deadline = time.time() + timeout
    while time.time() < deadline:
        now = set(_codex_running(cluster))
        steady = sorted(now & previous)
        if len(steady) >= workers:
            return steady[0]
        previous = now
        time.sleep(0.5)
    raise AssertionError(f'no {workers} worker(s) running codex for half a second within {timeout} s')


def _alive(proc: object) -> bool:
    import psutil
    try:
        return bool(proc.status() != psutil.STATUS_ZOMBIE)   # type: ignore[attr-defined]
    except psutil.Error:
        return False


def test_doctor_checks_the_scheduler_and_each_worker(cluster: Cluster, coordinator_standin: Standin,
                                                     hosts_root: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    host = dask_host(hosts_root, monkeypatch, capsys, cluster.address, 'doctor')
    rc, out, err = host.cli('doctor')
    line = next(li for li in out.splitlines() if li.partition(':')[0].endswith(' dask executor'))
    assert line.startswith('ok') and line.count('codex-cli 0.169.0') == 2, out
    assert line.count('key STANDIN_API_KEY') == 2, out
    config = host.repo / '.orchestrator' / 'orchestrator.yaml'
    config.write_text(config.read_text() + '  resources: {gpu: 1}\n')
    rc, out, err = host.cli('doctor')
    line = next(li for li in out.splitlines() if li.partition(':')[0].endswith(' dask executor'))
    assert line.startswith('FAIL') and 'none with the resources' in line and rc != 0, out


@pytest.mark.parametrize('crash_at', [None, 'remote-received:T1', 'after-pending:T1'])
def test_killed_coordinator_resumes_without_paying_again(cluster: Cluster, worker_standin: Standin,
                                                         coordinator_standin: Standin, hosts_root: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str],
                                                         crash_at: str | None) -> None:
    """Killed while its unit runs on the cluster (None), as its outcome arrived (before it was recorded), or after
    it recorded it: resume takes that outcome (the running unit's, the one published on the scheduler, or the
    recorded one) instead of submitting the unit again, and commits once."""
    from tests.support.orchtest import crashed_run
    name = f'coordinator-killed-{(crash_at or "running").split(":")[0]}'
    host = dask_host(hosts_root, monkeypatch, capsys, cluster.address, name)
    host.write_plan({'version': 1, 'tasks': [
        {'id': 'T1', 'role': 'implementer', 'title': 'Write', 'paths': ['src/x.py'],
         'description': write('src/x.py', 'X = 1\n', '[[standin: slow 1.5]]\n')}]})
    before = {r.get('thread') for r in worker_standin.requests}
    state_file = host.repo / '.orchestrator' / 'runs' / 'r' / 'tasks' / 'T1' / 'state.json'

    def submitted() -> bool:
        return state_file.exists() and '"remote"' in state_file.read_text()

    crashed_run(host, 'r', crash_at, kill_when=None if crash_at else submitted, settle=0.3)
    rc, out, err = host.cli('resume', '--run-id', 'r')
    assert rc == 0, out + err
    assert host.statuses() == {'T1': 'done'}
    threads = {r.get('thread') for r in worker_standin.requests} - before
    assert len(threads) == 1, threads          # one Codex session: the model was paid once
    assert exec_ids(host, host.shared_branch()) == [host.result('T1')['exec_id']]
    assert json.loads((host.run_dir() / 'tasks' / 'T1' / 'state.json').read_text())['remote_submissions'] == 1
    assert host.result('T1')['attempts'] == 1   # the attempt came back once, whatever the kill


def test_demo_plan_with_repair_and_review_rounds(cluster: Cluster, worker_standin: Standin,
                                                 coordinator_standin: Standin, hosts_root: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """The demo's plan: T1's check fails once (a repair round on its worker), the reviewer asks for a change,
    which goes back to T1's thread on the worker that holds it; then the reviewer approves."""
    from orch.commands.demo import demo_plan
    results = {}
    for name, address in (('demo-dask', cluster.address), ('demo-local', None)):
        host = dask_host(hosts_root, monkeypatch, capsys, address, name)
        host.write_plan(demo_plan())
        if address is None:
            monkeypatch.setenv('CODEX_HOME', str(cluster.root / 'w1' / 'codex-home'))
        rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--spec-file', 'spec.md', '--run-id', 'demo')
        assert rc == 0, out + err
        assert host.statuses() == {'T1': 'done', 'T2': 'done', 'T3': 'done'}
        assert host.result('T1')['repair_rounds'] == 1 and host.result('T3')['review_rounds'] == 1
        results[name] = (host, tree_listing(host.repo, host.shared_branch()),
                         host.branch_log(host.shared_branch())[:4])
    assert coordinator_standin.requests == []
    (_, dask_tree, dask_log), (_, local_tree, local_log) = results['demo-dask'], results['demo-local']
    assert dask_tree == local_tree
    assert dask_log == local_log and 'T1: Add greet() (review round 1 by T3)' in dask_log, dask_log


def test_per_task_worktrees_and_a_failing_check_on_the_cluster(cluster: Cluster, coordinator_standin: Standin,
                                                                hosts_root: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    host = dask_host(hosts_root, monkeypatch, capsys, cluster.address, 'per-task')
    config = host.repo / '.orchestrator' / 'orchestrator.yaml'
    # worktree.setup runs in the worker's scratch checkout: its git-ignored output is there for the checks
    config.write_text(config.read_text() + 'use_single_workspace: false\nworktree: {setup: ["echo built > app.mo"]}\n')
    (host.repo / '.gitignore').write_text('*.mo\n')
    commit_all(host.repo, 'one worktree per task')
    host.write_plan({'version': 1, 'tasks': [
        {'id': 'T1', 'role': 'implementer', 'title': 'Write a', 'paths': ['src/a.py'],
         'description': write('src/a.py', 'A = 1\n'), 'checks': ['test -f src/a.py && grep -q built app.mo']},
        {'id': 'T2', 'role': 'implementer', 'title': 'Write b', 'paths': ['src/b.py'], 'depends_on': ['T1'],
         'description': write('src/b.py', 'B = 1\n'), 'checks': ['test -f src/a.py && test -f src/nope.py']}]})
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 1, out + err
    rows = {t['id']: t for t in host.status()['tasks']}
    assert rows['T1']['status'] == 'done' and rows['T2']['status'] == 'failed', rows
    assert rows['T2']['reason'].startswith('checks failed: test -f src/a.py && test -f src/nope.py (exit 1)'), rows
    log = host.repo / rows['T2']['checks'][0]['log']
    assert log.is_file(), rows['T2']['checks']   # the worker's check log came back
    setup = rows['T1']['setup']
    assert [s['passed'] for s in setup] == [True] and (host.repo / setup[0]['log']).is_file(), setup
    t1 = host.result('T1')
    branch = git(host.repo, 'branch', '--list', '--format=%(refname:short)', '*T1').strip()
    assert git(host.repo, 'show', f'{branch}:src/a.py') == 'A = 1'
    assert t1['commit'] == git(host.repo, 'rev-parse', branch)
    assert coordinator_standin.requests == []


def test_interrupted_coordinator_stops_the_codex_on_the_worker(cluster: Cluster, coordinator_standin: Standin,
                                                               hosts_root: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """SIGTERM (as Ctrl-C) of the coordinator while its unit runs: the worker kills that unit's codex, as a local
    run kills its workers; resume runs the task again."""
    host = dask_host(hosts_root, monkeypatch, capsys, cluster.address, 'interrupted')
    host.write_plan({'version': 1, 'tasks': [
        {'id': 'T1', 'role': 'implementer', 'title': 'Write', 'paths': ['src/x.py'],
         'description': write('src/x.py', 'X = 1\n', '[[standin: slow 30]]\n')}]})
    proc = subprocess.Popen([sys.executable, '-m', 'orch', 'run', '--plan-file', 'plan.json'], cwd=host.repo,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _worker_running_codex(cluster, timeout=60)
        os.kill(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, out + err
    wait_for(lambda: not _codex_running(cluster), timeout=10)   # not the 30 s of the slow answer
    assert host.statuses() == {'T1': 'pending'}


def test_a_brief_scheduler_connection_loss_is_not_paid_twice(cluster: Cluster, worker_standin: Standin,
                                                             coordinator_standin: Standin, hosts_root: Path,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """The coordinator's connection to the scheduler drops for a moment while the unit runs: its future is cancelled
    (scheduler-connection-lost) while the fire-and-forget unit runs on. The coordinator takes that unit's outcome
    instead of submitting it again."""
    import threading

    from orch.adapters import dask_executor
    host = dask_host(hosts_root, monkeypatch, capsys, cluster.address, 'connection-lost')
    host.write_plan({'version': 1, 'tasks': [
        {'id': 'T1', 'role': 'implementer', 'title': 'Write', 'paths': ['src/x.py'],
         'description': write('src/x.py', 'X = 1\n', '[[standin: slow 3]]\n')}]})
    before = {r.get('thread') for r in worker_standin.requests}
    state_file = host.repo / '.orchestrator' / 'runs' / 'r' / 'tasks' / 'T1' / 'state.json'
    aborted = threading.Event()

    def drop_the_connection() -> None:
        wait_for(lambda: state_file.exists() and '"remote"' in state_file.read_text(), timeout=60)
        time.sleep(1.0)   # submitted and running (its codex waits on the slow stand-in)
        client = dask_executor._clients[cluster.address]
        client.loop.add_callback(client.scheduler_comm.comm.abort)
        aborted.set()

    thread = threading.Thread(target=drop_the_connection, daemon=True)
    thread.start()
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--run-id', 'r')
    thread.join(timeout=10)
    assert aborted.is_set()
    assert rc == 0, out + err
    assert host.statuses() == {'T1': 'done'}
    st = json.loads(state_file.read_text())
    assert st['remote']['key'] == st['remote']['unit_key'], st['remote']   # no -resubmit-1
    threads = {r.get('thread') for r in worker_standin.requests} - before
    assert len(threads) == 1, threads   # the model was paid once
    assert exec_ids(host, host.shared_branch()) == [host.result('T1')['exec_id']]


def test_killed_coordinator_in_a_review_turn_does_not_pay_the_turn_again(
        cluster: Cluster, worker_standin: Standin, coordinator_standin: Standin, hosts_root: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Killed while the reviewer's requested fix runs on T1's worker (a turn of T1's thread): resume takes that
    turn's outcome (the unit runs on and publishes it) instead of submitting the turn again."""
    from orch.commands.demo import demo_plan
    from tests.support.orchtest import crashed_run
    host = dask_host(hosts_root, monkeypatch, capsys, cluster.address, 'turn-killed')
    plan = demo_plan()
    plan['tasks'][0]['description'] += '[[standin: slow 1.5]]\n'   # every request of T1's thread, the fix's too
    host.write_plan(plan)
    t3 = host.repo / '.orchestrator' / 'runs' / 'r' / 'tasks' / 'T3' / 'state.json'

    def turn_submitted() -> bool:
        return t3.exists() and '"remote_turns": 1' in t3.read_text()   # the fix's turn is on the cluster

    crashed_run(host, 'r', kill_when=turn_submitted, settle=0.3)
    rc, out, err = host.cli('resume', '--run-id', 'r')
    assert rc == 0, out + err
    assert host.statuses() == {'T1': 'done', 'T2': 'done', 'T3': 'done'}
    assert host.result('T3')['review_rounds'] == 1
    st = json.loads(t3.read_text())
    # two turns: the fix in T1's thread and the reviewer's second look; the killed one not submitted again
    assert st['remote_turns'] == 2, st
    assert not st.get('remote_turn'), st


@pytest.mark.parametrize('forged', ['answer', 'checks', 'check-command'])
def test_a_forged_outcome_is_refused_by_the_coordinator(cluster: Cluster, coordinator_standin: Standin,
                                                        hosts_root: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str], forged: str) -> None:
    """What a worker reports is validated again on the coordinator: an answer that does not validate against the
    role's schema, or `done` without the task's checks passed, fails the task (here the recorded outcome is
    altered after a kill, as an untrusted worker could have sent it)."""
    from tests.support.orchtest import crashed_run
    host = dask_host(hosts_root, monkeypatch, capsys, cluster.address, f'forged-{forged}')
    host.write_plan({'version': 1, 'tasks': [
        {'id': 'T1', 'role': 'implementer', 'title': 'Write', 'paths': ['src/x.py'],
         'description': write('src/x.py', 'X = 1\n'), 'checks': ['test -f src/x.py']}]})
    crashed_run(host, 'r', 'remote-recorded:T1')
    saved_file = host.repo / '.orchestrator' / 'runs' / 'r' / 'tasks' / 'T1' / 'remote-outcome.json'
    saved = json.loads(saved_file.read_text())
    assert saved['outcome']['status'] == 'done'
    if forged == 'answer':
        saved['outcome']['answer'] = {'status': 'done', 'pwned': True}
    elif forged == 'checks':
        saved['outcome']['checks'] = []
    else:   # a passed run of some other command is not the task's check
        saved['outcome']['checks'][0]['command'] = 'true'
    saved_file.write_text(json.dumps(saved))
    rc, out, err = host.cli('resume', '--run-id', 'r')
    assert rc == 1, out + err
    row = host.status()['tasks'][0]
    assert row['status'] == 'failed', row
    assert ('does not validate against the role\'s schema' if forged == 'answer'
            else "reported done but not the task's 1 check(s), each passed") in row['reason'], row
    assert exec_ids(host, host.shared_branch()) == []


def test_a_noop_resume_with_the_dask_executor_reaches_the_scheduler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """A run that is up to date, its config on Dask, the scheduler down: resume exits 2 saying so, as the full path
    does, not 0 from the no-op fast path."""
    from orch.runstate import fastpath
    from tests.support.dask_cluster import free_port
    monkeypatch.delenv(fastpath.FULL_CHECK_ENV, raising=False)
    host = make_host(tmp_path, monkeypatch, capsys)
    config = host.repo / '.orchestrator' / 'orchestrator.yaml'
    config.write_text(config.read_text() + f'executor:\n  kind: dask\n  address: tcp://127.0.0.1:{free_port()}\n'
                                           '  connect_timeout: 1\n')
    commit_all(host.repo, 'on dask')
    host.write_plan({'version': 1, 'tasks': [{'id': 'T1', 'role': 'implementer', 'title': 'x', 'description': 'x'}]})
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--run-id', 'r', '--executor', 'local')
    assert rc == 0, out + err
    assert (host.run_dir('r') / 'noop-manifest.json').is_file()
    rc, out, err = host.cli('resume')
    assert rc == 2 and 'cannot reach the Dask scheduler' in err, (rc, out, err)
    rc, out, err = host.cli('resume', '--executor', 'local')   # the config's executor overridden: a no-op
    assert rc == 0, out + err



@pytest.mark.parametrize('by', ['agent', 'check'])
def test_a_git_filter_planted_on_a_worker_never_runs(cluster: Cluster, coordinator_standin: Standin,
                                                     hosts_root: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str], by: str) -> None:
    """A clean filter in the scratch repository's .git/config and `*.py filter=x` in .gitattributes would run its
    command at `git add`, on the worker, with its environment and key. `agent`: the real Codex CLI in its
    workspace-write sandbox is told to write them (the sandbox keeps the top-level .git read-only: nothing of
    that patch is written). `check`: code run by an unsandboxed check (`check_sandbox: none`) writes them; the unit
    sees the changed config before `git add` and fails, saying so."""
    marker = cluster.root / f'payload-ran-{by}'
    config = ('[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = false\n'
              f'[filter "x"]\n\tclean = touch {marker}; cat\n')
    task = {'id': 'T1', 'role': 'implementer', 'title': 'Write', 'paths': ['src/x.py', '.gitattributes'],
            'description': write('src/x.py', 'X = 1\n')}
    if by == 'agent':
        task['description'] += write('.gitattributes', '*.py filter=x\n') + write('.git/config', config)
    else:
        task['checks'] = [f"git config filter.x.clean 'touch {marker}; cat' && printf '*.py filter=x\\n' > "
                          ".gitattributes && touch src/y.py"]
    host = dask_host(hosts_root, monkeypatch, capsys, cluster.address, f'filter-{by}')
    if by == 'check':   # an unsandboxed check (a sandboxed one cannot write .git/config at all): the seal's case
        config_file = host.repo / '.orchestrator' / 'orchestrator.yaml'
        config_file.write_text(config_file.read_text().replace('defaults:\n', 'defaults:\n  check_sandbox: none\n'))
        commit_all(host.repo, 'unsandboxed checks')
    host.write_plan({'version': 1, 'tasks': [task]})
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert not marker.exists(), out + err
    row = host.status()['tasks'][0]
    if by == 'agent':
        assert row['status'] == 'done', row
        assert not [p for p in git(host.repo, 'ls-tree', '-r', '--name-only', host.shared_branch()).splitlines()
                    if p.startswith('.git/')]
    else:
        assert rc == 1 and row['status'] == 'failed', row
        assert row['reason'].startswith('git-config-changed: the worker changed .git/config'), row
    assert coordinator_standin.requests == []
