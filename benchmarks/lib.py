"""Shared machinery of the benchmarks: host repositories, fake workers, measuring, statistics.

Nothing here imports codex-orch at module level: every codex-orch figure is measured on a
separate process (`codex-orch ...`, `python -m doit ...`), the way a user runs it.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / 'benchmarks'
VENV_PY = Path(sys.executable)
CODEX_ORCH = [str(VENV_PY), '-m', 'orch']
SNAKE_VENV = BENCH / '.venv-snakemake'
REAL_CODEX = ROOT / 'tools' / 'codex-cli' / 'node_modules' / '.bin' / 'codex'

# One answer valid for the implementer schema (every benchmark plan uses that role).
ANSWER = {'status': 'done', 'summary': 'Done.', 'files_changed': [], 'decisions': [], 'follow_ups': []}
FLOOD_LINE = json.dumps({'type': 'item.completed', 'item': {
    'id': 'item_f', 'type': 'command_execution', 'command': "/bin/bash -lc 'flood'",
    'aggregated_output': 'x' * 8000, 'exit_code': 0, 'status': 'completed'}})
USAGE = {'input_tokens': 100, 'cached_input_tokens': 0, 'output_tokens': 20, 'reasoning_output_tokens': 0}


# ------------------------------------------------------------------------------------- measuring

@dataclass
class Sample:
    wall: float         # seconds
    rss_mb: float       # peak resident set of the process tree's largest member (wait4), MiB
    rc: int
    out: str = ''


def measure(argv: Sequence[str], *, cwd: Path, env: dict[str, str] | None = None,
            check: bool = True, capture: bool = True) -> Sample:
    """Run argv to its end: wall time (perf_counter around fork..wait4) and peak RSS (ru_maxrss)."""
    out_file = subprocess.DEVNULL
    tmp = None
    if capture:
        import tempfile
        tmp = tempfile.TemporaryFile()
        out_file = tmp
    t0 = time.perf_counter()
    proc = subprocess.Popen(list(argv), cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out_file,
                            stderr=subprocess.STDOUT)
    _, status, rusage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = ''
    if tmp is not None:
        tmp.seek(0)
        text = tmp.read().decode('utf-8', 'replace')
        tmp.close()
    if check and proc.returncode != 0:
        raise RuntimeError(f'{shlex.join(argv)} exited {proc.returncode} in {cwd}:\n{text[-3000:]}')
    return Sample(wall=wall, rss_mb=rusage.ru_maxrss / 1024, rc=proc.returncode, out=text)


def interleave(variants: dict[str, Callable[[], Sample]], reps: int, *, warmup: int = 1,
               log: Callable[[str], None] | None = None) -> dict[str, list[Sample]]:
    """Run the variants A B C A B C ... `reps` times (after `warmup` unrecorded rounds)."""
    results: dict[str, list[Sample]] = {name: [] for name in variants}
    for i in range(warmup + reps):
        for name, fn in variants.items():
            sample = fn()
            if i >= warmup:
                results[name].append(sample)
            if log:
                log(f'    {"warmup" if i < warmup else f"rep {i - warmup + 1}"} {name}: '
                    f'{sample.wall:.3f} s, {sample.rss_mb:.0f} MiB')
    return results


def med(values: Sequence[float]) -> float:
    return statistics.median(values)


def summary(samples: list[Sample]) -> dict[str, Any]:
    walls = [s.wall for s in samples]
    return {'n': len(samples), 'wall_median': med(walls), 'wall_min': min(walls), 'wall_max': max(walls),
            'rss_mb_median': med([s.rss_mb for s in samples]), 'walls': [round(w, 4) for w in walls],
            'rss_mb': [round(s.rss_mb, 1) for s in samples]}


def size_options(p: Any, *, reps: int, reps_big: int) -> None:
    """The options of the benchmarks over plan sizes (noop_speed.py, edit_cost.py)."""
    p.add_argument('--sizes', default='1000,10000')
    p.add_argument('--reps', type=int, default=reps, help='repetitions (plans up to 2,000 tasks)')
    p.add_argument('--reps-big', type=int, default=reps_big, help='repetitions for bigger plans')
    p.add_argument('--seed-above', type=int, default=2000, help='seed (stub the worker) above this many tasks')
    p.add_argument('-v', '--verbose', action='store_true', help='print every sample')


def paired_ratio(a: list[Sample], b: list[Sample]) -> float:
    """Median of the per-round ratios a_i / b_i (the rounds were interleaved)."""
    return med([x.wall / y.wall for x, y in zip(a, b)])


# ------------------------------------------------------------------------------------- environment

def base_env(tmp: Path, bin_dir: Path | None = None) -> dict[str, str]:
    """An environment with an isolated git (fixed identity, no user config) and the fake first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(('GIT_', 'CODEX_', 'DOIT'))
           and k != 'PYTHONDONTWRITEBYTECODE'}   # measure what an installed codex-orch does: with bytecode
    cfg = tmp / 'empty.gitconfig'
    if not cfg.exists():
        cfg.parent.mkdir(parents=True, exist_ok=True)
        cfg.write_text('')
    env.update({'GIT_CONFIG_GLOBAL': str(cfg), 'GIT_CONFIG_NOSYSTEM': '1',
                'GIT_AUTHOR_NAME': 'Bench', 'GIT_AUTHOR_EMAIL': 'bench@example.com',
                'GIT_COMMITTER_NAME': 'Bench', 'GIT_COMMITTER_EMAIL': 'bench@example.com',
                })
    path = [str(VENV_PY.parent)]
    if bin_dir is not None:
        path.insert(0, str(bin_dir))
    env['PATH'] = os.pathsep.join([*path, env.get('PATH', '/usr/bin:/bin')])
    env['PYTHONPATH'] = str(ROOT)
    return env


