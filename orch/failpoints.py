"""Fault injection for the crash tests: `ORCH_TEST_CRASH_AT=<point>[:<detail>]` kills codex-orch there.

Each named point is one line in the code (`crash_point('after-commit', task.id)`); with the variable
unset (always, outside tests) it costs one dictionary lookup. The process dies by SIGKILL, like a
`kill -9` or a power cut at that exact moment: no cleanup, no atexit, no finally.
"""
from __future__ import annotations

import os
import signal

ENV = 'ORCH_TEST_CRASH_AT'


def crash_point(name: str, detail: str = '') -> None:
    wanted = os.environ.get(ENV)
    if wanted and wanted in (name, f'{name}:{detail}'):
        os.kill(os.getpid(), signal.SIGKILL)
