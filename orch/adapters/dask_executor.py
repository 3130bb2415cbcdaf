"""The Dask executor: work steps submitted to a Dask cluster (the only module that imports distributed).

doit stays the scheduler; this only runs one work unit (orch.remote.run_unit) on a worker that has the
resources the config asks for (`{codex: 1}` by default), and waits for its outcome.

- The submission's key names the execution (run, task, inputs digest, submission number), so a resubmission
  is recognisable on the dashboard and in the scheduler's logs; `pure=False`: never deduplicated by content.
- A lost worker: Dask itself reschedules the unit on another worker (the scheduler's allowed-failures);
  when it gives up (KilledWorker) or the unit is lost with the connection, the cluster is asked for that
  submission first (`recover`: a connection lost for a moment cancels the client's future while the unit runs
  on), and only when it has nothing the unit is submitted again under a new key, at most `resubmits` times,
  then the task fails with the reason. Never done without a result.
- An abandoned submission (cancelled, or resubmitted) is released; a late result of it is never read.
- A killed coordinator: the submission is fire-and-forget, so it runs on without a client, and the unit publishes
  its outcome on the scheduler under its key (orch.remote.run_unit) before it returns. The next coordinator
  (resume) first asks for the recorded key: the published outcome, or the still-running task, instead of a new
  submission, so a model call that finished is not paid again. The coordinator unpublishes it once it has
  recorded it (`forget`).
"""
from __future__ import annotations

import contextlib
import threading
import traceback
from collections.abc import Callable
from typing import Any

from orch.errors import LaunchError
from orch.remote.unit import WorkOutcome, WorkUnit

POLL = 0.25
_clients: dict[str, Any] = {}
_clients_lock = threading.Lock()


class Interrupted(Exception):
    """The run was cancelled while the unit was on the cluster."""


def _distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise LaunchError("executor kind dask needs Dask distributed: pip install 'codex-orch[dask]'") from None
    return distributed


def connect(address: str, timeout: float) -> Any:
    """A client of the scheduler at `address` (one per address and process), or a LaunchError (exit 2)."""
    distributed = _distributed()
    with _clients_lock:
        client = _clients.get(address)
        if client is not None and client.status == 'running':
            return client
        try:
            client = distributed.Client(address, timeout=timeout, set_as_default=False)
        except Exception as exc:   # OSError, TimeoutError, a malformed address: never a traceback
            raise LaunchError(f'cannot reach the Dask scheduler at {address} (executor.address): {exc}; start it '
                              f'(`dask scheduler`), or fix the address, or run with --executor local') from None
        _clients[address] = client
        return client


def close_all() -> None:
    with _clients_lock:
        clients = list(_clients.values())
        _clients.clear()
    for client in clients:
        with contextlib.suppress(Exception):   # closing at the end: nothing left to do about a failure
            client.close(timeout=5)


def workers(address: str, timeout: float) -> dict[str, dict[str, Any]]:
    """Address -> {'resources': ..., 'host': ...} of the workers the scheduler knows now."""
    info = connect(address, timeout).scheduler_info(n_workers=-1)
    return {addr: {'resources': w.get('resources') or {}, 'host': w.get('host'), 'name': w.get('name')}
            for addr, w in (info.get('workers') or {}).items()}


def run_on_workers(address: str, timeout: float, function: Callable[[], Any]) -> dict[str, Any]:
    """`function()` on every worker (doctor's probes); worker address -> its result."""
    return dict(connect(address, timeout).run(function))


