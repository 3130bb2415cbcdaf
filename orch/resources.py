"""The shipped defaults (.orchestrator/ and rules/), found in the wheel or in a source checkout."""
from __future__ import annotations

from importlib import resources
from pathlib import Path


def _package_dir(package: str, fallback: str) -> Path:
    try:
        path = Path(str(resources.files(package)))
        if path.is_dir():
            return path
    except ModuleNotFoundError:
        pass
    # Running from a source tree that was not installed: the top-level folders themselves.
    return Path(__file__).resolve().parent.parent / fallback


def defaults_dir() -> Path:
    """The default `.orchestrator/` (orchestrator.yaml, schemas/, prompts/)."""
    return _package_dir('orch._defaults', '.orchestrator')


def builtin_rules_dir() -> Path:
    return _package_dir('orch._rules', 'rules')
