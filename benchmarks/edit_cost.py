"""An edit costs what it touches: status, dry run and resume after one edited task vs plain doit.

    .venv/bin/python benchmarks/edit_cost.py                            # 1,000 and 10,000 tasks
    .venv/bin/python benchmarks/edit_cost.py --sizes 1000 --reps 2 -v --reuse --keep

The hosts are benchmarks/noop_speed.py's (the same layered plan, fan-in 3, in the same directories
$TMPDIR/codex-orch-bench/noop-speed/orch-N and doit-N): with --reuse the ones a `noop_speed.py --keep`
(or an `edit_cost.py --keep`) left are used, else they are made here as noop_speed makes them (1,000
tasks: a real first run with the `sh` fake codex; above --seed-above: seeded by benchmarks/seed.py).
One `codex-orch resume` first, as noop_speed does (the checkout's code is an input of the no-op
manifest). Then, per size, interleaved (one warm-up round), medians and median per-round ratios:

  c. no-op: `status`, `resume --dry-run`, `resume` vs plain doit's no-op `doit run`
  a. after one description edit of a leaf (the plan's last task) and of the middle task (n // 2),
     the plan edited once per case: `status` and `resume --dry-run` vs plain doit's no-op; then the
     plan is restored
  b. `resume -q` after one edit, a fresh description every repetition (a word appended), with the
     instant fake worker: the edited task runs, its dependents get identical results and are cut off;
     vs plain doit's `doit run` after rewriting that task's input (tasks/<id>/task.json) with new content
  d. peak RSS (wait4 ru_maxrss) of status and resume after an edit vs plain doit's run after an edit

Checked while measuring (a failed check exits nonzero): after a leaf edit `status --json` shows exactly
that task stale, after a middle edit exactly its dependents closure, and the dry run exits 1 and names
the task; every resume after an edit launches the edited task (the fake's launch log) and leaves every
task done; no-op resumes launch nothing; plain doit's edited run executes that task's prompt step.
Afterwards the plan and the plain doit inputs are restored and brought up to date again.

On a freshly seeded host the first middle edit re-runs the whole dependents closure (seed.py's stub writes
result.json in another form than a real execution, so the edited task's new result differs and its
dependents run; ~4,600 fake workers at 10,000 tasks, 10-20 minutes on the 2-core VM). The unrecorded
warm-up round absorbs it; with --keep the host is then in the real form and later --reuse runs are quick.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import baselines
from benchmarks.lib import (
    BENCH,
    CODEX_ORCH,
    ROOT,
    Host,
    Log,
    Sample,
    clear_launches,
    fmt_ratio,
    fmt_s,
    interleave,
    launches,
    make_host,
    med,
    paired_ratio,
    size_options,
    summary,
    table,
)
from benchmarks.noop_speed import dependents_closure, first_run, layered_plan, reused_host


class CheckFailed(RuntimeError):
    pass


def require(ok: bool, what: str) -> None:
    if not ok:
        raise CheckFailed(f'check failed: {what}')


def statuses(host: Host) -> dict[str, str]:
    return {t['id']: t['status'] for t in json.loads(host.orch('status', '--json').out)['tasks']}


def require_all_done(host: Host, n: int, what: str) -> None:
    st = statuses(host)
    bad = {k: v for k, v in st.items() if v != 'done'}
    require(len(st) == n and not bad, f'{what}: all {n} tasks done (got {len(st)}, not done: {list(bad.items())[:5]})')


def orch_in_use(host: Host) -> str:
    """The orch package the measured commands import (must be this checkout's)."""
    res = subprocess.run([*CODEX_ORCH[:1], '-c', 'import orch; print(orch.__file__)'], cwd=host.repo, env=host.env,
                         capture_output=True, text=True, check=True)
    return res.stdout.strip()


def setup(n: int, args: argparse.Namespace, work: Path, log: Log) -> tuple[Host, Path, str, list[Path]]:
    """noop_speed's host and plain doit directory for n tasks (reused or made); the paths this run made."""
    root, plain = work / f'orch-{n}', work / f'doit-{n}'
    made: list[Path] = []
    reused = reused_host(root) if args.reuse else None
    if reused is not None:
        host, how = reused
        log.say(f'  reusing {root} ({how})')
    else:
        host = make_host(root, layered_plan(n))
        made.append(root)
        how = first_run(host, n, args.seed_above, log)
        (root / 'first-run.txt').write_text(how + '\n')
    plan = json.loads((host.repo / 'plan.json').read_text())
    graph = baselines.graph_of(plan)
    if (args.reuse and (plain / '.doit.sqlite').exists()
            and json.loads((plain / 'graph.json').read_text()) == graph):
        log.say(f'  reusing {plain}')
        for tid in graph:   # an interrupted run may have left an edited input behind
            path = plain / 'tasks' / tid / 'task.json'
            if path.read_text() != baselines.task_json(tid):
                path.write_text(baselines.task_json(tid))
    else:
        log.say(f'  plain doit baseline: first run of {len(graph) * 2 + 1:,} doit tasks ...')
        shutil.rmtree(plain, ignore_errors=True)
        baselines.make_plain_doit(plain, plan)
        made.append(plain)
    return host, plain, how, made


def bench_size(n: int, args: argparse.Namespace, work: Path, log: Log) -> dict[str, Any]:
    log.say(f'{n:,} tasks')
    host, plain, how, made = setup(n, args, work, log)
    used = orch_in_use(host)
    require(Path(used).resolve().is_relative_to(ROOT / 'orch'), f'codex-orch measured is {used}, not {ROOT}/orch')
    # One resume first: a codex-orch changed since the first run (its code is an input) writes its manifest.
    out = host.orch('resume').out
    require(f'{n} done' in out, f'the first resume leaves {n} done:\n{out[-2000:]}')
    original = (host.repo / 'plan.json').read_bytes()
    plan = json.loads(original)
    require(len(plan['tasks']) == n, f'plan.json has {n} tasks')
    ids = [t['id'] for t in plan['tasks']]
    leaf, middle = ids[-1], ids[n // 2]
    closure = {'leaf': dependents_closure(plan, leaf), 'middle': dependents_closure(plan, middle)}
    require(closure['leaf'] == {leaf}, f'{leaf} is a leaf')
    target = {'leaf': leaf, 'middle': middle}
    reps = args.reps if n <= 2000 else args.reps_big
    token = secrets.token_hex(3)    # fresh descriptions across invocations too (no result-cache hits)
    counter = [0]
    checks: dict[str, Any] = {'orch_module': used}
    res: dict[str, list[Sample]] = {}

    def write_plan(edits: dict[str, str]) -> None:
        edited = json.loads(original)
        for t in edited['tasks']:
            if t['id'] in edits:
                t['description'] += edits[t['id']]
        host.write_plan(edited)

    def doit_noop() -> Sample:
        return baselines.plain_doit_noop(plain)

    def dry_run(rc: int, tid: str | None = None) -> Callable[[], Sample]:
        def fn() -> Sample:
            s = host.orch('resume', '--dry-run', check=False)
            require(s.rc == rc, f'resume --dry-run exits {rc} (got {s.rc}):\n{s.out[-2000:]}')
            require(tid is None or tid in s.out, f'the dry run names {tid}')
            return s
        return fn

    # c. no-op
    def noop_resume() -> Sample:
        clear_launches(host.codex)
        s = host.orch('resume')
        require(f'{n} done' in s.out and not launches(host.codex), f'a no-op resume launches nothing:\n{s.out[-2000:]}')
        return s

    log.say(f'  no-op: status, dry run, resume vs plain doit ({reps} reps)')
    got = interleave({'plain doit no-op': doit_noop, 'status': lambda: host.orch('status'),
                      'dry run': dry_run(0), 'resume': noop_resume}, reps, log=log)
    res.update({f'no-op {k}' if k != 'plain doit no-op' else k: v for k, v in got.items()})

    # a. read-only commands after one edit
    for where in ('leaf', 'middle'):
        tid = target[where]
        write_plan({tid: f' Edited {token}.'})
        st = statuses(host)
        stale = {k for k, v in st.items() if v == 'stale'}
        require(stale == closure[where], f'after a {where} edit of {tid} exactly its {len(closure[where])} '
                f'dependents (itself included) are stale (got {len(stale)})')
        require(all(v == 'done' for k, v in st.items() if k not in stale), 'the other tasks are done')
        checks[f'{where}_edit_stale'] = len(stale)
        log.say(f'  {where} edit ({tid}, {len(stale):,} stale): status, dry run vs plain doit no-op')
        got = interleave({'plain doit no-op': doit_noop, 'status': lambda: host.orch('status'),
                          'dry run': dry_run(1, tid)}, reps, log=log)
        res[f'plain doit no-op ({where})'] = got['plain doit no-op']
        res[f'{where} edit: status'] = got['status']
        res[f'{where} edit: dry run'] = got['dry run']
        (host.repo / 'plan.json').write_bytes(original)
        require_all_done(host, n, f'with the plan restored after the {where} edit')

    # b. resume after one edit (fresh description each time)
    edits: dict[str, str] = {}
    ran: dict[str, list[int]] = {'leaf': [], 'middle': []}
    exec_ran: dict[str, list[list[str]]] = {'leaf': [], 'middle': []}

    def edited_resume(where: str) -> Callable[[], Sample]:
        tid = target[where]

        def fn() -> Sample:
            counter[0] += 1
            edits[tid] = f' Edited {token}-{counter[0]}.'
            write_plan(edits)
            clear_launches(host.codex)
            s = host.orch('resume', '-q')
            launched = launches(host.codex)
            require(tid in launched, f'the resume after editing {tid} launches it (launched {launched[:10]})')
            require(set(launched) <= closure[where], f'only {tid} and its dependents run (launched {launched[:10]})')
            ran[where].append(len(launched))
            require_all_done(host, n, f'after the resume of the {where} edit')
            return s
        return fn

    def doit_edited(where: str) -> Callable[[], Sample]:
        tid = target[where]

        def fn() -> Sample:
            counter[0] += 1
            s = baselines.plain_doit_after_edit(plain, tid, f'{token}-{counter[0]}')
            executed = [line[3:] for line in s.out.splitlines() if line.startswith('.  ')]
            require(f'prompt:{tid}' in executed, f'plain doit ran prompt:{tid} after its input changed '
                    f'(executed {executed[:10]})')
            exec_ran[where].append(executed)
            return s
        return fn

    wheres = ('leaf',) if args.leaf_resume_only else ('leaf', 'middle')
    log.say(f'  resume -q after one edit ({", ".join(f"{w} {target[w]}" for w in wheres)}) vs plain doit run after '
            'one changed input')
    variants: dict[str, Callable[[], Sample]] = {}
    for where in wheres:
        variants[f'plain doit edit ({where})'] = doit_edited(where)
        variants[f'{where} edit: resume'] = edited_resume(where)
    got = interleave(variants, reps, log=log)
    res.update(got)
    checks['edit_resume_launches'] = ran
    for where, counts in ((w, ran[w]) for w in wheres):
        # The warm-up may re-run dependents once (a seeded host's results are not byte for byte what a real
        # execution writes); the measured repetitions must be cut off after the edited task.
        require(all(c == 1 for c in counts[-reps:]), f'early cut-off: each measured resume after the {where} '
                f'edit launches only {target[where]} (launched {counts})')
        if counts[0] > 1:
            log.say(f'  note: the warm-up resume after the {where} edit launched {counts[0]:,} workers')
    checks['plain_doit_edit_executed'] = {k: sorted({t for run in v for t in run}) for k, v in exec_ran.items()}

    # back as it was: the original plan and inputs, every task done again
    (host.repo / 'plan.json').write_bytes(original)
    clear_launches(host.codex)
    host.orch('resume', '-q')
    require_all_done(host, n, 'with the plan restored after the edits')
    for tid in target.values():
        baselines.plain_doit_after_edit(plain, tid, None)

    base = {'no-op status': 'plain doit no-op', 'no-op dry run': 'plain doit no-op',
            'no-op resume': 'plain doit no-op',
            'leaf edit: status': 'plain doit no-op (leaf)', 'leaf edit: dry run': 'plain doit no-op (leaf)',
            'middle edit: status': 'plain doit no-op (middle)', 'middle edit: dry run': 'plain doit no-op (middle)',
            **{f'{w} edit: resume': f'plain doit edit ({w})' for w in wheres}}
    entry: dict[str, Any] = {
        'n': n, 'state': how, 'reps': reps, 'leaf': leaf, 'middle': middle,
        'stale': {k: len(v) for k, v in closure.items()}, 'checks': checks, 'load': os.getloadavg(),
        'baseline_of': base,
        'median_s': {k: med([s.wall for s in v]) for k, v in res.items()},
        'ratio': {k: paired_ratio(res[k], res[b]) for k, b in base.items()},
        'samples': {k: summary(v) for k, v in res.items()},
    }
    if not args.keep:
        for path in made:
            shutil.rmtree(path, ignore_errors=True)
    return entry


ROWS = [   # (label, key); the baseline comes from the entry
    ('plain doit `doit run`, no-op', 'plain doit no-op'),
    ('`status`, no-op', 'no-op status'),
    ('`resume --dry-run`, no-op', 'no-op dry run'),
    ('`resume`, no-op', 'no-op resume'),
    ('`status` after a leaf edit', 'leaf edit: status'),
    ('`resume --dry-run` after a leaf edit', 'leaf edit: dry run'),
    ('`status` after a middle edit', 'middle edit: status'),
    ('`resume --dry-run` after a middle edit', 'middle edit: dry run'),
    ('plain doit `doit run` after a leaf input changed', 'plain doit edit (leaf)'),
    ('`resume -q` after a leaf edit', 'leaf edit: resume'),
    ('plain doit `doit run` after a middle input changed', 'plain doit edit (middle)'),
    ('`resume -q` after a middle edit', 'middle edit: resume'),
]
BASE_NAMES = {'plain doit no-op': 'plain doit no-op', 'plain doit no-op (leaf)': 'plain doit no-op',
              'plain doit no-op (middle)': 'plain doit no-op',
              'plain doit edit (leaf)': 'plain doit run, leaf input changed',
              'plain doit edit (middle)': 'plain doit run, middle input changed'}


def report(entries: list[dict[str, Any]]) -> str:
    rows = []
    for e in entries:
        for label, key in ROWS:
            if key not in e['median_s']:
                continue   # not measured (--leaf-resume-only)
            b = e['baseline_of'].get(key)
            rows.append([f'{e["n"]:,} ({e["state"]})', label, fmt_s(e['median_s'][key]),
                         fmt_ratio(e['ratio'][key]) if b else '', BASE_NAMES[b] if b else '(baseline)'])
    out = [table(['tasks', 'command', 'median s', 'vs baseline', 'baseline'], rows)]
    big = entries[-1]
    mem = [[label, f'{big["samples"][key]["rss_mb_median"]:.0f}',
            fmt_ratio(big['samples'][key]['rss_mb_median'] / big['samples']['plain doit edit (leaf)']['rss_mb_median'])]
           for label, key in [('plain doit `doit run` after a leaf input changed', 'plain doit edit (leaf)'),
                              ('`status` after a leaf edit', 'leaf edit: status'),
                              ('`status` after a middle edit', 'middle edit: status'),
                              ('`resume -q` after a leaf edit', 'leaf edit: resume'),
                              ('`resume -q` after a middle edit', 'middle edit: resume')] if key in big['samples']]
    out.append(f'\nPeak RSS at {big["n"]:,} tasks (wait4 ru_maxrss, median MiB):\n')
    out.append(table(['command', 'peak MiB', 'vs plain doit run after an edit'], mem))
    for e in entries:
        c = e['checks']
        out.append(f'\n{e["n"]:,} tasks ({e["state"]}, {e["reps"]} reps, load {e["load"][0]:.1f}): '
                   f'stale after the leaf edit {c["leaf_edit_stale"]}, after the middle edit '
                   f'{c["middle_edit_stale"]}; workers launched per edited resume (warm-up included): leaf '
                   f'{c["edit_resume_launches"]["leaf"]}, middle {c["edit_resume_launches"]["middle"] or "not timed"}; '
                   f'plain doit executed after an edit: {c["plain_doit_edit_executed"]}')
    by_n = {e['n']: e for e in entries}
    if 1000 in by_n and 10000 in by_n:
        r = by_n[10000]['median_s']['leaf edit: resume'] / by_n[1000]['median_s']['leaf edit: resume']
        out.append(f'\nresume -q after a leaf edit, 10,000 tasks / 1,000 tasks: {r:.1f}x')
    return '\n'.join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    size_options(p, reps=5, reps_big=3)
    p.add_argument('--keep', action='store_true', help='keep the repositories this run makes')
    p.add_argument('--reuse', action='store_true', help='reuse the repositories an earlier --keep left '
                   '(noop_speed.py\'s too; reused ones are left in place)')
    p.add_argument('--leaf-resume-only', action='store_true',
                   help='time the resume after a leaf edit only (on a seeded host the first resume after a middle '
                        'edit re-runs every dependent: 10-20 minutes at 10,000 tasks)')
    args = p.parse_args(argv)
    log = Log(args.verbose)
    work = Path(tempfile.gettempdir()) / 'codex-orch-bench' / 'noop-speed'
    work.mkdir(parents=True, exist_ok=True)
    sizes = [int(s) for s in args.sizes.split(',')]
    try:
        entries = [bench_size(n, args, work, log) for n in sizes]
    except CheckFailed as exc:
        print(f'\nFAILED: {exc}', file=sys.stderr)
        return 1
    print(report(entries))
    print('\nchecks: all passed')
    out = BENCH / 'results' / f'edit-cost-{"-".join(map(str, sizes))}.json'
    out.write_text(json.dumps({'entries': entries, 'uname': list(os.uname()),
                               'python': sys.version}, indent=2) + '\n')
    print(f'raw samples: {out.relative_to(BENCH.parent)}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
