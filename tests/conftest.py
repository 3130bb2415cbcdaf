"""Every test runs with git isolated from the machine and HOME (and the user cache directory) in its tmp dir."""
from __future__ import annotations

import signal
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
    # the machine's result cache (orch.adapters.cache_local) of each test is its own, never the user's
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg-cache'))
    monkeypatch.delenv('GITHUB_STEP_SUMMARY', raising=False)
    monkeypatch.delenv('CODEX_HOME', raising=False)


@pytest.fixture(autouse=True)
def _default_interrupt() -> None:
    """Ctrl-C raises KeyboardInterrupt in every test, as in a terminal, whatever an earlier test in the same worker
    process left (a library may install its own SIGINT handler, or ignore it: an ignored SIGINT would be inherited by
    the codex-orch processes a test starts, and a handler of ours is reset to the default in them)."""
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        signal.signal(signal.SIGINT, signal.default_int_handler)
