"""What a task's private checkout costs (shared mode), through codex-orch's own git adapter, on a small repository
and on one of 10,000 files: a new one (made at the run branch's tip, removed once the task's work landed), and a
reused one (a finished task's checkout taken from the pool and reset at a tip one commit further), which is what
every task after the first few pays.

    .venv/bin/python benchmarks/checkout_cost.py [--reps 10] [--files 10000] [--json benchmarks/results/checkout.json]
    .venv/bin/python benchmarks/checkout_cost.py --make DIR          # the two repositories, kept under DIR
    .venv/bin/python benchmarks/checkout_cost.py --once REPO         # one new checkout (made and removed), or
    .venv/bin/python benchmarks/checkout_cost.py --once-reused REPO  # one reused: to time whole processes side by side

Prints the median, min and max milliseconds per step. Git's own cost dominates: `worktree add` writes every file of
the tree, so it grows with the repository; removal deletes them.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orch.adapters import git


def make_repo(root: Path, files: int) -> Path:
    repo = root / f'repo-{files}'
    repo.mkdir(parents=True)
    subprocess.run(['git', 'init', '-q', '-b', 'main', str(repo)], check=True)
    for i in range(files):
        path = repo / f'pkg{i // 100:03d}' / f'mod{i % 100:03d}.py'
        path.parent.mkdir(exist_ok=True)
        path.write_text(f'# module {i}\n' + 'x = 1\n' * 40)
    subprocess.run(['git', '-C', str(repo), 'add', '-A'], check=True)
    subprocess.run(['git', '-C', str(repo), '-c', 'user.name=b', '-c', 'user.email=b@b', 'commit', '-qm', 'seed'],
                   check=True)
    return repo


def one(repo: Path, n: int) -> tuple[float, float]:
    """(ms to make the checkout, ms to remove it)."""
    tip = git.rev_parse(repo, 'HEAD')
    path = repo.parent / f'{repo.name}.tasks' / f'T{n}'
    started = time.perf_counter()
    git.add_checkout(repo, path, tip)
    made = time.perf_counter()
    git.remove_worktree(repo, path, force=True)
    removed = time.perf_counter()
    return (made - started) * 1000, (removed - made) * 1000


def reused(repo: Path, n: int) -> float:
    """ms to hand a finished task's checkout to the next task: into the pool, out to the task's path, reset as good
    as new at a tip one commit further (codex-orch's orch.steps.checkout does exactly these git steps)."""
    pool, path = repo.parent / f'{repo.name}.tasks' / '.pool', repo.parent / f'{repo.name}.tasks' / f'R{n}'
    if not (pool / 'one').exists():
        git.add_checkout(repo, pool / 'one', git.rev_parse(repo, 'HEAD'))
    # the run branch moves on: one file changed, as when another task landed
    target = repo / 'pkg000' / 'mod000.py'
    target.write_text(target.read_text() + f'# {n}\n')
    subprocess.run(['git', '-C', str(repo), '-c', 'user.name=b', '-c', 'user.email=b@b', 'commit', '-qam', f'{n}'],
                   check=True)
    tip = git.rev_parse(repo, 'HEAD')
    started = time.perf_counter()
    git.move_worktree(repo, pool / 'one', path)
    git.reset_checkout(path, tip)
    git.move_worktree(repo, path, pool / 'one')
    return (time.perf_counter() - started) * 1000


def summary(values: list[float]) -> dict[str, float]:
    return {'median': round(statistics.median(values), 1), 'min': round(min(values), 1),
            'max': round(max(values), 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--reps', type=int, default=10)
    parser.add_argument('--files', type=int, default=10_000)
    parser.add_argument('--json', type=Path, help='also write the figures here')
    parser.add_argument('--once', type=Path, metavar='REPO', help='one make + remove in REPO, then exit')
    parser.add_argument('--once-reused', type=Path, metavar='REPO', help='one reuse of a pooled checkout in REPO')
    parser.add_argument('--make', type=Path, metavar='DIR', help='only create the two repositories under DIR')
    args = parser.parse_args()
    if args.once:
        one(args.once, 0)
        return 0
    if args.once_reused:
        reused(args.once_reused, int(time.time() * 1000))
        return 0
    with tempfile.TemporaryDirectory(prefix='checkout-cost-') as tmp:
        root = Path(args.make) if args.make else Path(tmp)
        repos = {'small (10 files)': make_repo(root, 10), f'large ({args.files:,} files)': make_repo(root, args.files)}
        if args.make:
            print('\n'.join(str(r) for r in repos.values()))
            return 0
        figures: dict[str, dict[str, dict[str, float]]] = {}
        for name, repo in repos.items():
            one(repo, -1)   # warm-up
            runs = [one(repo, n) for n in range(args.reps)]
            reuses = [reused(repo, n) for n in range(args.reps)]
            figures[name] = {'make': summary([m for m, _ in runs]), 'remove': summary([r for _, r in runs]),
                             'total': summary([m + r for m, r in runs]), 'reused': summary(reuses)}
            f = figures[name]
            print(f'{name}: a new checkout {f["total"]["median"]} ms (make {f["make"]["median"]}, remove '
                  f'{f["remove"]["median"]}; min {f["total"]["min"]}, max {f["total"]["max"]}); '
                  f'a reused one {f["reused"]["median"]} ms (min {f["reused"]["min"]}, max {f["reused"]["max"]}); '
                  f'medians of {args.reps}')
    if args.json:
        args.json.write_text(json.dumps({'reps': args.reps, 'figures': figures}, indent=2) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
