"""The rounds of one task execution, kept on disk so that they are build steps like the rest.

After the worker's first answer validated, a task may go through repair rounds (a check failed: the
worker's own Codex thread is resumed with the evidence) and review rounds (its reviewer asked for
changes). `rounds.json` records where the execution stands — the thread, the latest valid answer,
the usage so far, which round is under way — so a kill at any point resumes there: a finished round is
never paid for again, and the worker's uncommitted edits are not discarded as leftovers.

Nor is a round's worker turn that ended before the kill and was not recorded yet: `turn_since` marks the turn
under way (saved before it starts, cleared by the save that records its answer and usage), so a resume of the
execution a kill interrupted takes that turn's ended attempts as they are (orch.adapters.worker, reuse_since).
"""
from __future__ import annotations

import hashlib
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from orch.adapters import git
from orch.runstate import atomic, state
from orch.steps.commands import CommandRun

ROUNDS_FILE = 'rounds.json'


@dataclass
class Rounds:
    inputs_digest: str
    thread_id: str | None
    answer: Any
    usage: dict[str, int]                      # every attempt of this execution, all rounds
    cumulative: dict[str, int] | None          # the thread's usage as last reported (rounds count from it)
    started_at: float
    repairs: int = 0                           # repair rounds started
    phase: str = 'checking'                    # 'checking', 'repairing' (fixing `failure`), 'resolving' (landing)
    failure: dict[str, Any] | None = None      # the check run a repair round is fixing
    tree_before: str | None = None             # the worktree before that repair round (see tree_digest)
    fingerprints: list[str] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)   # the latest run of each check
    reviews: int = 0                           # review rounds started (a reviewer asked for changes)
    review_phase: str | None = None            # 'fixing' (the reviewed task's thread), 'fix-checking', 'reviewing'
    fix_answer: Any = None                     # the fix's answer, paid for, while its checks and commit are due
    fix_cumulative: dict[str, int] | None = None   # the reviewed task's thread usage, as last reported
    fixes: list[dict[str, Any]] = field(default_factory=list)    # one commit per review round
    judge_files: dict[str, str] | None = None   # the judging task's own uncommitted files as a fix began
    conflicts: int = 0                         # conflict rounds started (landing: see orch.steps.landing)
    conflict: dict[str, Any] | None = None     # what the conflict round under way resolves (phase 'resolving')
    turn_since: float | None = None            # a round's worker turn under way since then, its answer not recorded
    # The execution's story, for the reports: one entry per round (kind 'repair', 'review' or 'conflict', its
    # number, when it started and ended, its evidence), kept in the task's state and execution record.
    history: list[dict[str, Any]] = field(default_factory=list)

    @staticmethod
    def load(task_dir: Path, digest: str) -> Rounds | None:
        """The rounds of the task's execution under way (call before the state says this one runs)."""
        data = state.read_json(task_dir / ROUNDS_FILE)
        if not data or data.get('inputs_digest') != digest:
            return None   # another execution's (its inputs changed since): it starts over
        try:
            rounds = Rounds(**data)
        except TypeError:
            return None
        if rounds.turn_since is not None and not killed_midway(state.read_state(task_dir)):
            rounds.turn_since = None   # only a kill leaves a turn unrecorded: after anything else it is asked again
        return rounds

    def begin_turn(self, task_dir: Path) -> None:
        """Before a round's worker turn: from now on its attempts are this round's, none of them recorded. A resume
        of this execution after a kill keeps the mark (load), and takes the attempts that ended meanwhile."""
        if self.turn_since is None:
            self.turn_since = time.time()
            self.save(task_dir)

    def end_turn(self, usage: dict[str, int] | None) -> None:
        """The turn's answer is in: its usage counted, the mark cleared (both saved with the round's record)."""
        self.add_usage(usage)
        self.turn_since = None

    def round_record(self, kind: str, number: int, **fields: Any) -> dict[str, Any]:
        """The history entry of round `number` of `kind`, made when it starts (with `fields`); the same entry
        again when a resume goes on with that round (saved with the next save)."""
        for entry in self.history:
            if entry.get('kind') == kind and entry.get('round') == number:
                return entry
        entry = {'kind': kind, 'round': number, 'started_at': time.time(), 'ended_at': None, **fields}
        self.history.append(entry)
        return entry

    def save(self, task_dir: Path) -> None:
        atomic.write_json(task_dir / ROUNDS_FILE, asdict(self))

    def add_usage(self, usage: dict[str, int] | None) -> None:
        for key, value in (usage or {}).items():
            self.usage[key] = int(self.usage.get(key, 0)) + int(value or 0)

    @staticmethod
    def clear(task_dir: Path) -> None:
        (task_dir / ROUNDS_FILE).unlink(missing_ok=True)


