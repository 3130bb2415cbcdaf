"""Writing the no-op manifest (orch.runstate.manifest) at the end of a run, when doit would run nothing.

Every input that can change what a resume would run, or what status shows, gets a signature:
- the run's inputs: config, plan schema, plan file, spec, the built-in and the host's rules (files and
  listings), every role schema and template, run.json and the run's caches (plan check, task entries);
- every step's file deps and targets (task.json, prompt.md, result.json, worktree.json, gate outputs,
  the reports), and doit's database with its journal files (`doit forget` changes it);
- what status reads besides: the run's task directories, also of tasks removed from the plan (their
  listings, every file in them: state.json, execution.json, ...) and each attempt's attempt.json;
- the non-file conditions of doit's uptodate callables: worktree_ready (the worktree's `.git` file, its
  administrative files in the repository's .git, the repository's git config) and config_changed (the
  params are compiled from the config, rules and run.json, all above);
- codex-orch's and doit's own code (every file of both packages, and their listings), the version, and
  the listing of the directory doit is installed in (an upgraded library changes a dist-info name).

The manifest is written only when the run ended with every task done and no failure, and only when two
snapshots taken before and after doit's own check of the whole graph (orch.engine.doit_runner.
all_up_to_date) are identical: nothing changed while doit looked, so what the manifest vouches for is
exactly the state doit found up to date.
"""
from __future__ import annotations

import json
import os
from collections.abc import Container
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orch.core.compile import Step
from orch.core.redact import redact_shared
from orch.engine import manifest_rows
from orch.engine.inputs import PLAN_CHECK_FILE, RunInputs, source_paths
from orch.runstate import attempts, known_rows, manifest, signing
from orch.runstate.state import read_json


def load_previous(rt: RunInputs) -> manifest.Manifest | None:
    """The manifest as it was, then gone: a run about to change things vouches for nothing until it ends.
    The old one's hashes are reused for files whose stat is unchanged (see signing.snapshot_files).

    Its status document is kept as the rows it holds (manifest_rows.ROWS, for manifest_rows.unchanged_rows), not as
    its text: parsed once, and the text (7 MB at 10,000 tasks) is not kept besides."""
    previous = manifest.load(rt.run_dir, manifest.header(rt.repo, rt.run.run_id))
    manifest.invalidate(rt.run_dir)
    if previous is None:
        return None
    answers = dict(previous.answers)
    try:
        answers[manifest_rows.ROWS] = json.loads(answers.pop('status_doc'))['tasks']
    except (KeyError, TypeError, ValueError, RecursionError):
        answers.pop(manifest_rows.ROWS, None)
    return manifest.Manifest(previous.header, previous.files, previous.dirs, answers, previous.index)


@dataclass(frozen=True)
class Before:
    """The first of the two snapshots, taken before the task rows are read and before doit's check."""

    files: list[str]
    dirs: list[str]
    snapshot: manifest.Manifest
    settled: frozenset[str] = frozenset()   # signed as the old manifest signed them, without a look (_settled_paths)
    # only the scope's inputs differ from the old manifest's (_changed_only_within): told here, so that the old
    # manifest's signatures can be let go before the rows are read (10,000 tasks: 83,000 signatures)
    scope_kept: bool = False
    # of the scope, the tasks whose steps the manifest's check must look at (_touched_in_scope); the others are as
    # the old manifest found them
    to_check: frozenset[str] = frozenset()


