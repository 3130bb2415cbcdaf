"""Who a process is, and what is left of a process group, read from /proc; and stopping a group
that an earlier codex-orch left behind, but only when it provably is that group.

A process is its pid *and* its start time (field 22 of /proc/<pid>/stat) on this boot, so a reused
pid is never mistaken for ours. The groups codex-orch runs itself are in orch.adapters.procgroup.
Linux first: elsewhere there is no start time, so a stale group is never killed (nothing can be
verified).
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from orch.runstate.atomic import write_json

KILL_GRACE = 1.5      # seconds between SIGTERM and SIGKILL unless a caller says otherwise
POLL = 0.02           # how often a group is looked at while it is being stopped

SIGKILL: int = getattr(signal, 'SIGKILL', signal.SIGTERM)
HAS_KILLPG = hasattr(os, 'killpg')
_PROC = Path('/proc')
HAS_PROCFS = (_PROC / 'self' / 'stat').exists()


# ---------------------------------------------------------------------------------------------
# Who a process is: pid + start time (+ boot), so a reused pid is never mistaken for ours.

def process_start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (clock ticks after boot); None when unknown or no such process."""
    try:
        data = (_PROC / str(pid) / 'stat').read_bytes()
        # comm (field 2) may contain spaces and parentheses: fields after the last ')' start at 3.
        return int(data.rpartition(b')')[2].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _read_boot_id() -> str | None:
    try:
        return (_PROC / 'sys' / 'kernel' / 'random' / 'boot_id').read_text().strip() or None
    except OSError:
        return None


_BOOT_ID = _read_boot_id()


@dataclass(frozen=True)
class Identity:
    """A process as it was when we started it."""
    pid: int
    start_time: int | None
    boot_id: str | None = None

    def matches(self) -> bool:
        """Is `pid` still that process? False whenever it cannot be verified."""
        if self.start_time is None:
            return False
        # Start times count from boot: after a reboot the same pid and ticks may be someone else.
        if self.boot_id is not None and _BOOT_ID is not None and self.boot_id != _BOOT_ID:
            return False
        return process_start_time(self.pid) == self.start_time


def identity_of(pid: int) -> Identity:
    return Identity(pid, process_start_time(pid), _BOOT_ID)


def save_identity(path: Path, identity: Identity) -> None:
    # Written atomically, not synced: a sync only guards against a power cut or a crash of the system, after which
    # the identity is worth nothing (the boot id differs) and no process it names is left.
    write_json(path, asdict(identity), durable=False)


def load_identity(path: Path) -> Identity | None:
    """The identity saved at `path`; a bare pid (the old format) loads without a start time,
    so it never verifies. None when the file is missing or unreadable."""
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if isinstance(data, int) and not isinstance(data, bool):
        return Identity(data, None)
    if not isinstance(data, dict) or not isinstance(data.get('pid'), int):
        return None
    start = data.get('start_time')
    boot = data.get('boot_id')
    return Identity(data['pid'], start if isinstance(start, int) else None,
                    boot if isinstance(boot, str) else None)


def kill_stale(identity: Identity, grace: float = KILL_GRACE) -> bool:
    """Stop the group led by `identity` (left behind by a codex-orch that was killed), but only
    if its leader verifiably is that process. Returns whether it was signalled.

    We are not the leader's parent, so its zombie does not pin the pgid for us. Between SIGTERM
    and SIGKILL the leader may exit and be reaped; the remaining members then still carry the
    pgid, and Linux does not reuse a pid that is still some group's id, so SIGKILL may still go
    to the group as long as the leader's pid is not a *different* live process.
    """
    if not HAS_KILLPG or not identity.matches():
        return False
    pgid = identity.pid
    killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and live_groups({pgid}):
        time.sleep(POLL)
    if identity.matches() or process_start_time(pgid) is None:
        killpg(pgid, SIGKILL)
    return True


# ---------------------------------------------------------------------------------------------
# Signalling a group and seeing whether it still lives

def killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def live_groups(pgids: set[int]) -> set[int]:
    """Which of `pgids` still have a member that is not a zombie (an orphaned zombie may wait
    forever for an init that does not reap; it runs nothing)."""
    present = set()
    for pgid in pgids:
        try:
            os.killpg(pgid, 0)
            present.add(pgid)
        except ProcessLookupError:
            pass
        except PermissionError:
            present.add(pgid)
    if not present or not HAS_PROCFS:
        return present
    live = set()
    for entry in os.scandir(_PROC):
        if not entry.name.isdigit():
            continue
        try:
            fields = (_PROC / entry.name / 'stat').read_bytes().rpartition(b')')[2].split()
            if fields[0] != b'Z' and int(fields[2]) in present:
                live.add(int(fields[2]))
        except (OSError, ValueError, IndexError):
            continue
        if live == present:
            break
    return live
