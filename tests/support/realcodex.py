"""The real Codex CLI against the local stand-in, for end-to-end tests."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from orch.adapters.codex_bin import find_codex
from orch.standin.server import Standin, write_codex_home


@pytest.fixture
def standin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Standin]:
    binary = find_codex()
    if binary is None:
        pytest.skip('the Codex CLI is not installed (run .ci/run, or npm install in tools/codex-cli)')
    server = Standin()
    env = write_codex_home(tmp_path / 'codex-home', server.base_url)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv('CODEX_BIN', binary)
    try:
        yield server
    finally:
        server.close()


def use_real_codex(repo: Path, extra_yaml: str = '') -> None:
    """Point the host's config at the real binary, with short timeouts for tests."""
    binary = find_codex()
    (repo / '.orchestrator' / 'orchestrator.yaml').write_text(
        f'codex:\n  binary: {binary}\n'
        'defaults:\n  timeout_total: 120\n  timeout_idle: 60\n  timeout_first_event: 60\n  retry_backoff: 0.2\n'
        + extra_yaml)
