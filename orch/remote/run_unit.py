"""What runs ON a remote worker (a Dask worker process): one work step in a scratch repository.

From the unit's bundle it makes a plain repository in a scratch directory (orch.remote.run_unit.unit_root: never
under /tmp or $TMPDIR, which the Codex sandbox lets the agent write), runs the Codex worker
there with THIS machine's codex, `CODEX_HOME` and credentials (the coordinator's environment never travels),
with the same timeouts, schema validation, retries and check/repair rounds as a local run (orch.steps.verify),
commits the result there and returns it as a bundle whose prerequisite is the snapshot it started from.
The temporary directory is removed before it returns; nothing of the host repository is needed or read.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orch.adapters import git
from orch.adapters.codex_bin import INSTALL_HINT, find_codex
from orch.adapters.sandbox import NONE, Sandbox, sandbox_for, unsandboxed_checks
from orch.adapters.sandbox import probe as probe_sandbox
from orch.adapters.worker_env import codex_home, codex_settings, worker_codex_args
from orch.adapters.worker_types import WorkerSpec
from orch.core.config import CodexSettings, Config
from orch.core.text import one_line
from orch.remote.unit import WorkOutcome, WorkUnit
from orch.runstate import state
from orch.steps import verify
from orch.steps.failure import Failed
from orch.steps.rounds import Rounds
from orch.steps.setup import SETUP_DIR, run_setup_commands

RESULT_REF = 'refs/orch/result'
MAX_OUTCOME_BYTES = 100 * 10**6     # what one outcome may carry back (files and bundle), on both sides
CANCEL_POLL = 0.5
_SKIPPED = frozenset({'pid', 'process.json'})   # a remote process id means nothing to the coordinator


def run_unit(unit: WorkUnit) -> WorkOutcome:
    """Run one work step; never raises for the task's own failures (they are the outcome's status)."""
    started = time.time()
    out = WorkOutcome(key=unit.key, status='error', worker=_identity(), started_at=started)
    try:
        scratch = Path(tempfile.mkdtemp(prefix='codex-orch-unit-', dir=unit_root(_writable_roots(unit))))
    except (OSError, RuntimeError) as exc:
        out.outcome, out.reason, out.ended_at = 'worker-error', f'the remote worker failed: {exc}', time.time()
        _publish(out)
        return out
    cancel = threading.Event()
    stop_watching = _watch_cancel(unit.key, cancel)
    try:
        _run(unit, scratch, out, cancel)
    except Failed:
        st = state.read_state(scratch / 'task')
        status = str(st.get('status') or 'failed')
        out.status = 'interrupted' if status == 'pending' else status if status in ('blocked', 'deferred') \
            else 'failed'
        out.reason = st.get('reason')
        out.outcome = st.get('outcome')
        out.usage = st.get('usage') or out.usage
        out.checks = st.get('checks') or out.checks
        out.setup = st.get('setup') or out.setup
        out.answer = st.get('answer')
    except Exception as exc:   # a bug or a broken machine: reported with what was paid for so far
        out.status, out.outcome = 'error', 'worker-error'
        out.reason = f'the remote worker failed: {type(exc).__name__}: {exc}'
        out.files['remote-error.txt'] = traceback.format_exc().encode()
    finally:
        stop_watching()
        out.files.update(_task_files(scratch / 'task'))
        out.ended_at = time.time()
        shutil.rmtree(scratch, ignore_errors=True)
    out = capped(out)
    _publish(out)
    return out


def _writable_roots(unit: WorkUnit) -> list[Path]:
    """`sandbox_workspace_write.writable_roots` of this worker's Codex config (its profile and the unit's `-c`
    arguments on top): the sandbox lets the agent write there too."""
    try:
        codex = CodexSettings(**unit.codex)
        codex = codex.model_copy(update={'extra_args': [*codex.extra_args, *unit.extra_args]})
        table = codex_settings(Config(codex=codex), os.environ).get('sandbox_workspace_write')
        roots = table.get('writable_roots') if isinstance(table, dict) else None
    except Exception:   # an unreadable config: codex itself will say so
        return []
    return [Path(r).expanduser() for r in roots or [] if isinstance(r, str) and r]


def unit_root(writable_roots: list[Path] | None = None) -> Path:
    """Where units make their scratch directories: `$CODEX_ORCH_UNIT_DIR`, else `$XDG_CACHE_HOME/codex-orch/units`,
    else `~/.cache/codex-orch/units`. Never under /tmp, $TMPDIR or `writable_roots`: Codex's workspace-write
    sandbox lets the agent write there (besides its working directory), and the unit's task directory (state,
    attempts) and schema must be out of its reach. Only the unit's `work` directory is writable to the agent."""
    configured = os.environ.get('CODEX_ORCH_UNIT_DIR')
    cache = os.environ.get('XDG_CACHE_HOME') or str(Path.home() / '.cache')
    root = Path(configured) if configured else Path(cache) / 'codex-orch' / 'units'
    root = root.expanduser().resolve()
    writable = {Path('/tmp').resolve(), Path(tempfile.gettempdir()).resolve(),
                *(p.resolve() for p in writable_roots or [])}
    if os.environ.get('TMPDIR'):
        writable.add(Path(os.environ['TMPDIR']).resolve())
    for place in sorted(writable):
        if root == place or root.is_relative_to(place):
            raise RuntimeError(f'the unit directory {root} is under {place}, which the Codex sandbox lets the agent '
                               'write; set CODEX_ORCH_UNIT_DIR (or HOME / XDG_CACHE_HOME) on the worker to a '
                               'directory outside /tmp, $TMPDIR and the writable_roots of its Codex config')
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    return root


