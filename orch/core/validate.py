"""Turning validation problems (jsonschema, pydantic) into `place: message` lines."""
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema
from jsonschema.exceptions import SchemaError as _JsonSchemaError

from orch.core.files import decode_json_input, json_depth_exceeds, json_too_deep_at, read_input, too_deep_message
from orch.errors import SchemaError

if TYPE_CHECKING:
    from pydantic import ValidationError


def json_path(parts: Iterable[str | int]) -> str:
    """Render a location like ['tasks', 1, 'depends_on', 0] as tasks[1].depends_on[0]."""
    out = ''
    for part in parts:
        if isinstance(part, int):
            out += f'[{part}]'
        else:
            out += f'.{part}' if out else str(part)
    return out or '(top level)'


def _short(value: object, limit: int = 60) -> str:
    """A value quoted in a message, at most `limit` characters. Encoded lazily and only as far as shown
    (a YAML alias bomb expands to billions of items when serialised whole), and total: a YAML date is
    not JSON, and an alias can make a list contain itself."""
    if isinstance(value, str):
        text = repr(value)
    else:
        text = ''
        try:
            for chunk in json.JSONEncoder(ensure_ascii=False, default=str).iterencode(value):
                text += chunk
                if len(text) > limit:
                    break
        except (ValueError, RecursionError):   # a list or mapping containing itself
            text = text + '...' if text else type(value).__name__
    return text if len(text) <= limit else text[: limit - 3] + '...'


def schema_errors(instance: Any, schema: dict[str, Any], limit: int = 20) -> list[str]:
    """Every violation of `schema` by `instance`, as `path: message` lines (stable order)."""
    validator_cls = jsonschema.validators.validator_for(schema)
    validator = validator_cls(schema)
    errors = sorted(validator.iter_errors(instance), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    lines = []
    for err in errors[:limit]:
        # jsonschema quotes the offending value; a 10 MB string must not become a 10 MB message.
        message = err.message if len(err.message) <= 200 else err.message[:197] + '...'
        lines.append(f'{json_path(err.absolute_path)}: {message}')
    if len(errors) > limit:
        lines.append(f'... and {len(errors) - limit} more')
    return lines


def pydantic_errors(exc: ValidationError) -> list[str]:
    """pydantic ValidationError -> `path: message` lines."""
    lines = []
    for err in exc.errors():
        loc = json_path(err['loc'])
        if err['type'] == 'extra_forbidden':
            lines.append(f'{loc}: unknown key (remove it or check its spelling)')
        elif err['type'] == 'missing':
            lines.append(f'{loc}: required key is missing')
        else:
            msg = err['msg'].removeprefix('Value error, ')   # our own validators' messages read as they are
            lines.append(f'{loc}: {msg} (got {_short(err.get("input"))})')
    return lines


_SCHEMA_FIX = 'fix the schema; `codex-orch init --force` restores the shipped defaults, overwriting edits'


MAX_SCHEMA_BYTES = 5 * 1024 * 1024


def load_json_schema(path: Path) -> dict[str, Any]:
    """Read a JSON Schema file and check it is itself a valid schema."""
    raw = read_input(path, limit=MAX_SCHEMA_BYTES, what='schema', error=SchemaError,
                     missing='run `codex-orch init` to restore the defaults',
                     fix='codex-orch cannot read schema from anything but a regular file: put the JSON Schema '
                         'there; `codex-orch init --force` restores the shipped defaults')
    schema, text = decode_json_input(raw, path, what='schema', error=SchemaError, fix=_SCHEMA_FIX,
                                     utf8='cannot read schema: not UTF-8 text: byte {byte} is invalid '
                                          '(save it as UTF-8 JSON)')
    if json_depth_exceeds(schema):   # checking a schema recurses through it: bounded here, deterministically
        raise SchemaError(too_deep_message(str(path), 'schema', json_too_deep_at(text)))
    if not isinstance(schema, dict):
        raise SchemaError(f'{path}: (top level): a JSON Schema must be an object, got {type(schema).__name__} '
                          f'({_SCHEMA_FIX})')
    if not isinstance(schema.get('$schema', ''), str):
        raise SchemaError(f'{path}: $schema: must be a string (a JSON Schema dialect URI) ({_SCHEMA_FIX})')
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except RecursionError:
        raise SchemaError(too_deep_message(str(path), 'schema')) from None
    except _JsonSchemaError as exc:
        message = exc.message if len(exc.message) <= 200 else exc.message[:197] + '...'
        raise SchemaError(f'{path}: {json_path(exc.absolute_path)}: not a valid JSON Schema: {message} '
                          f'({_SCHEMA_FIX})') from exc
    return schema