def snapshot_before(rt: RunInputs, previous: manifest.Manifest | None = None, *,
                    scope: frozenset[str] | None = None, as_before: frozenset[str] = frozenset(),
                    records: dict[str, str] | None = None) -> Before | None:
    """Take it before reading anything the manifest will vouch for (the rows of the summary): a change
    after this shows in the second snapshot, and then no manifest is written.

    scope, as_before: of a resume scoped after a plan edit (see record). The tasks outside the scope whose rows
    were `previous`'s are settled: what their directories hold is signed as `previous` signed it, without a look
    (_settled_paths), so that the snapshot costs what the edit touched, not the plan. records: doit's records of the
    scope's steps as the resume found them (doit_runner.step_records; None: not known)."""
    if rt.config.services or rt.sources is None:
        return None   # a resume starts and stops the services even when nothing is stale: not skipped
    listed_at: dict[str, int | None] = {}
    # what the old manifest signed in each task directory: grouped once for both uses (83,000 files at 10,000 tasks)
    known = _files_by_task_dir(previous, f'{rt.layout.run_dir}/tasks') if previous is not None else {}
    settled = _settled_paths(rt, previous, scope, as_before, known)
    files, dirs = inputs_of(rt, previous, listed_at, settled=settled, known=known)
    # The sources as the run read them (not as they are now): an edit made during the run is a difference.
    snap = manifest.build(str(rt.repo), manifest.header(rt.repo, rt.run.run_id), files, dirs, {}, previous=previous,
                          as_read=(rt.sources.files, rt.sources.dirs), settled=settled)
    if snap is None:
        return None
    # A task directory whose entries changed between its listing and its signature: its files above may miss one,
    # so a later snapshot must not take them from this one (racy: listed again every time).
    snap = manifest.Manifest(snap.header, snap.files, [
        (d[0], d[1], d[2], True, d[4]) if d[0] in listed_at and listed_at[d[0]] != d[1] else d for d in snap.dirs],
        snap.answers, snap.index)
    if scope is None or previous is None or not _changed_only_within(rt, snap, previous, scope, settled):
        return Before(files, dirs, snap, settled)
    return Before(files, dirs, snap, settled, True, _touched_in_scope(rt, snap, previous, scope, records))


def record(rt: RunInputs, before: Before, rows: list[dict[str, Any]], summary_lines: list[str], *,
           scope: frozenset[str] | None = None, quiet: known_rows.RowInputs | None = None,
           entries_checked: bool = False) -> bool:
    """Write the manifest if every task is done and doit finds the whole graph up to date, and nothing
    changed since `before`; returns whether it was written. rows: task_rows(rt) read after `before`, redacted
    (KnownRows.redacted); summary_lines: what a no-op resume of this state prints.

    scope: the tasks this resume looked at after a plan edit (affected_by_edit), as given to snapshot_before: when
    nothing outside them changed since the manifest it started from (before.scope_kept), only their steps (and the
    run's own) are checked; every other step is still as that manifest found it, up to date, and what the first
    snapshot settled is not signed a second time (see _looked_at); quiet: the row inputs of the tasks the resume left
    alone (quiet_row_inputs), taken for the report's digest in that check; entries_checked: the task.json files of
    the scope (of every task without one) were found equal to their plan entries after `before` was taken (the
    run's own check that none is still stale): as good as a look inside the check, which lies between the same two
    snapshots."""
    # The answers are rendered by the commands' own functions, so that they are their text exactly.
    from orch.core.status_text import nothing_would_run, render_table
    from orch.engine.doit_runner import all_up_to_date
    from orch.runstate.status import document

    checked = scope
    if not before.scope_kept:
        scope = None
    check = before.to_check if scope is not None else None
    quiet = quiet if scope is not None else None
    entries_checked = entries_checked and scope == checked   # a scope given up: every entry is compared
    if any(row['status'] != 'done' for row in rows) \
            or not all_up_to_date(rt, scope=check, quiet=quiet, entries_checked=entries_checked):
        return False
    # read between the snapshots, like the rows; redacted as data (its JSON text escapes a secret holding a quote):
    # all of it but the rows, which come redacted
    doc = redact_shared(document(rt, [], running=False))
    doc['tasks'] = rows
    # the document as compact JSON (C-encoded: an indented dump is ten times slower): `status --json` indents it
    answers = {'status_table': render_table(doc), 'status_doc': json.dumps(doc, sort_keys=True, separators=(',', ':')),
               'resume_lines': summary_lines, 'dry_run_lines': [nothing_would_run(rt.run.run_id, len(rows))]}
    first = before.snapshot
    files, dirs = before.files, before.dirs
    if scope is not None:
        files, dirs = _looked_at(before)
    after = manifest.build(str(rt.repo), first.header, files, dirs, {}, previous=first)
    if after is None or not manifest.agrees(first, after):
        return False   # something changed while doit looked: vouch for nothing
    signed = manifest.settle_racy(str(rt.repo), first.files, clock=rt.run_dir / manifest.CLOCK)
    manifest.save(rt.run_dir, manifest.Manifest(first.header, signed, first.dirs, answers, delta_index(rt)))
    return True


