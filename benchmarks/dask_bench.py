"""The Dask executor: parallel efficiency against local -j 8, and the per-task overhead of remote execution.

Usage: .venv/bin/python benchmarks/dask_bench.py [--reps N] [--keep]

- efficiency: 16 independent tasks whose fake codex sleeps 2 s, on a local cluster of 2 workers x 4 threads
  (`dask worker --nthreads 4 --resources codex=4`), `codex-orch run -j 8 --executor dask`, against
  `codex-orch run -j 8` with the same fake here. Ideal: 16 x 2 s / 8 = 4 s.
- overhead: 16 independent tasks with a fake that costs ~6 ms, -j 1, remote against local: the difference per
  task is what remote execution adds (unit, bundles out and in, scheduling, applying the commit). And the git
  part alone, in-process: snapshot + bundle out, fetch + check + apply in (median of 20).

Medians of --reps (3) interleaved runs. Writes benchmarks/results/dask.json. Needs the dask extra.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.lib import (  # noqa: E402
    BENCH,
    VENV_PY,
    independent_plan,
    install_sh_fake,
    interleave,
    launches,
    make_host,
    med,
)

DASK = VENV_PY.parent / 'dask'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def cluster(root: Path, codex: Path, *, workers: int, threads: int) -> Iterator[str]:
    port = free_port()
    address = f'tcp://127.0.0.1:{port}'
    env = {k: v for k, v in os.environ.items() if not k.startswith(('CODEX', 'GIT_'))}
    env.update({'CODEX_BIN': str(codex), 'PATH': f'{codex.parent}{os.pathsep}{env["PATH"]}',
                'GIT_CONFIG_GLOBAL': str(root / 'empty.gitconfig'), 'GIT_CONFIG_NOSYSTEM': '1'})
    root.mkdir(parents=True, exist_ok=True)
    (root / 'empty.gitconfig').write_text('')
    procs = [subprocess.Popen([str(DASK), 'scheduler', '--host', '127.0.0.1', '--port', str(port), '--no-dashboard'],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)]
    try:
        time.sleep(1.0)
        for i in range(workers):
            procs.append(subprocess.Popen(
                [str(DASK), 'worker', address, '--nthreads', str(threads), '--resources', f'codex={threads}',
                 '--no-nanny', '--no-dashboard', '--name', f'w{i}', '--local-directory', str(root / f'w{i}')],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        from distributed import Client
        with Client(address, timeout=20, set_as_default=False) as client:
            client.wait_for_workers(workers, timeout=60)
        yield address
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def run_plan(root: Path, name: str, codex: Path, n: int, jobs: int, address: str | None) -> float:
    extra = f'executor:\n  kind: dask\n  address: {address}\n' if address else ''
    host = make_host(root / name, independent_plan(n), codex=codex, config_extra=extra)
    sample = host.orch('run', '--plan-file', 'plan.json', '-j', str(jobs), '-q')
    done = len(list((host.repo / '.orchestrator' / 'runs').glob('*/tasks/*/result.json')))
    assert done == n, f'{name}: {done} of {n} tasks done'
    return sample.wall


def git_overhead(root: Path) -> dict[str, float]:
    """The git part of a remote task, in-process: out = snapshot + bundle; in = fetch + checks + apply."""
    from orch.adapters import git
    host = make_host(root / 'git', None)
    repo = host.repo
    os.environ.update({k: v for k, v in host.env.items() if k.startswith('GIT_')})
    wt = root / 'git' / 'wt'
    git.ensure_worktree(repo, wt, 'bench', 'HEAD')
    scratch = root / 'git' / 'scratch'
    outs, ins, sizes = [], [], []
    for i in range(20):
        t0 = time.perf_counter()
        snap = git.snapshot_commit(wt, git.rev_parse(wt, 'HEAD'))
        bundle = git.create_bundle(wt, snap, 'refs/orch-remote/b/start')
        outs.append(time.perf_counter() - t0)
        # the worker's side (not counted): scratch repository, an edit, its commit and bundle
        shutil.rmtree(scratch, ignore_errors=True)
        git.init_repository(scratch / 'repo')
        git.fetch_bundle(scratch / 'repo', bundle, 'refs/orch-remote/b/start', 'refs/orch/start')
        git.ensure_worktree(scratch / 'repo', scratch / 'work', 'w', snap)
        (scratch / 'work' / f'f{i}.txt').write_text(f'{i}\n')
        sha = git.scratch_commit(scratch / 'work', 'remote')
        assert sha is not None
        back = git.create_bundle(scratch / 'repo', sha, 'refs/orch/result', exclude=snap)
        sizes.append(len(back))
        t0 = time.perf_counter()
        got = git.fetch_bundle(wt, back, 'refs/orch/result', 'refs/orch-remote/b/result')
        assert git.parents_of(wt, got) == [snap]
        git.tree_changes(wt, snap, got)
        git.apply_commit_changes(wt, snap, got)
        ins.append(time.perf_counter() - t0)
        git.commit(wt, message=f'bench {i}', trailers={})
    return {'out_ms': med(outs) * 1000, 'in_ms': med(ins) * 1000, 'result_bundle_bytes': med(sizes),
            'start_bundle_bytes': len(bundle)}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument('--reps', type=int, default=3)
    ap.add_argument('--keep', action='store_true')
    args = ap.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix='codex-orch-bench-dask-'))
    results: dict[str, object] = {}
    try:
        slow = install_sh_fake(root / 'bin-slow', sleep=2)
        fast = install_sh_fake(root / 'bin-fast')
        counter = iter(range(10_000))
        with cluster(root / 'c8', slow, workers=2, threads=4) as address:
            samples = interleave({
                'local -j 8': lambda: _sample(run_plan(root, f'l{next(counter)}', slow, 16, 8, None)),
                'dask 2x4, -j 8': lambda: _sample(run_plan(root, f'd{next(counter)}', slow, 16, 8, address)),
            }, args.reps, warmup=0)
        eff = {k: {'wall': med([s.wall for s in v]), 'efficiency': 4.0 / med([s.wall for s in v])}
               for k, v in samples.items()}
        results['efficiency'] = eff
        with cluster(root / 'c1', fast, workers=2, threads=1) as address:
            samples = interleave({
                'local -j 1': lambda: _sample(run_plan(root, f'l{next(counter)}', fast, 16, 1, None)),
                'dask -j 1': lambda: _sample(run_plan(root, f'd{next(counter)}', fast, 16, 1, address)),
            }, args.reps, warmup=1)
        walls = {k: med([s.wall for s in v]) for k, v in samples.items()}
        results['overhead'] = {**walls, 'per_task_ms': (walls['dask -j 1'] - walls['local -j 1']) / 16 * 1000}
        results['git'] = git_overhead(root)
        assert launches(slow) and launches(fast)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    out = BENCH / 'results' / 'dask.json'
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({'loadavg': os.getloadavg(), **results}, indent=2) + '\n')
    print(json.dumps(results, indent=2))
    return 0


class _S:
    def __init__(self, wall: float) -> None:
        self.wall = wall


def _sample(wall: float) -> _S:
    return _S(wall)


if __name__ == '__main__':
    raise SystemExit(main(sys.argv[1:]))