def killed_midway(st: dict[str, Any]) -> bool:
    """The task's state (read before this execution writes its own) says an execution of it was under way when its
    codex-orch died: 'running', recorded by another process (the run's lock lets no other one run it meanwhile).
    Finished executions (done, failed, blocked, ...), interrupted ones (pending) and fresh ones are not."""
    return st.get('status') == 'running' and st.get('pid') != os.getpid()


def unrecorded_since(task_dir: Path, previous: dict[str, Any]) -> float | None:
    """When the execution a kill interrupted began, if none of its records took in what its worker answered:
    the attempts launched since then are that execution's, their answers never used (see run_worker's
    reuse_since). None when `previous` (the task's state before this execution) is no killed execution, or
    when its rounds, its pending commit or its result's record are on disk (they hold its answer)."""
    started = previous.get('started_at')
    if not killed_midway(previous) or not isinstance(started, int | float):
        return None
    records = [state.read_json(task_dir / name) for name in (ROUNDS_FILE, 'pending.json', 'execution.json')]
    for record in records:
        at = (record or {}).get('started_at')
        if isinstance(at, int | float) and at >= started:
            return None
    return float(started)


def repair_prompt(failed: CommandRun, round_no: int, limit: int) -> str:
    """What a repair round tells the worker: the command, how it ended, the tail of its output. Evidence from
    the check, never the worker's own words fed back to it."""
    tail = failed.tail.strip() or '(it printed nothing)'
    return (f'A check of your work failed (repair round {round_no} of {limit}):\n\n'
            f'    $ {failed.command}\n'
            f'    {failed.why}\n\n'
            f'The last lines of its output:\n\n```\n{tail}\n```\n\n'
            'Your changes are still in the worktree: fix the problem there, do not start over and do not '
            'weaken or delete the check. Then reply with ONLY a JSON object that matches the output schema, '
            'describing the task as a whole (all files changed, not just this fix).\n')


def tree_digest(workdir: Path) -> str:
    """What the worktree holds beyond its commit: changed paths and their content. Equal before and after a
    repair round means the round changed nothing."""
    h = hashlib.sha256()
    for path in git.changed_paths(workdir):
        h.update(os.fsencode(path) + b'\0')
        full = workdir / path
        try:
            if full.is_symlink():
                h.update(b'L' + os.fsencode(os.readlink(full)))
            elif full.is_file():
                h.update(b'F' + hashlib.sha256(full.read_bytes()).digest())
            else:
                h.update(b'-')
        except OSError:
            h.update(b'?')
    return h.hexdigest()


def changed_files(workdir: Path, scope: list[str] | None) -> dict[str, str]:
    """Uncommitted files (within a discard scope) -> a digest of their content."""
    wanted = None if scope is None else {s.removeprefix(':(literal)') for s in scope}
    out: dict[str, str] = {}
    for path in git.changed_paths(workdir):
        if wanted is not None and path not in wanted:
            continue
        full = workdir / path
        try:
            out[path] = hashlib.sha256(os.fsencode(os.readlink(full)) if full.is_symlink()
                                       else full.read_bytes()).hexdigest() if full.exists() else '-'
        except OSError:
            out[path] = '?'
    return out