def _settled_paths(rt: RunInputs, previous: manifest.Manifest | None, scope: frozenset[str] | None,
                   as_before: frozenset[str],
                   known: dict[str, tuple[signing.DirSig, list[str]]]) -> frozenset[str]:
    """The directories of the tasks outside the scope whose rows were `previous`'s, and the files `previous` signed in
    them; but not what a step of the scope or of the run reads or writes there (an upstream result is signed as that
    step found it; a directory that a run-level rule writes into is looked at whole).

    Their signatures can be `previous`'s without a look: the resume's first check (affected_by_edit) found every
    input but the plan file as `previous` signed it, only steps of the scope and of the run ran since, and these
    tasks' rows are the ones `previous` gave for those signatures. A file someone changed since that check is then
    signed as it was, with the answers as they were: a difference the next check finds (the full path then
    answers), never an answer vouched for a state nobody looked at. A racy signature is not settled: it is taken
    again."""
    if previous is None or scope is None:
        return frozenset()
    tasks_dir = f'{rt.layout.run_dir}/tasks'
    read, written = manifest_rows.steps_looking(rt, scope)
    written_in = manifest_rows.task_dirs_among(rt, written)
    settled_dirs = {f'{tasks_dir}/{t}' for t in as_before if t not in scope and t not in written_in}
    racy = {sig[0] for sig in previous.files if sig[6]} | {sig[0] for sig in previous.dirs if sig[3]}
    out: set[str] = set()
    for task_dir, (_sig, files) in known.items():
        if task_dir in settled_dirs:
            out.add(task_dir)
            out.update(f for f in files if f not in read)
    # a signature taken too soon after a write to tell a later one (racy) is taken again: kept, it would be
    # compared by content at every check from then on
    return frozenset(out - racy)


def _looked_at(before: Before) -> tuple[list[str], list[str]]:
    """What a scoped resume may have read after its first snapshot: all of its inputs but those the first snapshot
    settled (_settled_paths: the tasks outside the scope whose rows were the old manifest's). Those rows are what
    those files were when the old manifest signed them: what the files are now is no input of the answers (the
    report step's check reads their stat, and fails if they changed)."""
    return ([f for f in before.files if f not in before.settled], [d for d in before.dirs if d not in before.settled])


def _changed_only_within(rt: RunInputs, now: manifest.Manifest, previous: manifest.Manifest,
                         scope: frozenset[str], settled: frozenset[str] = frozenset()) -> bool:
    """Whether every input that differs between the two snapshots belongs to the scope: the plan file, the run
    directory's own files, the scoped tasks' directories, and what the scoped tasks' steps and the run's own write
    (their targets and worktree records). Not what they read: a scoped step's input written by a task outside the
    scope (a worker rewriting its upstream's answer, say) may be read by steps outside the scope too. settled: paths
    `now` signed as `previous` did, without a look (_settled_paths): the same by construction, not compared."""
    run_dir = rt.layout.run_dir
    task_dirs = {rt.layout.task_dir(t) for t in scope}
    own: set[str] = {rt.run.plan_file}
    for step in rt.steps:
        if step.task_id is None or step.task_id in scope:
            own.update(step.targets)
            if step.builtin is not None and step.builtin.provides == 'workspace':
                own.update(worktree_files(rt, step.outputs['workspace']))

    # what the run writes in its directory besides: doit's records and the caches of the plan's checks
    own.update(f'{run_dir}/{name}' for name in ('doit.db', 'doit.db-wal', 'doit.db-journal', 'doit.db-shm',
                                               PLAN_CHECK_FILE, 'task-entries.digest'))

    def within(path: str) -> bool:
        return path in own or _dir_above(path, task_dirs) is not None

    old_files = {f[0]: f for f in previous.files if f[0] not in settled}
    new_files = {f[0]: f for f in now.files if f[0] not in settled}
    if any(not within(path) for path in old_files.keys() ^ new_files.keys()):
        return False
    if any(not within(path) and (path not in old_files or old_files[path][:6] != sig[:6])
           for path, sig in new_files.items()):
        return False
    # a directory by its entries (its listing): a file replaced in it (a new mtime) is compared above
    old_dirs = {d[0]: d[2] for d in previous.dirs}
    new_dirs = {d[0]: d[2] for d in now.dirs}
    return set(old_dirs) == set(new_dirs) and all(
        old_dirs[path] == listing or path in task_dirs or _dir_above(path, task_dirs) is not None
        for path, listing in new_dirs.items())


