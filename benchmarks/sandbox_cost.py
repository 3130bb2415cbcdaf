"""What running a check inside Codex's sandbox costs: `true` through run_shell, unsandboxed and sandboxed.

Usage: python benchmarks/sandbox_cost.py [N]   (default 20 runs each way; prints the medians in ms)

Both ways go through orch.steps.commands.run_shell, as a check does (process group, log file); the sandboxed
way adds `codex sandbox` (the pinned CLI: its node launcher, then the native binary and bubblewrap). CODEX_HOME
is a directory outside /tmp, as in real use.
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from orch.adapters.codex_bin import find_codex, native_codex
from orch.adapters.sandbox import Sandbox, probe
from orch.steps.commands import run_shell

ROOT = Path(__file__).resolve().parent


def median_ms(n: int, cwd: Path, sandbox: Sandbox | None) -> float:
    samples = []
    for i in range(n):
        started = time.perf_counter()
        run = run_shell('true', cwd=cwd, env=os.environ, log_path=cwd.parent / f'log-{i}.txt', timeout=60,
                        sandbox=sandbox, log_root=cwd.parent)
        samples.append((time.perf_counter() - started) * 1000)
        assert run.passed, run.tail
    return statistics.median(samples)


def main(argv: list[str]) -> int:
    n = int(argv[0]) if argv else 20
    binary = find_codex()
    if binary is None:
        print('no codex CLI (tools/codex-cli): nothing to measure')
        return 1
    home = ROOT / '.work' / 'codex-home'
    home.mkdir(parents=True, exist_ok=True)
    os.environ['CODEX_HOME'] = str(home)
    problem = probe(binary)
    if problem:
        print(f'the sandbox does not work here: {problem}')
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp) / 'checkout'
        cwd.mkdir()
        sandbox = Sandbox(native_codex(binary), 'workspace-write')
        median_ms(2, cwd, sandbox)   # warm the caches
        plain, boxed = median_ms(n, cwd, None), median_ms(n, cwd, sandbox)
    print(f'`true` as a check, median of {n}: unsandboxed {plain:.1f} ms, sandboxed {boxed:.1f} ms, '
          f'cost of the sandbox {boxed - plain:.1f} ms per check')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
