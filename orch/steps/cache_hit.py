"""A task's result taken from the result cache (config `cache:`), then verified here (shared mode).

Before its worker is launched, the task's key (orch.core.cache_key) is looked up in the cache
(orch.adapters.cache_store). On a hit the cached commit's changes are replayed into the task's fresh checkout,
the cached answer is judged as a fresh one would be (the role's schema, a `blocked` status, the role's verdict),
the task's checks run here, and the task is committed, landed and recorded like a fresh result: its execution
record says `cache hit`, with the entry's origin and the tokens it saved; 0 tokens are paid, and its gates run
after it as for any result. An entry that is refused (unsigned or badly signed where a signing key is set, a
replay that does not apply, an answer that would not be accepted, a check that fails) is a miss, with a warning.
Verification is never cached; what the cache replaces is the model.

A miss where the worker has no provider key (a CI job without secrets) does not launch anything: the task is
deferred, its reason naming the inputs in which its key differs from the nearest entry, and the run exits 2.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orch import output
from orch.adapters import cache_local, cache_store, git
from orch.adapters.codex_bin import find_codex
from orch.adapters.worker_env import provider_key
from orch.core.cache_key import cache_key, describe, differing, normalise, start_digest, work_digest, work_inputs
from orch.core.compile import Step
from orch.core.plan import Plan
from orch.core.redact import redact_obj
from orch.core.validate import schema_errors
from orch.core.verdict import verdict_of
from orch.engine.cache_sync import PROMPT_FILE, own_files, signing_key
from orch.engine.inputs import RunInputs
from orch.errors import GitError
from orch.runstate import atomic, state
from orch.steps import checkout, git_seal, verify
from orch.steps.failure import Failed
from orch.steps.finish import commit_verified
from orch.steps.guard import touched_control_files, touched_protected
from orch.steps.rounds import Rounds
from orch.steps.setup import run_setup
from orch.steps.task_work import TaskWork, ensure_workdir

_VERSIONS: dict[str, str] = {}   # `codex --version` of each binary, asked once per process
MISS_OUTCOME = 'cache-miss-no-key'   # state.json's outcome of a miss that could not run (orch.engine.execute)


def codex_version(binary: str) -> str:
    if binary not in _VERSIONS:
        try:
            out = subprocess.run([binary, '--version'], capture_output=True, text=True, timeout=60, check=False)
            _VERSIONS[binary] = out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else 'unknown'
        except (OSError, subprocess.SubprocessError):
            _VERSIONS[binary] = 'unknown'
    return _VERSIONS[binary]


def upstream_of(plan: Plan, task_id: str) -> list[str]:
    """Every task `task_id` depends on, directly or not (their changes are in the tree it starts from)."""
    seen: list[str] = []
    todo = list(plan.by_id[task_id].depends_on)
    while todo:
        dep = todo.pop()
        if dep not in seen:
            seen.append(dep)
            todo.extend(plan.by_id[dep].depends_on)
    return sorted(seen)


def key_inputs(work: TaskWork) -> tuple[dict[str, str], str]:
    """The digests of what decides the task's work (orch.core.cache_key.INPUT_NAMES), and its normalised prompt."""
    rt = work.rt
    commits: dict[str, str | None] = {}
    changes: dict[str, str] = {}
    for dep in upstream_of(rt.plan, work.task.id):
        commit = (state.read_result(rt.task_dir(dep)) or {}).get('commit')
        commits[dep] = commit if isinstance(commit, str) else None
        changes[dep] = cache_store.change_digest(rt.repo, commit, own_files(rt)) if isinstance(commit, str) else ''
    prompt = rt.path(work.step.input('prompt')).read_text(encoding='utf-8')
    return inputs_of(rt, work.step, work.workdir, prompt, commits, changes)


def inputs_of(rt: RunInputs, step: Step, workdir: Path, prompt: str, commits: Mapping[str, str | None],
              changes: Mapping[str, str]) -> tuple[dict[str, str], str]:
    """The key's inputs of the task of work step `step`, from its prompt and its upstream tasks' commits (named in
    the prompt: they differ from run to run, so they are normalised) and changes (what its checkout starts from)."""
    assert step.task_id is not None
    task = rt.plan.by_id[step.task_id]
    replacements = {str(rt.run_dir): '<run-dir>', str(workdir): '<checkout>', str(rt.repo): '<repo>'}
    replacements.update({commit: f'<commit of {dep}>' for dep, commit in commits.items() if commit})
    binary = json.loads(step.params['codex_args'])[0]
    normalised = normalise(prompt, replacements, {rt.run.run_id: '<run-id>'})
    inputs = work_inputs(prompt=normalised, schema=rt.path(step.input('schema')).read_bytes(), params=step.params,
                         codex_version=codex_version(find_codex(binary, rt.repo) or binary),
                         checks=(*rt.role(task.role).checks, *task.checks))
    base = cache_store.start_tree(rt.repo, rt.run.base_commit, own_files(rt))
    return {**inputs, 'start': start_digest(base, changes)}, normalised