def _touched_in_scope(rt: RunInputs, now: manifest.Manifest, previous: manifest.Manifest,
                      scope: frozenset[str], records: dict[str, str] | None) -> frozenset[str]:
    """The tasks of the scope whose steps doit must look at again before the manifest vouches for them: those whose
    plan objects were edited, and those with a file signed otherwise in `now` than in `previous` (or racy in
    either) among their steps' inputs and outputs, their worktrees' files and their directories, and those with a
    step whose record in doit's database is not the one the resume found (`records`; None: every task is).

    Every other task of the scope is as `previous` found it, up to date: `previous` vouched for every step, and
    what a step's status is made of is the same. Its file deps and targets, its task directory (state, task entry)
    and its worktree's files are signed as then; its doit record changes only when it runs, and running writes in
    its directory, and any other change of it is told by `records`; the rest (config, rules, code, the other tasks)
    changed only within the scope (_changed_only_within). After a middle edit whose task's new result is the old
    one, that is the edited task alone, where the whole scope is 4,500 tasks at 10,000."""
    from doit.dependency import DatabaseException

    from orch.engine.doit_runner import step_records

    edited = manifest_rows.edited_tasks(rt, previous)
    if edited is None or records is None:
        return scope
    try:
        now_records = step_records(rt, scope)
    except DatabaseException:
        return scope
    old_files = {f[0]: f for f in previous.files}
    changed = {sig[0] for sig in now.files
               if (old := old_files.pop(sig[0], None)) is None or old[:6] != sig[:6] or old[6] or sig[6]}
    changed.update(old_files)   # signed then, not now
    old_dirs = {d[0]: d for d in previous.dirs}
    changed.update(d[0] for d in now.dirs if (old_dir := old_dirs.get(d[0])) is None
                   or old_dir[1:3] != d[1:3] or old_dir[3] or d[3])
    touched = set(edited & scope)
    found = {name: digest for name, digest in records.items() if rt.steps_by_name[name].task_id in scope}
    touched.update(rt.steps_by_name[name].task_id or '' for name in found.keys() ^ now_records.keys())
    touched.update(rt.steps_by_name[name].task_id or '' for name, digest in now_records.items()
                   if found.get(name, digest) != digest)
    touched.discard('')
    task_of_dir = {rt.layout.task_dir(t): t for t in scope}
    for path in changed:
        task_dir = path if path in task_of_dir else _dir_above(path, task_of_dir)
        if task_dir is not None:
            touched.add(task_of_dir[task_dir])
    for step in rt.steps:
        if step.task_id is None or step.task_id not in scope or step.task_id in touched:
            continue
        paths = [*step.file_dep, *step.targets]
        if step.builtin is not None and step.builtin.provides == 'workspace':
            paths += worktree_files(rt, step.outputs['workspace'])
        if any(path in changed for path in paths):
            touched.add(step.task_id)
    return frozenset(touched)


def _dir_above(path: str, dirs: Container[str]) -> str | None:
    """The one of these directories that holds the path: a lookup per parent directory of the path, not a comparison
    per directory (a middle edit's scope holds 4,500 tasks' directories, compared with 50,000 paths)."""
    cut = path.find('/')
    while cut != -1:
        if path[:cut] in dirs:
            return path[:cut]
        cut = path.find('/', cut + 1)
    return None


def _plan_read_by_a_step(rt: RunInputs) -> bool:
    """A host rule that reads the plan file itself: any edit of it makes that step stale, which an answer from the
    edited tasks alone would miss."""
    return any(rt.run.plan_file in step.file_dep for step in rt.steps)


def delta_index(rt: RunInputs) -> dict[str, Any]:
    """What orch.runstate.delta needs to answer after a plan edit without loading the run; empty when it must
    not (a result cache: its prediction needs git)."""
    tasks_dir = f'{rt.layout.run_dir}/tasks'
    if not rt.plan.task_digests or rt.config.cache is not None or _plan_read_by_a_step(rt) \
            or any(rt.layout.task_dir(t.id) != f'{tasks_dir}/{t.id}' for t in rt.plan.tasks):
        return {}
    return {'delta': True, 'plan_file': rt.run.plan_file, 'plan_rest': rt.plan.rest_digest,
            'plan_tasks': [[t.id, d] for t, d in zip(rt.plan.tasks, rt.plan.task_digests, strict=True)],
            'graph': [[t.role, list(t.depends_on)] for t in rt.plan.tasks],   # what the compiled steps follow
            'role_checks': {name: list(rt.role(name).checks) for name in rt.config.roles},
            'roles': sorted(rt.config.roles), 'tasks_dir': tasks_dir,
            # the dry run's cost lines with prices or budgets need the config: then only status is answered
            'dry_run': not (rt.config.prices or rt.config.token_budget or rt.config.cost_budget)}


