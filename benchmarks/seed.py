"""Make a big run's state quickly: `codex-orch run` with the worker step replaced by a stub.

Usage (in a host repository): python benchmarks/seed.py run --plan-file plan.json -q

Everything else is the real thing: the plan is loaded and compiled, doit runs every step and
records it in its database, the worktree is created, prompts are rendered. Only the work
step's action writes result.json (and state.json, an attempt directory) itself instead of
launching a worker and committing. A real first run costs ~40 ms per task (a process launch
and ~10 git commands); 10,000 of those would take most of the time budget of the benchmarks,
and a no-op resume reads exactly the files the stub writes.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orch.main import main
from orch.runstate import atomic, state
from orch.steps import work

ANSWER = {'status': 'done', 'summary': 'Done.', 'files_changed': [], 'decisions': [], 'follow_ups': []}


def stub_worker(rt, session, step) -> None:
    task = rt.plan.by_id[step.task_id]
    task_dir = rt.path(rt.layout.task_dir(task.id))
    now = time.time()
    attempt = task_dir / 'attempt-1'
    attempt.mkdir(parents=True, exist_ok=True)
    atomic.write_json(attempt / 'attempt.json', {'n': 1, 'kind': 'initial', 'outcome': 'ok'})
    digest = work.inputs_digest(rt, step)
    result = {
        'task_id': task.id, 'role': task.role, 'title': task.title, 'status': 'done', 'answer': ANSWER,
        'commit': None, 'files_changed': [], 'usage': {'input_tokens': 100, 'output_tokens': 20},
        'attempts': 1, 'thread_id': None, 'started_at': now, 'finished_at': now, 'duration': 0.0,
        'inputs_digest': digest, 'exec_id': f'{rt.run.run_id}/{task.id}/{digest[:16]}/1',
        'run_id': rt.run.run_id,
    }
    atomic.write_json(rt.path(step.targets[0]), result)
    state.update_state(task_dir, status='done', reason=None, started_at=now, ended_at=now, attempts=1,
                       outcome='ok', usage=result['usage'], commit=None)


if __name__ == '__main__':
    work.codex_worker = stub_worker   # the step table resolves 'orch.steps.work:codex_worker' when first used
    raise SystemExit(main(sys.argv[1:]))
