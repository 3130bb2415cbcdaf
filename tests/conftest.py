"""Every test runs with git isolated from the machine and HOME pointing into its tmp dir."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.gitrepo import isolate_git

# The real-Codex fixtures (`standin`) for the end-to-end tests.
pytest_plugins = ('tests.support.realcodex',)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate_git(monkeypatch, tmp_path)
    home = tmp_path / 'home'
    home.mkdir()
    monkeypatch.setenv('HOME', str(home))
    monkeypatch.delenv('GITHUB_STEP_SUMMARY', raising=False)
    monkeypatch.delenv('CODEX_HOME', raising=False)