def key_of(inputs: dict[str, str]) -> str:
    return cache_key(work_digest({k: v for k, v in inputs.items() if k != 'start'}), inputs['start'])


def try_hit(work: TaskWork) -> bool:
    """The task done from the cache (True), or a miss: its worker is to run (False)."""
    rt, task_dir = work.rt, work.task_dir
    settings = rt.config.cache
    if settings is None or not work.shared or state.redo_requested(state.read_state(task_dir)):
        return False
    if Rounds.load(task_dir, work.digest) is not None:   # an execution under way: it goes on
        return False
    if state.read_state(task_dir).get('status') == 'running':
        return False   # a kill interrupted an execution: its checkout may hold a paid turn's edits, which it recovers
    checkout.restart(rt, task_dir, work.workdir, work.run_branch or '', made_now=ensure_workdir(work))
    # sealed before anything of the entry is in the checkout (its checks run its code): checked before the commit
    git_seal.seal(work.session, task_dir, work.workdir)
    inputs, prompt = key_inputs(work)
    key = key_of(inputs)
    atomic.write_text(task_dir / PROMPT_FILE, prompt)   # for the entry its result may become
    record: dict[str, Any] = {'key': key, 'inputs': inputs, 'inputs_digest': work.digest, 'hit': False}
    state.update_state(task_dir, cache=record)
    store = cache_local.open_store(rt.repo, settings.local)
    entry = store.get(key)
    why = None
    if entry is not None:
        secret = signing_key(settings)
        why = store.signature_problem(entry, secret, rt.config.decisions_file) if secret is not None else None
        why = why or _replay(work, entry)
    if entry is None or why is not None:
        if why is not None:
            output.write_line(f'warning: {work.task.id}: the cached result {key[:12]} is not used: {why}', err=True)
            checkout.restart(rt, task_dir, work.workdir, work.run_branch or '')
            record = {**record, 'refused': why}
            state.update_state(task_dir, cache=record, status='pending', checks=None)
        _stop_without_key(work, record, store, inputs)
        return False
    usage = (entry.data.get('execution') or {}).get('usage') or {}
    saved = sum(int(usage.get(k) or 0) for k in ('input_tokens', 'output_tokens'))
    record = {**record, 'hit': True, 'origin': entry.data.get('origin'), 'tokens_saved': saved}
    state.update_state(task_dir, cache=record)
    rounds = _rounds(work, redact_obj(entry.data.get('answer')))
    rounds.checks = state.read_state(task_dir).get('checks') or []
    commit_verified(work, rounds, extra={'cache': record})
    return True


def does_not_fit(work: TaskWork, why: str) -> bool:
    """A hit whose work did not land as it was (orch.steps.finish.HitDoesNotFit): a miss, its worker to run from
    the new tip (False), or deferred when there is no provider key."""
    rt, task_dir = work.rt, work.task_dir
    output.write_line(f'warning: {work.task.id}: the cached result is not used: {why}', err=True)
    checkout.restart(rt, task_dir, work.workdir, work.run_branch or '')
    found = state.read_state(task_dir).get('cache')
    record = {**(found if isinstance(found, dict) else {}), 'hit': False, 'refused': why}
    state.update_state(task_dir, cache=record, status='pending', checks=None)
    inputs = record.get('inputs')
    if isinstance(inputs, dict) and rt.config.cache is not None:
        _stop_without_key(work, record, cache_local.open_store(rt.repo, rt.config.cache.local), inputs)
    return False


def miss_reason(store: cache_store.GitRefStore, task_id: str, inputs: dict[str, str], refused: str | None) -> str:
    """Why the task's key found no entry: the inputs in which it differs from the nearest one."""
    if refused:
        return f'its entry was refused: {refused}'
    nearest = nearest_entry(store, task_id, inputs)
    if nearest is None:
        return 'the cache holds no entry for it'
    key, data = nearest
    origin = data.get('origin') or {}
    differs = differing(inputs, data.get('inputs') or {})
    return (f'its inputs differ from those of the nearest entry {key[:12]} (task {origin.get("task", "?")} of run '
            f'{origin.get("run", "?")}) in: {describe(differs)}')