def git(repo: Path, *args: str, env: dict[str, str]) -> str:
    res = subprocess.run(['git', '-C', str(repo), *args], capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise RuntimeError(f'git {" ".join(args)}: {res.stderr}')
    return res.stdout.strip()


# ------------------------------------------------------------------------------------- fake workers

def install_sh_fake(bin_dir: Path, *, sleep: float = 0.0, flood_mb: int = 0, edit: bool = True) -> Path:
    """A `codex` that costs one sh, grep and cat: canned JSONL events, the answer written to -o.

    Python's start-up alone (~50 ms) would dominate a 10,000-task run; this fake costs ~3 ms.
    It appends the task id (from the prompt's `Task id:` line) to bin_dir/launches.log, with
    `edit` writes src/<task id>.txt under -C (so each task has a change to commit), and with
    flood_mb streams that many MiB of valid 8 KiB item events first (yes | head).
    """
    bin_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(ANSWER)
    events = [
        {'type': 'thread.started', 'thread_id': '0199a000-0000-7000-8000-000000000000'},
        {'type': 'turn.started'},
        {'type': 'item.completed', 'item': {'id': 'item_0', 'type': 'agent_message', 'text': text}},
        {'type': 'turn.completed', 'usage': USAGE},
    ]
    (bin_dir / 'events.jsonl').write_text(''.join(json.dumps(e) + '\n' for e in events))
    (bin_dir / 'answer.txt').write_text(text)
    # $BENCH_FLOOD_MB (or flood_mb) MiB of valid item events before the answer.
    flood = (f'flood=${{BENCH_FLOOD_MB:-{flood_mb:g}}}\n'
             f'if [ "$flood" != 0 ]; then yes {shlex.quote(FLOOD_LINE)} | '
             f'head -n $(( flood * {2 ** 20} / {len(FLOOD_LINE) + 1} )); fi\n')
    write = 'mkdir -p "$dir/src" && echo "$tid" > "$dir/src/$tid.txt"' if edit else ':'
    script = f'''#!/bin/sh
# benchmark fake codex: canned answer, no model
out=""; dir="."
while [ $# -gt 0 ]; do
  case "$1" in -o) out="$2"; shift 2 ;; -C) dir="$2"; shift 2 ;; *) shift ;; esac
done
tid=$(grep -m1 '^Task id: ' | cut -c10-)
cat >/dev/null
echo "$tid" >> {shlex.quote(str(bin_dir / 'launches.log'))}
{f"sleep {sleep}" if sleep else ""}
{write}
{flood}cat {shlex.quote(str(bin_dir / 'events.jsonl'))}
[ -n "$out" ] && cat {shlex.quote(str(bin_dir / 'answer.txt'))} > "$out"
exit 0
'''
    codex = bin_dir / 'codex'
    codex.write_text(script)
    codex.chmod(0o755)
    return codex


def launches(codex: Path) -> list[str]:
    log = codex.parent / 'launches.log'
    return log.read_text().split() if log.exists() else []


def clear_launches(codex: Path) -> None:
    (codex.parent / 'launches.log').unlink(missing_ok=True)


# ------------------------------------------------------------------------------------- plans and hosts

def independent_plan(n: int, *, paths: bool = True) -> dict[str, Any]:
    return {'version': 1, 'title': f'{n} independent tasks', 'tasks': [
        {'id': f'T{i:05d}', 'role': 'implementer', 'title': f'Task {i}',
         'description': f'Write file {i}.', 'depends_on': [],
         'paths': [f'src/T{i:05d}.txt'] if paths else []} for i in range(n)]}


def chain_plan(n: int) -> dict[str, Any]:
    return {'version': 1, 'title': f'{n}-deep chain', 'tasks': [
        {'id': f'T{i:05d}', 'role': 'implementer', 'title': f'Task {i}',
         'description': f'Step {i} of the chain.', 'depends_on': [f'T{i - 1:05d}'] if i else [],
         'paths': [f'src/T{i:05d}.txt']} for i in range(n)]}


def make_plan(shape: str, n: int) -> dict[str, Any]:
    return chain_plan(n) if shape == 'chain' else independent_plan(n)


@dataclass
class Host:
    repo: Path
    env: dict[str, str]
    codex: Path
    extra: dict[str, Any] = field(default_factory=dict)

    def orch(self, *args: str, check: bool = True) -> Sample:
        return measure([*CODEX_ORCH, *args], cwd=self.repo, env=self.env, check=check)

    def doit(self, *args: str, check: bool = True) -> Sample:
        return measure([str(VENV_PY), '-m', 'doit', *args], cwd=self.repo, env=self.env, check=check)

    def run_dir(self) -> Path:
        runs = sorted((self.repo / '.orchestrator' / 'runs').iterdir())
        return runs[-1]

    def write_plan(self, plan: dict[str, Any]) -> None:
        (self.repo / 'plan.json').write_text(json.dumps(plan, indent=1))


def make_host(root: Path, plan: dict[str, Any] | None, *, codex: Path | None = None,
              config_extra: str = '', bin_dir: Path | None = None) -> Host:
    """A git repository with codex-orch initialised, a spec, a plan and `codex.binary` set."""
    if root.exists():
        shutil.rmtree(root)
    repo = root / 'repo'
    repo.mkdir(parents=True)
    bin_dir = bin_dir or root / 'bin'
    if codex is None:
        codex = install_sh_fake(bin_dir)
    env = base_env(root, codex.parent)
    subprocess.run(['git', 'init', '-q', '-b', 'main', str(repo)], check=True, env=env)
    (repo / 'README.md').write_text('benchmark host\n')
    (repo / 'spec.md').write_text('# Spec\nDo the tasks.\n')
    measure([*CODEX_ORCH, 'init'], cwd=repo, env=env)
    cfg = repo / '.orchestrator' / 'orchestrator.yaml'
    text = cfg.read_text().replace('  binary: codex ', f'  binary: {codex} ', 1)
    assert str(codex) in text, 'could not point codex.binary at the fake'
    # No waiting between retries in benchmarks; everything else stays at its default.
    text = text.replace('  retry_backoff: 5 ', '  retry_backoff: 0 ', 1)
    cfg.write_text(text + config_extra)
    git(repo, 'add', '-A', env=env)
    git(repo, 'commit', '-q', '-m', 'host with codex-orch', env=env)
    host = Host(repo=repo, env=env, codex=codex)
    if plan is not None:
        host.write_plan(plan)
    return host


# ------------------------------------------------------------------------------------- tables

def table(headers: list[str], rows: list[list[Any]]) -> str:
    from tabulate import tabulate
    return tabulate(rows, headers=headers, tablefmt='github', floatfmt='.3f', disable_numparse=True)


def fmt_s(x: float) -> str:
    return f'{x:.3f}' if x < 10 else f'{x:.1f}'


def fmt_ratio(x: float) -> str:
    return f'{x:.2f}x'


class Log:
    def __init__(self, verbose: bool) -> None:
        self.verbose = verbose
        self.t0 = time.monotonic()

    def __call__(self, text: str) -> None:
        if self.verbose:
            print(f'[{time.monotonic() - self.t0:7.1f}s] {text}', file=sys.stderr, flush=True)

    def say(self, text: str) -> None:
        print(f'[{time.monotonic() - self.t0:7.1f}s] {text}', file=sys.stderr, flush=True)
