"""`codex-orch prune [--older-than N] [--run-id ID ...] [--apply] [--resume]`: sweep old runs (a dry run by default).

For each selected run, --apply removes its worktrees and its run directory, and deletes only the
branches whose commits are all merged into the run's base (its base commit, or its base branch
as it is now). Branches holding unmerged work are kept and listed, never forced. A run that a
live process holds, or whose worktree has uncommitted changes, is left alone with a message.
With --resume (opt-in: it spends tokens) a run with unfinished tasks is resumed first, so that
finished work lands on its branch.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orch import output
from orch.adapters import git
from orch.commands.common import checkouts_root, find_repo, run_branches, run_worktrees, worktree_root
from orch.core.plan import id_problem
from orch.core.spec import check_spec
from orch.engine.inputs import open_run
from orch.errors import EXIT_INTERRUPTED, GitError, InputError, LockedError, OrchError, RunNotFoundError
from orch.runstate.lock import RunLock, holder_pid
from orch.runstate.runs import RunInfo, UnreadableRunError, check_run_id, list_run_ids, load_run, run_dir, runs_dir
from orch.runstate.status import task_rows


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser('prune', help='sweep old runs: worktrees, run directories, merged branches (dry run '
                       'unless --apply)')
    p.add_argument('--older-than', type=float, metavar='DAYS', help='select runs created more than DAYS days ago')
    p.add_argument('--run-id', nargs='+', action='extend', default=[], metavar='ID', help='select these runs')
    p.add_argument('--apply', action='store_true', help='do it (default: only list what would be done)')
    p.add_argument('--resume', action='store_true',
                   help='resume runs with unfinished tasks before sweeping them (spends tokens)')
    p.add_argument('--no-resume', action='store_true', help='the default; kept for older scripts')
    p.add_argument('--spec-file', help='spec file for the runs that are resumed (replaces theirs)')


@dataclass
class BranchView:
    name: str
    unmerged: int          # commits in neither the base commit nor the base branch
    merged_into: str       # the base it is merged into (when unmerged == 0)


@dataclass
class RunView:
    """What pruning one run would touch."""

    info: RunInfo
    rows: list[dict[str, Any]] | None          # None when the run can no longer be opened
    problem: str | None                        # why it cannot be opened
    worktrees: list[git.WorktreeInfo]
    dirty: dict[Path, list[str]] = field(default_factory=dict)
    branches: list[BranchView] = field(default_factory=list)
    disk: int = 0
    holder: int | None = None

    @property
    def unfinished(self) -> list[dict[str, Any]]:
        return [r for r in self.rows or [] if r['status'] != 'done']


# ---------------------------------------------------------------- selecting runs

def select_runs(repo: Path, older_than: float | None, run_ids: list[str],
                now: dt.datetime) -> tuple[list[str], dict[str, str]]:
    """The named runs (each must exist) plus the runs created more than `older_than` days ago; and, apart,
    the selected runs whose record cannot be read (run id -> why), which prune lists and leaves alone.

    An unreadable record (corrupt, or from another codex-orch version) must not stop the sweep of the
    others. With --older-than every such run is listed: its age is unknown, and never guessed.
    """
    chosen: list[str] = []
    unreadable: dict[str, str] = {}
    for rid in run_ids:
        check_run_id(rid)
        try:
            chosen.append(load_run(repo, rid).run_id)
        except RunNotFoundError as exc:
            if not run_dir(repo, rid).is_dir():
                raise   # a run that does not exist at all: a mistyped id, refused before anything is done
            unreadable[rid] = _record_problem(repo, rid, exc)
    if older_than is not None:
        cutoff = now.timestamp() - older_than * 86400
        listed = list_run_ids(repo)   # creation order; it leaves out the records it cannot parse
        for rid in listed + sorted(set(_run_dir_names(repo)) - set(listed)):
            try:
                info = load_run(repo, rid)
            except RunNotFoundError as exc:
                unreadable[rid] = _record_problem(repo, rid, exc)
                continue
            created = _created(info)
            if created is not None and created < cutoff:
                chosen.append(rid)
    return list(dict.fromkeys(chosen)), unreadable


def _run_dir_names(repo: Path) -> list[str]:
    """Every directory under runs/ with a name codex-orch could have given a run, whatever it holds."""
    try:
        entries = list(runs_dir(repo).iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [p.name for p in entries if p.is_dir() and id_problem(p.name) is None]


def _record_problem(repo: Path, run_id: str, exc: RunNotFoundError) -> str:
    """Why the run's record cannot be used, in a few words (the listing names the run)."""
    if isinstance(exc, UnreadableRunError):
        return exc.reason
    if not (run_dir(repo, run_id) / 'run.json').exists():
        return 'run.json is missing'
    return _first_line(str(exc))