def nearest_entry(store: cache_store.GitRefStore, task_id: str,
                  inputs: dict[str, str]) -> tuple[str, dict[str, Any]] | None:
    """The entry that differs from `inputs` in the fewest inputs, the same task's first, then the newest."""
    found = store.all_data()

    def rank(item: tuple[str, dict[str, Any]]) -> tuple[int, int, float]:
        data = item[1]
        origin = data.get('origin') or {}
        return (len(differing(inputs, data.get('inputs') or {})), origin.get('task') != task_id,
                -float(origin.get('time') or 0))
    return min(found, key=rank) if found else None


def _stop_without_key(work: TaskWork, record: dict[str, Any], store: cache_store.GitRefStore,
                      inputs: dict[str, str]) -> None:
    """A miss with no provider key: nothing is launched; the task is deferred, saying why it missed."""
    key = provider_key(work.rt.config)
    if key.problem is None:
        return
    why = miss_reason(store, work.task.id, inputs, record.get('refused'))
    reason = (f'cache miss and no provider key: {why}; nothing was launched ({key.problem}). Run it where the key '
              f'is set, or see `codex-orch explain {work.task.id}`')
    state.update_state(work.task_dir, status='deferred', reason=reason, outcome=MISS_OUTCOME, ended_at=time.time(),
                       cache={**record, 'miss': why})
    raise Failed(reason)


def _rounds(work: TaskWork, answer: Any) -> Rounds:
    return Rounds(inputs_digest=work.digest, thread_id=None, answer=answer, usage={}, cumulative=None,
                  started_at=time.time())


def _answer_problem(work: TaskWork, answer: Any) -> str | None:
    """Why the cached answer would not be accepted from a worker here (None: it would)."""
    schema = work.rt.schema(work.step.input('schema'))
    errors = schema_errors(answer, schema)
    if errors:
        return f'its answer does not match the role\'s schema: {errors[0]}'
    if isinstance(answer, dict) and answer.get('status') == 'blocked':
        return 'its answer says the task is blocked'
    if verdict_of(schema).fails(answer):
        return 'its answer\'s verdict does not pass'
    return None


def _replay(work: TaskWork, entry: cache_store.Entry) -> str | None:
    """The entry's work in the task's checkout and its checks passed here; else why not."""
    rt, task_dir = work.rt, work.task_dir
    problem = _answer_problem(work, entry.data.get('answer'))
    if problem:
        return problem
    if entry.commit is not None:
        if entry.base is None:
            return 'it names no base commit'
        # the bounds a remote worker's commit has: its files' count and size, no symbolic link out of the tree
        bounds = rt.config.executor
        problem = git.unpacked_refusal(rt.repo, entry.base, entry.commit, max_bytes=bounds.result_max_bytes,
                                       max_files=bounds.result_max_files)
        if problem:
            return f'its commit {problem}'
    state.update_state(task_dir, status='running', started_at=time.time(), ended_at=None, reason=None,
                       pid=os.getpid(), round=None, checks=None, warnings=None, worker=None)
    # worktree.setup on the clean checkout, as a fresh execution has it: a failing one fails the task (not the
    # entry's doing), and one the cached change would break is that change's to fix, checked below
    run_setup(rt, work.session, work.task.id, work.workdir)
    if entry.commit is not None and entry.base is not None:
        try:
            cache_store.replay(work.workdir, entry.base, entry.commit, rt.config.decisions_file)
        except GitError as exc:
            return f'its commit does not apply to the task\'s start: {exc}'
        problem = _touch_problem(work)
        if problem:
            return problem
    if not work.checks:
        return None
    rounds = _rounds(work, entry.data.get('answer'))
    failed = next((r for r in verify.run_checks(work.ex, rounds) if not r.passed), None)
    Rounds.clear(task_dir)
    if failed is not None:
        return f'its check failed here: {failed.command}'
    return None


def _touch_problem(work: TaskWork) -> str | None:
    """The replayed change touches what a worker's change may not (orch.steps.finish refuses those): refused here,
    so the entry is a miss instead of a failed task."""
    changed = git.changed_paths(work.workdir)
    touched = [] if work.task.control_files else touched_control_files(changed, work.rt.config)
    if touched:
        return f'its change touches codex-orch control files: {", ".join(touched)}'
    protected = touched_protected(changed, work.rt.config, work.task)
    if protected:
        return f'its change touches protected files its task does not name: {", ".join(protected)}'
    return None
