"""Run codex-orch with perf_counter timers around its phases; write the totals as JSON.

Usage (in a host repository): python benchmarks/phases.py OUT.json run --plan-file plan.json -q
                               python benchmarks/phases.py OUT.json resume -q   (after a plan edit, say)

The timers wrap module functions by name (a name that no longer exists is skipped), so the
instrumented run is the normal code path plus ~1 us per wrapped call. Times are inclusive;
`children` lists which timed phases run inside which.
"""
from __future__ import annotations

import functools
import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

T0 = time.perf_counter()
import orch.main  # noqa: E402

IMPORTS = time.perf_counter() - T0

TOTALS: dict[str, float] = {}
COUNTS: dict[str, int] = {}
_lock = threading.Lock()

# (module, attribute, label). Inclusive times; nesting is described in PHASES below.
WRAP = [
    ('orch.commands.resume', 'open_run', 'open run (load + check inputs)'),
    ('orch.runstate.atomic', 'sweep_temp', 'temp-file sweep'),
    ('orch.engine.execute', 'run_doit', 'doit runs (main + report)'),
    ('orch.engine.inputs', 'load_inputs', 'load inputs (config, plan, rules, schemas)'),
    ('orch.engine.inputs', 'compile_plan', 'compile (rules x plan -> steps)'),
    ('orch.engine.inputs', 'write_task_entries', 'task.json files'),
    ('orch.engine.doit_runner', 'task_dict', 'doit task dicts'),
    ('orch.steps.actions', 'worktree', 'worktree'),
    ('orch.steps.prompt', 'render_prompt', 'prompt'),
    ('orch.steps.work', 'codex_worker', 'work step (total)'),
    ('orch.steps.actions', 'inputs_digest', 'inputs digest'),
    ('orch.steps.actions', 'kill_stale_attempts', 'stale-attempt check'),
    ('orch.steps.actions', '_finish_interrupted_commit', 'pending.json check'),
    ('orch.adapters.git', 'worktree_valid', 'git: worktree check'),
    ('orch.adapters.git', 'discard_changes', 'git: discard leftovers'),
    ('orch.runstate.state', 'update_state', 'state.json writes'),
    ('orch.steps.actions', 'run_worker', 'worker (total)'),
    ('orch.adapters.worker', '_launch', 'worker: launch (fork/exec)'),
    ('orch.adapters.worker', '_pump', 'worker: running, events streamed'),
    ('orch.adapters.worker', '_reap', 'worker: reap'),
    ('orch.adapters.worker', '_judge', 'worker: validation'),
    ('orch.adapters.worker', '_finish_record', 'worker: attempt.json'),
    ('orch.steps.actions', '_record_and_commit', 'commit (decisions + git commit)'),
    ('orch.steps.actions', '_write_result', 'result.json (+ git diff-tree)'),
    ('orch.engine.doit_runner', 'write_report', 'report'),
    ('orch.engine.doit_runner', 'report_digest', 'report digest'),
    ('orch.engine.execute', 'task_rows', 'summary rows'),
    # a resume after a plan edit (benchmarks/edit_cost.py; docs/benchmarks.md, "An edit costs what it touches")
    ('orch.engine.noop_record', 'load_previous', 'old manifest read'),
    ('orch.engine.noop_record', 'affected_by_edit', 'what the edit touched (a stat of every input)'),
    ('orch.engine.noop_record', 'snapshot_before', "manifest: first snapshot"),
    ('orch.engine.noop_record', 'record', 'manifest: check, answers, second snapshot, save'),
    ('orch.runstate.manifest', 'save', 'manifest: both files written'),
    ('orch.runstate.known_rows', 'row_inputs', "rows' inputs (a stat pass over every task)"),
    ('orch.engine.reports', 'write_reports', 'reports rendered and written'),
    ('orch.steps.report', 'write_report', 'report step'),
]


def _wrap(module_name: str, attr: str, label: str) -> None:
    try:
        module = sys.modules.get(module_name) or __import__(module_name, fromlist=['_'])
    except ImportError:   # a phase of an older layout: not measured
        return
    owner = module
    *path, name = attr.split('.')
    for part in path:
        owner = getattr(owner, part, None)
        if owner is None:
            return
    fn = getattr(owner, name, None)
    if fn is None:
        return

    @functools.wraps(fn)
    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent = time.perf_counter() - start
            with _lock:
                TOTALS[label] = TOTALS.get(label, 0.0) + spent
                COUNTS[label] = COUNTS.get(label, 0) + 1

    setattr(owner, name, timed)


def main() -> int:
    out = Path(sys.argv[1])
    for module_name, attr, label in WRAP:
        _wrap(module_name, attr, label)
    start = time.perf_counter()
    rc = orch.main.main(sys.argv[2:])
    total = time.perf_counter() - start
    out.write_text(json.dumps({'imports': IMPORTS, 'main': total, 'rc': rc, 'totals': TOTALS,
                               'counts': COUNTS}, indent=1))
    return rc


if __name__ == '__main__':
    raise SystemExit(main())
