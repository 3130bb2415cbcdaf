"""The plan: a JSON list of tasks with dependencies, checked as a whole before anything runs."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NotRequired, TypedDict

from orch.collect import json_loads_uncollected
from orch.core.files import decode_json_input, json_too_deep_at, read_input, too_deep_message
from orch.errors import PlanError, problems_message

# Ids become directory names and git branch components, so they are kept to a safe alphabet;
# `..` inside an id and a trailing `.lock`/`.` are illegal in git refs.
ID_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._-]*$')
MAX_PLAN_BYTES = 50 * 1024 * 1024


class TaskEntry(TypedDict):
    """task.json: a task as the plan gives it."""

    id: str
    role: str
    title: str
    description: str
    depends_on: list[str]
    paths: list[str]
    acceptance: list[str]
    checks: NotRequired[list[str]]   # only when the plan gives some: older task.json files stay as they were
    control_files: NotRequired[bool]
    protect: NotRequired[list[str]]
    max_tokens: NotRequired[int]


@dataclass(frozen=True)
class Task:
    id: str
    role: str
    title: str
    description: str
    depends_on: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    acceptance: tuple[str, ...] = ()
    checks: tuple[str, ...] = ()     # shell commands that must pass before the task's commit
    control_files: bool = False      # it may change codex-orch's control files (.orchestrator/, dodo.py, ...)
    protect: tuple[str, ...] = ()    # globs no worker may change, added to the built-in ones (orch.steps.guard)
    max_tokens: int | None = None    # what one execution of it may spend (orch.steps.budget)

    def entry(self) -> TaskEntry:
        """The task as written to task.json: what makes it stale when it changes."""
        entry: TaskEntry = {'id': self.id, 'role': self.role, 'title': self.title, 'description': self.description,
                            'depends_on': list(self.depends_on), 'paths': list(self.paths),
                            'acceptance': list(self.acceptance)}
        if self.checks:
            entry['checks'] = list(self.checks)
        if self.control_files:
            entry['control_files'] = True
        if self.protect:
            entry['protect'] = list(self.protect)
        if self.max_tokens is not None:
            entry['max_tokens'] = self.max_tokens
        return entry


@dataclass(frozen=True)
class Plan:
    title: str
    tasks: tuple[Task, ...]
    digest: str = ''
    by_id: dict[str, Task] = field(default_factory=dict, compare=False)
    # A digest of each task's object as the plan file gives it, and of the rest of the plan (see plan_digests):
    # what the fast path compares to tell which tasks an edit touched.
    task_digests: tuple[str, ...] = field(default=(), compare=False)
    rest_digest: str = field(default='', compare=False)
    schema_key: str = field(default='', compare=False)   # see load_plan(schema_valid=)

    def __post_init__(self) -> None:
        self.by_id.update({t.id: t for t in self.tasks})

    def dependents(self, task_id: str) -> list[str]:
        return [t.id for t in self.tasks if task_id in t.depends_on]


def id_problem(task_id: str) -> str | None:
    if not ID_RE.match(task_id):
        return 'must start with a letter or digit and use only letters, digits, ".", "_" and "-"'
    if '..' in task_id or task_id.endswith(('.lock', '.')):
        return 'must not contain ".." or end with "." or ".lock" (it becomes a git branch name)'
    return None


_CONTROL = re.compile(r'[\x00-\x1f\x7f]')   # what no path has: control characters


def path_problem(path: str) -> str | None:
    """What is wrong with a plan `paths` glob: it must stay inside the repository and be a plain path.

    The globs become git pathspecs (commit and reset scopes), so git's pathspec magic (`:/`, `:!x`,
    `:(top)`) is refused: it could widen a scope to the whole worktree.
    """
    if _CONTROL.search(path):
        return 'contains a control character (newline, NUL, ...); use a plain relative path'
    if path.startswith('/') or '..' in path.split('/'):   # (what Path(path).parts says, without a Path per path)
        return 'must be relative to the repository and stay inside it (no leading "/", no "..")'
    if path.startswith(':'):
        return 'starts with ":", which is git pathspec magic; use a plain relative path or glob'
    return None


def load_plan(path: Path, plan_schema: dict[str, Any], roles: set[str], *, schema_valid: str | None = None) -> Plan:
    """Read, schema-check and graph-check a plan file; every problem is reported at once.

    The returned plan's `schema_key` records this plan content checked against this schema (and each task
    object that passed); a caller that recorded it may pass it back as `schema_valid` to skip the JSON Schema
    check of the same content, and after an edit to check only the task objects that changed (jsonschema costs
    ~30 us per task: 0.3 s for 10,000). The graph checks always run.
    """
    path = Path(path)
    data, text = read_plan_data(path)
    try:
        digest = _digest(data)
        schema_text = json.dumps(plan_schema, sort_keys=True)
        key = hashlib.sha256(f'{digest}\0{schema_text}'.encode()).hexdigest()
        checked = _checked(schema_valid)
        rest = tasks = None
        if key != checked.get('key'):
            from orch.core.validate import schema_errors  # jsonschema: only when the plan is checked
            if isinstance(data, dict) and isinstance(data.get('tasks'), list):
                rest, tasks = plan_digests(data)
            problems = _schema_problems(data, plan_schema, schema_errors, checked, _short_digest(schema_text),
                                        rest, tasks)
            if problems:
                raise PlanError(problems_message(path, problems, 'see the plan format in the README'))
        problems = graph_problems(data, roles)
    except RecursionError:   # JSON nested deeper than parsing, digesting or checking it can go
        raise PlanError(too_deep_message(str(path), 'plan', json_too_deep_at(text))) from None
    if problems:
        raise PlanError(problems_message(path, problems))
    if rest is None or tasks is None:
        rest, tasks = plan_digests(data)
    record = json.dumps({'key': key, 'schema': _short_digest(schema_text), 'rest': rest, 'count': len(tasks),
                         'tasks': tasks})
    return dataclasses.replace(plan_from_data(data, digest=digest, schema_key=record), task_digests=tuple(tasks),
                               rest_digest=rest)


def _checked(recorded: str | None) -> dict[str, Any]:
    """What an earlier check recorded (Plan.schema_key): its key, and which task objects passed which schema."""
    try:
        found = json.loads(recorded) if recorded else {}
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def _schema_problems(data: Any, schema: dict[str, Any], schema_errors: Any, checked: dict[str, Any],
                     schema_digest: str, rest: str | None, tasks: list[str] | None) -> list[str]:
    """The plan schema's problems with the plan. When the schema checks each task on its own (items_only) and an
    earlier check of the same schema passed the same rest of the plan and as many tasks, only the task objects
    it did not pass are checked (jsonschema costs ~30 us per task); any problem is then found by checking the
    whole plan again, so that its message names the task's place."""
    if rest is not None and tasks is not None and checked.get('schema') == schema_digest \
            and checked.get('rest') == rest and checked.get('count') == len(tasks) and items_only(schema):
        passed = set(checked.get('tasks') or ())
        new = [task for task, digest in zip(data['tasks'], tasks, strict=True) if digest not in passed]
        if not new or not schema_errors({**data, 'tasks': new}, schema):
            return []
    problems: list[str] = schema_errors(data, schema)
    return problems