def _created(info: RunInfo) -> float | None:
    try:
        return dt.datetime.fromisoformat(info.created).timestamp()
    except (TypeError, ValueError):
        return None   # a hand-edited date (or not even a string): never guess that a run is old


# ---------------------------------------------------------------- looking at a run

def inspect_run(repo: Path, run_id: str) -> RunView:
    info = load_run(repo, run_id)
    rows, problem = None, None
    try:
        rows = task_rows(open_run(repo, run_id))
    except OrchError as exc:   # e.g. its plan file is gone: still worth sweeping
        problem = str(exc).splitlines()[0]
    worktrees = run_worktrees(repo, run_id)
    view = RunView(info=info, rows=rows, problem=problem, worktrees=worktrees,
                   holder=holder_pid(run_dir(repo, run_id)))
    for wt in worktrees:
        if not wt['prunable']:
            changed = git.changed_paths(wt['path'])
            if changed:
                view.dirty[wt['path']] = changed
    view.branches = [b for b in (branch_view(repo, info, name) for name in run_branches(repo, info, worktrees)) if b]
    view.disk = disk_usage(run_dir(repo, run_id)) + disk_usage(worktree_root(repo, run_id)) + \
        disk_usage(checkouts_root(repo, run_id))
    return view


def branch_view(repo: Path, info: RunInfo, name: str) -> BranchView | None:
    if git.branch_tip(repo, name) is None:
        return None   # never created, or already deleted
    ref = f'refs/heads/{name}'   # never a tag of the same name
    unmerged = git.unmerged_commits(repo, ref, info.base_commit)
    if unmerged == 0:
        return BranchView(name, 0, info.base_commit)
    # Merged since (e.g. `merge --allow-automerge` fast-forwarded the base branch): nothing is lost either.
    base = f'refs/heads/{info.base_branch}'
    if (info.base_branch and git.branch_tip(repo, info.base_branch) is not None
            and git.unmerged_commits(repo, ref, base) == 0):
        return BranchView(name, 0, base)
    return BranchView(name, unmerged, '')



def disk_usage(path: Path) -> int:
    """Bytes allocated under `path`, like `du -s` (hard links once, symlinks not followed)."""
    total, seen = 0, set()
    for dirpath, dirnames, filenames in os.walk(path):
        for name in (*dirnames, *filenames):
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def human_size(n: int) -> str:
    size = float(n)
    for unit in ('B', 'KB', 'MB', 'GB'):
        if size < 1024 or unit == 'GB':
            return f'{size:.0f} {unit}' if unit == 'B' else f'{size:.1f} {unit}'
        size /= 1024
    return f'{n} B'


# ---------------------------------------------------------------- describing a run

def describe(repo: Path, view: RunView, *, resume: bool) -> list[str]:
    info = view.info
    lines = [f'run {info.run_id} (created {info.created[:16].replace("T", " ")}, {human_size(view.disk)})']
    if view.holder is not None:
        lines.append(f'  in use by PID {view.holder}: left alone')
    if view.rows is None:
        lines.append(f'  tasks: unknown ({view.problem})')
    else:
        counts: dict[str, int] = {}
        for row in view.rows:
            counts[row['status']] = counts.get(row['status'], 0) + 1
        lines.append('  tasks: ' + ', '.join(f'{n} {s}' for s, n in sorted(counts.items())))
        lines += [f'    {r["id"]} {r["status"]}' + (f': {_first_line(r["reason"])[:160]}' if r['reason'] else '')
                  for r in view.unfinished]
        if view.unfinished and resume:
            lines.append('  unfinished tasks: resumed first (--resume)')
        elif view.unfinished:
            lines.append('  unfinished tasks: swept as they are (--resume to finish them first)')
    for wt in view.worktrees:
        where = os.path.relpath(wt['path'], repo)
        lines.append(f'  worktree {where}' + (f' (branch {wt["branch"]})' if wt['branch'] else ''))
    for path, changed in view.dirty.items():
        shown = ', '.join(changed[:5]) + (f' and {len(changed) - 5} more' if len(changed) > 5 else '')
        lines.append(f'  uncommitted changes in {os.path.relpath(path, repo)}: {shown} (the run is kept)')
    for b in view.branches:
        lines.append(f'  branch {b.name}: ' + (f'merged into {_short(b.merged_into)}: to delete' if not b.unmerged
                                              else f'{b.unmerged} commit(s) not merged: to keep'))
    return lines


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ''


def _short(ref: str) -> str:
    if len(ref) == 40 and all(c in '0123456789abcdef' for c in ref):
        return ref[:10]
    return ref.removeprefix('refs/heads/')


# ---------------------------------------------------------------- sweeping