def capped(out: WorkOutcome) -> WorkOutcome:
    """An outcome larger than MAX_OUTCOME_BYTES (its files and bundle) becomes a failure that says so (its usage
    kept): the worker does not send it, and the coordinator does not take one (a worker is untrusted code)."""
    size = outcome_size(out)
    if size <= MAX_OUTCOME_BYTES:
        return out
    return WorkOutcome(key=out.key, status='failed', outcome='outcome-too-large', reason=too_large(size),
                       usage=out.usage, worker=out.worker, started_at=out.started_at, ended_at=out.ended_at)


def outcome_size(out: WorkOutcome) -> int:
    return sum(len(v) for v in out.files.values()) + len(out.bundle or b'')


def too_large(size: int) -> str:
    return (f'the outcome of the Dask worker is {size / 1e6:.1f} MB (attempt files, check logs and the commit\'s '
            f'bundle), more than the limit of {MAX_OUTCOME_BYTES // 10**6} MB; nothing of it was kept')


def _publish(out: WorkOutcome) -> None:
    """Keep the outcome on the scheduler under the unit's key: a coordinator killed meanwhile gets it on resume
    instead of paying for the model calls again (orch.adapters.dask_executor.recover). Outside Dask: nothing."""
    with contextlib.suppress(Exception):
        from distributed import get_client, get_worker
        get_worker()
        get_client().publish_dataset(out, name=out.key, override=True)


def cancel_event_name(key: str) -> str:
    """The Dask Event the coordinator sets to stop unit `key` (Ctrl-C, SIGTERM): its codex is killed here."""
    return f'{key}-cancel'


def _watch_cancel(key: str, cancel: threading.Event) -> Callable[[], None]:
    """Set `cancel` when the coordinator sets the unit's cancel Event; returns how to stop watching."""
    try:
        from distributed import Event, get_client, get_worker
        get_worker()
        event = Event(cancel_event_name(key), client=get_client())
    except Exception:   # outside a Dask worker: nothing to watch
        return lambda: None
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(CANCEL_POLL):
            try:
                if event.is_set():
                    cancel.set()
                    return
            except Exception:   # the worker lost its scheduler: the unit ends by itself
                return

    threading.Thread(target=watch, name=f'cancel-{key}', daemon=True).start()
    return stop.set


