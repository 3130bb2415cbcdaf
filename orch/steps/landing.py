"""Landing: a task's verified commits onto the run's one branch, one task at a time (shared mode).

When the run branch is still where the task's checkout started, its commits land as they are (a fast-forward;
the run's worktree follows unless that would overwrite a change of the user's there). When another task landed
meanwhile, the commits are replayed onto the new tip and the task's checks run again there. A replay that
conflicts, or whose checks fail on the new tip, is not the worker's failure yet: its changes are put on the tip
uncommitted (conflicting files with git's markers) and the worker's own thread gets a conflict round to resolve
them in its checkout, bounded like a repair round; then its checks run, it is committed and lands again.

codex-orch's own decisions log is merged line by line (every task appends its own entry), so it never conflicts.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orch import output
from orch.adapters import git
from orch.errors import GitError
from orch.failpoints import crash_point
from orch.runstate import state
from orch.steps import checkout, git_seal
from orch.steps.commands import CommandRun, run_shell
from orch.steps.failure import Failed, fail
from orch.steps.guard import EscapesWorktree, inside
from orch.steps.rounds import Rounds
from orch.steps.task_work import TaskWork
from orch.steps.worktree import HEAD

# git's conflict marker lines: seven or more (a `conflict-marker-size` attribute makes them longer), then a space
# and a label, or the end of the line
MARKER = re.compile(rb'^(?:<{7,}|>{7,})(?: |\r?$)', re.MULTILINE)
RECHECK = 'recheck'   # state.json: the tip the task's work was replayed onto, its checks not yet passed there
MARKED_READ_LIMIT = 64 * 1024 * 1024   # a conflicted file larger than this is only checked that far


@dataclass
class Rework(Exception):
    """The task's work did not land as it was: it must be resolved on the new tip (see `rounds_for`)."""

    onto: str                                   # the run branch's tip it now sits on, uncommitted
    head: str                                   # the task's commits before the replay
    conflicts: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)   # of those, the ones git left at the tip's version
    failed_check: dict[str, Any] | None = None  # the check that fails on the new tip (a clean replay)


def land(work: TaskWork) -> str | None:
    """Land the commits of the task's checkout on the run branch; returns the task's last commit there (None when
    it has none). Raises Rework when the worker must resolve its work against what landed meanwhile."""
    rt, task_dir, workdir, branch = work.rt, work.task_dir, work.workdir, work.run_branch or ''
    while True:
        with work.session.scheduler.commit_lock:   # the one serial landing step of the run
            git_seal.check(work.session, task_dir, workdir)   # before git replays anything in the checkout
            interrupted = pending_rework(work)
            if interrupted is not None:
                raise interrupted
            git.abort_replay(workdir)   # one a kill interrupted: HEAD back to where codex-orch left it
            start = checkout.start_of(task_dir)
            head = git.rev_parse(workdir, 'HEAD')
            expected = checkout.expected_head(task_dir)
            if expected is not None and head != expected:
                raise fail(task_dir, f'its checkout {workdir} is at {head[:12]}, a commit codex-orch did not make '
                                     f'(it left it at {expected[:12]}); nothing was landed. A worker must not commit: '
                                     'resume runs the task again from the run\'s tip')
            tip = checkout.run_tip(rt, branch, task_dir)
            if start is None:
                if git.is_ancestor(rt.repo, head, tip):
                    return None
                raise fail(task_dir, f'its checkout {workdir} has commits but no record of where its work started; '
                                     'nothing was landed: resume runs the task again from the run\'s tip')
            if head == start:
                return None                       # nothing of its own to land
            if start != tip and git.is_ancestor(rt.repo, tip, head):
                start = tip                       # replayed onto this tip before a kill: its checks never ran there
                _replayed(task_dir, head, tip)
            # Landed before a kill. When the work starts at the tip, head descends from it: an ancestor of the tip
            # only by being the tip, so no history walk is needed.
            if head == tip or (tip != start and git.is_ancestor(rt.repo, head, tip)):
                return head
            if tip == start and state.read_state(task_dir).get(RECHECK) != tip:
                try:
                    note = git.advance_branch(rt.repo, branch, start, head,
                                              follower=rt.path(rt.layout.worktree))
                except git.BranchMoved:
                    continue
                _follow_note(work, note)
                return head
            if tip != start:
                if not git.replay_onto(workdir, tip, start, union=_union(work)):
                    raise _rework(work, Rework(onto=tip, head=head))
                crash_point('after-replay', work.task.id)
                _replayed(task_dir, git.rev_parse(workdir, 'HEAD'), tip)
        failed = _recheck(work, tip)   # outside the lock: other tasks land meanwhile
        if failed is not None:
            raise _rework(work, Rework(onto=tip, head=git.rev_parse(workdir, 'HEAD'), failed_check=failed.to_dict()))
        state.update_state(task_dir, recheck=None)   # passed there: the next turn lands it (or replays again)