def plan_digests(data: dict[str, Any]) -> tuple[str, list[str]]:
    """(digest of everything but the tasks, digest of each task's object): equal digests, equal content."""
    rest = {k: v for k, v in data.items() if k != 'tasks'}
    return (_short_digest(json.dumps(rest, sort_keys=True)),
            [_short_digest(json.dumps(task, sort_keys=True)) for task in data['tasks']])


def _short_digest(text: str) -> str:
    return hashlib.blake2b(text.encode('utf-8', 'surrogatepass'), digest_size=16).hexdigest()


def items_only(plan_schema: dict[str, Any]) -> bool:
    """Whether the plan schema checks each task on its own: then a plan whose other tasks and other fields were
    valid is valid when each changed task is (the fast path checks only those). True for a schema whose top level
    and `tasks` array use no keyword that relates tasks or fields to each other (uniqueItems, contains, if/then,
    allOf, dependentSchemas, ...); anything else is checked whole by the full path."""
    top_ok = {'$schema', '$id', '$comment', 'title', 'description', 'type', 'required', 'properties',
              'additionalProperties', '$defs', 'definitions'}
    tasks_ok = {'$comment', 'title', 'description', 'type', 'items', 'minItems', 'maxItems'}   # a count: the same
    tasks = (plan_schema.get('properties') or {}).get('tasks') if isinstance(plan_schema, dict) else None
    return (isinstance(tasks, dict) and set(plan_schema) <= top_ok and set(tasks) <= tasks_ok
            and isinstance(tasks.get('items'), dict) and isinstance(plan_schema.get('additionalProperties', False),
                                                                    bool))


def plan_from_data(data: dict[str, Any], *, digest: str | None = None, schema_key: str = '') -> Plan:
    tasks = tuple(task_from_data(t) for t in data['tasks'])
    return Plan(title=data.get('title', ''), tasks=tasks, digest=digest or _digest(data), schema_key=schema_key)


