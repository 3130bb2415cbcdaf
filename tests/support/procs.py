"""Waiting on and looking for processes in tests (zombies, left unreaped by this container's init, count as gone)."""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path


def wait_for(predicate: Callable[[], object], timeout: float = 30.0) -> bool:
    """Poll until `predicate()` holds; True then, AssertionError when `timeout` passes first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    if predicate():
        return True
    raise AssertionError(f'condition not met within {timeout} s')


def unique_nap() -> str:
    """A `sleep` argument no other process has: a sandboxed command's child is found by it (`$!` inside the
    sandbox's PID namespace means nothing out here)."""
    return f'{30 + time.time_ns() % 10**9 / 10**9:.9f}'


def sleeping(nap: str) -> bool:
    """Does a live `sleep <nap>` run, in any PID namespace?"""
    for proc in Path('/proc').glob('[0-9]*'):
        try:
            if (proc / 'cmdline').read_bytes() == f'sleep\0{nap}\0'.encode() and \
                    (proc / 'stat').read_text().rpartition(')')[2].split()[0] != 'Z':
                return True
        except OSError:
            continue
    return False


def pgid_alive(pgid: int) -> bool:
    """Does any process of the group still run?"""
    for stat in Path('/proc').glob('[0-9]*/stat'):
        try:
            fields = stat.read_text().rpartition(')')[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != 'Z':
            return True
    return False


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f'/proc/{pid}/stat').read_text().rpartition(')')[2].split()[0]
    except OSError:
        return False
    return state != 'Z'