def _replayed(task_dir: Path, head: str, tip: str) -> None:
    """The checkout's work now sits on `tip`; recorded with the move in one write, so that whatever interrupts its
    checks there (a kill, Ctrl-C), the resume runs them again before it lands: never landed unchecked."""
    state.update_state(task_dir, **{HEAD: head, checkout.START: tip, RECHECK: tip})
    crash_point('before-recheck', task_dir.name)


def _union(work: TaskWork) -> tuple[str, ...]:
    return (work.rt.config.decisions_file,)


def _rework(work: TaskWork, rework: Rework) -> Rework:
    """Put the task's work on the tip uncommitted. Recorded first: a kill before its rounds are saved must not let
    the resume commit what is now in the checkout (conflict markers), but redo this (`pending_rework`)."""
    state.update_state(work.task_dir, rework={'onto': rework.onto, 'head': rework.head,
                                              'failed_check': rework.failed_check}, recheck=None)
    rework.conflicts = git.squash_onto(work.workdir, rework.onto, rework.head, union=_union(work))
    # A conflict git settles without markers (a `-merge` or `merge=binary` attribute) keeps the tip's version:
    # the task's change to it is gone unless its worker makes it again, so it stays a conflict until then.
    unmarked = [p for p in rework.conflicts if p not in marked_files(work.workdir, [p])]
    rework.dropped = git.same_as_commit(work.workdir, rework.onto, unmarked)
    checkout.moved(work.task_dir, rework.onto, start=rework.onto)
    return rework


def rework_recorded(work: TaskWork) -> bool:
    return isinstance(state.read_state(work.task_dir).get('rework'), dict)


def pending_rework(work: TaskWork) -> Rework | None:
    """A rework a kill interrupted before its rounds were saved, done again (it is idempotent). A record that
    outlived its rounds (a kill after they were saved, before it was cleared) is stale once codex-orch committed
    the resolution on the tip it names: doing it again would throw that paid resolution away."""
    saved = state.read_state(work.task_dir).get('rework')
    if not isinstance(saved, dict):
        return None
    if checkout.start_of(work.task_dir) == saved.get('onto') != checkout.expected_head(work.task_dir):
        state.update_state(work.task_dir, rework=None)
        return None
    return _rework(work, Rework(onto=saved['onto'], head=saved['head'], failed_check=saved.get('failed_check')))


def _recheck(work: TaskWork, tip: str) -> CommandRun | None:
    """The task's checks on its work replayed onto a moved tip: the first that fails, or None."""
    ex = work.ex
    for i, command in enumerate(ex.checks, 1):
        log = ex.task_dir / 'checks' / f'landing-{tip[:12]}' / f'check-{i}.log'
        run = run_shell(command, cwd=ex.workdir, env=ex.command_env, log_path=log, timeout=ex.check_timeout,
                        sandbox=ex.sandbox, cancel=ex.cancel, log_root=ex.log_root)
        if ex.cancel is not None and ex.cancel.is_set():
            state.update_state(ex.task_dir, status='pending', reason='interrupted; resume to run it again')
            raise Failed('interrupted')
        if not run.passed:
            return run
    return None


