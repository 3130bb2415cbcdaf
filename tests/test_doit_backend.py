"""orch.adapters.doit_backend: doit's records, committed as each task ends and kept in memory only a few at a time.
Against doit's own SqliteDB on the same records: every answer and every record saved is the same."""
from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from doit.dependency import Dependency, JSONCodec, MD5Checker, SqliteDB
from doit.task import Task

from orch.adapters import doit_backend
from orch.adapters.doit_backend import ReadOnlySqliteDB, WriteThroughSqliteDB


def _tasks(root: Path, n: int) -> list[Task]:
    for i in range(n):
        (root / f'in{i}.txt').write_text(f'input {i}\n')
    return [Task(f'step:T{i}', None, file_dep=[str(root / f'in{i}.txt'), str(root / f'in{(i + 1) % n}.txt')])
            for i in range(n)]


def _records(db: Path) -> dict[str, Any]:
    import sqlite3
    with sqlite3.connect(db) as conn:
        return {k: JSONCodec().decode(v) for k, v in conn.execute('select task_id, task_data from doit')}


def _statuses(backend: type, db: Path, tasks: list[Task]) -> list[tuple[str, str, list[str]]]:
    dep = Dependency(backend, str(db), checker_cls=MD5Checker)
    by_name = {t.name: t for t in tasks}
    out = []
    for task in tasks:
        status = dep.get_status(task, by_name, get_log=True)
        out.append((task.name, status.status, sorted(task.dep_changed)))
    dep.backend._conn.close()
    return out


@pytest.fixture
def small_cache(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(doit_backend, '_KEPT', 4)
    return 4


def test_a_run_with_few_records_in_memory_saves_and_answers_as_doit_does(tmp_path: Path, small_cache: int) -> None:
    tasks = _tasks(tmp_path, 30)
    dbs = {'bounded': tmp_path / 'bounded.db', 'doit': tmp_path / 'doit.db'}
    for kind, backend in (('bounded', WriteThroughSqliteDB), ('doit', SqliteDB)):
        dep = Dependency(backend, str(dbs[kind]), checker_cls=MD5Checker)
        by_name = {t.name: t for t in tasks}
        for task in tasks:   # as doit's runner does: check, then save what ran
            dep.get_status(task, by_name)
            dep.save_success(task)
            if kind == 'bounded':
                assert len(dep.backend._cache) <= small_cache
        for task in tasks[::7]:   # ask again for records long forgotten
            assert dep.get_status(task, by_name).status == 'up-to-date'
        dep.close()
    assert _records(dbs['bounded']) == _records(dbs['doit']) and len(_records(dbs['doit'])) == 30
    (tmp_path / 'in3.txt').write_text('changed\n')
    for backend in (WriteThroughSqliteDB, ReadOnlySqliteDB):
        copy = tmp_path / f'{backend.__name__}.db'
        shutil.copy(dbs['bounded'], copy)
        assert _statuses(backend, copy, tasks) == _statuses(SqliteDB, dbs['doit'], tasks)
    assert [s for _, s, _ in _statuses(ReadOnlySqliteDB, dbs['bounded'], tasks)].count('run') == 2


def test_a_value_set_in_a_forgotten_record_keeps_the_rest_of_it(tmp_path: Path, small_cache: int) -> None:
    """doit's `ignore` sets one value: in a record read before (and forgotten since) the rest stays, as it would in
    doit's cache; a record never read starts empty, as in doit's."""
    tasks = _tasks(tmp_path, 10)
    db = tmp_path / 'doit.db'
    dep = Dependency(WriteThroughSqliteDB, str(db), checker_cls=MD5Checker)
    for task in tasks:
        dep.save_success(task)
    dep.close()
    saved = _records(db)
    expected = {}
    for backend in (WriteThroughSqliteDB, SqliteDB):
        copy = tmp_path / f'{backend.__name__}.db'
        shutil.copy(db, copy)
        dep = Dependency(backend, str(copy), checker_cls=MD5Checker)
        for task in tasks:
            dep.get_status(task, {t.name: t for t in tasks})   # reads all: the first ones are forgotten by now
        dep.ignore(tasks[0])
        dep.close()
        expected[backend] = _records(copy)
    assert expected[WriteThroughSqliteDB] == expected[SqliteDB]
    assert expected[SqliteDB]['step:T0'] == {**saved['step:T0'], 'ignore:': '1'}
    fresh = tmp_path / 'fresh.db'
    shutil.copy(db, fresh)
    dep = Dependency(WriteThroughSqliteDB, str(fresh), checker_cls=MD5Checker)
    dep.ignore(tasks[1])   # never read: its record is the one value, as doit's own SqliteDB saves it
    dep.close()
    assert _records(fresh)['step:T1'] == {'ignore:': '1'}


def test_record_digests_are_the_same_read_by_key_or_whole(tmp_path: Path) -> None:
    """A few steps' records are read by key, many by a read of every record: the digests are the same, a step
    without a record has none, and a changed record has another."""
    import sqlite3

    from orch.adapters.doit_backend import record_digests
    db = tmp_path / 'doit.db'
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute('create table doit (task_id text primary key, task_data json)')
        conn.executemany('insert into doit values (?, ?)', [(f'work:T{i}', json.dumps({'n': i})) for i in range(600)])
        conn.commit()
    many = record_digests(db, {f'work:T{i}' for i in range(600)} | {'work:gone'})
    few = record_digests(db, {'work:T1', 'work:T599', 'work:gone'})
    assert len(many) == 600 and 'work:gone' not in many
    assert few == {'work:T1': many['work:T1'], 'work:T599': many['work:T599']}
    assert len(set(many.values())) == 600
    assert record_digests(db, set()) == {}
