"""The result cache around a run (config `cache:`): pull its remote's entries before, store every verified result
after, push to its remote after. Nothing here when the config has no `cache:`.

A result is stored only when the task is done with every check, gate and verdict passed (its status row says
`done`, which folds its gates in), and only when it was paid for here (a hit is already an entry). Its key is the
one its execution looked up (orch.steps.cache_hit), when that lookup was for the inputs of the result.
"""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

from orch import output
from orch.adapters import cache_local, cache_store
from orch.core.config import CacheSettings
from orch.engine.inputs import RunInputs
from orch.errors import GitError
from orch.runstate import atomic, state
from orch.runstate.runs import ORCH_DIR

LOG_LIMIT = 1 << 20   # bytes of one log kept in an entry
# in the run's directory: the keys of the entries the run wrote (a sorted JSON list), all a CI job may hand on to
# be pushed (an entry it took from the machine's store is not its own to vouch for)
WRITTEN_FILE = 'cache-written.json'
PROMPT_FILE = 'cache-prompt.md'   # in the task's directory: the normalised prompt its key covers, for its entry


def pull_before(rt: RunInputs) -> None:
    settings = rt.config.cache
    if settings is None:
        return
    if settings.sign_key_env and signing_key(settings) is None:
        output.write_line(f'warning: cache.sign_key_env names {settings.sign_key_env}, which is not set here: cache '
                          'entries are used without checking their signatures (their checks run here all the same), '
                          'and entries this run writes are unsigned', err=True)
    if not settings.remote:
        return
    try:
        cache_store.fetch(rt.repo, settings.remote)
    except GitError as exc:   # a cache that cannot be read is a miss, never a failed run
        output.write_line(f'warning: cannot pull the result cache from {settings.remote}: {exc}', err=True)


def store_and_push(rt: RunInputs, rows: list[dict[str, Any]]) -> None:
    settings = rt.config.cache
    if settings is None or not settings.write:
        return
    written: list[str] = []
    for row in rows:
        if row.get('status') == 'done':
            try:
                key = store_verified(rt, row['id'])
            except (GitError, OSError) as exc:
                output.write_line(f'warning: {row["id"]}: its result was not cached: {exc}', err=True)
                continue
            written += [key] if key else []
    if not written:
        return
    done = state.read_json(rt.run_dir / WRITTEN_FILE)
    keys = sorted({*written, *(k for k in done if isinstance(k, str))} if isinstance(done, list) else written)
    atomic.write_json(rt.run_dir / WRITTEN_FILE, keys)
    if settings.remote:
        try:   # only what this run wrote: an entry taken from the machine's store was another's to push
            cache_store.push(rt.repo, settings.remote, only=written)
        except GitError as exc:
            output.write_line(f'warning: cannot push the result cache to {settings.remote}: {exc}', err=True)


def store_verified(rt: RunInputs, task_id: str) -> str | None:
    """The task's verified result stored as an entry; its key when this wrote it."""
    task_dir = rt.task_dir(task_id)
    st = state.read_state(task_dir)
    record, result = st.get('cache'), state.read_result(task_dir)
    if not isinstance(record, dict) or not isinstance(record.get('key'), str) or not result or record.get('hit'):
        return None
    if (result.get('cache') or {}).get('hit') or record.get('inputs_digest') != result.get('inputs_digest'):
        return None   # a hit is an entry already; a lookup of other inputs than the result's keys nothing
    store = cache_local.open_store(rt.repo, rt.config.cache.local if rt.config.cache else True)
    key = str(record['key'])
    if store.has(key):
        return None
    found, start = result.get('commit'), st.get('checkout_start')
    commit = found if isinstance(found, str) else None
    parents = cache_store.parents(rt.repo, commit) if commit else [start] if isinstance(start, str) else []
    if len(parents) != 1:
        return None
    prompt_file = task_dir / PROMPT_FILE
    data = {'answer': result.get('answer'), 'commit': commit, 'base': str(parents[0]),
            'files_changed': result.get('files_changed') or [], 'inputs': record.get('inputs') or {},
            'execution': {k: result.get(k) for k in ('usage', 'attempts', 'repair_rounds', 'review_rounds',
                                                     'conflict_rounds', 'duration', 'checks')},
            'origin': {'run': rt.run.run_id, 'task': task_id, 'host': cache_store.plain_name(socket.gethostname()),
                       'time': time.time()}}
    written = store.put(key, data, commit, log_files(task_dir),
                        prompt=prompt_file.read_text(encoding='utf-8') if prompt_file.is_file() else '',
                        secret=signing_key(rt.config.cache), ignore=rt.config.decisions_file)
    return key if written else None


def signing_key(settings: CacheSettings | None) -> bytes | None:
    """The cache's signing key, from the environment variable the config names (None: none set)."""
    name = settings.sign_key_env if settings is not None else None
    value = os.environ.get(name, '') if name else ''
    return value.encode() if value else None


def own_files(rt: RunInputs) -> tuple[str, ...]:
    """codex-orch's own files, left out of the start tree a key covers (orch.adapters.cache_store.start_tree)."""
    return rt.config.decisions_file, rt.run.plan_file, ORCH_DIR + '/'


def log_files(task_dir: Path) -> dict[str, bytes]:
    """The task's check logs and its last attempt's logs, for an entry (each up to LOG_LIMIT bytes)."""
    found: dict[str, bytes] = {}
    attempts = sorted(task_dir.glob('attempt-*'))
    for root in [task_dir / 'checks', *attempts[-1:]]:
        for path in sorted(root.rglob('*')) if root.is_dir() else []:
            if path.is_file() and not path.is_symlink():
                found[path.relative_to(task_dir).as_posix().replace('/', '__')] = path.read_bytes()[:LOG_LIMIT]
    return found
