"""Runs on disk: creating, finding and describing `.orchestrator/runs/<run_id>/`."""
from __future__ import annotations

import datetime as dt
import json
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from orch.errors import InputError, RunNotFoundError
from orch.runstate import atomic

ORCH_DIR = '.orchestrator'


@dataclass(frozen=True)
class RunInfo:
    """run.json: what a run was started from. Everything later uses these, never 'what is checked out now'."""

    run_id: str
    created: str
    date: str
    base_branch: str | None
    base_commit: str
    per_task: bool
    plan_file: str
    plan_digest: str
    spec_file: str | None
    shared_branch: str
    task_branch_template: str
    kind: str = 'plan'          # 'plan' or 'task' (a one-task run)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class UnreadableRunError(RunNotFoundError):
    """run.json is there but cannot be used; `reason` says why in a few words, without its path."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def runs_dir(repo: Path) -> Path:
    return repo / ORCH_DIR / 'runs'


def run_dir(repo: Path, run_id: str) -> Path:
    return runs_dir(repo) / run_id


def new_run_id(now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now()
    return f'{now:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}'


MAX_RUN_ID = 100   # as for task ids: it becomes a directory name and part of branch names


def check_run_id(run_id: str) -> None:
    from orch.core.plan import id_problem  # here: orch.core.plan imports jsonschema, runs are listed without it

    if len(run_id) > MAX_RUN_ID:
        raise InputError(f'--run-id {run_id[:40]!r}...: {len(run_id)} characters long, at most {MAX_RUN_ID} are '
                         'allowed (it becomes a directory and a branch name); choose a shorter run id')
    problem = id_problem(run_id)
    if problem:
        raise InputError(f'--run-id {run_id!r}: {problem}')


def load_run(repo: Path, run_id: str) -> RunInfo:
    check_run_id(run_id)
    path = run_dir(repo, run_id) / 'run.json'
    try:
        data = json.loads(path.read_text(encoding='utf-8'))
    except FileNotFoundError as exc:
        known = list_run_ids(repo)
        hint = (f'known runs: {", ".join(known[-5:])}; pass one of them to --run-id' if known
                else 'there are no runs yet; start one with `codex-orch run --plan-file PLAN`')
        raise RunNotFoundError(f'run {run_id!r} does not exist ({path} is missing; {hint})') from exc
    except (OSError, ValueError) as exc:
        reason = f'not valid JSON: {exc}' if isinstance(exc, ValueError) else str(exc)
        raise UnreadableRunError(f'{path}: unreadable run record: {exc} (start a new run)', reason) from exc
    try:
        return RunInfo(**data)
    except TypeError as exc:
        raise UnreadableRunError(f'{path}: not a run record of this codex-orch version ({exc}); start a new run',
                                 f'not a record of this codex-orch version: {exc}') from exc


def save_run(repo: Path, info: RunInfo) -> None:
    atomic.write_json(run_dir(repo, info.run_id) / 'run.json', info.to_dict())


def _records(repo: Path) -> list[tuple[str, dict[str, Any]]]:
    """(run id, run.json) of every run whose record parses, in no particular order."""
    root = runs_dir(repo)
    if not root.is_dir():
        return []
    out = []
    for path in root.iterdir():
        meta = path / 'run.json'
        if meta.is_file():
            try:
                data = json.loads(meta.read_text(encoding='utf-8'))
            except (OSError, ValueError):
                continue
            if not isinstance(data, dict):
                continue   # valid JSON but no record (e.g. a list): as unusable as unparsable JSON
            out.append((path.name, data))
    return out


def _created_of(data: dict[str, Any]) -> str:
    created = data.get('created')
    return created if isinstance(created, str) else ''   # str only: sortable


def list_run_ids(repo: Path) -> list[str]:
    """Runs in creation order (oldest first)."""
    return [name for _, name in sorted((_created_of(data), name) for name, data in _records(repo))]


# Beside run.json, not in it: run.json is what a run was started from (and a record an older codex-orch
# must still read); when it was last used changes on every run and resume.
USED_FILE = 'used.json'


def record_use(repo: Path, run_id: str, now: dt.datetime | None = None) -> None:
    """Note that the run is being run or resumed now: the latest run is the plan run used most recently.

    Only a command that runs the run calls this (it holds the run's lock); read-only ones never do.
    """
    when = (now or dt.datetime.now()).astimezone().isoformat(timespec='microseconds')
    atomic.write_json(run_dir(repo, run_id) / USED_FILE, {'last_used': when})


def last_used(repo: Path, run_id: str) -> str | None:
    """When the run was last run or resumed (ISO 8601 with offset), or None (never since this was recorded)."""
    try:
        data = json.loads((run_dir(repo, run_id) / USED_FILE).read_text(encoding='utf-8'))
    except (OSError, ValueError):
        return None
    value = data.get('last_used') if isinstance(data, dict) else None
    return value if isinstance(value, str) and timestamp(value) is not None else None


def timestamp(value: object) -> float | None:
    """Seconds since the epoch of an ISO 8601 time; one without an offset (run.json's `created`) is local."""
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value).timestamp()
    except (ValueError, OverflowError, OSError):
        return None   # a hand-edited record: never a crash, just no time


def latest_run_id(repo: Path) -> str:
    """The plan run used most recently: the newest `last used`, or `created` for a run from before that was
    recorded. One-task runs (`task`, `plan`) are never it: `resume`, `status` and plain doit mean the plan."""
    records = _records(repo)
    plans = [(name, data) for name, data in records if data.get('kind', 'plan') == 'plan']
    if not records:
        raise RunNotFoundError(f'no runs in {runs_dir(repo)} yet (start one with `codex-orch run --plan-file PLAN`)')
    if not plans:
        some = f'{len(records)} one-task run{"s" if len(records) != 1 else ""}'
        raise RunNotFoundError(f'no plan runs in {runs_dir(repo)} yet, only {some} of `codex-orch task` or `plan`, '
                               'which are never the latest: pass --run-id to name one, or start a plan run with '
                               '`codex-orch run --plan-file PLAN`')

    def recency(item: tuple[str, dict[str, Any]]) -> tuple[float, float, str, str]:
        name, data = item
        created = timestamp(data.get('created'))
        used = timestamp(last_used(repo, name))
        newest = max(t for t in (used, created, float('-inf')) if t is not None)
        return newest, created if created is not None else float('-inf'), _created_of(data), name

    return max(plans, key=recency)[0]
