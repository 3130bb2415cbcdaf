"""A task's result taken from the result cache (config `cache:`), then verified here (shared mode).

Before its worker is launched, the task's key (orch.core.cache_key) is looked up in the cache
(orch.adapters.cache_store). On a hit the cached commit's changes are replayed into the task's fresh checkout
(its start tree is the entry's, by the key), the cached answer is validated against the role's schema, the task's
checks run here, and the task is committed, landed and recorded like a fresh result: its execution record says
`cache hit`, with the entry's origin and the tokens it saved; 0 tokens are paid, and its gates run after it as for
any result. A replay that does not apply, an answer that does not validate or a check that fails is a miss (with a
warning): the worker runs. Verification is never cached; what the cache replaces is the model.
"""
from __future__ import annotations

import os
import subprocess
import time
from typing import Any

from orch import output
from orch.adapters import cache_store
from orch.core.cache_key import cache_key, normalise, work_digest
from orch.core.validate import schema_errors
from orch.engine.cache_sync import own_files
from orch.errors import GitError
from orch.runstate import state
from orch.steps import checkout, verify
from orch.steps.finish import commit_verified
from orch.steps.rounds import Rounds
from orch.steps.setup import run_setup
from orch.steps.task_work import TaskWork, ensure_workdir, worker_spec

_VERSIONS: dict[str, str] = {}   # `codex --version` of each binary, asked once per process


def codex_version(binary: str) -> str:
    if binary not in _VERSIONS:
        try:
            out = subprocess.run([binary, '--version'], capture_output=True, text=True, timeout=60, check=False)
            _VERSIONS[binary] = out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else 'unknown'
        except (OSError, subprocess.SubprocessError):
            _VERSIONS[binary] = 'unknown'
    return _VERSIONS[binary]


def task_work_digest(work: TaskWork) -> str:
    """Everything but the start tree that decides the task's work, run-specific ids and paths normalised."""
    rt = work.rt
    replacements = {str(rt.run_dir): '<run-dir>', str(work.workdir): '<checkout>', str(rt.repo): '<repo>'}
    for dep in work.task.depends_on:   # its dependencies' commits differ from run to run; their trees do not
        commit = (state.read_result(rt.task_dir(dep)) or {}).get('commit')
        if isinstance(commit, str):
            replacements[commit] = '<tree ' + cache_store.start_tree(rt.repo, commit, own_files(rt)) + '>'
    prompt = normalise(rt.path(work.step.input('prompt')).read_text(encoding='utf-8'), replacements,
                       {rt.run.run_id: '<run-id>'})
    return work_digest(prompt=prompt, schema=rt.path(work.step.input('schema')).read_bytes(),
                       params=work.step.params, codex_version=codex_version(worker_spec(work).codex[0]),
                       checks=work.checks)


def try_hit(work: TaskWork) -> bool:
    """The task done from the cache (True), or a miss: its worker is to run (False)."""
    rt, task_dir = work.rt, work.task_dir
    if rt.config.cache is None or not work.shared or state.redo_requested(state.read_state(task_dir)):
        return False
    if Rounds.load(task_dir, work.digest) is not None:   # an execution under way: it goes on
        return False
    if state.read_state(task_dir).get('status') == 'running':
        return False   # a kill interrupted an execution: its checkout may hold a paid turn's edits, which it recovers
    ensure_workdir(work)
    checkout.restart(rt, task_dir, work.workdir, work.run_branch or '')
    start = checkout.start_of(task_dir) or ''
    digest = task_work_digest(work)
    key = cache_key(digest, cache_store.start_tree(rt.repo, start, own_files(rt)))
    record: dict[str, Any] = {'key': key, 'work': digest, 'hit': False}
    state.update_state(task_dir, cache=record)
    entry = cache_store.GitRefStore(rt.repo).get(key)
    if entry is None:
        return False
    why = _replay(work, entry)
    if why is not None:
        output.write_line(f'warning: {work.task.id}: the cached result {key[:12]} is not used: {why}', err=True)
        checkout.restart(rt, task_dir, work.workdir, work.run_branch or '')
        state.update_state(task_dir, cache={**record, 'refused': why}, status='pending', checks=None)
        return False
    usage = (entry.data.get('execution') or {}).get('usage') or {}
    saved = sum(int(usage.get(k) or 0) for k in ('input_tokens', 'output_tokens'))
    record = {**record, 'hit': True, 'origin': entry.data.get('origin'), 'tokens_saved': saved}
    state.update_state(task_dir, cache=record)
    rounds = _rounds(work, entry.data.get('answer'))
    rounds.checks = state.read_state(task_dir).get('checks') or []
    commit_verified(work, rounds, extra={'cache': record})
    return True


def _rounds(work: TaskWork, answer: Any) -> Rounds:
    return Rounds(inputs_digest=work.digest, thread_id=None, answer=answer, usage={}, cumulative=None,
                  started_at=time.time())


def _replay(work: TaskWork, entry: cache_store.Entry) -> str | None:
    """The entry's work in the task's checkout and its checks passed here; else why not."""
    rt, task_dir = work.rt, work.task_dir
    answer = entry.data.get('answer')
    errors = schema_errors(answer, rt.schema(work.step.input('schema')))
    if errors:
        return f'its answer does not match the role\'s schema: {errors[0]}'
    if entry.commit is not None:
        if entry.base is None:
            return 'it names no base commit'
        try:
            cache_store.replay(work.workdir, entry.base, entry.commit, rt.config.decisions_file)
        except GitError as exc:
            return f'its commit does not apply to the task\'s start: {exc}'
    state.update_state(task_dir, status='running', started_at=time.time(), ended_at=None, reason=None,
                       pid=os.getpid(), round=None, checks=None, warnings=None, worker=None)
    run_setup(rt, work.session, work.task.id, work.workdir)
    if not work.checks:
        return None
    rounds = _rounds(work, answer)
    failed = next((r for r in verify.run_checks(work.ex, rounds) if not r.passed), None)
    Rounds.clear(task_dir)
    if failed is not None:
        return f'its check failed here: {failed.command}'
    return None

