"""What the result cache will do for each task a run would run, said by the dry run before anything is spent.

Each task's key is computed as its execution would compute it (orch.steps.cache_hit.inputs_of), in plan order:
its prompt rendered in memory from its upstream tasks' results — a done task's own, or, for an upstream task
predicted to hit, its cached answer and change — and looked up. A task downstream of one that will miss cannot
be predicted: its inputs are not known until that task ran. Read-only: nothing is rendered to disk, no entry
is fetched, no checkout is touched. The prediction does not replay or verify: a hit whose checks fail here
still turns into a miss when the run comes to it.
"""
from __future__ import annotations

from typing import Any

from orch.adapters import cache_local, cache_store
from orch.core.plan import topological_order
from orch.core.redact import redact_obj
from orch.engine.cache_sync import own_files, signing_key
from orch.engine.inputs import RunInputs
from orch.runstate import state
from orch.steps.cache_hit import inputs_of, key_of, miss_reason, upstream_of
from orch.steps.prompt import prompt_text


def predict(rt: RunInputs, would_run: set[str]) -> dict[str, str]:
    """Task id -> 'hit ...', 'miss: why' or 'unknown ...', for each task of `would_run` (empty: the cache is off)."""
    settings = rt.config.cache
    if settings is None:
        return {}
    store = cache_local.open_store(rt.repo, settings.local)
    secret = signing_key(settings)
    steps = {s.name: s for s in rt.steps}
    known: dict[str, tuple[dict[str, Any] | None, str | None, str]] = {}   # task -> (result, commit, change)
    said: dict[str, str] = {}
    for task in topological_order(rt.plan):
        if task.id not in would_run:
            result = state.read_result(rt.task_dir(task.id))
            commit = (result or {}).get('commit')
            commit = commit if isinstance(commit, str) else None
            known[task.id] = (result, commit, cache_store.change_digest(rt.repo, commit, own_files(rt)) if commit
                              else '')
            continue
        upstream = upstream_of(rt.plan, task.id)
        waiting = sorted(d for d in upstream if d not in known)
        work_step = steps.get(rt.work_step_of.get(task.id, ''))
        prompt_step = next((s for s in rt.steps if work_step is not None and
                            s.outputs.get('prompt') == work_step.inputs.get('prompt', [None])[0]), None)
        if waiting or work_step is None or prompt_step is None:
            said[task.id] = (f'unknown until {", ".join(waiting)} ran' if waiting else
                             'unknown (its rules render no prompt for it)')
            continue
        prompt = prompt_text(rt, prompt_step, {d: known[d][0] for d in task.depends_on})
        inputs, _ = inputs_of(rt, work_step, rt.path(rt.layout.checkout(task.id)), prompt,
                              {d: known[d][1] for d in upstream}, {d: known[d][2] for d in upstream})
        key = key_of(inputs)
        holder, entry = cache_local.peek(store, key)   # an entry of the machine's store is read there
        refused = holder.signature_problem(entry, secret, rt.config.decisions_file) if entry and secret else None
        if entry is None or refused:
            said[task.id] = 'miss: ' + miss_reason(store, task.id, inputs, refused)
            continue
        origin = entry.data.get('origin') or {}
        said[task.id] = f'hit (task {origin.get("task", "?")} of run {origin.get("run", "?")}; checks run here)'
        placeholder = f'<cached commit of {task.id}>'   # normalised away in a downstream prompt, as a real one is
        known[task.id] = ({'answer': redact_obj(entry.data.get('answer')), 'commit': entry.commit and placeholder},
                          entry.commit and placeholder,
                          cache_store.change_digest(holder.repo, entry.commit, own_files(rt)) if entry.commit else '')
    return said
