"""What verification costs on a small real Python project: model requests per round, and the wall time
the checks add.

The host is itsdangerous 2.2.0 (its sdist from PyPI, with its own test suite, 297 tests), in a fresh git
repository. The real Codex CLI runs against the local model stand-in. One implementer task first writes
a broken `encoding.py` (base64 padding kept: most of the suite fails), its check is the project's own
test suite, and a repair round in the same thread restores it; a reviewer then asks for one change,
which goes back to the implementer's thread. The same plan without checks or review is the baseline.

    .venv/bin/python benchmarks/verify_rounds.py [--runs 3]

Needs network access to PyPI once (the sdist and a private venv with pytest and freezegun, under
benchmarks/.cache/, git-ignored).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orch.adapters.codex_bin import find_codex  # noqa: E402
from orch.standin.server import Standin, write_codex_home  # noqa: E402

CACHE = ROOT / 'benchmarks' / '.cache'
SDIST = 'itsdangerous==2.2.0'
BROKEN_LINE = ('    return base64.urlsafe_b64encode(string).rstrip(b"=")',
               '    return base64.urlsafe_b64encode(string)')


def prepare() -> tuple[Path, Path]:
    """The unpacked sdist and a python with what its tests need (cached)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    src = CACHE / 'itsdangerous-2.2.0'
    if not src.is_dir():
        subprocess.run([sys.executable, '-m', 'pip', 'download', '--quiet', '--no-deps', '--no-binary', ':all:',
                        SDIST, '-d', str(CACHE)], check=True)
        with tarfile.open(CACHE / 'itsdangerous-2.2.0.tar.gz') as tar:
            tar.extractall(CACHE, filter='data')
    venv = CACHE / 'venv'
    if not (venv / 'bin' / 'python').exists():
        subprocess.run([sys.executable, '-m', 'venv', str(venv)], check=True)
        subprocess.run([str(venv / 'bin' / 'pip'), 'install', '--quiet', 'pytest', 'freezegun'], check=True)
    return src, venv / 'bin' / 'python'


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, 'GIT_AUTHOR_NAME': 'bench', 'GIT_AUTHOR_EMAIL': 'b@x', 'GIT_COMMITTER_NAME': 'bench',
           'GIT_COMMITTER_EMAIL': 'b@x'}
    return subprocess.run(['git', '-C', str(repo), *args], check=True, capture_output=True, text=True,
                          env=env).stdout


def host_repo(src: Path, where: Path) -> Path:
    repo = where / 'itsdangerous'
    shutil.copytree(src, repo)
    git(repo, 'init', '-q', '-b', 'main')
    git(repo, 'add', '-A')
    git(repo, 'commit', '-q', '-m', 'itsdangerous 2.2.0')
    return repo


def plan(repo: Path, python: Path, verified: bool) -> dict[str, Any]:
    good = (repo / 'src/itsdangerous/encoding.py').read_text()
    broken = good.replace(*BROKEN_LINE)
    assert broken != good
    check = f'PYTHONPATH=src {shlex.quote(str(python))} -m pytest -q -p no:cacheprovider tests'
    first = broken if verified else good
    impl: dict[str, Any] = {
        'id': 'T1', 'role': 'implementer', 'title': 'Touch the base64 helpers', 'paths': ['src/itsdangerous/*'],
        'description': ('Rework base64_encode in src/itsdangerous/encoding.py.\n'
                        f'[[standin: write src/itsdangerous/encoding.py]]\n```\n{first}```\n'
                        f'[[standin: write-at 2 src/itsdangerous/encoding.py]]\n```\n{good}```\n'
                        f'[[standin: write-at 3 src/itsdangerous/encoding.py]]\n```\n{good}# reviewed\n```\n')}
    review = {'id': 'T2', 'role': 'reviewer', 'title': 'Review', 'depends_on': ['T1'], 'description': 'Review.'}
    if verified:
        impl['checks'] = [check]
        review['description'] += '\n[[standin: review-once add a comment that says the change was reviewed]]\n'
    return {'version': 1, 'title': 'bench', 'tasks': [impl, review]}


