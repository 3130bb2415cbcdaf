"""One invocation's mutable state while a run goes: the lock, cancellation, the token budget, the
scheduler, live progress, and the internal errors steps hit. The run's inputs (RunInputs) are frozen
beside it; a Session is built complete, never patched from outside.
"""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from orch.core.prices import money, usage_cost
from orch.engine.inputs import RunInputs
from orch.engine.scheduler import Scheduler
from orch.runstate.known_rows import KnownRows
from orch.runstate.lock import RunLock
from orch.runstate.state import attempts_usage


@dataclass(frozen=True)
class RunOptions:
    jobs: int = 1
    keep_going: bool = False
    verbosity: int = 1          # 0 quiet, 1 normal, 2 verbose
    discard_changes: bool = False   # drop uncommitted changes in a worktree that codex-orch did not make
    executor: str | None = None     # 'local' or 'dask'; None: the config's executor.kind


class ProgressSink(Protocol):
    """What steps and the doit reporter tell live progress (orch.engine.progress.Progress)."""

    def started(self, name: str) -> None: ...
    def finished(self, name: str) -> None: ...
    def failed_step(self, name: str, reason: str) -> None: ...
    def up_to_date(self, name: str) -> None: ...
    def worker_event(self, task_id: str, event: dict[str, Any]) -> None: ...
    def remote(self, task_id: str, text: str, *, line: bool) -> None: ...


@dataclass
class Budget:
    """What the run spent against its budget (`token_budget`; or `cost_budget`, in money by the price table:
    `price` says what a usage of a model costs; None: the budget counts tokens; limit None: no limit), counted
    from the run's start.

    A task's launch reserves what it is expected to cost (`launch`), and is refused while what was spent and
    what running tasks still hold reserved reach the limit: a wave of parallel tasks cannot all start on the
    last few tokens. What a task spends comes off its reservation; its end (`release`) frees the rest. Once what
    was spent reaches the limit, `stop` is set: a worker whose turn is under way is ended at once
    (orch.adapters.worker, run_worker's budget_stop) and its task deferred (orch.steps.budget).
    """

    limit: float | None
    spent: float = 0
    price: Callable[[dict[str, int], str | None], float] | None = None
    stop_reason: str | None = None
    stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _reserved: dict[str, float] = field(default_factory=dict, repr=False)   # running task -> what it still holds
    _task_spent: dict[str, int] = field(default_factory=dict, repr=False)   # tokens, in this invocation
    _mutex: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if self.limit is not None and self.spent >= self.limit:
            self.stop.set()

    def measure(self, usage: dict[str, int] | None, model: str | None = None) -> float:
        """What `usage` counts against this budget: its tokens, or (a cost budget) its cost."""
        if not usage:
            return 0
        return self.price(usage, model) if self.price is not None else usage_tokens(usage)

    def add(self, usage: dict[str, int] | None, task_id: str | None = None, model: str | None = None) -> None:
        if usage:
            amount = self.measure(usage, model)
            with self._mutex:
                self.spent += amount
                if task_id is not None:
                    self._task_spent[task_id] = self._task_spent.get(task_id, 0) + usage_tokens(usage)
                    if task_id in self._reserved:
                        self._reserved[task_id] = max(self._reserved[task_id] - amount, 0)
                if self.limit is not None and self.spent >= self.limit:
                    self.stop.set()

    def task_spent(self, task_id: str) -> int:
        with self._mutex:
            return self._task_spent.get(task_id, 0)

    def launch(self, task_id: str, expected: float) -> str | None:
        """Reserve `expected` for the task about to start; why it may not start, or None."""
        with self._mutex:
            if self.limit is None:
                return None
            held = self.spent + sum(self._reserved.values())
            if held >= self.limit:
                return self._stop(f'{self.describe()} exhausted ({self.amount(self.spent)} spent in this run'
                                  + (f', {self.amount(held - self.spent)} reserved by running tasks'
                                     if held > self.spent else '') + '); not started')
            self._reserved[task_id] = expected
            return None

    def release(self, task_id: str) -> None:
        with self._mutex:
            self._reserved.pop(task_id, None)

    def exhausted(self, when: str = 'stopped before its next turn') -> str | None:
        """Why no further turn may start (or, `when` saying so, why a turn under way was ended): what was spent
        reached the limit; or None."""
        with self._mutex:
            if self.limit is None or self.spent < self.limit:
                return None
            return self._stop(f'{self.describe()} exhausted ({self.amount(self.spent)} spent in this run); {when}')

    def describe(self) -> str:
        if self.price is None:
            return f'token budget of {self.amount(self.limit or 0)}'
        return f'cost budget of {self.amount(self.limit or 0)}'

    def amount(self, value: float) -> str:
        return money(value) if self.price is not None else f'{int(value)}'

    def _stop(self, reason: str) -> str:
        self.stop_reason = reason
        return reason


