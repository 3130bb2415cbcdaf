"""A doit dependency backend that survives SIGKILL.

doit keeps every record in memory and writes them when the run ends (reference/doit.md §4): a
kill forgets every task finished in that run, and a resume would pay the model again. This
backend commits each task's record as soon as doit saves it.
"""
from __future__ import annotations

from doit.dependency import JSONCodec, SqliteDB


class WriteThroughSqliteDB(SqliteDB):
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