def _follow_note(work: TaskWork, note: str | None) -> None:
    """The run's worktree could not follow the tip (a change of the user's there): said once per task, kept in
    its warnings; the run goes on."""
    if note is None:
        return
    warning = f'the run\'s worktree did not follow its branch: {note}'
    st = state.read_state(work.task_dir)
    state.update_state(work.task_dir, warnings=[*(st.get('warnings') or []), warning])
    output.write_line(f'warning: {work.task.id} {warning}', err=True)


def rounds_for(pending: dict[str, Any], rework: Rework) -> Rounds:
    """The rounds of an execution whose recorded answer must be resolved on the new tip: they go on from
    pending.json (same thread, same usage, same counts), in a conflict round or straight to the checks."""
    worker = pending.get('worker') or {}
    rounds = Rounds(inputs_digest=pending['inputs_digest'], thread_id=worker.get('thread_id'),
                    answer=pending.get('answer'), usage=dict(worker.get('usage') or {}),
                    cumulative=worker.get('cumulative'), started_at=pending.get('started_at') or time.time(),
                    repairs=pending.get('repair_rounds', 0), checks=list(pending.get('checks') or []),
                    reviews=pending.get('review_rounds', 0), fixes=list(pending.get('fixes') or []),
                    conflicts=pending.get('conflict_rounds', 0), history=list(pending.get('rounds') or []))
    if rework.conflicts or rework.failed_check:
        rounds.phase = 'resolving'
        rounds.conflict = {'onto': rework.onto, 'head': rework.head, 'files': rework.conflicts,
                           'dropped': rework.dropped, 'failed_check': rework.failed_check}
    return rounds


def resolve(work: TaskWork, rounds: Rounds, call: Any, accept: Any) -> None:
    """Conflict rounds in the worker's own thread until its checkout holds no conflict (bounded by the role's
    `conflict_rounds`); `call(prompt, rounds)` runs a turn, `accept(result)` checks its answer."""
    limit = work.rt.role(work.task.role).conflict_rounds
    while rounds.phase == 'resolving' and rounds.conflict is not None:
        if rounds.conflicts >= limit:
            raise _persisting(work, rounds, limit)
        rounds.conflicts += 1
        rounds.round_record('conflict', rounds.conflicts, files=list(rounds.conflict.get('files') or []),
                            failed_check=rounds.conflict.get('failed_check'), merge=rounds.conflict.get('merge'))
        rounds.save(work.task_dir)
        state.update_state(work.task_dir, status='running', round=f'conflict {rounds.conflicts} of {limit}')
        result = call(conflict_prompt(work, rounds.conflict, rounds.conflicts, limit), rounds)
        rounds.add_usage(result.usage)
        rounds.save(work.task_dir)
        rounds.answer = accept(result)
        rounds.thread_id = result.thread_id or rounds.thread_id
        rounds.cumulative = result.usage_cumulative or rounds.cumulative
        left = unresolved(work.workdir, rounds.conflict)
        rounds.round_record('conflict', rounds.conflicts)['ended_at'] = time.time()
        if left:
            rounds.conflict = {**rounds.conflict, 'files': left, 'failed_check': None,
                               'dropped': [p for p in rounds.conflict.get('dropped') or [] if p in left]}
        else:
            rounds.phase, rounds.conflict = 'checking', None
        rounds.save(work.task_dir)


def unresolved(workdir: Path, conflict: dict[str, Any]) -> list[str]:
    """The conflicting files still unresolved: holding a marker, or (settled by git without markers) still at the
    tip's version, the task's change not made again."""
    files = conflict.get('files') or []
    left = marked_files(workdir, files)
    dropped = [p for p in conflict.get('dropped') or [] if p in files and p not in left]
    if dropped and conflict.get('onto'):
        kept = set(git.same_as_commit(workdir, conflict['onto'], dropped))
        left = [p for p in files if p in left or p in kept]
    return left


def marked_files(workdir: Path, paths: list[str]) -> list[str]:
    """Which of `paths` still hold a conflict marker line."""
    left = []
    for path in paths:
        try:   # the worker may have put a symlink (still unresolved), a FIFO or a huge file there: never read whole
            full = inside(workdir, path)
        except EscapesWorktree:
            left.append(path)
            continue
        if not full.exists():
            continue   # deleted: a resolution too
        if not full.is_file():
            left.append(path)
            continue
        try:
            with open(full, 'rb') as f:
                data = f.read(MARKED_READ_LIMIT)
        except OSError:
            left.append(path)
            continue
        if MARKER.search(data):
            left.append(path)
    return left