def inputs_of(rt: RunInputs, previous: manifest.Manifest | None = None,
              listed_at: dict[str, int | None] | None = None,
              settled: frozenset[str] = frozenset(),
              known: dict[str, tuple[signing.DirSig, list[str]]] | None = None) -> tuple[list[str], list[str]]:
    """(files, directories) whose signatures the manifest keeps; repo-relative or absolute.

    previous: an earlier manifest, whose files in a task directory are taken as that directory's while its
    entries are known unchanged (signing.unchanged_dir) instead of listing it again.
    listed_at: filled with the mtime of each task directory at which its files were found: taken before its listing,
    or the old manifest's when they are its.
    settled: task directories whose files are the old manifest's without a look (see _settled_paths).
    known: _files_by_task_dir(previous), when the caller has it."""
    run_dir = rt.layout.run_dir
    files, dirs = source_paths(rt.repo, rt.run.plan_file, rt.run.spec_file, [*rt.schemas, *rt.templates])
    files += [f'{run_dir}/run.json', f'{run_dir}/{PLAN_CHECK_FILE}', f'{run_dir}/task-entries.digest',
              f'{run_dir}/doit.db', f'{run_dir}/doit.db-wal', f'{run_dir}/doit.db-journal', f'{run_dir}/doit.db-shm']
    for step in rt.steps:
        files += step.file_dep
        files += step.targets
        if step.builtin is not None and step.builtin.provides == 'workspace':
            files += worktree_files(rt, step.outputs['workspace'])
    # Every task directory, also of tasks the plan no longer has (status lists them as removed): its
    # listing, every file in it (state, result, task entry, rounds, a pending answer ...) and the record of
    # each attempt; the plan's tasks' state.json and task.json even when missing.
    tasks_dir = f'{run_dir}/tasks'
    dirs.append(tasks_dir)
    for task in rt.plan.tasks:
        files += [f'{tasks_dir}/{task.id}/state.json', f'{tasks_dir}/{task.id}/task.json']
    if known is None:
        known = _files_by_task_dir(previous, tasks_dir) if previous is not None else {}
    root = str(rt.repo)
    for name in _entries(rt.repo / tasks_dir, dirs_only=True):
        task_dir = f'{tasks_dir}/{name}'
        dirs.append(task_dir)
        listed = known.get(task_dir)
        if listed is not None and (task_dir in settled or signing.unchanged_dir(root, listed[0])):
            files += listed[1]   # its files, attempts' included (a new attempt is a new entry: a new mtime)
            if listed_at is not None:   # the mtime these files are known at: one that moves before the signature
                listed_at[task_dir] = listed[0][1]
            continue
        if listed_at is not None:
            listed_at[task_dir] = _mtime(rt.repo / task_dir)
        for entry in _entries(rt.repo / task_dir):
            if entry.startswith('attempt-'):   # a row reads each attempt's kind from its launch.json
                files += [f'{task_dir}/{entry}/attempt.json', f'{task_dir}/{entry}/launch.json']
            elif entry != attempts.SUMMARY_FILE and os.path.isfile(rt.repo / task_dir / entry):
                # (attempts.json is a cache checked against each attempt's own files: no input of any answer)
                files.append(f'{task_dir}/{entry}')
    files.append('.git/config')   # core.bare, core.worktree ...: where git finds worktrees
    packages = _code_packages()
    for package in packages:
        for directory, names in _package_files(package):
            dirs.append(directory)
            files += [os.path.join(directory, n) for n in names]
    # The installed distributions beside doit (their dist-info names carry versions): an upgrade of a
    # library the config, plan or rules are read with shows as a changed listing.
    dirs.append(str(packages[-1].parent))
    return files, dirs


def _files_by_task_dir(previous: manifest.Manifest, tasks_dir: str) -> dict[str, tuple[signing.DirSig, list[str]]]:
    """Each task directory the manifest signed: its signature and the files in it (and in its attempts) it signed."""
    prefix = f'{tasks_dir}/'
    out: dict[str, tuple[signing.DirSig, list[str]]] = {
        sig[0]: (sig, []) for sig in previous.dirs if sig[0].startswith(prefix) and '/' not in sig[0][len(prefix):]}
    for sig in previous.files:
        if sig[0].startswith(prefix):
            entry = out.get(prefix + sig[0][len(prefix):].split('/', 1)[0])
            if entry is not None:
                entry[1].append(sig[0])
    return out


