"""What the no-op manifest a scoped resume starts from says of the tasks' status rows, and which tasks' row inputs
such a resume may take from it without a look (orch.engine.noop_record writes the manifest; orch.runstate.known_rows
reads the rows with what is given here)."""
from __future__ import annotations

from typing import Any

from orch import filesig
from orch.engine.inputs import RunInputs
from orch.runstate import known_rows, manifest, signing

ROWS = 'status_rows'   # the manifest's answers as loaded: its status document's rows (noop_record.load_previous)


def steps_looking(rt: RunInputs, scope: frozenset[str]) -> tuple[set[str], set[str]]:
    """What the scope's steps and the run's own read, and what they write (a run-level rule may write into any
    task's directory)."""
    looking = [step for step in rt.steps if step.task_id is None or step.task_id in scope]
    read = {path for step in looking for path in step.file_dep}
    written = {path for step in looking for path in (*step.targets, *([step.log] if step.log else []))}
    return read, written


def task_dirs_among(rt: RunInputs, paths: set[str]) -> set[str]:
    """The tasks (by id) whose run directory holds one of `paths`."""
    tasks_dir = f'{rt.layout.run_dir}/tasks/'
    return {path[len(tasks_dir):].split('/', 1)[0] for path in paths if path.startswith(tasks_dir)}


def quiet_row_inputs(rt: RunInputs, previous: manifest.Manifest | None, scope: frozenset[str] | None,
                     signed: dict[str, known_rows.TaskInputs | None] | None) -> tuple[known_rows.RowInputs,
                                                                                         known_rows.DirTimes]:
    """The row inputs of the tasks this scoped resume leaves alone, as the old manifest signed them (`signed`:
    row_inputs_in(previous, trusted_only=True)), and their directories' (mtime, ctime) as it signed them. The report
    step takes such a task's attempts' listing from here while its directory's times are these (an attempt added or
    removed changes them), and signs its state, result and execution record as any other task's: a worker of the
    scope that rewrites one, or adds an attempt, is in this command's rows, report and exit code.

    Alone: outside the scope, and no step of the scope or of the run reads or writes in their directories. The
    resume's first check (noop_record.affected_by_edit) found every input as that manifest signed it, and only those
    steps ran since, whose workers make attempts in their own tasks' directories. An attempt's record rewritten in
    place during the resume shows at the next command (its first check differs), as for the settled signatures; the
    manifest's own check takes these inputs whole (a difference there only keeps it from being written)."""
    if previous is None or scope is None or signed is None:
        return {}, {}
    read, written = steps_looking(rt, scope)
    touched = task_dirs_among(rt, read | written)
    tasks_dir = f'{rt.layout.run_dir}/tasks/'
    times: known_rows.DirTimes = {d[0][len(tasks_dir):]: (d[1], d[4]) for d in previous.dirs
             if d[0].startswith(tasks_dir) and not d[3] and d[1] is not None and d[4] is not None}
    inputs = {tid: task for tid, task in signed.items()
              if task is not None and tid not in scope and tid not in touched and tid in times}
    return inputs, {tid: times[tid] for tid in inputs}


def unchanged_rows(rt: RunInputs, previous: manifest.Manifest | None, scope: frozenset[str] | None,
                   inputs: known_rows.RowInputs, signed: dict[str, known_rows.TaskInputs | None] | None,
                   edited: set[str] | None) -> dict[str, dict[str, Any]] | None:
    """The status rows the manifest recorded for the tasks whose plan objects this edit left as they were and whose
    row inputs (`inputs`, as the caller just signed them: state, result, execution record and attempts) are as the
    manifest signed them: their rows are as they were then, since nothing else a row is read from can have changed
    (their plan objects, the graph, the rules and the config are the same), but for their upstream tasks' statuses:
    every row the manifest recorded is done, and task_rows reads again a known row with an upstream task no longer
    done. A task of the scope below the edited ones whose work did not run again keeps its row so. None when that
    cannot be said: no scope, or a review round's fix that links rows across tasks.
    signed: row_inputs_in(previous, trusted_only=True); edited: edited_tasks(rt, previous)."""
    if previous is None or scope is None or signed is None or edited is None:
        return None
    rows = previous.answers.get(ROWS)
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        return None
    if any(row.get('fixed_by') or any(isinstance(r, dict) and r.get('fix') for r in row.get('rounds') or [])
           for row in rows):
        return None
    return {row['id']: row for row in rows if row.get('id') not in edited and row.get('id') in rt.plan.by_id
            and signed.get(row['id']) is not None and signed[row['id']] == inputs.get(row['id'])}


def edited_tasks(rt: RunInputs, previous: manifest.Manifest) -> set[str] | None:
    """The tasks whose objects in the plan file differ from those the manifest recorded (None: it cannot be told)."""
    known = previous.index.get('plan_tasks') or []
    if len(known) != len(rt.plan.tasks) or not rt.plan.task_digests:
        return None
    edited = set()
    for task, digest, entry in zip(rt.plan.tasks, rt.plan.task_digests, known, strict=True):
        if not isinstance(entry, list) or len(entry) != 2 or entry[0] != task.id:
            return None
        if entry[1] != digest:
            edited.add(task.id)
    return edited


def row_inputs_in(rt: RunInputs, snapshot: manifest.Manifest, *,
                  trusted_only: bool = False) -> dict[str, known_rows.TaskInputs | None] | None:
    """Each task's row inputs (orch.runstate.known_rows.row_inputs) as the snapshot signed them; None when its task
    directories are not all in the run's `tasks` directory. trusted_only: a task with a racy signature among them
    (one whose stat does not tell its content) gets None."""
    tasks_dir = f'{rt.layout.run_dir}/tasks/'
    if any(rt.layout.task_dir(t.id) != f'{tasks_dir}{t.id}' for t in rt.plan.tasks):
        return None
    # Only the signatures a row is read from are kept (every signature of every task, grouped by task, was 13 MB at
    # 10,000 tasks, at the resume's peak of memory).
    own = {name: i for i, name in enumerate(known_rows.ROW_FILES)}
    files: dict[str, list[signing.FileSig | None]] = {}
    tries: dict[str, dict[str, list[signing.FileSig | None]]] = {}
    for sig in snapshot.files:
        if not sig[0].startswith(tasks_dir):
            continue
        tid, _, rest = sig[0][len(tasks_dir):].partition('/')
        at = own.get(rest)
        if at is not None:
            files.setdefault(tid, [None] * len(own))[at] = sig
            continue
        name, _, leaf = rest.partition('/')
        if name.startswith('attempt-') and leaf in ('attempt.json', 'launch.json'):
            tries.setdefault(tid, {}).setdefault(name, [None, None])[leaf == 'launch.json'] = sig

    def stat_of(sig: signing.FileSig | None) -> filesig.Sig:
        return None if sig is None or sig[1] is None else (sig[4], sig[3], sig[1], sig[2])   # type: ignore[return-value]

    out: dict[str, known_rows.TaskInputs | None] = {}
    none: list[signing.FileSig | None] = [None] * len(own)
    for task in rt.plan.tasks:
        mine = files.get(task.id, none)
        attempts = tries.get(task.id, {})
        if trusted_only and any(sig is not None and sig[6]
                                for sig in (*mine, *(s for pair in attempts.values() for s in pair))):
            out[task.id] = None
            continue
        out[task.id] = (tuple(stat_of(sig) for sig in mine),
                        tuple(sorted((name, (stat_of(a), stat_of(b))) for name, (a, b) in attempts.items())))
    return out