def one_run(src: Path, python: Path, codex: str, verified: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix='verify-rounds-') as tmp:
        where = Path(tmp)
        repo = host_repo(src, where)
        with Standin() as server:
            env = {**os.environ, **write_codex_home(where / 'codex-home', server.base_url)}
            cli = [sys.executable, '-m', 'orch']
            subprocess.run([*cli, 'init'], cwd=repo, env=env, check=True, capture_output=True)
            (repo / '.orchestrator' / 'orchestrator.yaml').write_text(f'codex:\n  binary: {codex}\n')
            (repo / 'plan.json').write_text(json.dumps(plan(repo, python, verified), indent=2))
            git(repo, 'add', '-A')
            git(repo, 'commit', '-q', '-m', 'plan')
            started = time.monotonic()
            done = subprocess.run([*cli, 'run', '--plan-file', 'plan.json', '--run-id', 'bench', '-q'], cwd=repo,
                                  env=env, capture_output=True, text=True)
            wall = time.monotonic() - started
            requests = server.requests
        run_dir = repo / '.orchestrator' / 'runs' / 'bench' / 'tasks'
        results = {t: json.loads((run_dir / t / 'result.json').read_text()) for t in ('T1', 'T2')
                   if (run_dir / t / 'result.json').exists()}
        checks = sorted(run_dir.rglob('check-*.log'))
        check_runs = [c for r in results.values() for c in r.get('checks') or []]
        return {'rc': done.returncode, 'wall': wall, 'requests': len(requests),
                'requests_by_thread': _by_thread(requests), 'check_logs': len(checks),
                'check_seconds_final': sum(c['duration'] for c in check_runs),
                'repair_rounds': results.get('T1', {}).get('repair_rounds'),
                'review_rounds': results.get('T2', {}).get('review_rounds'),
                'stderr': done.stderr[-2000:] if done.returncode else ''}


def _by_thread(requests: list[dict[str, Any]]) -> list[int]:
    counts: dict[str, int] = {}
    for r in requests:
        counts[str(r.get('thread'))] = counts.get(str(r.get('thread')), 0) + 1
    return list(counts.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--runs', type=int, default=3)
    args = parser.parse_args()
    codex = find_codex()
    if codex is None:
        print('the Codex CLI is not installed: bash scripts/setup.sh', file=sys.stderr)
        return 2
    src, python = prepare()
    started = time.monotonic()
    tests = subprocess.run([str(python), '-m', 'pytest', '-q', '-p', 'no:cacheprovider', 'tests'], cwd=src,
                           env={**os.environ, 'PYTHONPATH': 'src'}, capture_output=True, text=True)
    suite = time.monotonic() - started
    print(f'itsdangerous test suite alone: {suite:.2f} s ({tests.stdout.strip().splitlines()[-1]})')
    rows: dict[str, list[dict[str, Any]]] = {'baseline': [], 'verified': []}
    for _ in range(args.runs):   # interleaved: the machine's noise hits both alike
        for name in rows:
            rows[name].append(one_run(src, python, codex, name == 'verified'))
    for name, runs in rows.items():
        walls = [r['wall'] for r in runs]
        print(f'{name}: rc {[r["rc"] for r in runs]}, wall median {statistics.median(walls):.2f} s '
              f'(range {min(walls):.2f}-{max(walls):.2f}), model requests {[r["requests"] for r in runs]}, '
              f'requests per thread {runs[0]["requests_by_thread"]}, check runs {runs[0]["check_logs"]}, '
              f'repair rounds {runs[0]["repair_rounds"]}, review rounds {runs[0]["review_rounds"]}')
        for r in runs:
            if r['stderr']:
                print(r['stderr'])
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