def conflict_prompt(work: TaskWork, conflict: dict[str, Any], round_no: int, limit: int) -> str:
    """Evidence from git and the checks, never the worker's own words fed back to it."""
    files = conflict.get('files') or []
    if conflict.get('merge'):   # per-task mode: a dependency's work merged into its worktree (orch.steps.worktree)
        return (f'The merge of the work of task {conflict["merge"]} into your worktree {work.workdir} still has '
                f'git\'s conflict markers (conflict round {round_no} of {limit}) in: {", ".join(files)}. Resolve every '
                'conflict, keeping what each side meant, and remove every marker; do not abort the merge and do not '
                'commit. Then reply with ONLY a JSON object that matches the output schema, describing the task as '
                'a whole.\n')
    head = [f'Other tasks landed work on the run\'s branch while you worked (conflict round {round_no} of {limit}). '
            f'Your checkout {work.workdir} now holds the run\'s latest state with your changes on top, uncommitted.']
    failed = conflict.get('failed_check')
    if files:
        head.append('Your changes conflict with theirs in these files, which hold git\'s conflict markers '
                    '(<<<<<<< ... ======= ... >>>>>>>): ' + ', '.join(files) + '. Resolve every conflict so that '
                    'both their change and yours are kept as each intended, and remove every marker.')
        dropped = conflict.get('dropped') or []
        if dropped:
            head.append('git could not merge ' + ', '.join(dropped) + ' (no markers: binary, or marked not to '
                        'merge): they hold their version, without your change. Make your change to them again on '
                        'top of theirs.')
    elif failed:
        tail = (failed.get('tail') or '').strip() or '(it printed nothing)'
        why = 'timed out' if failed.get('exit_code') is None else f'exit {failed.get("exit_code")}'
        head.append(f'Your changes applied cleanly, but a check of your work now fails on top of theirs:\n\n'
                    f'    $ {failed.get("command")}\n    {why}\n\nThe last lines of its output:\n\n```\n{tail}\n```\n\n'
                    'Fix your work so that it passes there; do not weaken or delete the check.')
    head.append('Do not commit. Then reply with ONLY a JSON object that matches the output schema, describing the '
                'task as a whole (all files changed, not just this resolution).')
    return '\n\n'.join(head) + '\n'


def _persisting(work: TaskWork, rounds: Rounds, limit: int) -> Failed:
    conflict = rounds.conflict or {}
    files = conflict.get('files') or []
    failed = conflict.get('failed_check')
    after = f'after {limit} conflict round{"s" if limit != 1 else ""}' if limit else 'no conflict rounds'
    if conflict.get('merge'):
        reason = (f'cannot start: merging the work of {conflict["merge"]} conflicts in {", ".join(files)} and its '
                  f'worker left conflict markers ({after}); make the tasks touch different files, or make one depend '
                  'on the other')
    elif files:
        reason = (f'cannot land: its work conflicts with work landed meanwhile in {", ".join(files)} ({after}); '
                  'resume runs it again on the run\'s tip')
    else:
        reason = (f'cannot land: its check `{(failed or {}).get("command")}` fails on top of work landed meanwhile '
                  f'({after}); resume runs it again on the run\'s tip')
    state.update_state(work.task_dir, status='failed', reason=reason, ended_at=time.time(), round=None,
                       outcome='conflict', usage=rounds.usage, answer=rounds.answer, checks=rounds.checks,
                       conflict_rounds=rounds.conflicts, attempts=state.attempt_count(work.task_dir),
                       rounds=rounds.history)
    Rounds.clear(work.task_dir)
    return Failed(reason)


def replay_failed(work: TaskWork, exc: GitError) -> Failed:
    return fail(work.task_dir, f'cannot land its work on the run\'s branch {work.run_branch}: {exc}')
