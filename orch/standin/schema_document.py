"""A JSON document valid for a JSON Schema: what the model stand-in answers when no answer is scripted.

Handles what role schemas use (objects, arrays, enums, const, bounds, anyOf/oneOf/allOf,
nullable types, local $ref) and prefers human-looking values: a good verdict for a `status`,
a sentence for a `summary`, the files the stand-in edited for a `files_changed`.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

SUMMARY_TEXT = 'The stand-in model completed the task.'
MAX_SCHEMA_DEPTH = 32
# Without a usable schema (none given, or not an object): the smallest answer the roles accept.
FALLBACK_DOCUMENT: dict[str, str] = {'status': 'done', 'summary': 'ok'}

_FILE_LIST_NAMES = frozenset({'files_changed', 'changed_files', 'files_modified', 'modified_files',
                              'files_touched', 'touched_files', 'files', 'paths'})
_VERDICT_NAMES = frozenset({'status', 'verdict', 'decision', 'outcome', 'result', 'state'})
_GOOD_VERDICTS = ('done', 'pass', 'passed', 'approve', 'approved', 'success', 'ok', 'complete',
                  'completed')


def build_document(schema: object, *, files_changed: Sequence[str] = ()) -> Any:
    """A JSON value that validates against schema, with friendly values where names hint at them.

    Handles the schema subset output schemas use: object/properties/required/
    additionalProperties, arrays, enums, const, scalar types with simple bounds, anyOf/oneOf
    (first usable branch), allOf, nullable type lists and local `$ref`s.
    """
    if not isinstance(schema, dict) or not schema:
        return dict(FALLBACK_DOCUMENT)
    return _DocumentBuilder(schema, tuple(files_changed)).build(schema, '', 0)


class _DocumentBuilder:
    def __init__(self, root: dict[str, Any], files: tuple[str, ...]) -> None:
        self.root = root
        self.files = files

    def build(self, schema: object, name: str, depth: int) -> Any:
        if not isinstance(schema, dict) or depth > MAX_SCHEMA_DEPTH:
            return None
        if isinstance(schema.get('$ref'), str):
            return self.build(self._resolve(schema['$ref']), name, depth + 1)
        if 'const' in schema:
            return schema['const']
        if isinstance(schema.get('enum'), list) and schema['enum']:
            return _pick_enum(schema['enum'], name)
        if isinstance(schema.get('allOf'), list):
            return self.build(_merge_all_of(schema), name, depth + 1)
        for key in ('anyOf', 'oneOf'):
            branches = schema.get(key)
            if isinstance(branches, list) and branches:
                return self.build(_first_non_null(branches), name, depth + 1)
        kind = _type_of(schema)
        if kind == 'object':
            return self._object(schema, depth)
        if kind == 'array':
            return self._array(schema, name, depth)
        if kind == 'string':
            return _string(schema, name)
        if kind == 'integer':
            return math.ceil(_number(schema))
        if kind == 'number':
            return _number(schema)
        if kind == 'boolean':
            return True
        return None

    def _resolve(self, ref: str) -> object:
        # Only local JSON pointers: output schemas are self-contained files.
        if not ref.startswith('#'):
            return {}
        node: object = self.root
        for part in ref[1:].split('/'):
            if not part:
                continue
            part = part.replace('~1', '/').replace('~0', '~')
            if isinstance(node, dict):
                node = node.get(part, {})
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return {}
        return node

    def _object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        declared = schema.get('properties')
        props: dict[str, Any] = declared if isinstance(declared, dict) else {}
        required = schema.get('required')
        names = [n for n in required if isinstance(n, str)] if isinstance(required, list) \
            else list(props)
        extra = schema.get('additionalProperties')
        out: dict[str, Any] = {}
        for prop in names:
            sub = props.get(prop, extra if isinstance(extra, dict) else {})
            out[prop] = self.build(sub, prop, depth + 1)
        return out

    def _array(self, schema: dict[str, Any], name: str, depth: int) -> list[Any]:
        items = schema.get('items')
        prefix = schema.get('prefixItems')
        if isinstance(prefix, list):
            return [self.build(s, name, depth + 1) for s in prefix]
        if isinstance(items, list):  # draft-4 tuple form
            return [self.build(s, name, depth + 1) for s in items]
        if self.files and _is_file_list(name, items):
            limit = schema.get('maxItems')
            return list(self.files[:limit] if isinstance(limit, int) else self.files)
        count = schema.get('minItems', 0)
        count = count if isinstance(count, int) and count > 0 else 0
        return [self.build(items if isinstance(items, dict) else {}, name, depth + 1)
                for _ in range(count)]


def _type_of(schema: dict[str, Any]) -> str:
    kind = schema.get('type')
    if isinstance(kind, list):
        usable = [k for k in kind if isinstance(k, str) and k != 'null']
        return usable[0] if usable else 'null'
    if isinstance(kind, str):
        return kind
    # Untyped: infer from the keywords present; a bare `{}` accepts anything, a string is fine.
    if 'properties' in schema or 'required' in schema:
        return 'object'
    if 'items' in schema or 'prefixItems' in schema:
        return 'array'
    return 'string'


def _first_non_null(branches: list[object]) -> object:
    for branch in branches:
        if isinstance(branch, dict) and branch.get('type') != 'null':
            return branch
    return branches[0]


def _merge_all_of(schema: dict[str, Any]) -> dict[str, Any]:
    """Shallow merge of allOf parts; properties and required are united, which covers the
    usual `allOf: [{$ref base}, {extra properties}]` pattern."""
    merged: dict[str, Any] = {k: v for k, v in schema.items() if k != 'allOf'}
    for part in schema['allOf']:
        if not isinstance(part, dict):
            continue
        for key, value in part.items():
            if key == 'properties' and isinstance(value, dict):
                merged['properties'] = {**merged.get('properties', {}), **value}
            elif key == 'required' and isinstance(value, list):
                merged['required'] = list(dict.fromkeys([*merged.get('required', []), *value]))
            else:
                merged.setdefault(key, value)
    return merged


def _pick_enum(values: list[object], name: str) -> object:
    if name.lower() in _VERDICT_NAMES:
        lowered = {str(v).lower(): v for v in values}
        for good in _GOOD_VERDICTS:
            if good in lowered:
                return lowered[good]
    return values[0]


def _is_file_list(name: str, items: object) -> bool:
    if not isinstance(items, dict) or _type_of(items) != 'string':
        return False
    lowered = name.lower()
    return lowered in _FILE_LIST_NAMES or 'file' in lowered


def _string(schema: dict[str, Any], name: str) -> str:
    lowered = name.lower()
    if lowered in ('summary', 'message', 'description', 'explanation', 'notes', 'reason'):
        text = SUMMARY_TEXT
    elif schema.get('format') == 'date-time':
        text = '2026-01-01T00:00:00Z'
    elif name:
        text = f'{name} from the stand-in'
    else:
        text = 'ok'
    min_len = schema.get('minLength')
    if isinstance(min_len, int) and len(text) < min_len:
        text = text + '.' * (min_len - len(text))
    max_len = schema.get('maxLength')
    if isinstance(max_len, int) and len(text) > max_len:
        text = text[:max_len]
    return text


def _number(schema: dict[str, Any]) -> float | int:
    """0, moved into [minimum, maximum] and off exclusive bounds."""
    def bound(key: str) -> float | int | None:
        value = schema.get(key)
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    value: float | int = 0
    low, high, ex_low, ex_high = (bound('minimum'), bound('maximum'),
                                  bound('exclusiveMinimum'), bound('exclusiveMaximum'))
    if low is not None and value < low:
        value = low
    if ex_low is not None and value <= ex_low:
        value = ex_low + 1
    if high is not None and value > high:
        value = high
    if ex_high is not None and value >= ex_high:
        value = ex_high - 1
    return value
