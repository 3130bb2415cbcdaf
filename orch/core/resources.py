"""The shipped defaults (.orchestrator/ and rules/), found in the wheel or in a source checkout.

The wheel maps the top-level `.orchestrator/` and `rules/` to `orch/_defaults` and `orch/_rules`
(see pyproject.toml), so the source tree holds one copy. They are data directories without
`__init__.py`, so they are located by path rather than through importlib.resources.
"""
from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent.parent   # orch/


def _data_dir(installed: str, source: str) -> Path:
    path = _PACKAGE / installed
    return path if path.is_dir() else _PACKAGE.parent / source


def defaults_dir() -> Path:
    """The default `.orchestrator/` (orchestrator.yaml, schemas/, prompts/)."""
    return _data_dir('_defaults', '.orchestrator')


def builtin_rules_dir() -> Path:
    return _data_dir('_rules', 'rules')
