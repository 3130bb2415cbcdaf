"""A doit dependency backend that survives SIGKILL.

doit keeps every record in memory and writes them when the run ends (reference/doit.md §4): a
kill forgets every task finished in that run, and a resume would pay the model again. This
backend commits each task's record as soon as doit saves it.
"""
from __future__ import annotations

import atexit
import contextlib
import hashlib
import itertools
import shutil
import sqlite3
import tempfile
import threading
from collections.abc import Collection
from pathlib import Path
from typing import Any

from doit.dependency import DatabaseException, JSONCodec, SqliteDB

# Decoded records kept in memory at most: doit's SqliteDB keeps every record it read until the end (one is ~3 KB
# decoded; a check of 18,000 steps held 60 MB), though a step's record is read while the step is checked and saved,
# and seldom after.
_KEPT = 2048


class _BoundedCache(SqliteDB):
    """SqliteDB whose cache forgets the oldest records it read once it holds _KEPT (those with unsaved changes
    stay): one asked for again is read again from the database, which holds what was saved (a write-through
    backend's, or a read-only one's own file). A value set in a forgotten record reads it back first, so that the
    record saved is the one SqliteDB would have kept (a record never read starts empty, as in SqliteDB)."""

    def __init__(self, name: str, codec: JSONCodec, *, module_name: str | None = None) -> None:
        super().__init__(name, codec)
        self._cache_lock = threading.RLock()
        self._forgotten: set[str] = set()

    def get(self, task_id: str, dependency: str) -> Any:
        return self._record(task_id).get(dependency, None)

    def set(self, task_id: str, dependency: str, value: object) -> None:
        with self._cache_lock:   # (from the read to the change: a record with unsaved changes is never forgotten)
            if task_id in self._forgotten:
                self._record(task_id)
            super().set(task_id, dependency, value)

    def remove(self, task_id: str) -> None:
        with self._cache_lock:
            self._forgotten.discard(task_id)
            super().remove(task_id)

    def remove_all(self) -> None:
        with self._cache_lock:
            self._forgotten.clear()
            super().remove_all()

    def _record(self, task_id: str) -> dict[str, Any]:
        with self._cache_lock:
            record: dict[str, Any] | None = self._cache.get(task_id)
            if record is None:
                if len(self._cache) >= _KEPT:
                    for old in [k for k in itertools.islice(self._cache, _KEPT // 2) if k not in self._dirty]:
                        del self._cache[old]
                        self._forgotten.add(old)
                self._forgotten.discard(task_id)
                record = self._cache[task_id] = self._get_task_data(task_id)
            return record


class WriteThroughSqliteDB(_BoundedCache):
    desc = 'sqlite3, committed after every task (codex-orch)'

    def __init__(self, name: str, codec: JSONCodec, *, module_name: str | None = None) -> None:
        super().__init__(name, codec)
        self._conn.execute('pragma journal_mode=wal')
        self._conn.execute('pragma synchronous=normal')
        self._conn.execute('pragma busy_timeout=10000')

    def set(self, task_id: str, dependency: str, value: object) -> None:
        super().set(task_id, dependency, value)
        # Dependency.save_success sets 'deps:' last, so the record is complete then ('ignore:'
        # comes alone from `doit ignore`). One commit per finished task.
        if dependency not in ('deps:', 'ignore:'):
            return
        self._conn.execute('insert or replace into doit values (?,?)',
                           (task_id, self.codec.encode(self._cache[task_id])))
        self._conn.commit()
        self._dirty.discard(task_id)

    def remove(self, task_id: str) -> None:
        super().remove(task_id)
        self._conn.commit()

    def remove_all(self) -> None:
        super().remove_all()
        self._conn.commit()


class ReadOnlySqliteDB(_BoundedCache):
    """doit's records for a read-only command (status, graph, merge): nothing is created, changed or deleted.

    The run's database is in WAL mode, and a plain connection to it creates `doit.db-wal` and `-shm` beside
    it, which the last connection to close deletes again: a read-only command would write into the run
    directory (and fail in one it cannot write). Without a `-wal` file no one has the database open (the
    last writer's close checkpointed and removed it), so `immutable` reads the file alone. With one (a run
    in progress, or one that was killed), `mode=ro` reads through the existing -wal and -shm files: records
    still in the WAL count. sqlite then keeps its read lock in the -shm file (shared memory, no data; after
    a kill it rebuilds the index there): the one file a reader of a live WAL database cannot leave alone.
    """

    desc = 'sqlite3, read only (codex-orch)'

    def _sqlite3(self, name: str) -> sqlite3.Connection:
        sqlite3.register_converter('json', lambda data: self.codec.decode(data.decode('utf-8')))
        conn = connect_read_only(Path(name), detect_types=sqlite3.PARSE_DECLTYPES | sqlite3.PARSE_COLNAMES)
        conn.row_factory = _dict_row
        return conn


def connect_read_only(db: Path, **kwargs: Any) -> sqlite3.Connection:
    """A connection that changes nothing of `db` and its directory (see ReadOnlySqliteDB)."""
    path = Path(db).resolve()
    modes = ['mode=ro', 'immutable=1'] if path.with_name(path.name + '-wal').exists() else ['immutable=1']
    error: Exception | None = None
    for mode in modes:
        try:
            conn: sqlite3.Connection = sqlite3.connect(f'{path.as_uri()}?{mode}', uri=True,
                                                       isolation_level='DEFERRED', **kwargs)
            conn.execute('select count(*) from doit').fetchone()   # readable now, not at the first get
            return conn
        except sqlite3.Error as exc:
            error = exc
    raise DatabaseException(f'{db}: cannot read doit\'s records: {error} (resume the run to rebuild them)')


def record_digests(db: Path, names: Collection[str]) -> dict[str, str]:
    """A digest of doit's record of each of these steps that has one, as the database holds it (read only)."""
    if not Path(db).exists():
        return {}
    conn = connect_read_only(db)
    try:
        if len(names) <= 500:   # a few (an edit's scope): by key, not a read of every record (20,000 at 10,000 tasks)
            listed = list(names)
            rows = conn.execute(f'select task_id, task_data from doit where task_id in ({",".join("?" * len(listed))})',
                                listed) if listed else []
        else:
            rows = conn.execute('select task_id, task_data from doit')
        return {name: hashlib.blake2b(str(data).encode('utf-8', 'surrogateescape'), digest_size=16).hexdigest()
                for name, data in rows if name in names}
    finally:
        conn.close()


def private_copy(db: Path) -> Path:
    """doit's records, copied out of the run for a doit command that only reads (`doit list`, `info`): doit
    opens its database read-write, and a connection to the run's own (in WAL mode) creates and deletes files
    in the run directory. The copy lives in a temporary directory removed when the process ends."""
    directory = Path(tempfile.mkdtemp(prefix='codex-orch-doit-'))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    copy = directory / 'doit.db'
    if Path(db).exists():
        source = connect_read_only(db)
        try:
            with contextlib.closing(sqlite3.connect(copy)) as target:
                source.backup(target)
        finally:
            source.close()
    return copy


def _dict_row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> dict[str, Any]:
    return {column[0]: value for column, value in zip(cursor.description, row, strict=True)}