def resume_run(repo: Path, run_id: str, spec_file: str | None) -> int:
    """Resume the run as `resume` would, continuing past failures so that every finished task is kept."""
    from orch.engine import start  # only here: the whole execution engine, for --resume alone
    return start.resume_run(repo, run_id, start.RunRequest(keep_going=True), spec_file=spec_file)


def sweep(repo: Path, view: RunView) -> bool:
    """Remove the run's worktrees, merged branches and directory; False (and a message) if it is kept."""
    run_id = view.info.run_id
    lock = RunLock(run_dir(repo, run_id))
    try:
        lock.acquire()   # no resume may start while the run is being taken apart
    except LockedError as exc:
        output.write_line(f'kept run {run_id}: {exc}')
        return False
    try:
        fresh = inspect_run(repo, run_id)   # a resume may have changed the worktrees and branches
        if fresh.dirty:
            paths = ', '.join(os.path.relpath(p, repo) for p in fresh.dirty)
            output.write_line(f'kept run {run_id}: uncommitted changes in {paths}; commit or discard them '
                              f'(git -C PATH reset --hard && git -C PATH clean -fd), then prune again')
            return False
        for wt in fresh.worktrees:
            git.remove_worktree(repo, wt['path'])
        git.prune_worktrees(repo)
        shutil.rmtree(worktree_root(repo, run_id), ignore_errors=True)
        shutil.rmtree(checkouts_root(repo, run_id), ignore_errors=True)
        for b in fresh.branches:
            if not b.unmerged:
                git.delete_branch(repo, b.name, base=b.merged_into)
        view.branches, view.worktrees, view.disk = fresh.branches, fresh.worktrees, fresh.disk
        shutil.rmtree(run_dir(repo, run_id))
    except GitError as exc:
        output.write_line(f'kept run {run_id}: {exc}')
        return False
    finally:
        lock.release()
    return True


def apply(repo: Path, views: list[RunView], *, resume: bool, spec_file: str | None) -> int:
    pruned = 0
    kept_branches: list[BranchView] = []
    for view in views:
        run_id = view.info.run_id
        if view.holder is not None:
            output.write_line(f'skipped run {run_id}: in use by PID {view.holder} (wait for it to finish)')
            continue
        if resume and view.unfinished:
            output.write_line(f'resuming run {run_id} ({len(view.unfinished)} unfinished task(s)) before pruning it')
            try:
                if resume_run(repo, run_id, spec_file) == EXIT_INTERRUPTED:
                    return EXIT_INTERRUPTED
            except OrchError as exc:
                output.write_line(f'could not resume run {run_id} ({_first_line(str(exc))}); pruning it as it is')
        if sweep(repo, view):
            pruned += 1
            output.write_line(_pruned_line(repo, view))
            kept_branches += [b for b in view.branches if b.unmerged]
    output.write_line(f'pruned {pruned} of {len(views)} run(s)')
    if kept_branches:
        output.write_line('kept branches with unmerged work (merge them, or delete one with `git branch -D NAME` '
                          'once it is not needed):')
        for b in kept_branches:
            output.write_line(f'  {b.name} ({b.unmerged} commit(s) not merged)')
    return 0


def _pruned_line(repo: Path, view: RunView) -> str:
    deleted = [b.name for b in view.branches if not b.unmerged]
    parts = [f'{len(view.worktrees)} worktree(s) removed', f'{human_size(view.disk)} freed']
    if deleted:
        parts.append(f'merged branch deleted: {", ".join(deleted)}')
    return f'pruned run {view.info.run_id}: ' + '; '.join(parts)


def prune(args: argparse.Namespace) -> int:
    repo = find_repo()
    if args.older_than is None and not args.run_id:
        raise InputError('prune: no runs selected; choose them with --older-than DAYS and/or --run-id ID ... '
                         '(nothing was pruned)')
    if args.older_than is not None and args.older_than < 0:
        raise InputError(f'--older-than {args.older_than:g}: the age must be 0 days or more')
    if args.spec_file:
        check_spec(args.spec_file, repo)   # before anything is resumed or removed
    run_ids, unreadable = select_runs(repo, args.older_than, args.run_id, dt.datetime.now())
    for rid, problem in unreadable.items():
        output.write_line(f'run {rid}: cannot read its record ({problem}); skipped')
    if not run_ids:
        nothing = 'no readable run selected' if args.run_id else f'no runs older than {args.older_than:g} days'
        output.write_line(f'{nothing}; nothing to prune')
        return 0
    views = [inspect_run(repo, rid) for rid in run_ids]
    resume = bool(args.resume) and not args.no_resume
    if args.apply:
        return apply(repo, views, resume=resume, spec_file=args.spec_file)
    output.write_line(f'would prune {len(views)} run(s) (dry run: nothing was changed; add --apply to do it)')
    for view in views:
        for line in describe(repo, view, resume=resume):
            output.write_line(line)
    return 0
