"""orch.core.plan: ids, paths, the graph checks and plan loading, with their exact messages."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from orch.core import plan as plan_mod
from orch.core.plan import (
    find_cycle,
    graph_problems,
    id_problem,
    load_plan,
    path_problem,
    plan_from_data,
    topological_order,
)
from orch.errors import PlanError

pytestmark = pytest.mark.unit   # the pure core: no processes, no git

ROLES = {'navigator', 'implementer', 'tester', 'reviewer'}
SCHEMA = json.loads((Path(__file__).resolve().parents[1] / '.orchestrator' / 'schemas' / 'plan.json').read_text())
CHARSET = 'must start with a letter or digit and use only letters, digits, ".", "_" and "-"'
GITREF = 'must not contain ".." or end with "." or ".lock" (it becomes a git branch name)'


def task(tid: str, **extra: object) -> dict:
    return {'id': tid, 'role': 'implementer', 'title': 't', 'description': 'd', **extra}


@pytest.mark.parametrize('tid, problem', [
    ('T1', None), ('a.b_c-9', None), ('9', None), ('x.locks', None),
    ('../x', CHARSET), ('a/b', CHARSET), ('a b', CHARSET), ('-a', CHARSET), ('.a', CHARSET), ('_a', CHARSET),
    ('a~b', CHARSET), ('a^b', CHARSET), ('a:b', CHARSET), ('a?b', CHARSET), ('a*b', CHARSET), ('a[b', CHARSET),
    ('a\\b', CHARSET), ('a@{b', CHARSET), ('', CHARSET), ('é', CHARSET), ('a\nb', CHARSET),
    ('a..b', GITREF), ('x.lock', GITREF), ('x.', GITREF),
])
def test_id_problem(tid: str, problem: str | None) -> None:
    assert id_problem(tid) == problem


@pytest.mark.parametrize('path, problem', [
    ('src/greet.py', None), ('src/**/*.py', None), ('docs/', None), ('a..b.txt', None), ('$(touch x).txt', None),
    ('../x', 'must be relative to the repository and stay inside it (no leading "/", no "..")'),
    ('a/../../x', 'must be relative to the repository and stay inside it (no leading "/", no "..")'),
    ('/etc/passwd', 'must be relative to the repository and stay inside it (no leading "/", no "..")'),
    (':/', 'starts with ":", which is git pathspec magic; use a plain relative path or glob'),
    (':(exclude)src', 'starts with ":", which is git pathspec magic; use a plain relative path or glob'),
    ('a\x00b', 'contains a control character (newline, NUL, ...); use a plain relative path'),
    ('a\nb', 'contains a control character (newline, NUL, ...); use a plain relative path'),
    ('a\x7fb', 'contains a control character (newline, NUL, ...); use a plain relative path'),
])
def test_path_problem(path: str, problem: str | None) -> None:
    assert path_problem(path) == problem


def test_graph_problems_lists_every_problem_with_its_place() -> None:
    data = {'tasks': [
        task('A', depends_on=['T9', 'A']),
        task('A', role='wizard'),
        task('x.lock', paths=['ok', '/abs']),
        task('B', depends_on=['C']),
        task('C', depends_on=['B']),
    ]}
    assert graph_problems(data, ROLES) == [
        "tasks[1].id: duplicate id 'A' (first used by tasks[0]; give each task its own id)",
        "tasks[1].role: unknown role 'wizard' (known: implementer, navigator, reviewer, tester; "
        'add it under roles: in the config)',
        f"tasks[2].id: 'x.lock' {GITREF}",
        "tasks[2].paths[1]: '/abs' must be relative to the repository and stay inside it (no leading \"/\", no \"..\")",
        "tasks[0].depends_on[0]: unknown task 'T9' (add a task with that id or remove the dependency)",
        "tasks[0].depends_on[1]: task 'A' depends on itself (remove it)",
        'tasks: dependency cycle B -> C -> B (remove one of these dependencies)',
    ]


def test_cycle_is_named_in_order() -> None:
    data = {'tasks': [task('A', depends_on=['C']), task('B', depends_on=['A']), task('C', depends_on=['B']),
                      task('D')]}
    assert graph_problems(data, ROLES) == [
        'tasks: dependency cycle A -> C -> B -> A (remove one of these dependencies)']


def test_find_cycle_handles_deep_chains_without_recursion() -> None:
    n = 20_000
    chain = {f'T{i}': [f'T{i - 1}'] if i else [] for i in range(n)}
    assert find_cycle(chain) is None
    chain['T0'] = [f'T{n - 1}']
    cycle = find_cycle(chain)
    assert cycle is not None and cycle[0] == cycle[-1] and len(cycle) == n + 1


def test_topological_order_is_stable_and_puts_dependencies_first() -> None:
    plan = plan_from_data({'tasks': [task('C', depends_on=['B']), task('A'), task('B', depends_on=['A']),
                                     task('D')]})
    assert [t.id for t in topological_order(plan)] == ['A', 'B', 'C', 'D']


def test_digest_ignores_key_order_but_not_content() -> None:
    one = plan_from_data({'title': 'x', 'tasks': [task('A')]})
    two = plan_from_data(json.loads(json.dumps({'tasks': [dict(reversed(list(task('A').items())))], 'title': 'x'})))
    three = plan_from_data({'title': 'x', 'tasks': [task('A', description='other')]})
    assert one.digest == two.digest != three.digest


def _load(tmp_path: Path, content: str | bytes, name: str = 'plan.json'):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return load_plan(path, SCHEMA, ROLES)


@pytest.mark.parametrize('content, message', [
    ('{"tasks": [', 'line 1 column 12: not valid JSON: Expecting value '
                    '(fix the JSON syntax there; the plan format is in the README)'),
    (b'{"t": "\xff"}', 'not UTF-8 text: byte 7 is invalid (a plan is a JSON file; save it as UTF-8)'),
    ('[]', "1 problem\n  (top level): [] is not of type 'object'\n  fix: see the plan format in the README"),
    ('{"tasks": []}', '1 problem\n  tasks: [] should be non-empty\n  fix: see the plan format in the README'),
    ('{"tasks": [{"id": "T1", "role": "implementer", "description": "d", "extra": 1}]}',
     "2 problems\n  tasks[0]: 'title' is a required property\n"
     "  tasks[0]: Additional properties are not allowed ('extra' was unexpected)\n"
     '  fix: see the plan format in the README'),
    (json.dumps({'tasks': [task('A', depends_on=['B'])]}),
     "1 problem\n  tasks[0].depends_on[0]: unknown task 'B' (add a task with that id or remove the dependency)"),
])
def test_load_plan_messages(tmp_path: Path, content: str | bytes, message: str) -> None:
    with pytest.raises(PlanError) as exc:
        _load(tmp_path, content)
    assert str(exc.value) == f'{tmp_path / "plan.json"}: {message}'


def test_load_plan_file_problems(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(PlanError, match=r'nope\.json: plan file not found \(check --plan-file\)$'):
        load_plan(tmp_path / 'nope.json', SCHEMA, ROLES)
    with pytest.raises(PlanError, match=r': is a directory, not a plan file \(check --plan-file\)$'):
        load_plan(tmp_path, SCHEMA, ROLES)
    monkeypatch.setattr(plan_mod, 'MAX_PLAN_BYTES', 10)
    with pytest.raises(PlanError, match=r'plan\.json: plan is larger than 0 MB$'):
        _load(tmp_path, json.dumps({'tasks': [task('A')]}))


def test_a_huge_description_is_not_quoted_in_messages(tmp_path: Path) -> None:
    big = 'x' * 1_000_000
    with pytest.raises(PlanError) as exc:
        _load(tmp_path, json.dumps({'tasks': [{'id': 'A', 'role': 'implementer', 'title': big, 'description': big}]}))
    assert len(str(exc.value)) < 1000 and 'tasks[0].title' in str(exc.value)


def test_valid_plan_loads(tmp_path: Path) -> None:
    plan = _load(tmp_path, json.dumps({'version': 1, 'title': 'P', 'tasks': [
        task('A', paths=['a.py'], acceptance=['works']), task('B', depends_on=['A'])]}))
    assert [t.id for t in plan.tasks] == ['A', 'B'] and plan.by_id['B'].depends_on == ('A',)
    assert plan.by_id['A'].entry() == {'id': 'A', 'role': 'implementer', 'title': 't', 'description': 'd',
                                       'depends_on': [], 'paths': ['a.py'], 'acceptance': ['works']}
    assert plan.dependents('A') == ['B']


def test_after_an_edit_only_the_changed_tasks_are_schema_checked_and_a_bad_one_is_named(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """load_plan(schema_valid=) with the record of an earlier check: only task objects it did not pass are given
    to jsonschema, and a problem is still reported with its place in the whole plan."""
    from orch.core import validate
    path = tmp_path / 'plan.json'
    tasks = [task(f'T{i}') for i in range(5)]
    path.write_text(json.dumps({'tasks': tasks}))
    record = load_plan(path, SCHEMA, ROLES).schema_key
    checked: list[int] = []
    real = validate.schema_errors

    def counting(instance: dict, schema: dict) -> list[str]:
        checked.append(len(instance['tasks']))
        return real(instance, schema)
    monkeypatch.setattr(validate, 'schema_errors', counting)
    tasks[3] = task('T3', description='edited')
    path.write_text(json.dumps({'tasks': tasks}))
    load_plan(path, SCHEMA, ROLES, schema_valid=record)
    assert checked == [1]                     # the edited task alone
    tasks[3] = task('T3', colour='blue')      # not allowed by the schema
    path.write_text(json.dumps({'tasks': tasks}))
    checked.clear()
    with pytest.raises(PlanError) as exc:
        load_plan(path, SCHEMA, ROLES, schema_valid=record)
    assert "tasks[3]: Additional properties are not allowed ('colour' was unexpected)" in str(exc.value)
    assert checked == [1, 5]                  # found in the changed task; then said with its place
    path.write_text(json.dumps({'tasks': tasks[:2]}))   # fewer tasks, all passed before: a count the schema
    checked.clear()                                      # may bound (minItems), so the whole plan is checked
    load_plan(path, SCHEMA, ROLES, schema_valid=record)
    assert checked == [2]
