"""Is codex-orch faster than the engine it is built on? No-op status, dry run and resume vs plain doit and make.

    .venv/bin/python benchmarks/noop_speed.py                      # 1,000 and 10,000 tasks
    .venv/bin/python benchmarks/noop_speed.py --sizes 1000 --reps 5 -v

For each size: a layered plan (layers of ~sqrt(N) tasks, each depending on up to 3 tasks of the layer
before: realistic fan-in) in a fresh git repository, run once to completion (with the `sh` fake codex of
benchmarks/lib.py; sizes above --seed-above are seeded by benchmarks/seed.py, the real `codex-orch run`
with the worker step stubbed), then measured side by side, interleaved, medians:

  plain doit   a standalone dodo.py with the same tasks, file_dep/targets shape (benchmarks/baselines.py),
               python no-op actions, md5 checker, after one full run: `python -m doit run`
  make         the same graph as a Makefile, after one full run: `make -s -r -R` (no built-in rules)
  status       `codex-orch status`
  dry run      `codex-orch resume --dry-run` (when this codex-orch has it; else status, marked)
  resume       `codex-orch resume` (no-op)
  status, full check   `codex-orch status` with CODEX_ORCH_FULL_CHECK=1 (no manifest: load and walk the graph)

each as a subprocess, wall time from fork to wait4. Then the answers are checked: a touched file with
the same content is still a no-op (and answered without importing doit); a changed description makes
exactly that task and its dependents stale; a no-op resume launched no worker.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import baselines
from benchmarks.lib import (
    BENCH,
    CODEX_ORCH,
    VENV_PY,
    Host,
    Log,
    base_env,
    clear_launches,
    fmt_ratio,
    fmt_s,
    interleave,
    launches,
    make_host,
    measure,
    med,
    paired_ratio,
    size_options,
    table,
)


def layered_plan(n: int, *, fan_in: int = 3, seed: int = 13) -> dict[str, Any]:
    width = max(1, round(n ** 0.5))
    rng = random.Random(seed)
    tasks: list[dict[str, Any]] = []
    previous: list[str] = []
    layer: list[str] = []
    for i in range(n):
        if len(layer) == width:
            previous, layer = layer, []
        tid = f'T{i:05d}'
        deps = sorted(rng.sample(previous, min(fan_in, len(previous)))) if previous else []
        layer.append(tid)
        tasks.append({'id': tid, 'role': 'implementer', 'title': f'Task {i}', 'description': f'Write file {i}.',
                      'depends_on': deps, 'paths': [f'src/{tid}.txt']})
    return {'version': 1, 'title': f'{n} tasks in layers of {width}', 'tasks': tasks}


def dependents_closure(plan: dict[str, Any], tid: str) -> set[str]:
    below: dict[str, list[str]] = {}
    for t in plan['tasks']:
        for d in t['depends_on']:
            below.setdefault(d, []).append(t['id'])
    out, todo = {tid}, [tid]
    while todo:
        for child in below.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


MAKEFILE_HEAD = 'all: {results}\n\nworktree.json:\n\t@echo $@ > $@\n\n'


def make_makefile(root: Path, plan: dict[str, Any]) -> Path:
    """The graph as a Makefile over the same files as the plain doit baseline; built once here."""
    graph = baselines.graph_of(plan)
    baselines._sources(root, graph)
    lines = [MAKEFILE_HEAD.format(results=' '.join(f'tasks/{t}/result.json' for t in graph))]
    for tid, deps in graph.items():
        up = ' '.join(f'tasks/{d}/result.json' for d in deps)
        lines.append(f'tasks/{tid}/prompt.md: spec.md template.md schema.json tasks/{tid}/task.json {up}\n'
                     f'\t@echo $@ > $@\n'
                     f'tasks/{tid}/result.json: tasks/{tid}/prompt.md schema.json worktree.json {up}\n'
                     f'\t@echo $@ > $@\n')
    (root / 'Makefile').write_text('\n'.join(lines))
    subprocess.run(['make', '-s', '-r', '-R', '-C', str(root)], check=True, capture_output=True)
    return root


def has_dry_run(host: Host) -> bool:
    return '--dry-run' in host.orch('resume', '--help').out


def first_run(host: Host, n: int, seed_above: int, log: Log) -> str:
    if n > seed_above:
        log.say(f'  seeding the {n:,}-task run (benchmarks/seed.py: the worker step stubbed) ...')
        sample = measure([str(VENV_PY), str(BENCH / 'seed.py'), 'run', '--plan-file', 'plan.json',
                          '--spec-file', 'spec.md', '-q'], cwd=host.repo, env=host.env)
        how = 'seeded'
    else:
        log.say(f'  first run of {n:,} tasks with the sh fake codex ...')
        sample = host.orch('run', '--plan-file', 'plan.json', '--spec-file', 'spec.md', '-q')
        how = 'real run'
        assert len(launches(host.codex)) == n, 'the first run did not launch every task'
    log.say(f'  ... {sample.wall:.1f} s')
    return how


def imports_doit(host: Host, *args: str) -> bool:
    res = subprocess.run([str(VENV_PY), '-X', 'importtime', '-m', 'orch', *args], cwd=host.repo, env=host.env,
                         capture_output=True, text=True, check=True)
    return any(line.rstrip().endswith(' doit') for line in res.stderr.splitlines())


def check_answers(host: Host, plan: dict[str, Any], log: Log) -> dict[str, Any]:
    """Correctness, after the measurements: what the fast answers claim must be what doit decides."""
    n = len(plan['tasks'])
    checks: dict[str, Any] = {}
    run_dir = host.run_dir()
    # 1. Touch files without changing them: still a no-op, still answered without doit.
    for rel in ('spec.md', 'plan.json', f'{run_dir.relative_to(host.repo)}/tasks/T00000/result.json'):
        path = host.repo / rel
        path.write_bytes(path.read_bytes())
    status = json.loads(host.orch('status', '--json').out)
    checks['touched_all_done'] = all(t['status'] == 'done' for t in status['tasks'])
    checks['touched_answered_without_doit'] = not imports_doit(host, 'status')
    clear_launches(host.codex)
    out = host.orch('resume').out
    checks['touched_resume_noop'] = f'{n} done' in out and not launches(host.codex)
    # 2. One changed description: exactly that task and its dependents are stale.
    original = (host.repo / 'plan.json').read_bytes()
    plan = json.loads(original)   # the plan the run ran (a reused host may have had edits since)
    middle = plan['tasks'][n // 2]['id']
    edited = json.loads(json.dumps(plan))
    edited['tasks'][n // 2]['description'] += ' Politely.'
    host.write_plan(edited)
    status = json.loads(host.orch('status', '--json').out)
    stale = {t['id'] for t in status['tasks'] if t['status'] == 'stale'}
    want = dependents_closure(plan, middle)
    checks['edit_stale_exact'] = stale == want
    checks['edit_stale_count'] = len(stale)
    checks['edit_reason'] = next(t['reason'] for t in status['tasks'] if t['id'] == middle)
    (host.repo / 'plan.json').write_bytes(original)   # back as it was: a no-op again (content, not mtime)
    status = json.loads(host.orch('status', '--json').out)
    checks['restored_all_done'] = all(t['status'] == 'done' for t in status['tasks'])
    log.say(f'  checks: {checks}')
    return checks


def reused_host(root: Path) -> tuple[Host, str] | None:
    """A host a --keep run left, if its first run completed (benchmarks/noop_speed.py --reuse)."""
    done = root / 'first-run.txt'
    if not done.exists():
        return None
    codex = root / 'bin' / 'codex'
    return Host(repo=root / 'repo', env=base_env(root, codex.parent), codex=codex), done.read_text().strip()


def bench_size(n: int, args: argparse.Namespace, work: Path, log: Log) -> dict[str, Any]:
    log.say(f'{n:,} tasks')
    plan = layered_plan(n)
    root = work / f'orch-{n}'
    reused = reused_host(root) if args.reuse else None
    if reused is not None:
        host, how = reused
        log.say(f'  reusing {root} ({how})')
    else:
        host = make_host(root, plan)
        how = first_run(host, n, args.seed_above, log)
        (root / 'first-run.txt').write_text(how + '\n')
    plain, mk = work / f'doit-{n}', work / f'make-{n}'
    if reused is None or not (plain / '.doit.sqlite').exists():
        baselines.make_plain_doit(plain, plan)
    if reused is None or not (mk / 'Makefile').exists():
        make_makefile(mk, plan)
    dry = has_dry_run(host)
    # One resume first: a codex-orch changed since the first run (its code is an input) writes its manifest.
    assert f'{n} done' in host.orch('resume').out
    fast_before = not imports_doit(host, 'status')
    full_env = {**host.env, 'CODEX_ORCH_FULL_CHECK': '1'}
    clear_launches(host.codex)
    variants = {
        'plain doit': lambda: baselines.plain_doit_noop(plain),
        'make': lambda: measure(['make', '-s', '-r', '-R', '-C', str(mk)], cwd=mk),
        'status': lambda: host.orch('status'),
        'dry run': (lambda: host.orch('resume', '--dry-run')) if dry else (lambda: host.orch('status')),
        'resume': lambda: host.orch('resume'),
    }
    if not args.no_full:
        variants['status, full check'] = lambda: measure([*CODEX_ORCH, 'status'], cwd=host.repo, env=full_env)
    reps = args.reps if n <= 2000 else max(3, args.reps_big)
    res = interleave(variants, reps, log=log)
    assert not launches(host.codex), 'a no-op resume launched a worker'
    resume_out = res['resume'][-1].out
    assert f'{n} done' in resume_out, resume_out
    checks = {'answered_without_doit': fast_before, **check_answers(host, plan, log)}
    base = res['plain doit']
    entry: dict[str, Any] = {
        'n': n, 'state': how, 'reps': reps, 'dry_run_measured_as': 'resume --dry-run' if dry else 'status',
        'checks': checks, 'load': os.getloadavg(),
        'median_s': {k: med([s.wall for s in v]) for k, v in res.items()},
        'ratio_vs_plain_doit': {k: paired_ratio(v, base) for k, v in res.items()},
        'walls': {k: [round(s.wall, 4) for s in v] for k, v in res.items()},
    }
    if not args.keep:
        for path in (host.repo.parent, plain, mk):
            shutil.rmtree(path, ignore_errors=True)
    return entry


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    size_options(p, reps=7, reps_big=5)
    p.add_argument('--no-full', action='store_true', help='skip the full-check status variant')
    p.add_argument('--keep', action='store_true', help='keep the generated repositories')
    p.add_argument('--reuse', action='store_true', help='reuse the repositories an earlier --keep left')
    args = p.parse_args(argv)
    log = Log(args.verbose)
    work = Path(tempfile.gettempdir()) / 'codex-orch-bench' / 'noop-speed'
    work.mkdir(parents=True, exist_ok=True)
    entries = [bench_size(int(s), args, work, log) for s in args.sizes.split(',')]
    names = list(entries[0]['median_s'])
    rows = []
    for e in entries:
        for name in names:
            label = name + (' (measured as status)' if name == 'dry run' and e['dry_run_measured_as'] == 'status'
                            else '')
            rows.append([f'{e["n"]:,} ({e["state"]})', label, fmt_s(e['median_s'][name]),
                         fmt_ratio(e['ratio_vs_plain_doit'][name])])
    print(table(['tasks', 'command', 'median s', 'vs plain doit'], rows))
    ok = all(v for e in entries for k, v in e['checks'].items() if isinstance(v, bool))
    print('\nchecks: ' + ('all passed' if ok else 'FAILED: ' + json.dumps([e['checks'] for e in entries])))
    out = BENCH / 'results' / f'noop-speed-{args.sizes.replace(",", "-")}.json'
    out.write_text(json.dumps({'entries': entries, 'uname': list(os.uname()),
                               'python': sys.version}, indent=2) + '\n')
    print(f'raw samples: {out.relative_to(BENCH.parent)}')
    return 0 if ok else 1


if __name__ == '__main__':
    raise SystemExit(main())
