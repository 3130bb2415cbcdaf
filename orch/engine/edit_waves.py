"""A resume after a plan edit runs the edited tasks first, and the rest of the scope only when what they wrote
reads otherwise below them.

The scope of such a resume (orch.engine.noop_record.affected_by_edit) is every task downstream of an edited one:
4,500 tasks for an edit in the middle of a 10,000-task plan. When the edited task's new result is its old one
(early cut-off), doit would look at every step of those 4,500 tasks to find each up to date. Running the edited
tasks alone first, then asking whether any file they wrote that a step below reads now holds other bytes than the
old manifest signed, tells the same without that look: a step below is as the old manifest found it (up to date),
since the manifest vouched for it, its inputs are the same bytes, and what else doit decides it by (its task's
state and directory, its worktree, its record in doit's database) is as it was. The run's own steps that read what
the scope writes (a rule over every result) wait for the tasks, and run once.

What is not asked here is still checked before a manifest is written (noop_record._touched_in_scope: every task
with a file or a doit record otherwise than the resume found is looked at by doit again). This decides what to run.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from doit.dependency import DatabaseException

from orch.engine.doit_runner import is_last, step_records
from orch.engine.inputs import RunInputs
from orch.engine.noop_record import worktree_files
from orch.runstate import manifest, signing


@dataclass(frozen=True)
class Wave:
    """What runs first: the edited tasks' steps, and those of the run's own steps that read nothing the scope
    writes (the others, a rule over every result say, run once, after every task of the scope that runs)."""

    tasks: frozenset[str]
    run_steps: frozenset[str]
    all_run_steps: bool   # every one of the run's own steps is among run_steps: none waits for the rest


def first_wave(rt: RunInputs, edited: set[str] | None, scope: frozenset[str] | None, *,
               jobs: int, keep_going: bool) -> Wave | None:
    """The edited tasks (manifest_rows.edited_tasks), to run before the rest of the scope; None: the scope runs as
    one.

    Not with --continue: after a failure doit goes on with the tasks that do not depend on it, which a second
    run would have to tell apart from the failed task it must not run again. Not for several edited tasks run in
    parallel: the tasks below a quick one would wait for the slowest (one edited task, or one job at a time, loses
    nothing: every other task of the scope is below the edited ones)."""
    if not edited or scope is None or keep_going:
        return None
    first = frozenset(edited) & scope
    if not first or first == scope or (jobs > 1 and len(first) > 1):
        return None
    tainted, waiting = _run_steps_reading(rt, scope)
    if _reads_the_rest(rt, scope, first, tainted):
        return None
    run_steps = frozenset(s.name for s in rt.steps if s.task_id is None and s.name not in waiting)
    return Wave(first, run_steps, not waiting)


def _run_steps_reading(rt: RunInputs, scope: frozenset[str]) -> tuple[set[str], set[str]]:
    """What the run's own steps write from what the scope's tasks write (directly or through one another), and
    the names of those steps; not the report's (it runs on its own, last)."""
    written = {path for step in rt.steps if step.task_id is not None and step.task_id in scope
               for path in step.targets}
    tainted: set[str] = set()
    names: set[str] = set()
    grew = True
    while grew:
        grew = False
        for step in rt.steps:
            if step.task_id is None and step.name not in names and not is_last(step) \
                    and any(path in written or path in tainted for path in step.file_dep):
                tainted.update(step.targets)
                names.add(step.name)
                grew = True
    return tainted, names


def _reads_the_rest(rt: RunInputs, scope: frozenset[str], first: frozenset[str], tainted: set[str]) -> bool:
    """Whether a step of the first wave reads what another task of the scope writes, directly or through a step of
    the run's own (`tainted`; an edited task below another one): run first, it would read what the rest has yet to
    write again, and the second wave leaves the first wave's steps alone."""
    written_by: dict[str, str] = {}
    for step in rt.steps:
        if step.task_id is not None and step.task_id in scope:
            written_by.update(dict.fromkeys(step.targets, step.task_id))
    return any(path in tainted or written_by.get(path, step.task_id) != step.task_id
               for step in rt.steps if step.task_id in first for path in step.file_dep)


def rest_needed(rt: RunInputs, previous: manifest.Manifest, scope: frozenset[str], first: frozenset[str],
                records: dict[str, str] | None) -> bool:
    """Whether a task of the scope below the first wave may have to run now: a file a step of the first wave or of
    the run writes, read by a step of the rest, holds other bytes than the old manifest signed (or was not signed
    with a hash it can be compared by); or something doit decides a step of the rest by is not what the manifest
    signed (a step of the first wave, or its worker, wrote there): a file the step reads or writes, its task's
    state (its uptodate check reads it), its worktree's files, the entries of its task's directory, or its record
    in doit's database (`records`: as the resume found them, doit_runner.step_records; None: not known)."""
    rest = scope - first
    if not rest:
        return False
    written: set[str] = set()
    read: set[str] = set()
    looked: set[str] = {f'{rt.layout.task_dir(t)}/state.json' for t in rest}
    for step in rt.steps:   # (its inputs' and outputs' paths as they are: file_dep and targets make lists)
        if step.task_id is None or step.task_id in first:
            written.update(step.outputs.values())
        elif step.task_id in rest:
            for paths in step.inputs.values():
                read.update(paths)
            read.update(step.after)
            looked.update(step.outputs.values())
            if step.builtin is not None and step.builtin.provides == 'workspace':
                looked.update(worktree_files(rt, step.outputs['workspace']))
    shared = written & read
    looked |= read
    root = str(rt.repo)
    signed = {sig[0]: sig for sig in previous.files if sig[0] in looked}
    for path in shared:
        sig = signed.get(path)
        if sig is None or sig[5] is None or signing.content_hash(signing.full_path(root, path)) != sig[5]:
            return True
    rest_dirs = {rt.layout.task_dir(t) for t in rest}
    found = 0
    for dir_sig in previous.dirs:
        if dir_sig[0] in rest_dirs:
            found += 1
            if dir_sig[3] and dir_sig[1] is not None:   # signed too soon after a write for its times to tell
                if signing.listing_hash(signing.full_path(root, dir_sig[0])) != dir_sig[2]:
                    return True
            elif not signing.unchanged_dir(root, dir_sig):
                return True
    if found != len(rest_dirs):   # a task of the rest whose directory the manifest did not sign
        return True
    if any(_changed(root, signed.get(path)) for path in looked - shared):
        return True
    if records is None:
        return True
    try:
        now = step_records(rt, rest)
    except DatabaseException:
        return True
    return now != {name: digest for name, digest in records.items() if rt.steps_by_name[name].task_id in rest}


def _changed(root: str, sig: signing.FileSig | None) -> bool:
    """Whether the file is not the one signed (or was not signed): another stat (a write in place; a write by a
    rename gives another inode, whatever the filesystem's clock), or, signed racy, other bytes."""
    if sig is None:
        return True
    full = signing.full_path(root, sig[0])
    try:
        st = os.stat(full)
    except OSError:
        return sig[1] is not None
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino) != sig[1:5] \
        or (sig[6] and signing.content_hash(full) != sig[5])