def usage_tokens(usage: dict[str, int]) -> int:
    """What a budget counts of a usage record: input (cached or not) and output tokens, as Codex reports them."""
    return int(usage.get('input_tokens', 0) or 0) + int(usage.get('output_tokens', 0) or 0)


class Session:
    def __init__(self, inputs: RunInputs, options: RunOptions | None = None, *, lock: RunLock | None = None,
                 progress: ProgressSink | None = None, spent_before: float = 0) -> None:
        self.options = options or RunOptions()
        self.progress = progress
        concurrency = inputs.config.concurrency
        self.scheduler = Scheduler(allow=concurrency.allow, ignore=concurrency.ignore)
        # The budget is the run's, not this invocation's: what earlier invocations paid counts too.
        self.budget = run_budget(inputs, spent_before)
        self.cancel = threading.Event()
        self.executor = make_executor(inputs, self.options)   # None: work steps run here (the local path)
        self.git_seals: dict[str, dict[str, str]] = {}   # worktree -> its git control digest (orch.steps.git_seal)
        self.internal_errors: list[str] = []   # reasons of steps that crashed: the command exits 3
        self.step_failures: list[str] = []     # run-level steps that failed (no task records them): exit 1
        self.rows = KnownRows()                # the tasks' status rows, read once while nothing changes
        # A step of a task started in this command: what the reports were written from may have changed, so their
        # step need not look at every task to know it is out of date (orch.steps.report.report_uptodate).
        self.task_step_ran = False
        self._run_dir = inputs.run_dir
        self._lock = lock
        self._mutex = threading.Lock()
        self._active = 0                       # steps running now, in any thread
        self._idle = threading.Condition(self._mutex)

    def ensure_lock(self) -> None:
        """Hold the run's lock (plain `doit run` takes it at its first action; codex-orch up front)."""
        if self._lock is None:
            with self._mutex:
                if self._lock is None:
                    lock = RunLock(self._run_dir)
                    lock.acquire()
                    self._lock = lock

    def release_lock(self, wait: float = 30.0) -> None:
        """Release the run's lock once no step runs any more (up to `wait` seconds): after an interrupt doit
        returns while its threads may still be finishing a step, and a resume must not start beside them."""
        with self._idle:
            if not self._idle.wait_for(lambda: self._active == 0, timeout=wait):
                return   # still running: the lock goes with this process (the kernel drops an flock at exit)
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    @contextlib.contextmanager
    def step_running(self) -> Iterator[None]:
        with self._idle:
            self._active += 1
        try:
            yield
        finally:
            with self._idle:
                self._active -= 1
                self._idle.notify_all()

    def record_step_failure(self, reason: str) -> None:
        with self._mutex:
            self.step_failures.append(reason)

    def record_internal_error(self, reason: str) -> None:
        with self._mutex:
            self.internal_errors.append(reason)

    def on_worker_event(self, task_id: str) -> Any:
        progress = self.progress
        if progress is None:
            return None
        return lambda event: progress.worker_event(task_id, event)


def run_budget(inputs: RunInputs, spent: float = 0) -> Budget:
    """The run's budget: `cost_budget` (money, by the config's price table) or `token_budget` (tokens)."""
    config = inputs.config
    if config.cost_budget is None:
        return Budget(config.token_budget, spent=spent)
    prices = config.prices
    return Budget(config.cost_budget, spent=spent,
                  price=lambda usage, model: usage_cost(prices, model, usage) or 0.0)


def spent_so_far(inputs: RunInputs) -> float:
    """What the run paid before this invocation, in its budget's unit: its budget is the run's, not the
    invocation's. (A cost budget prices each task's tokens at its role's model.)"""
    budget = run_budget(inputs)
    return sum(budget.measure(attempts_usage(inputs.task_dir(task.id)), inputs.role(task.role).model)
               for task in inputs.plan.tasks)


def make_executor(inputs: RunInputs, options: RunOptions) -> Any:
    """The Dask executor when the run uses one (orch.adapters.dask_executor.DaskExecutor), else None."""
    settings = inputs.config.executor
    kind = options.executor or settings.kind
    if kind != 'dask':
        return None
    if not settings.address:
        from orch.errors import InputError
        raise InputError('--executor dask: the config has no executor.address; set it in '
                         '.orchestrator/orchestrator.yaml (executor: {kind: dask, address: tcp://HOST:8786})')
    from orch.adapters.dask_executor import DaskExecutor
    return DaskExecutor(settings.address, resources=dict(settings.resources),
                        connect_timeout=settings.connect_timeout, resubmits=settings.resubmits)