def _run(unit: WorkUnit, scratch: Path, out: WorkOutcome, cancel: threading.Event) -> None:
    # `work` is a plain repository (its .git the top-level one Codex's sandbox keeps read-only); `task` and the
    # schema are beside it, outside the agent's working directory.
    workdir, task_dir = scratch / 'work', scratch / 'task'
    task_dir.mkdir()
    git.scratch_checkout(workdir, unit.bundle, unit.bundle_ref, unit.snapshot, 'codex-orch-work')
    env = {**os.environ, 'ORCH_RUN_ID': unit.run_id, 'ORCH_REPO': str(workdir), 'ORCH_TASK_ID': unit.task_id,
           'ORCH_WORKTREE': str(workdir)}
    spec = _spec(unit, workdir, scratch)
    checks_sandbox, setup_sandbox = _sandboxes(unit, spec.codex[0], env)
    # A new checkout: worktree.setup first, as in a local one (a turn's logs apart from its task's own setup's).
    out.setup = run_setup_commands(unit.setup, task_dir=task_dir, workdir=workdir, env=env, sandbox=setup_sandbox,
                                   timeout=unit.setup_timeout, cancel=cancel, log_root=task_dir,
                                   log_dir=SETUP_DIR if unit.resume_thread is None else f'{SETUP_DIR}/turn')
    sealed = git.control_digest(workdir)
    spent: dict[str, int] = {}

    def paid(usage: dict[str, int]) -> dict[str, int]:   # every worker call's usage so far (a refusal reports it)
        for name, value in usage.items():
            spent[name] = spent.get(name, 0) + int(value)
        return dict(spent)

    ex = verify.Execution(
        task_id=unit.task_id, task_dir=task_dir, workdir=workdir, spec=spec,
        schema=unit.schema, checks=tuple(unit.checks), repair_rounds=unit.repair_rounds,
        check_timeout=unit.check_timeout, log_root=task_dir, cancel=cancel, command_env=env, sandbox=checks_sandbox,
        after_worker=lambda result: _refuse_git_changes(workdir, task_dir, sealed, paid(result.usage)))
    repo = workdir
    if unit.resume_thread is not None:
        _turn(unit, ex, repo, workdir, out)
        return
    result = verify.call_worker(ex, unit.prompt)
    out.usage = dict(result.usage)
    answer = verify.accept(ex, result)
    rounds = Rounds(inputs_digest=unit.key, thread_id=result.thread_id, answer=answer, usage=dict(result.usage),
                    cumulative=result.usage_cumulative, started_at=out.started_at)
    verify.verify(ex, rounds)
    out.answer, out.usage, out.thread_id = rounds.answer, rounds.usage, rounds.thread_id
    out.checks, out.repair_rounds = rounds.checks, rounds.repairs
    _refuse_git_changes(workdir, task_dir, sealed, rounds.usage)   # the checks ran too: again before staging
    sha = git.scratch_commit(workdir, f'{unit.task_id}: remote work step {unit.key}')
    if sha is not None:
        out.commit = sha
        out.bundle = git.create_bundle(repo, sha, RESULT_REF, exclude=unit.snapshot)
        out.bundle_ref = RESULT_REF
    out.status, out.outcome = 'done', 'ok'


def _turn(unit: WorkUnit, ex: verify.Execution, repo: Path, workdir: Path, out: WorkOutcome) -> None:
    """One resumed turn of a thread that lives here (a review round): the raw result and what it changed."""
    resume = Rounds(inputs_digest=unit.key, thread_id=unit.resume_thread, answer=None, usage={},
                    cumulative=unit.prev_cumulative, started_at=out.started_at)
    result = verify.call_worker(ex, unit.prompt, resume=resume)
    out.outcome, out.answer, out.error = result.outcome, result.answer, result.error
    out.usage, out.thread_id, out.usage_cumulative = dict(result.usage), result.thread_id, result.usage_cumulative
    if result.ok and git.worktree_valid(workdir):
        sha = git.scratch_commit(workdir, f'{unit.task_id}: remote turn {unit.key}')
        if sha is not None:
            out.commit = sha
            out.bundle = git.create_bundle(repo, sha, RESULT_REF, exclude=unit.snapshot)
            out.bundle_ref = RESULT_REF
    out.status = 'done'


def _refuse_git_changes(workdir: Path, task_dir: Path, sealed: dict[str, str], usage: dict[str, int]) -> None:
    """Fail the unit (before any git command reads the tree again) when the agent changed the repository's
    control files: a filter driver in .git/config would run at `git add` with this worker's environment."""
    changed = git.control_changes(workdir, sealed)
    if not changed:
        return
    shown = ', '.join(n if n != '.git' else '.git itself' for n in changed)
    reason = (f'git-config-changed: the worker changed {shown} of its scratch repository (a filter or diff '
              'driver there would run on this Dask worker); refused, nothing was staged or committed')
    state.update_state(task_dir, status='failed', reason=reason, outcome='git-config-changed', ended_at=time.time(),
                       usage=usage)
    raise Failed(reason)


