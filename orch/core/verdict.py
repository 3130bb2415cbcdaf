"""A role's verdict: the field of its answer that judges other work, and the value that passes.

A role schema declares it at its top level, beside the JSON Schema keywords:

    "x-codex-orch-verdict": {"field": "tests_passed", "pass": true}

An answer whose `field` is anything but `pass` (missing included) is a failing verdict: its findings go back
to the work it judges (orch.steps.review). A schema without the annotation keeps the one built-in rule, the
reviewer's `verdict: request_changes` (schemas written before the annotation existed judge as they did).

The annotation is codex-orch's, not the model's: Codex's strict structured output accepts no unknown keyword,
so the schema codex is given is the one without it (`for_codex`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

VERDICT_KEY = 'x-codex-orch-verdict'


@dataclass(frozen=True)
class Verdict:
    field: str
    passing: Any           # the value that passes
    declared: bool = True  # False: the built-in rule (only `verdict: request_changes` fails)

    def fails(self, answer: Any) -> bool:
        if not isinstance(answer, dict):
            return self.declared   # a declared verdict that is not even an object does not pass
        if not self.declared:
            return answer.get(self.field) == 'request_changes'
        value = answer.get(self.field)
        return value != self.passing or type(value) is not type(self.passing)   # 1 is not true

    def wanted(self) -> str:
        """What a passing answer says, for prompts: `verdict` "approve"."""
        return f'`{self.field}` {json.dumps(self.passing)}'

    def given(self, answer: Any) -> str:
        """What the answer said instead: `tests_passed` false."""
        value = answer.get(self.field) if isinstance(answer, dict) else None
        return f'`{self.field}` {json.dumps(value)}' if isinstance(answer, dict) and self.field in answer \
            else f'no `{self.field}`'


LEGACY = Verdict('verdict', 'approve', declared=False)


def verdict_of(schema: Any) -> Verdict:
    """The schema's declared verdict, else the built-in rule (call verdict_problems first: this one trusts it)."""
    note = schema.get(VERDICT_KEY) if isinstance(schema, dict) else None
    if isinstance(note, dict) and isinstance(note.get('field'), str):
        return Verdict(note['field'], note.get('pass'))
    return LEGACY


def fails(answer: Any, schema: Any) -> bool:
    """The answer is a verdict that does not pass (it sends its findings back to the work it judges)."""
    return verdict_of(schema).fails(answer)


def verdict_problems(schema: Any) -> list[str]:
    """What is wrong with the schema's annotation, as `path: problem` lines (empty without one, or when fine)."""
    if not isinstance(schema, dict) or VERDICT_KEY not in schema:
        return []
    where = f'"{VERDICT_KEY}"'
    note = schema[VERDICT_KEY]
    if not isinstance(note, dict) or set(note) != {'field', 'pass'}:
        return [f'{where}: must be {{"field": "<top-level property>", "pass": <the value that passes>}}']
    field, passing = note['field'], note['pass']
    props: dict[str, Any] = schema['properties'] if isinstance(schema.get('properties'), dict) else {}
    if not isinstance(field, str) or field not in props:
        return [f'{where}: "field" must name a top-level property of the schema, got {json.dumps(field)}']
    if passing is None or not isinstance(passing, str | bool | int | float):
        return [f'{where}: "pass" must be a string, a boolean or a number, got {json.dumps(passing)}']
    enum = props[field].get('enum') if isinstance(props[field], dict) else None
    if isinstance(enum, list) and not any(type(e) is type(passing) and e == passing for e in enum):   # true is not 1
        return [f'{where}: "pass" {json.dumps(passing)} is not one of the enum of "{field}"']
    return []


def for_codex(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema as codex gets it: without codex-orch's annotation."""
    return {k: v for k, v in schema.items() if k != VERDICT_KEY}
