"""orch.core.schema_lint: Codex strict structured-output rules, checked before any token is spent (exact messages);
orch.core.validate.load_json_schema: a role schema that is not a JSON Schema at all."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from orch.core.schema_lint import strict_problems
from orch.core.validate import load_json_schema
from orch.errors import SchemaError

pytestmark = pytest.mark.unit   # the pure core: no processes, no git

SCHEMAS = Path(__file__).resolve().parents[1] / '.orchestrator' / 'schemas'
ADDITIONAL = 'objects must set "additionalProperties": false'
REQUIRED = 'property must be listed in "required" (make it nullable instead of optional)'


def obj(**props: dict) -> dict:
    return {'type': 'object', 'additionalProperties': False, 'required': list(props), 'properties': props}


@pytest.mark.parametrize('role', ['navigator', 'implementer', 'tester', 'reviewer'])
def test_shipped_role_schemas_are_strict(role: str) -> None:
    assert strict_problems(load_json_schema(SCHEMAS / f'{role}.json')) == []


@pytest.mark.parametrize('schema, problems', [
    (obj(a={'type': 'string'}), []),
    ({'type': 'array'}, ['(top level): the root must be {"type": "object", ...}']),
    ([], ['(top level): the root must be {"type": "object", ...}']),
    ({'type': 'object', 'properties': {}}, [f'(top level): {ADDITIONAL}']),
    ({**obj(a={'type': 'string'}), 'additionalProperties': True}, [f'(top level): {ADDITIONAL}']),
    ({**obj(a={'type': 'string'}, b={'type': 'integer'}), 'required': ['a']}, [f'properties.b: {REQUIRED}']),
    (obj(a={'type': 'array', 'items': {'type': 'object', 'properties': {'x': {'type': 'string'}}}}),
     [f'properties.a.items: {ADDITIONAL}', f'properties.a.items.properties.x: {REQUIRED}']),
    (obj(a={'anyOf': [{'type': 'string'}, {'type': 'object', 'properties': {}}]}),
     [f'properties.a.anyOf[1]: {ADDITIONAL}']),
    (obj(a={'type': ['object', 'null'], 'properties': {}, 'additionalProperties': False, 'required': []}), []),
    (obj(a={'type': 'string', 'minLength': 1, 'oneOf': []}),
     ["properties.a: keyword 'minLength' is not supported by strict structured output",
      "properties.a: keyword 'oneOf' is not supported by strict structured output"]),
    ({**obj(a={'$ref': '#/$defs/item'}), '$defs': {'item': {'type': 'object', 'properties': {}}}},
     [f'$defs.item: {ADDITIONAL}']),
    ({**obj(a={'$ref': '#/$defs/item'}), '$defs': {'item': {'type': 'string'}}}, []),
    (obj(a={'$ref': '#'}), []),
    (obj(a={'$ref': '#/$defs/nope'}), ['properties.a: "$ref" \'#/$defs/nope\' points to nothing in this schema']),
    (obj(a={'$ref': 'https://example.com/a.json'}),
     ['properties.a: "$ref" \'https://example.com/a.json\' must point inside this schema, like "#/$defs/name"']),
    (obj(a={'$ref': 5}), ['properties.a: "$ref" 5 must point inside this schema, like "#/$defs/name"']),
    ({**obj(), 'definitions': 5}, []),
])
def test_strict_problems(schema: object, problems: list[str]) -> None:
    assert strict_problems(schema) == problems


FIX = 'fix the schema; `codex-orch init --force` restores the shipped defaults, overwriting edits'


@pytest.mark.parametrize('text, message', [
    ('{"type": "object",', f'line 1 column 19: not valid JSON: Expecting property name enclosed in double quotes '
                           f'({FIX})'),
    ('[1]', f'(top level): a JSON Schema must be an object, got list ({FIX})'),
    ('{"type": "objekt"}', f"type: not a valid JSON Schema: 'objekt' is not valid under any of the given schemas "
                           f'({FIX})'),
    ('{"type": "object", "properties": {"a": {"pattern": "("}}}',
     f"properties.a.pattern: not a valid JSON Schema: '(' is not a 'regex' ({FIX})"),
    ('{"$schema": 5}', f'$schema: must be a string (a JSON Schema dialect URI) ({FIX})'),
])
def test_not_a_json_schema(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / 'implementer.json'
    path.write_text(text)
    with pytest.raises(SchemaError) as exc:
        load_json_schema(path)
    assert str(exc.value) == f'{path}: {message}'


def test_missing_and_unreadable_schema(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match=r'x\.json: schema file not found \(run `codex-orch init` to restore'):
        load_json_schema(tmp_path / 'x.json')
    (tmp_path / 'bin.json').write_bytes(b'\xff\xfe')
    with pytest.raises(SchemaError, match=r'bin\.json: cannot read schema: .* \(save it as UTF-8 JSON\)$'):
        load_json_schema(tmp_path / 'bin.json')
    with pytest.raises(SchemaError, match=r'cannot read schema'):
        load_json_schema(tmp_path)


def test_schema_of_the_plan_is_a_valid_schema() -> None:
    schema = load_json_schema(SCHEMAS / 'plan.json')
    assert json.loads((SCHEMAS / 'plan.json').read_text()) == schema