def _mtime(path: Path) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def _entries(directory: Path, *, dirs_only: bool = False) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(directory) if not dirs_only or e.is_dir(follow_symlinks=False))
    except OSError:
        return []


def worktree_files(rt: RunInputs, record_path: str) -> list[str]:
    """What worktree_ready depends on: the worktree's `.git` file and the administrative files it points
    to (a hand-deleted or pruned worktree changes one of them)."""
    record = read_json(rt.path(record_path)) or {}
    path = record.get('path')
    if not isinstance(path, str):
        return []
    worktree = rt.path(path)
    out = [str(worktree / '.git')]
    try:
        text = (worktree / '.git').read_text(encoding='utf-8').strip()
    except (OSError, ValueError):
        return out
    if text.startswith('gitdir: '):
        admin = Path(text.removeprefix('gitdir: '))
        admin = admin if admin.is_absolute() else worktree / admin
        out += [str(admin / name) for name in ('gitdir', 'HEAD', 'commondir')]
    return out


def _code_packages() -> list[Path]:
    """codex-orch's and doit's own code: a changed program may decide differently."""
    import doit

    import orch
    return [Path(orch.__file__).parent, Path(doit.__file__).parent]


def _package_files(package: Path) -> list[tuple[str, list[str]]]:
    out = []
    for directory, subdirs, names in os.walk(package):
        subdirs[:] = sorted(d for d in subdirs if d != '__pycache__')
        out.append((directory, sorted(n for n in names if not n.endswith(('.pyc', '.tmp')))))
    return out


def affected_by_edit(rt: RunInputs, previous: manifest.Manifest | None) -> frozenset[str] | None:
    """The tasks a resume has to look at after a plan edit: those whose objects in the plan file changed since
    the manifest, and every task downstream of them; every other step is known up to date (the manifest found it
    so, and none of its inputs changed). None when that cannot be told: no manifest, any other input changed, or
    the graph did (a task added, removed, reordered, or given another role or other dependencies)."""
    index = previous.index if previous is not None else {}
    if previous is None or not index.get('delta') or index.get('plan_file') != rt.run.plan_file \
            or index.get('plan_rest') != rt.plan.rest_digest or not rt.plan.task_digests or _plan_read_by_a_step(rt):
        return None
    known, graph = index.get('plan_tasks') or [], index.get('graph') or []
    if len(known) != len(rt.plan.tasks) or len(graph) != len(known):
        return None
    if manifest.differences(str(rt.repo), previous, limit=1) not in ([], [rt.run.plan_file]):
        return None
    changed = set()
    for task, digest, (tid, old), (role, deps) in zip(rt.plan.tasks, rt.plan.task_digests, known, graph,
                                                        strict=True):
        if task.id != tid or task.role != role or list(task.depends_on) != deps:
            return None
        if digest != old:
            changed.add(task.id)
    return frozenset(_closed_downwards(rt, changed))


def _closed_downwards(rt: RunInputs, changed: set[str]) -> set[str]:
    """The tasks with a step that depends, directly or not, on a file a step of these tasks writes: the tasks
    below them in the plan (their prompts read the upstream answers), any task whose rule reads another's output
    (a gate over {all_results}, say), and any task reading what a run-level step writes from their outputs (the
    chain goes on through it)."""
    readers: dict[str, list[Step]] = {}   # file -> the steps that read it
    writes: dict[str, list[str]] = {}     # task -> what its steps write
    for step in rt.steps:
        for path in dict.fromkeys([*step.file_dep, *step.after]):
            readers.setdefault(path, []).append(step)
        if step.task_id is not None:
            writes.setdefault(step.task_id, []).extend(step.targets)
    out = set(changed)
    todo = [path for task in changed for path in writes.get(task, ())]
    seen_steps: set[str] = set()
    while todo:
        for step in readers.get(todo.pop(), ()):
            if step.name in seen_steps:
                continue
            seen_steps.add(step.name)
            if step.task_id is None:
                todo.extend(step.targets)   # a run-level step: what it writes is read further down
            elif step.task_id not in out:
                out.add(step.task_id)
                todo.extend(writes.get(step.task_id, ()))
    return out


def row_inputs_of(rt: RunInputs, before: Before | None) -> known_rows.RowInputs | None:
    """The tasks' row inputs as the first snapshot signed them; None: there is none (they are read now)."""
    found = manifest_rows.row_inputs_in(rt, before.snapshot) if before is not None else None
    return None if found is None else {tid: inputs for tid, inputs in found.items() if inputs is not None}
