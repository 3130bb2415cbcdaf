"""Checks a role schema against Codex's strict structured-output rules before any token is spent.

Codex sends `--output-schema` with `strict: true` and performs no check of its own
(reference/codex-exec.md §3): only the real API rejects a non-strict schema, after the
worker has started. The rules enforced here are those of OpenAI structured outputs.
"""
from __future__ import annotations

from typing import Any

from orch.core.validate import json_path
from orch.core.verdict import for_codex, verdict_problems

# Keywords the strict mode accepts; anything else is refused by the API.
_SUPPORTED = {
    'type', 'properties', 'required', 'additionalProperties', 'items', 'enum', 'const',
    'anyOf', 'description', 'title', '$defs', 'definitions', '$ref', '$schema', 'default',
    'pattern', 'format', 'minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum',
    'multipleOf', 'minItems', 'maxItems', 'examples',
}


def strict_problems(schema: object) -> list[str]:
    """Every strict-mode violation, as `json.path: problem` lines (empty when the schema is fine)."""
    if not isinstance(schema, dict) or schema.get('type') != 'object':
        return ['(top level): the root must be {"type": "object", ...}']
    problems: list[str] = verdict_problems(schema)   # codex-orch's own annotation: checked, and not sent to Codex
    schema = for_codex(schema)
    _walk(schema, [], problems, schema)
    return problems


def _ref_problem(ref: object, root: dict[str, Any]) -> str | None:
    """Only references inside the schema itself (`#/$defs/x`) work: nothing is fetched."""
    if not isinstance(ref, str) or not ref.startswith('#'):
        return f'"$ref" {ref!r} must point inside this schema, like "#/$defs/name"'
    node: object = root
    for part in ref[1:].split('/')[1:] if ref != '#' else []:
        part = part.replace('~1', '/').replace('~0', '~')
        if not isinstance(node, dict) or part not in node:
            return f'"$ref" {ref!r} points to nothing in this schema'
        node = node[part]
    return None


def _walk(node: object, path: list[str | int], problems: list[str], root: dict[str, Any]) -> None:
    if not isinstance(node, dict):
        return
    where = json_path(path)
    for key in node:
        if key not in _SUPPORTED:
            problems.append(f'{where}: keyword {key!r} is not supported by strict structured output')
    if '$ref' in node:
        bad = _ref_problem(node['$ref'], root)
        if bad:
            problems.append(f'{where}: {bad}')
    types = node.get('type')
    is_object = types == 'object' or (isinstance(types, list) and 'object' in types)
    if is_object or 'properties' in node:
        _check_object(node, path, problems, root)
    for key in ('items',):
        if key in node:
            _walk(node[key], [*path, key], problems, root)
    for key in ('anyOf',):
        for i, sub in enumerate(node.get(key) or []):
            _walk(sub, [*path, key, i], problems, root)
    for key in ('$defs', 'definitions'):
        defs = node.get(key)
        for name, sub in (defs.items() if isinstance(defs, dict) else ()):
            _walk(sub, [*path, key, name], problems, root)


def _check_object(node: dict[str, Any], path: list[str | int], problems: list[str], root: dict[str, Any]) -> None:
    where = json_path(path)
    if node.get('additionalProperties') is not False:
        problems.append(f'{where}: objects must set "additionalProperties": false')
    props = node.get('properties') or {}
    required = set(node.get('required') or [])
    for name in props:
        if name not in required:
            problems.append(f'{json_path([*path, "properties", name])}: property must be listed in "required" '
                            '(make it nullable instead of optional)')
    for name, sub in props.items():
        _walk(sub, [*path, 'properties', name], problems, root)
