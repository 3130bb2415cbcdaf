"""Which task broke a gate (shared mode): the gate blames the task that broke it, never an innocent sibling.

A gate runs on its task's own landed commit. When it fails there, it runs once more on the commit before: if that
passes, the task broke it. If that fails too, the failure was already there: the commits landed since the gate last
passed are bisected (first-parent history of the run's branch, which only ever moves forward) for the first one
that fails it, and that commit's task (its Orch-Task trailer) is failed with the gate's evidence; the gate's own
task waits for it. Once the culprit ran again, the waiting gate runs again, on the run branch's tip, which holds
the fix; its step depends on the culprit's result (orch.engine.inputs, `after` in the gate's record), so doit
runs the culprit first and never runs the gate again while that result stays the same.
"""
from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from orch.adapters import git
from orch.engine.inputs import RunInputs
from orch.errors import GitError
from orch.runstate import atomic, state
from orch.runstate.executions import keep_previous
from orch.steps.commands import CommandRun

RunAt = Callable[[str], CommandRun]   # the gate's command on a checkout of one commit


@dataclass(frozen=True)
class Blame:
    task: str | None          # the task whose commit first fails the gate; None: not a task's
    commit: str | None        # that commit; None when the gate fails on the run's base commit already
    probes: int               # how many extra runs of the gate it took


def find_culprit(rt: RunInputs, task_id: str, own: str | None, tested: str, good: str | None,
                 run_at: RunAt) -> Blame:
    """The gate failed at `tested`. `own` is the task's own landed commit (None: it landed none); `good` the
    newest commit the gate passed at, if any (else the run's base commit is tried)."""
    probes = 0
    hi = tested
    if own is not None and tested == own:
        parents = git.parents_of(rt.repo, own)
        if not parents or parents[0] == good:
            return Blame(task_id, own, probes)
        probes += 1
        if run_at(parents[0]).passed:
            return Blame(task_id, own, probes)
        hi = parents[0]
    if good is None:
        good = rt.run.base_commit
        if hi == good:
            return Blame(None, None, probes)
        probes += 1
        if not run_at(good).passed:
            return Blame(None, None, probes)   # it failed before this run changed anything
    commits = git.commits_since(rt.repo, hi, good)   # oldest first; the last one (hi) fails
    if not commits:
        return Blame(None, hi, probes)
    lo, bad = -1, len(commits) - 1                     # commits[lo] passes (-1: `good`), commits[bad] fails
    while bad - lo > 1:
        mid = (lo + bad) // 2
        probes += 1
        if run_at(commits[mid]).passed:
            lo = mid
        else:
            bad = mid
    first = commits[bad]
    return Blame(git.trailer_of(rt.repo, first, 'Orch-Task'), first, probes)


# Gates of parallel tasks record their passes from several threads.
_passes_lock = threading.Lock()
PASSES_FILE = 'gate-passes.json'


def remember_pass(rt: RunInputs, gate: str, commit: str) -> None:
    """The newest commit of the run branch each gate passed at: where a later bisection starts from. `gate` is its
    step's name (`<rule>:<task id>`): the command of one task's gate (its {task_id}, its paths, ORCH_TASK_ID) is not
    another's, so a pass of one says nothing of another task's."""
    with _passes_lock:
        path = rt.run_dir / PASSES_FILE
        passes = state.read_json(path) or {}
        known = passes.get(gate)
        if isinstance(known, str) and known != commit and not _descends(rt, commit, known):
            return
        passes[gate] = commit
        atomic.write_json(path, passes)


def last_pass(rt: RunInputs, gate: str, before: str) -> str | None:
    """The newest commit the gate passed at that `before` descends from (None: none known)."""
    known = (state.read_json(rt.run_dir / PASSES_FILE) or {}).get(gate)
    if isinstance(known, str) and known != before and _descends(rt, before, known):
        return known
    return None


def _descends(rt: RunInputs, commit: str, ancestor: str) -> bool:
    try:
        return git.is_ancestor(rt.repo, ancestor, commit)
    except GitError:
        return False


def fail_culprit(rt: RunInputs, culprit: str, gate: str, for_task: str, commit: str, run: CommandRun) -> None:
    """Fail the task whose commit broke the gate, with the gate's evidence; its result is kept among its
    executions and taken away, so the next resume runs it again (its worker told why, see rerun_note)."""
    task_dir = rt.task_dir(culprit)
    keep_previous(task_dir, dt.datetime.now(dt.UTC), why=f'gate {gate}')
    (task_dir / 'result.json').unlink(missing_ok=True)
    if culprit == for_task:   # its own gate: said as a failing gate always was
        reason = f'gate {gate} failed: {run.command} ({run.why})'
    else:
        reason = (f'gate {gate} (run for {for_task}) fails from its commit {commit[:12]}: `{run.command}` '
                  f'({run.why}); resume runs it again')
    state.update_state(task_dir, status='failed', reason=reason, outcome='gate-blamed', ended_at=time.time(),
                       round=None, gate_evidence={'gate': gate, 'for': for_task, 'commit': commit,
                                                  'command': run.command, 'exit_code': run.exit_code,
                                                  'tail': run.tail, 'log': run.log})