def task_from_data(t: dict[str, Any]) -> Task:
    """A schema-valid task object of a plan file as a Task."""
    return Task(id=t['id'], role=t['role'], title=t['title'], description=t['description'],
                depends_on=tuple(t.get('depends_on', ())), paths=tuple(t.get('paths', ())),
                acceptance=tuple(t.get('acceptance', ())), checks=tuple(t.get('checks', ())),
                control_files=bool(t.get('control_files', False)), protect=tuple(t.get('protect', ())),
                max_tokens=t.get('max_tokens'))


def _digest(data: object) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def read_plan_data(path: Path) -> tuple[Any, str]:
    """The plan's data and its text; a RecursionError (nesting too deep) is the caller's to report."""
    raw = read_input(path, limit=MAX_PLAN_BYTES, what='plan', fix='check --plan-file', error=PlanError)
    return decode_json_input(raw, path, what='plan', error=PlanError, loads=json_loads_uncollected,
                             utf8='not UTF-8 text: byte {byte} is invalid (a plan is a JSON file; save it as UTF-8)',
                             fix='fix the JSON syntax there; the plan format is in the README')


def graph_problems(data: dict[str, Any], roles: set[str]) -> list[str]:
    """Id, role, dependency and cycle checks on schema-valid plan data."""
    problems: list[str] = []
    tasks = data['tasks']
    seen: dict[str, int] = {}
    for i, task in enumerate(tasks):
        tid = task['id']
        if tid in seen:
            problems.append(f'tasks[{i}].id: duplicate id {tid!r} (first used by tasks[{seen[tid]}]; '
                            'give each task its own id)')
        seen.setdefault(tid, i)
        problems += task_problems(i, task, roles)
    for i, task in enumerate(tasks):
        for j, dep in enumerate(task.get('depends_on', ())):
            if dep not in seen:
                problems.append(f'tasks[{i}].depends_on[{j}]: unknown task {dep!r} '
                                '(add a task with that id or remove the dependency)')
            elif dep == task['id']:
                problems.append(f'tasks[{i}].depends_on[{j}]: task {dep!r} depends on itself (remove it)')
    cycle = find_cycle({t['id']: [d for d in t.get('depends_on', ()) if d in seen] for t in tasks})
    if cycle:
        problems.append(f'tasks: dependency cycle {" -> ".join(cycle)} (remove one of these dependencies)')
    return problems


def task_problems(i: int, task: dict[str, Any], roles: set[str]) -> list[str]:
    """The checks of one schema-valid task on its own: its id, its role, its paths."""
    problems = []
    tid = task['id']
    bad = id_problem(tid)
    if bad:
        problems.append(f'tasks[{i}].id: {tid!r} {bad}')
    if task['role'] not in roles:
        problems.append(f'tasks[{i}].role: unknown role {task["role"]!r} '
                        f'(known: {", ".join(sorted(roles))}; add it under roles: in the config)')
    for key in ('paths', 'protect'):
        for j, path in enumerate(task.get(key, ())):
            bad = path_problem(path)
            if bad:
                problems.append(f'tasks[{i}].{key}[{j}]: {path!r} {bad}')
    return problems


def find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """A cycle as [a, b, ..., a], or None. Iterative, so a 10,000-deep chain is fine."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished
    for root in graph:
        if state.get(root):
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        path: list[str] = []
        while stack:
            node, i = stack.pop()
            if i == 0:
                state[node] = 1
                path.append(node)
            deps = graph.get(node, [])
            if i < len(deps):
                stack.append((node, i + 1))
                nxt = deps[i]
                if state.get(nxt) == 1:
                    return [*path[path.index(nxt):], nxt]
                if not state.get(nxt):
                    stack.append((nxt, 0))
            else:
                state[node] = 2
                path.pop()
    return None


def topological_order(plan: Plan) -> list[Task]:
    """Tasks with every dependency before its dependents, stable in plan order."""
    done: set[str] = set()
    order: list[Task] = []
    for task in plan.tasks:
        _visit(task, plan, done, order)
    return order


def _visit(task: Task, plan: Plan, done: set[str], order: list[Task]) -> None:
    stack = [(task, False)]
    while stack:
        node, expanded = stack.pop()
        if node.id in done:
            continue
        if expanded:
            done.add(node.id)
            order.append(node)
            continue
        stack.append((node, True))
        for dep in reversed(node.depends_on):
            if dep not in done:
                stack.append((plan.by_id[dep], False))