def _sandboxes(unit: WorkUnit, binary: str, env: dict[str, str]) -> tuple[Sandbox | None, Sandbox | None]:
    """Where the unit's checks and its setup commands run: this worker's Codex sandbox, as on the coordinator
    (orch.steps.sandboxing); one that does not work here fails the unit, nothing unsandboxed runs."""
    mode = unit.command_sandbox
    if not unit.checks and not unit.setup:
        return None, None
    settings = CodexSettings(**unit.codex)
    config = Config(codex=settings.model_copy(update={'extra_args': [*settings.extra_args, *unit.extra_args]}))
    if mode == NONE:   # unsandboxed, but without the variables workers do not get: they run the worker's code
        return unsandboxed_checks(config, env), unsandboxed_checks(config, env)
    problem = probe_sandbox(binary)
    if problem is not None:
        raise RuntimeError(f'the Codex sandbox does not work on {socket.gethostname()}: `{binary} sandbox -- true` '
                           f'{problem}; checks and setup commands do not run unsandboxed (check_sandbox: none '
                           'would run them as the worker\'s user)')
    return (sandbox_for(config, mode, env, binary=binary),
            sandbox_for(config, 'workspace-write' if mode == 'read-only' else mode, env, binary=binary))


def _spec(unit: WorkUnit, workdir: Path, scratch: Path) -> WorkerSpec:
    settings = CodexSettings(**unit.codex)
    # The coordinator's codex path means nothing here: a bare name is looked up on this machine, a path
    # falls back to this machine's codex ($CODEX_BIN, PATH, a source checkout's pinned copy).
    binary = find_codex(settings.binary) if '/' not in settings.binary else None
    binary = binary or find_codex('codex')
    if binary is None:
        raise RuntimeError(f'no codex executable on {socket.gethostname()}: {INSTALL_HINT}')
    env = {**os.environ, **settings.env}
    schema_path = scratch / 'schema.json'
    schema_path.write_text(json.dumps(unit.schema), encoding='utf-8')
    limits: dict[str, Any] = unit.limits
    return WorkerSpec(
        codex=(binary,), workdir=workdir, sandbox=unit.sandbox, model=unit.model, schema_path=schema_path,
        extra_args=(*unit.extra_args, *worker_codex_args(Config(codex=settings), env)), env=env,
        timeout_total=limits.get('timeout_total'), timeout_idle=limits.get('timeout_idle'),
        timeout_first_event=limits.get('timeout_first_event'), schema_retries=int(limits['schema_retries']),
        failure_retries=int(limits['failure_retries']), retry_backoff=float(limits['retry_backoff']),
        rollouts_home=codex_home(env))


def _task_files(task_dir: Path) -> dict[str, bytes]:
    """The attempts' files, the check logs and the setup logs, task-dir-relative."""
    files: dict[str, bytes] = {}
    if not task_dir.is_dir():
        return files
    for path in sorted(task_dir.rglob('*')):
        rel = path.relative_to(task_dir)
        if not rel.parts or not (rel.parts[0].startswith('attempt-') or rel.parts[0] in ('checks', SETUP_DIR)):
            continue
        if path.is_file() and not path.is_symlink() and path.name not in _SKIPPED:
            with contextlib.suppress(OSError):
                files[rel.as_posix()] = path.read_bytes()
    return files


def _identity() -> dict[str, Any]:
    address = None
    with contextlib.suppress(Exception):   # outside a Dask worker (tests, a plain call): no address
        from distributed import get_worker
        address = get_worker().address
    return {'host': socket.gethostname(), 'address': address, 'pid': os.getpid()}


def probe(codex: dict[str, Any]) -> dict[str, Any]:
    """What doctor asks of each worker, without a model call: git, this machine's codex and its version, and
    whether the model provider's key is there."""
    import subprocess

    from orch.adapters.worker_env import codex_environment, provider_key
    report: dict[str, Any] = {'host': socket.gethostname()}
    try:
        report['git'] = '.'.join(map(str, git.git_version()))
    except Exception as exc:
        report['git_problem'] = one_line(str(exc))[:300] or type(exc).__name__
    settings = CodexSettings(**codex)
    binary = (find_codex(settings.binary) if '/' not in settings.binary else None) or find_codex('codex')
    if binary is None:
        report['codex_problem'] = f'no codex executable: {INSTALL_HINT}'
    else:
        try:
            proc = subprocess.run([binary, '--version'], capture_output=True, text=True, timeout=30,
                                  stdin=subprocess.DEVNULL)
            report['codex'] = proc.stdout.strip().split()[-1] if proc.stdout.strip() else '?'
        except (OSError, subprocess.TimeoutExpired) as exc:
            report['codex_problem'] = f'{binary} --version failed: {exc}'
    config = Config(codex=settings)
    key = provider_key(config, codex_environment(config))
    if key.problem:
        report['key_problem'] = key.problem
    else:
        report['key'] = key.found or 'none needed'
    return report
