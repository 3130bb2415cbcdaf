"""How a step fails on purpose: the reason is recorded in the task's state.json first, then raised."""
from __future__ import annotations

import time
from pathlib import Path

from orch.runstate import state


class Failed(Exception):
    """An expected failure of a step, already recorded; the doit adapter turns it into doit's TaskFailed."""


def fail(task_dir: Path, reason: str) -> Failed:
    state.update_state(task_dir, status='failed', reason=reason, ended_at=time.time())
    return Failed(reason)
