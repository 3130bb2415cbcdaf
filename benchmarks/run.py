"""codex-orch benchmarks: one command, its own plans and repositories, tables on stdout.

    .venv/bin/python benchmarks/run.py            # full run (~14 min on 2 cores)
    .venv/bin/python benchmarks/run.py --quick    # smaller sizes, fewer repetitions (~3 min)
    .venv/bin/python benchmarks/run.py --only noop,edit

Suites: noop (no-op resume vs plain doit vs snakemake -n), edit (one edited task in a
1,000-task plan), overhead (per-task cost with an instant fake, and with the real Codex CLI
against the local stand-in vs bare `codex exec`), parallel (-j 1/2/4/8), memory (a 10 MB vs a
1 GB event stream). Every comparison is interleaved (A B A B ...) in the same session and
reported as medians. Raw results go to benchmarks/results/<mode>-<suite>.json. See
docs/benchmarks.md for what each one measures and the latest figures.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import baselines  # noqa: E402
from benchmarks.lib import (  # noqa: E402
    BENCH, REAL_CODEX, VENV_PY, Host, Log, Sample, clear_launches, fmt_ratio,
    fmt_s, git, install_sh_fake, interleave, launches, make_host, make_plan, measure, med, paired_ratio,
    summary, table,
)

RESULTS = BENCH / 'results'
SUITES = ('noop', 'edit', 'overhead', 'parallel', 'memory')


class Ctx:
    def __init__(self, args: argparse.Namespace) -> None:
        self.quick = args.quick
        self.one_request = args.one_request
        self.mode = ('quick' if args.quick else 'full') + ('-one-request' if args.one_request else '')
        self.work = Path(args.workdir).resolve()
        self.log = Log(args.verbose)
        self.hosts: dict[str, Host] = {}
        self.reps = args.reps or (3 if args.quick else 5)
        self.keep = args.keep
        self.tables: list[str] = []

    def out(self, title: str, text: str, notes: list[str] | None = None) -> None:
        block = f'\n### {title}\n\n{text}\n' + ''.join(f'\n{n}' for n in notes or []) + ('\n' if notes else '')
        self.tables.append(block)
        print(block, flush=True)


# ============================================================================ 1. no-op resume

def seed_host(ctx: Ctx, name: str, shape: str, n: int, *, real: bool) -> Host:
    """A host repo whose run of the plan is complete: a real first run, or a seeded one."""
    host = make_host(ctx.work / name, make_plan(shape, n))
    t0 = time.monotonic()
    if real:
        host.orch('run', '--plan-file', 'plan.json', '--spec-file', 'spec.md', '-q')
    else:
        measure([str(VENV_PY), str(BENCH / 'seed.py'), 'run', '--plan-file', 'plan.json',
                 '--spec-file', 'spec.md', '-q'], cwd=host.repo, env=host.env)
    host.extra['first_run_s'] = time.monotonic() - t0
    host.extra['state'] = 'real run' if real else 'seeded'
    ctx.log.say(f'  {name}: first run ({host.extra["state"]}) took {host.extra["first_run_s"]:.1f} s')
    return host


def bench_noop(ctx: Ctx) -> dict[str, Any]:
    exe = baselines.install_snakemake(ctx.log)
    configs: list[tuple[str, str, int, bool]] = [   # name, shape, tasks, real first run?
        ('indep-100', 'independent', 100, True),
        ('indep-1000', 'independent', 1000, not ctx.quick),
        ('chain-1000', 'chain', 1000, not ctx.quick),
    ]
    if not ctx.quick:
        configs += [('indep-1000-seeded', 'independent', 1000, False),
                    ('indep-10000', 'independent', 10000, False)]
    results: dict[str, Any] = {'snakemake': str(exe) if exe else None, 'configs': {}}
    rows = []
    for name, shape, n, real in configs:
        ctx.log.say(f'noop: {name}')
        host = seed_host(ctx, f'noop-{name}', shape, n, real=real)
        ctx.hosts[name] = host
        plan = make_plan(shape, n)
        plain = baselines.make_plain_doit(ctx.work / f'plain-doit-{name}', plan)
        variants = {
            'codex-orch resume': lambda: host.orch('resume', '-q'),
            'doit run (dodo.py)': lambda: host.doit('run'),
            'plain doit': lambda: baselines.plain_doit_noop(plain),
        }
        if exe is not None:
            snake = baselines.make_snakemake(ctx.work / f'snakemake-{name}', plan)
            variants['snakemake -n'] = lambda: baselines.snakemake_dry(snake, exe)
        clear_launches(host.codex)
        reps = ctx.reps if n < 10000 else 3
        res = interleave(variants, reps, log=ctx.log)
        resumed = res['codex-orch resume'][-1].out
        assert f'{n} done' in resumed, resumed
        assert launches(host.codex) == [], 'a no-op resume launched a worker'
        entry = {name_: summary(samples) for name_, samples in res.items()}
        entry['tasks'] = n
        entry['shape'] = shape
        entry['state'] = host.extra['state']
        entry['first_run_s'] = host.extra['first_run_s']
        entry['reps'] = reps
        orch, dodo, plain_s = res['codex-orch resume'], res['doit run (dodo.py)'], res['plain doit']
        entry['ratio_resume_vs_plain_doit'] = paired_ratio(orch, plain_s)
        entry['ratio_dodo_vs_plain_doit'] = paired_ratio(dodo, plain_s)
        if 'snakemake -n' in res:
            entry['ratio_snakemake_vs_resume'] = paired_ratio(res['snakemake -n'], orch)
        entry['phases'] = run_phases(ctx, host, f'noop-{name}', 'resume', '-q')
        results['configs'][name] = entry
        snake_s = res.get('snakemake -n')
        rows.append([f'{n:,} {shape}' + (' (seeded)' if name.endswith('seeded') else ''), reps,
                     fmt_s(med([s.wall for s in orch])), f'{med([s.rss_mb for s in orch]):.0f}',
                     fmt_s(med([s.wall for s in dodo])), f'{med([s.rss_mb for s in dodo]):.0f}',
                     fmt_s(med([s.wall for s in plain_s])), f'{med([s.rss_mb for s in plain_s]):.0f}',
                     fmt_s(med([s.wall for s in snake_s])) if snake_s else 'n/a',
                     f'{med([s.rss_mb for s in snake_s]):.0f}' if snake_s else 'n/a',
                     fmt_ratio(entry['ratio_resume_vs_plain_doit']),
                     fmt_ratio(entry['ratio_snakemake_vs_resume']) if snake_s else 'n/a'])
    ctx.out('No-op resume (median wall s, peak RSS MiB)', table(
        ['plan', 'reps', 'resume s', 'MiB', 'dodo s', 'MiB', 'plain doit s', 'MiB', 'snakemake -n s', 'MiB',
         'resume / plain doit', 'snakemake / resume'], rows),
        ['Ratios are medians of the per-round ratios (rounds interleaved). A plan of N tasks is 2N+2 doit '
         'tasks; plain doit and Snakemake run that graph with trivial actions.'])
    names = list(results['configs'])
    rows = phase_table({n: results['configs'][n]['phases'] for n in names}, NOOP_PHASES)
    ctx.out('Where a no-op resume spends its time (one instrumented run each, s)',
            table(['phase', *[f'{results["configs"][n]["tasks"]:,} {results["configs"][n]["shape"]}' for n in names]],
                  rows),
            ['"doit itself" is the two doit runs minus the codex-orch code they call (compile, task.json check, '
             'task dicts, report digest).'])
    return results


NOOP_PHASES = [
    ('python imports', 0), ('open run (load + check inputs)', 0), ('load inputs (config, plan, rules, schemas)', 1),
    ('temp-file sweep', 0), ('doit runs (main + report)', 0), ('compile (rules x plan -> steps)', 1),
    ('task.json files', 1), ('doit task dicts', 1), ('report digest', 1), ('doit itself', 1),
    ('summary rows', 0), ('rest (interpreter start/exit, argument parsing, lock, ...)', 0), ('total (wall)', 0),
]


def run_phases(ctx: Ctx, host: Host, name: str, *argv: str) -> dict[str, Any]:
    """One run of codex-orch ARGV under benchmarks/phases.py; its phase totals (plus the wall time)."""
    out = ctx.work / f'phases-{name}.json'
    sample = measure([str(VENV_PY), str(BENCH / 'phases.py'), str(out), *argv], cwd=host.repo, env=host.env)
    data = json.loads(out.read_text())
    data['wall'] = sample.wall
    return data


def phase_value(data: dict[str, Any], label: str) -> float | None:
    totals = data['totals']
    if label == 'python imports':
        return data['imports']
    if label == 'total (wall)':
        return data['wall']
    if label == 'doit itself':   # the doit runs minus the codex-orch code they call
        if 'doit runs (main + report)' not in totals:
            return None
        inner = ('compile (rules x plan -> steps)', 'task.json files', 'doit task dicts', 'worktree', 'prompt',
                 'work step (total)', 'report')
        counts = data['counts']
        digests = counts.get('report digest', 0)   # the calls outside `report` (its uptodate check)
        digest = totals.get('report digest', 0.0) * (digests - counts.get('report', 0)) / digests if digests else 0.0
        return totals['doit runs (main + report)'] - sum(totals.get(k, 0.0) for k in inner) - digest
    if label.startswith('rest '):
        top = ('open run (load + check inputs)', 'temp-file sweep', 'doit runs (main + report)', 'summary rows')
        return data['wall'] - data['imports'] - sum(totals.get(k, 0.0) for k in top)
    return totals.get(label)


def phase_table(datas: dict[str, dict[str, Any]], order: list[tuple[str, int]]) -> list[list[str]]:
    rows = []
    for label, depth in order:
        values = [phase_value(d, label) for d in datas.values()]
        if all(v is None for v in values):
            continue
        rows.append([('  ' * depth) + label, *['' if v is None else f'{v:.3f}' for v in values]])
    return rows


# ============================================================================ 2. one edit

def bench_edit(ctx: Ctx) -> dict[str, Any]:
    host = ctx.hosts.get('indep-1000') or seed_host(ctx, 'edit-indep-1000', 'independent', 1000,
                                                     real=not ctx.quick)
    plan = make_plan('independent', 1000)
    target = 'T00500'
    counter = [0]
    edits: list[dict[str, Any]] = []

    def edited() -> Sample:
        counter[0] += 1
        for task in plan['tasks']:
            if task['id'] == target:
                task['description'] = f'Write file 500 (edit {counter[0]}).'
        host.write_plan(plan)
        clear_launches(host.codex)
        sample = host.orch('resume', '-q')
        ran = launches(host.codex)
        assert ran == [target], f'expected only {target} to run, got {ran[:10]}'
        attempts = sorted((host.run_dir() / 'tasks' / target).glob('attempt-*'),
                          key=lambda p: int(p.name.split('-')[1]))
        attempt = json.loads((attempts[-1] / 'attempt.json').read_text())
        edits.append({'wall': sample.wall, 'worker': attempt['duration']})
        return sample

    def noop() -> Sample:
        clear_launches(host.codex)
        sample = host.orch('resume', '-q')
        assert launches(host.codex) == []
        return sample

    ctx.log.say('edit: one task of 1,000 edited, interleaved with no-op resumes')
    res = interleave({'edit + resume': edited, 'no-op resume': noop}, ctx.reps, log=ctx.log)
    measured = edits[-ctx.reps:]
    wall = med([e['wall'] for e in measured])
    worker = med([e['worker'] for e in measured])
    minus = med([e['wall'] - e['worker'] for e in measured])
    noop_wall = med([s.wall for s in res['no-op resume']])
    result = {'tasks': 1000, 'edited': target, 'reps': ctx.reps, 'only_edited_task_ran': True,
              'edit_resume': summary(res['edit + resume']), 'noop_resume': summary(res['no-op resume']),
              'worker_s': [e['worker'] for e in measured], 'wall_minus_worker_median': minus,
              'ratio_minus_worker_vs_noop': med([(e['wall'] - e['worker']) / s.wall
                                                  for e, s in zip(measured, res['no-op resume'])])}
    counter[0] += 1
    for task in plan['tasks']:
        if task['id'] == target:
            task['description'] = f'Write file 500 (edit {counter[0]}).'
    host.write_plan(plan)
    result['phases'] = run_phases(ctx, host, 'edit', 'resume', '-q')
    ctx.out('One edited task in a 1,000-task plan (median s)', table(
        ['resume after edit', "worker's own time", 'resume minus worker', 'no-op resume', 'added by the one task'],
        [[fmt_s(wall), fmt_s(worker), fmt_s(minus), fmt_s(noop_wall), fmt_s(minus - noop_wall)]]),
        [f'Verified every time: only {target} launched a worker (its prompt and work steps ran; 999 '
         'tasks stayed up to date).'])
    ctx.out('Where the resume after one edit spends its time (one instrumented run, s)',
            table(['phase', 's'], phase_table({'edit': result['phases']}, EDIT_PHASES)))
    return result


EDIT_PHASES = [
    ('python imports', 0), ('open run (load + check inputs)', 0), ('temp-file sweep', 0),
    ('doit runs (main + report)', 0), ('compile (rules x plan -> steps)', 1), ('task.json files', 1),
    ('prompt', 1), ('work step (total)', 1), ('worker (total)', 2), ('git: worktree check', 2),
    ('git: discard leftovers', 2), ('commit (decisions + git commit)', 2), ('result.json (+ git diff-tree)', 2),
    ('state.json writes', 2), ('report', 1), ('report digest', 1), ('doit itself', 1), ('summary rows', 0),
    ('rest (interpreter start/exit, argument parsing, lock, ...)', 0), ('total (wall)', 0),
]


# ============================================================================ 3. per-task overhead

PHASE_ORDER = [
    ('load inputs (config, plan, rules, schemas)', 0), ('compile (rules x plan -> steps)', 0),
    ('task.json files', 0), ('worktree', 0), ('prompt', 0), ('work step (total)', 0),
    ('inputs digest', 1), ('stale-attempt check', 1), ('pending.json check', 1), ('git: worktree check', 1),
    ('git: discard leftovers', 1), ('state.json writes', 1), ('worker (total)', 1),
    ('worker: launch (fork/exec)', 2), ('worker: running, events streamed', 2), ('worker: reap', 2),
    ('worker: validation', 2), ('worker: attempt.json', 2),
    ('commit (decisions + git commit)', 1), ('result.json (+ git diff-tree)', 1),
    ('report', 0), ('summary rows', 0),
]


def bench_overhead(ctx: Ctx) -> dict[str, Any]:
    n = 100 if ctx.quick else 200
    result: dict[str, Any] = {'fake': {}, 'real_codex': {}}
    host = make_host(ctx.work / 'overhead-fake', make_plan('independent', n))
    # Instrumented run first: it also renders the prompts the bare loop feeds the fake.
    ctx.log.say(f'overhead: instrumented run of {n} tasks with the instant fake')
    phases_file = ctx.work / 'overhead-phases.json'
    instrumented = measure([str(VENV_PY), str(BENCH / 'phases.py'), str(phases_file), 'run', '--plan-file',
                            'plan.json', '--spec-file', 'spec.md', '-q'], cwd=host.repo, env=host.env)
    phases = json.loads(phases_file.read_text())
    prompts = sorted((host.run_dir() / 'tasks').glob('*/prompt.md'))
    assert len(prompts) == n
    bare_dir = ctx.work / 'overhead-bare'
    bare_dir.mkdir(exist_ok=True)

    def orch_run() -> Sample:
        return host.orch('run', '--plan-file', 'plan.json', '--spec-file', 'spec.md', '-q')

    def bare_fake() -> Sample:
        return measure([str(VENV_PY), str(BENCH / 'bare.py'), str(host.codex), str(bare_dir), str(bare_dir / 'wt'),
                        *map(str, prompts)], cwd=bare_dir, env=host.env)

    ctx.log.say(f'overhead: codex-orch run of {n} tasks vs the same fake launched {n} times')
    res = interleave({'codex-orch run': orch_run, 'bare fake x N': bare_fake}, ctx.reps, warmup=0, log=ctx.log)
    orch_s = med([s.wall for s in res['codex-orch run']])
    bare_s = med([s.wall for s in res['bare fake x N']])
    result['fake'] = {'tasks': n, 'orch': summary(res['codex-orch run']), 'bare': summary(res['bare fake x N']),
                      'per_task_ms': orch_s / n * 1000, 'bare_per_task_ms': bare_s / n * 1000,
                      'added_per_task_ms': med([(a.wall - b.wall) / n * 1000 for a, b in
                                                zip(res['codex-orch run'], res['bare fake x N'])]),
                      'phases': phases, 'instrumented_wall': instrumented.wall}
    rows = [['whole run (imports + everything)', f'{instrumented.wall * 1000 / n:.2f}', '']]
    rows.append(['  python imports', f'{phases["imports"] * 1000 / n:.2f}', '1'])
    for label, depth in PHASE_ORDER:
        if label in phases['totals']:
            rows.append([('  ' * (depth + 1)) + label, f'{phases["totals"][label] * 1000 / n:.2f}',
                         str(phases['counts'][label])])
    accounted = phases['imports'] + sum(phases['totals'].get(label, 0) for label, d in PHASE_ORDER if d == 0)
    rows.append(['  doit bookkeeping and the rest', f'{(instrumented.wall - accounted) * 1000 / n:.2f}', ''])
    ctx.out(f'Per-task cost with an instant fake codex ({n} independent tasks, ms per task)',
            table(['phase', 'ms / task', 'calls'], rows),
            [f'Interleaved, median of {ctx.reps}: codex-orch run {orch_s:.2f} s = {orch_s / n * 1000:.1f} ms/task; '
             f'the same fake launched {n} times from Python {bare_s:.2f} s = {bare_s / n * 1000:.1f} ms/task; '
             f'codex-orch adds {result["fake"]["added_per_task_ms"]:.1f} ms per task.'])
    result['real_codex'] = bench_real_codex(ctx)
    return result


def bench_real_codex(ctx: Ctx) -> dict[str, Any]:
    """codex-orch vs bare `codex exec`, both on N and 2N tasks: whole runs and the marginal cost of a task."""
    if not REAL_CODEX.exists():
        ctx.log.say('overhead: the real Codex CLI is not installed (bash scripts/setup.sh); skipped')
        return {'skipped': 'Codex CLI not installed'}
    from orch.standin.server import Standin, write_codex_home
    n = 3 if ctx.quick else 6
    home = BENCH / '.work' / 'codex-home'   # outside /tmp: codex warns about a CODEX_HOME there
    standin = Standin()
    try:
        env_extra = write_codex_home(home, standin.base_url)
        # Each task one file edit (2 model requests: the edit, then the answer); with --one-request only the answer.
        edit = '' if ctx.one_request else '[[standin: write src/r{i}.txt]]\n```\nr{i}\n```\n'
        tasks = [{'id': f'R{i:02d}', 'role': 'implementer', 'title': f'Write r{i}',
                  'description': f'Create src/r{i}.txt.\n' + edit.format(i=i),
                  'paths': [f'src/r{i}.txt']} for i in range(2 * n)]
        host = make_host(ctx.work / 'overhead-real', None, codex=REAL_CODEX, bin_dir=ctx.work / 'overhead-real-bin')
        host.env.update(env_extra)
        for size in (n, 2 * n):
            (host.repo / f'plan-{size}.json').write_text(json.dumps(
                {'version': 1, 'title': f'{size} edits', 'tasks': tasks[:size]}, indent=1))
        ctx.log.say(f'overhead: real Codex CLI, instrumented first run of {2 * n} tasks (renders the prompts)')
        phases = run_phases(ctx, host, 'real-codex', 'run', '--plan-file', f'plan-{2 * n}.json', '--spec-file',
                            'spec.md', '-q')
        prompts = sorted((host.run_dir() / 'tasks').glob('*/prompt.md'))
        assert len(prompts) == 2 * n, prompts
        schema = host.repo / '.orchestrator' / 'schemas' / 'implementer.json'
        bare_dir = ctx.work / 'overhead-real-bare'
        if bare_dir.exists():
            shutil.rmtree(bare_dir)
        bare_dir.mkdir()
        wt = bare_dir / 'wt'
        git(host.repo, 'worktree', 'add', '-q', '--detach', str(wt), 'HEAD', env=host.env)

        def orch_run(size: int) -> Sample:
            sample = host.orch('run', '--plan-file', f'plan-{size}.json', '--spec-file', 'spec.md', '-q')
            assert f'{size} done' in sample.out, sample.out
            return sample

        def bare_run(size: int) -> Sample:
            git(wt, 'clean', '-fdq', env=host.env)
            return measure([str(VENV_PY), str(BENCH / 'bare.py'), str(REAL_CODEX), str(bare_dir), str(wt),
                            '--schema', str(schema), *map(str, prompts[:size])], cwd=bare_dir, env=host.env)

        ctx.log.say(f'overhead: codex-orch run vs bare `codex exec`, {n} and {2 * n} tasks, interleaved')
        res = interleave({f'orch {n}': lambda: orch_run(n), f'bare {n}': lambda: bare_run(n),
                          f'orch {2 * n}': lambda: orch_run(2 * n), f'bare {2 * n}': lambda: bare_run(2 * n)},
                         ctx.reps, log=ctx.log)
        o1, b1, o2, b2 = res[f'orch {n}'], res[f'bare {n}'], res[f'orch {2 * n}'], res[f'bare {2 * n}']
        whole = paired_ratio(o2, b2)
        marginal = [((c.wall - a.wall) / n, (d.wall - b.wall) / n) for a, b, c, d in zip(o1, b1, o2, b2)]
        m_ratio = med([x / y for x, y in marginal])
        m_orch, m_bare = med([x for x, _ in marginal]), med([y for _, y in marginal])
        result = {'n': n, 'orch_n': summary(o1), 'bare_n': summary(b1), 'orch_2n': summary(o2), 'bare_2n': summary(b2),
                  'whole_run_ratio': whole, 'marginal_ratio': m_ratio, 'marginal_orch_s': m_orch,
                  'marginal_bare_s': m_bare, 'phases': phases}
        totals = phases['totals']
        worker_running = totals.get('worker: running, events streamed', 0.0)
        per_task_own = (totals.get('work step (total)', 0.0) + totals.get('prompt', 0.0) - worker_running) / (2 * n)
        result['orch_own_per_task_s'] = per_task_own
        result['codex_per_task_s'] = worker_running / (2 * n)
        ctx.out('Real Codex CLI against the local stand-in: each task is '
                + ('one answer (1 model request)' if ctx.one_request else 'one file edit (2 model requests)') + '; '
                f'median of {ctx.reps}', table(
                    ['', f'{n} tasks s', f'{2 * n} tasks s', 'per extra task s'],
                    [['codex-orch run', fmt_s(med([s.wall for s in o1])), fmt_s(med([s.wall for s in o2])),
                      f'{m_orch:.3f}'],
                     ['bare `codex exec` x N', fmt_s(med([s.wall for s in b1])), fmt_s(med([s.wall for s in b2])),
                      f'{m_bare:.3f}'],
                     ['codex-orch added', '', f'{(whole - 1) * 100:+.1f} %', f'{(m_ratio - 1) * 100:+.1f} %']]),
                [f'"per extra task" = (run of {2 * n} - run of {n}) / {n}: the cost of one more task, without the '
                 'fixed cost of a run (start-up, worktree, report). In the instrumented run, the codex process '
                 f'took {result["codex_per_task_s"]:.3f} s per task and codex-orch\'s own work around it '
                 f'(prompt, git, validation, state files) {per_task_own:.3f} s per task.'])
        return result
    finally:
        standin.close()


# ============================================================================ 4. parallel efficiency

def bench_parallel(ctx: Ctx) -> dict[str, Any]:
    n, sleep = 16, (0.5 if ctx.quick else 2.0)
    jobs = (1, 2, 4, 8)
    codex = install_sh_fake(ctx.work / 'parallel-bin', sleep=sleep)
    host = make_host(ctx.work / 'parallel', make_plan('independent', n), codex=codex)
    variants = {f'-j {j}': (lambda j=j: host.orch('run', '--plan-file', 'plan.json', '-q', '-j', str(j)))
                for j in jobs}
    ctx.log.say(f'parallel: {n} tasks of {sleep} s at -j {jobs}')
    res = interleave(variants, ctx.reps, warmup=0, log=ctx.log)
    rows, out = [], {'tasks': n, 'worker_s': sleep, 'reps': ctx.reps, 'jobs': {}}
    for j in jobs:
        samples = res[f'-j {j}']
        for s in samples:
            assert f'{n} done' in s.out, s.out
        wall = med([s.wall for s in samples])
        ideal = n * sleep / j
        out['jobs'][j] = {**summary(samples), 'ideal': ideal, 'efficiency': ideal / wall}
        rows.append([j, fmt_s(ideal), fmt_s(wall), f'{wall - ideal:.2f}', f'{ideal / wall * 100:.0f} %'])
    ctx.out(f'Parallel efficiency: {n} independent tasks, worker {sleep:g} s each (median of {ctx.reps})',
            table(['-j', 'ideal s', 'wall s', 'over ideal s', 'efficiency'], rows))
    return out


# ============================================================================ 5. memory

def bench_memory(ctx: Ctx) -> dict[str, Any]:
    small, big = 10, 1024
    reps = 1 if ctx.quick else 3
    host = make_host(ctx.work / 'memory', make_plan('independent', 1))

    def run(mb: int) -> Sample:
        host.env['BENCH_FLOOD_MB'] = str(mb)
        sample = host.orch('run', '--plan-file', 'plan.json', '-q')
        assert '1 done' in sample.out, sample.out
        run_dir = host.run_dir()
        events = next(run_dir.glob('tasks/*/attempt-1/events.jsonl'))
        size = events.stat().st_size
        sample.out += f'\nevents.jsonl {size}'
        assert size > mb * 2 ** 20 * 0.99, size
        shutil.rmtree(run_dir)   # 1 GB per run: do not keep it
        return sample

    ctx.log.say(f'memory: worker streams of {small} MiB and {big} MiB')
    res = interleave({f'{small} MiB': lambda: run(small), f'{big} MiB': lambda: run(big)}, reps, warmup=0,
                     log=ctx.log)
    a, b = res[f'{small} MiB'], res[f'{big} MiB']
    out = {'small_mb': small, 'big_mb': big, 'reps': reps, 'small': summary(a), 'big': summary(b),
           'rss_ratio': med([y.rss_mb / x.rss_mb for x, y in zip(a, b)])}
    ctx.out(f'Memory under a huge event stream (one task; median of {reps})', table(
        ['stream', 'peak RSS MiB', 'wall s', 'stream MiB/s'],
        [[f'{small} MiB', f'{med([s.rss_mb for s in a]):.1f}', fmt_s(med([s.wall for s in a])),
          f'{small / med([s.wall for s in a]):.0f}'],
         [f'{big} MiB', f'{med([s.rss_mb for s in b]):.1f}', fmt_s(med([s.wall for s in b])),
          f'{big / med([s.wall for s in b]):.0f}']]),
        [f'Peak RSS ratio 1 GiB / 10 MiB: {out["rss_ratio"]:.2f} (wait4 ru_maxrss: the largest process of the '
         'tree, i.e. codex-orch itself; the sh/yes/head generator is tiny).'])
    return out


# ============================================================================ main

def machine() -> dict[str, Any]:
    def version(argv: list[str]) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=60).stdout.strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return 'n/a'
    snake = baselines.snakemake_bin()
    return {'python': platform.python_version(), 'platform': platform.platform(), 'cpus': os.cpu_count(),
            'doit': version([str(VENV_PY), '-m', 'doit', '--version']),
            'snakemake': version([str(snake), '--version']) if snake else 'not installed',
            'git': version(['git', '--version']),
            'codex': version([str(REAL_CODEX), '--version']) if REAL_CODEX.exists() else 'not installed'}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--quick', action='store_true', help='smaller sizes and fewer repetitions (~3 min)')
    p.add_argument('--only', help=f'comma-separated suites ({",".join(SUITES)})')
    p.add_argument('--one-request', action='store_true',
                   help='overhead: each real-CLI task is one model request (an answer, no file edit): the instant model')
    p.add_argument('--reps', type=int, help='repetitions per measurement (default 5, quick 3)')
    p.add_argument('--workdir', default=str(Path(os.environ.get('TMPDIR', '/tmp')) / 'codex-orch-bench' / 'suites'),
                   help='where the generated repositories go (default: $TMPDIR/codex-orch-bench)')
    p.add_argument('--keep', action='store_true', help='keep the generated repositories')
    p.add_argument('-v', '--verbose', action='store_true', help='print every sample')
    args = p.parse_args(argv)
    suites = args.only.split(',') if args.only else list(SUITES)
    unknown = set(suites) - set(SUITES)
    if unknown:
        p.error(f'unknown suite(s): {", ".join(sorted(unknown))}')
    ctx = Ctx(args)
    if ctx.work.exists():
        shutil.rmtree(ctx.work)
    ctx.work.mkdir(parents=True)
    RESULTS.mkdir(exist_ok=True)
    info = machine()
    print(f'# codex-orch benchmarks ({ctx.mode})\n\n{json.dumps(info)}', flush=True)
    started = time.monotonic()
    funcs = {'noop': bench_noop, 'edit': bench_edit, 'overhead': bench_overhead, 'parallel': bench_parallel,
             'memory': bench_memory}
    for name in SUITES:
        if name not in suites:
            continue
        t0 = time.monotonic()
        data = funcs[name](ctx)
        data['suite_seconds'] = time.monotonic() - t0
        data['machine'] = info
        data['mode'] = ctx.mode
        data['date'] = time.strftime('%Y-%m-%d %H:%M:%S')
        data['loadavg_after'] = os.getloadavg()
        (RESULTS / f'{ctx.mode}-{name}.json').write_text(json.dumps(data, indent=1, default=str) + '\n')
        ctx.log.say(f'{name}: done in {data["suite_seconds"]:.0f} s')
    ctx.log.say(f'all done in {time.monotonic() - started:.0f} s')
    if not ctx.keep:
        shutil.rmtree(ctx.work, ignore_errors=True)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