class DaskExecutor:
    def __init__(self, address: str, *, resources: dict[str, float], connect_timeout: float, resubmits: int) -> None:
        self.address = address
        self.resources = resources
        self.connect_timeout = connect_timeout
        self.resubmits = resubmits

    def recover(self, unit_key: str, key: str, *, cancel: threading.Event) -> WorkOutcome | None:
        """The outcome of an earlier submission (unit `unit_key`, task `key`) a killed coordinator left: published,
        or (still running, fire-and-forget) waited for until it is; None when the cluster has neither (then the
        unit is submitted again)."""
        distributed = _distributed()
        while True:
            # The task itself first: while the scheduler still runs `key`, its outcome is the one it will publish
            # when it ends (an outcome published meanwhile under the unit's name is not taken instead of it).
            try:
                client = connect(self.address, self.connect_timeout)
                task_state = client.run_on_scheduler(_task_state, key)
            except (OSError, distributed.comm.CommClosedError):
                return None
            if task_state not in ('waiting', 'no-worker', 'queued', 'processing', 'memory'):
                return self.recover_published(unit_key)
            if cancel.wait(POLL * 2):
                raise Interrupted

    def recover_published(self, unit_key: str) -> WorkOutcome | None:
        client = connect(self.address, self.connect_timeout)
        try:
            found = client.get_dataset(unit_key) if unit_key in client.list_datasets() else None
        except Exception:
            return None
        return found if isinstance(found, WorkOutcome) and found.key == unit_key else None

    def forget(self, key: str) -> None:
        """The outcome of `key` is recorded by the coordinator: the scheduler need not keep it."""
        with contextlib.suppress(Exception):
            client = connect(self.address, self.connect_timeout)
            if key in client.list_datasets():
                client.unpublish_dataset(key)

    def run(self, unit: WorkUnit, *, cancel: threading.Event,
            on_submitted: Callable[[str], None] | None = None) -> WorkOutcome:
        """Submit `unit` and wait for its outcome (resubmitting it after lost workers, bounded)."""
        distributed = _distributed()
        from orch.remote.run_unit import run_unit
        lost: list[str] = []
        for n in range(self.resubmits + 1):
            key = unit.key if n == 0 else f'{unit.key}-resubmit-{n}'
            if on_submitted is not None:
                on_submitted(key)   # recorded before it is submitted: a resume asks the cluster for it
            try:
                client = connect(self.address, self.connect_timeout)
                if unit.pin is not None and unit.pin not in client.scheduler_info(n_workers=-1).get('workers', {}):
                    return WorkOutcome(key=unit.key, status='failed', outcome='worker-lost',
                                       reason=f'the Dask worker {unit.pin}, which holds the Codex thread to '
                                              'resume, is gone')
                future = client.submit(run_unit, unit, key=key, pure=False,
                                       resources=dict(self.resources) or None, retries=0,
                                       workers=[unit.pin] if unit.pin else None, allow_other_workers=False)
                distributed.fire_and_forget(future)   # runs on to its end (and publishes) if this coordinator dies
            except LaunchError as exc:   # the scheduler went away: the task fails with why, resume tries again
                return WorkOutcome(key=unit.key, status='failed', outcome='scheduler-lost', reason=str(exc))
            except (OSError, distributed.comm.CommClosedError) as exc:
                lost.append(f'{key}: could not be submitted ({exc})')
                continue
            try:
                result = self._wait(future, cancel, client, unit.pin, unit.key)
            except distributed.client.FutureCancelledError as exc:
                lost.append(f'{key}: cancelled on the cluster ({exc})')
            except distributed.KilledWorker as exc:
                lost.append(f'{key}: its worker died ({exc})')
            except (OSError, distributed.comm.CommClosedError) as exc:
                lost.append(f'{key}: lost the connection to the scheduler ({exc})')
            except Interrupted:
                raise
            except Exception as exc:   # the unit itself raised (it reports the task's failures as outcomes)
                where = ''.join(traceback.format_tb(exc.__traceback__, limit=-3)).strip().replace('\n', ' | ')
                return WorkOutcome(key=unit.key, status='error', outcome='worker-error',
                                   reason=f'the unit raised on the Dask worker: {type(exc).__name__}: {exc} '
                                          f'[{where}]')
            else:
                if isinstance(result, WorkOutcome) and result.key == unit.key:
                    return result
                lost.append(f'{key}: the worker returned something that is not this unit\'s outcome')
                continue
            finally:
                future.release()   # abandoned or read: its result is not wanted again
            # Lost to this client is not lost on the cluster: after a brief loss of the scheduler connection the
            # future is cancelled while the (fire-and-forget) unit runs on. Its outcome, if it has one, before a
            # second paid submission.
            try:
                recovered = self.recover(unit.key, key, cancel=cancel)
            except LaunchError as exc:
                return WorkOutcome(key=unit.key, status='failed', outcome='scheduler-lost', reason=str(exc))
            if recovered is not None:
                return recovered
        reason = f'lost on the Dask cluster {len(lost)} times; ' + '; '.join(lost[-3:])
        return WorkOutcome(key=unit.key, status='failed', outcome='worker-lost', reason=reason)

    @staticmethod
    def _wait(future: Any, cancel: threading.Event, client: Any = None, pin: str | None = None,
              unit_key: str | None = None) -> Any:
        """The future's result; with `pin`, KilledWorker when that worker leaves (a pinned unit would wait). On
        `cancel` the unit is cancelled, and its cancel Event set: the worker kills the codex it runs."""
        # Polls the future's own state (no round trip): `future.result(timeout=...)` from several threads at once
        # can fail inside distributed's sync() with an UnboundLocalError (seen with 2026.8.0).
        finished = threading.Event()
        future.add_done_callback(lambda _: finished.set())   # wakes this thread at once (no polling latency)
        polls = 0
        try:
            while not (finished.wait(POLL) or future.done()):
                if cancel.is_set():
                    raise Interrupted
                polls += 1
                if pin is not None and polls % 8 == 0 and \
                        pin not in client.scheduler_info(n_workers=-1).get('workers', {}):
                    future.cancel()
                    raise _distributed().KilledWorker(future.key, pin, None)
        except (Interrupted, KeyboardInterrupt):   # Ctrl-C or SIGTERM: in doit's main thread with -j 1
            _cancel(future, client, unit_key)
            raise
        if cancel.is_set():
            _cancel(future, client, unit_key)
            raise Interrupted
        return future.result()


def _task_state(key: str, dask_scheduler: Any = None) -> str | None:
    """On the scheduler: the state of task `key`, None when it does not know it."""
    task = dask_scheduler.tasks.get(key) if dask_scheduler is not None else None
    return str(task.state) if task is not None else None


def _cancel(future: Any, client: Any, unit_key: str | None) -> None:
    """Stop a unit: its cancel Event first (a running unit kills its codex), then the task on the scheduler."""
    if client is not None and unit_key is not None:
        from orch.remote.run_unit import cancel_event_name
        with contextlib.suppress(Exception):
            _distributed().Event(cancel_event_name(unit_key), client=client).set()
    with contextlib.suppress(Exception):
        future.cancel()
