"""Budgets that bind: the run's `token_budget` (or `cost_budget`, in money) and a task's own `max_tokens`.

A task's launch reserves what it is expected to cost (its last execution's usage, or the config's
`budget.reserve_per_task` tokens), and is deferred when the run's budget has nothing left that running tasks
have not reserved (orch.engine.session.Budget). Before each further turn of its worker (a schema or repair
round, a review or conflict round, here or on Dask) a task is stopped when the run's budget is spent —
deferred, exit 75, its rounds kept so that a resume with a larger budget goes on where it stood, paying
nothing twice — or when it spent its own `max_tokens` in this execution: failed, as another execution would
need as much. Codex reports usage only when a turn completes: the turn that spends the budget sets its stop,
and every other turn of this process under way then is ended at once (its process group terminated, run_worker's
budget_stop) and its task deferred the same way (`after_turn`); its completed rounds are kept.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from orch.adapters.worker import BUDGET_STOPPED, WorkerResult
from orch.core.plan import Task
from orch.engine.inputs import RunInputs
from orch.engine.session import Session, usage_tokens
from orch.runstate import state
from orch.steps.failure import Failed
from orch.steps.rounds import Rounds


def expected_cost(rt: RunInputs, session: Session, task: Task, task_dir: Path) -> float:
    """What the task's launch reserves, in the budget's unit: what its last execution cost, else the configured
    default (tokens, priced as input for a cost budget); never more than its max_tokens allow."""
    usage: dict[str, int] = {'input_tokens': rt.config.budget.reserve_per_task}
    for record in (state.read_result(task_dir), state.read_state(task_dir)):
        last = (record or {}).get('usage')
        if isinstance(last, dict) and usage_tokens(last) > 0:
            usage = last
            break
    tokens = usage_tokens(usage)
    share = min(task.max_tokens / tokens, 1.0) if task.max_tokens and tokens else 1.0
    return session.budget.measure(usage, rt.role(task.role).model) * share


def launch(rt: RunInputs, session: Session, task: Task, task_dir: Path) -> None:
    """Reserve the task's expected cost, or defer it (Failed) when the run's budget has no room for it."""
    reason = session.budget.launch(task.id, expected_cost(rt, session, task, task_dir))
    if reason:
        state.update_state(task_dir, status='deferred', reason=reason, outcome='budget')
        raise Failed(reason)


def before_turn(session: Session, task: Task, task_dir: Path) -> None:
    """Stop the task before its worker's next turn when a budget is spent (see the module's docstring)."""
    spent = session.budget.task_spent(task.id)
    if task.max_tokens is not None and spent >= task.max_tokens:
        reason = (f'max-tokens: the task spent {spent} tokens of its max_tokens {task.max_tokens} in this execution; '
                  'stopped before its next turn (raise max_tokens in the plan to run it again)')
        state.update_state(task_dir, status='failed', reason=reason, outcome='max-tokens', ended_at=time.time())
        Rounds.clear(task_dir)   # a next execution starts over: this one's rounds are not to be continued
        raise Failed(reason)
    exhausted = session.budget.exhausted()
    if exhausted:
        state.update_state(task_dir, status='deferred', reason=exhausted, outcome='budget', ended_at=time.time())
        raise Failed(exhausted)


def after_turn(session: Session, task_dir: Path, result: WorkerResult) -> None:
    """A worker call the run's spent budget ended (BUDGET_STOPPED): the task is deferred, its rounds kept."""
    if result.outcome == BUDGET_STOPPED:
        reason = session.budget.exhausted('its turn under way was stopped') or \
            f'{session.budget.describe()} exhausted; its turn under way was stopped'
        state.update_state(task_dir, status='deferred', reason=reason, outcome='budget', ended_at=time.time())
        raise Failed(reason)


def note_usage(session: Session, task_id: str, model: str | None) -> Any:
    """The worker's usage as it is paid, for the run's budget and the task's own."""
    return lambda usage: session.budget.add(usage, task_id, model)
