"""What a task's attempts add up to (how many, the tokens they used, their kinds), kept beside them.

Each worker launch is `task_dir/attempt-<n>/`, with launch.json (its kind, from before it started) and
attempt.json (its usage, once it ended): the record. A status or report reads every task's attempts, and
reading each of those files on every command is what a resume of 1,000 tasks after one edit spent most of its
status time on. So `attempts.json` in the task directory keeps, per attempt directory, the kind and usage taken
from its files together with those files' signatures (inode, size, mtime, ctime; None for a missing one).

An entry counts only while its attempt directory is there and both signatures are as recorded: an attempt
written after the summary (a kill between an attempt and the next summary), a directory deleted or a file
edited by hand, attempts imported from a remote worker, are read from their own files, that attempt only, so
the answer is always exactly what the files say. An entry whose files were written within a second of the
summary is not kept (a second write in the same clock tick would keep their signature; git calls them racy).

The summary is a cache, and only a command that may write refreshes it: inside `writing()` (the report a run
writes, under its lock). Everything else (status, dry-run, graph, merge ...) only reads it: a read-only command
never writes anything. Within one process the entries are also kept in memory (same signatures, same rule).
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orch.filesig import Sig, file_sig, sig_is_racy
from orch.runstate import atomic

SUMMARY_FILE = 'attempts.json'
FORMAT = 1
USAGE_KEYS = ('input_tokens', 'cached_input_tokens', 'output_tokens', 'reasoning_output_tokens')

Listing = dict[str, tuple[Sig, Sig]]         # attempt directory name -> (attempt.json, launch.json) signatures

_may_write: contextvars.ContextVar[bool] = contextvars.ContextVar('attempts_may_write', default=False)


@contextlib.contextmanager
def writing() -> Iterator[None]:
    """Within it (this thread), a summary found out of date is rewritten: only for commands that may write."""
    token = _may_write.set(True)
    try:
        yield
    finally:
        _may_write.reset(token)


@dataclass(frozen=True)
class Attempts:
    count: int                 # attempt directories
    usage: dict[str, int]      # USAGE_KEYS summed over every attempt.json
    kinds: dict[str, int]      # launch.json's kind ('initial' when it names none), counted; sorted by kind


@dataclass(frozen=True)
class _Entry:
    sigs: tuple[Sig, Sig]
    usage: dict[str, int] | None   # None: no attempt.json (the attempt never ended)
    kind: str | None               # None: no launch.json


# task directory -> (its entries, whether attempts.json holds exactly these)
_known: dict[str, tuple[dict[str, _Entry], bool]] = {}


def count(task_dir: Path) -> int:
    """How many attempt directories the task has (only their listing is read)."""
    return len(_attempt_dirs(task_dir))


def summary(task_dir: Path) -> Attempts:
    listing = listing_of(task_dir)
    entries = _entries(task_dir, listing)
    usage = dict.fromkeys(USAGE_KEYS, 0)
    kinds: dict[str, int] = {}
    for entry in entries.values():
        for key, value in (entry.usage or {}).items():
            usage[key] += value
        if entry.kind is not None:
            kinds[entry.kind] = kinds.get(entry.kind, 0) + 1
    return Attempts(len(listing), usage, dict(sorted(kinds.items())))


def listing_of(task_dir: Path) -> Listing:
    """Every attempt directory of the task with the signatures of its attempt.json and launch.json: what its
    summary depends on (also part of what a task's status row is read from)."""
    base = os.fspath(task_dir)
    return {name: (file_sig(f'{base}/{name}/attempt.json'), file_sig(f'{base}/{name}/launch.json'))
            for name in _attempt_dirs(task_dir)}


def _attempt_dirs(task_dir: Path) -> list[str]:
    try:
        with os.scandir(task_dir) as it:
            return [e.name for e in it if e.name.startswith('attempt-') and e.is_dir()]
    except OSError:
        return []


def _entries(task_dir: Path, listing: Listing) -> dict[str, _Entry]:
    key = os.path.abspath(task_dir)
    known, on_disk = _known.get(key, ({}, False))
    if not _covers(known, listing) and not on_disk:
        known, on_disk = _load(task_dir), True
    entries = {}
    for name, sigs in listing.items():
        entry = known.get(name)
        entries[name] = entry if entry is not None and entry.sigs == sigs else _read(task_dir, name, sigs)
    now = time.time_ns()
    steady = {name: e for name, e in entries.items() if not any(sig_is_racy(now, s) for s in e.sigs)}
    if steady != known:
        on_disk = False
    if not on_disk and steady and _may_write.get():   # (a task that has no attempt gets no summary)
        with contextlib.suppress(OSError):   # a cache: a summary that cannot be written is read around next time
            atomic.write_json(Path(task_dir) / SUMMARY_FILE, _to_json(steady), durable=False)
            on_disk = True
    _known[key] = (steady, on_disk)
    return entries


def _covers(known: dict[str, _Entry], listing: Listing) -> bool:
    return all(name in known and known[name].sigs == sigs for name, sigs in listing.items())


def _read(task_dir: Path, name: str, sigs: tuple[Sig, Sig]) -> _Entry:
    """The attempt as its own files say (what orch.runstate.state always read)."""
    adir = Path(task_dir) / name
    usage = None
    if sigs[0] is not None:
        record = (_read_json(adir / 'attempt.json') or {}).get('usage') or {}
        usage = {key: _int(record.get(key) if isinstance(record, dict) else None) for key in USAGE_KEYS}
    kind = str((_read_json(adir / 'launch.json') or {}).get('kind') or 'initial') if sigs[1] is not None else None
    return _Entry(sigs, usage, kind)


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) else 0


def _read_json(path: Path) -> dict[str, Any] | None:
    from orch.runstate.state import read_json
    return read_json(path)


def _load(task_dir: Path) -> dict[str, _Entry]:
    """attempts.json's entries; none when it is missing, of another format or malformed in any way."""
    data = _read_json(Path(task_dir) / SUMMARY_FILE)
    if not data or data.get('format') != FORMAT or not isinstance(data.get('attempts'), dict):
        return {}
    out = {}
    for name, raw in data['attempts'].items():
        entry = _entry_of(raw)
        if entry is None:
            return {}
        out[name] = entry
    return out


def _entry_of(raw: Any) -> _Entry | None:
    if not isinstance(raw, dict):
        return None
    sigs = (_sig_of(raw.get('attempt')), _sig_of(raw.get('launch')))
    usage, kind = raw.get('usage'), raw.get('kind')
    if (sigs[0] is None) != (usage is None) or (sigs[1] is None) != (kind is None):
        return None
    if usage is not None and not (isinstance(usage, dict) and set(usage) == set(USAGE_KEYS)
                                  and all(type(v) is int for v in usage.values())):
        return None
    if kind is not None and not isinstance(kind, str):
        return None
    return _Entry(sigs, usage, kind)


def _sig_of(raw: Any) -> Sig:
    if isinstance(raw, list) and len(raw) == 4 and all(type(v) is int for v in raw):
        return (raw[0], raw[1], raw[2], raw[3])
    return None


def _to_json(entries: dict[str, _Entry]) -> dict[str, Any]:
    return {'format': FORMAT, 'attempts': {
        name: {'attempt': list(e.sigs[0]) if e.sigs[0] else None, 'launch': list(e.sigs[1]) if e.sigs[1] else None,
               'usage': e.usage, 'kind': e.kind} for name, e in sorted(entries.items())}}
