"""Process groups of the commands codex-orch runs on the host: workers, gates and services.

This module starts, stops and reaps them. Every command starts in its own session, so it and
everything it starts form one process group that is signalled as a whole (the npm codex launcher
orphans its native binary when only the launcher is killed; a service script leaves its server
behind). The rules, in one place:

- a group is signalled only while its leader is ours and unreaped: the leader's zombie keeps
  the pgid from being reused, so `Group.signal` can never reach a stranger;
- stopping is SIGTERM, a grace for the whole group (a shell may die at once while the server it
  started cleans up), then SIGKILL; when a command ends by itself its leftovers get SIGKILL;
- nothing outlives codex-orch, even after `kill -9` of it (see orch.adapters.procgroup_watchdog);
- a group left behind by an earlier codex-orch is killed only when it provably is that group:
  its leader's pid *and* start time (field 22 of /proc/<pid>/stat) and the boot still match
  (see orch.adapters.procgroup_identity).

Linux first: elsewhere there is no parent-death signal and no start time, so stale groups are
never killed (nothing can be verified), but spawning and stopping work wherever `killpg` exists.
"""
from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Collection, Mapping, Sequence
from typing import IO, Any

# Identity, kill_stale, load_identity, process_start_time and save_identity are re-exported for
# callers that import them from here.
from orch.adapters.procgroup_identity import (  # noqa: F401
    HAS_KILLPG,
    HAS_PROCFS,
    KILL_GRACE,
    POLL,
    SIGKILL,
    Identity,
    identity_of,
    kill_stale,
    killpg,
    live_groups,
    load_identity,
    process_start_time,
    save_identity,
)
from orch.adapters.procgroup_watchdog import Watchdog

CANCEL_POLL = 0.1     # how often run_to_end looks at its cancel event

FileArg = int | IO[Any] | None


# ---------------------------------------------------------------------------------------------
# Parent-death signal for the direct child

def _load_prctl() -> Any:
    try:
        return ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6', use_errno=True).prctl
    except (OSError, AttributeError):
        return None


# Resolved once in the parent: the child between fork and exec must only make the C call.
_PRCTL = _load_prctl() if sys.platform.startswith('linux') else None
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when codex-orch dies, even by SIGKILL.

    SIGTERM rather than SIGKILL: the npm launcher forwards SIGTERM to the native binary it
    spawned, while a SIGKILL of the launcher would orphan it. This reaches the direct child only
    (and fires when the spawning *thread* ends); the watchdog takes care of the rest of the group.
    """
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


# preexec_fn costs the fast vfork path, so only where it does something.
_PREEXEC = die_with_parent if _PRCTL is not None else None


# ---------------------------------------------------------------------------------------------
# Groups

def leader_exited(proc: subprocess.Popen[Any]) -> bool:
    """Has the leader exited? Does NOT reap it: its zombie keeps the pgid from being reused."""
    if proc.returncode is not None:
        return True
    if not hasattr(os, 'waitid'):
        return proc.poll() is not None   # reaps, but there is nothing better here
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


class Group:
    """A command running as the leader of its own session; made by `spawn`, ended by `reap`."""

    def __init__(self, proc: subprocess.Popen[Any], kind: str, grace: float) -> None:
        self.proc = proc
        self.kind = kind
        self.grace = grace
        self.identity = identity_of(proc.pid)
        self._pidfd: int | None = None
        if hasattr(os, 'pidfd_open'):
            try:
                self._pidfd = os.pidfd_open(proc.pid)
            except OSError:   # kernel older than 5.3: polling instead
                self._pidfd = None

    @property
    def pgid(self) -> int:
        return self.proc.pid

    def exited(self) -> bool:
        return leader_exited(self.proc)

    def exit_status(self) -> int | None:
        """The leader's exit status (negative: killed by that signal) without reaping it; None while it runs."""
        if self.proc.returncode is not None:
            return self.proc.returncode
        if not hasattr(os, 'waitid'):
            return self.proc.poll()
        try:
            info = os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return None
        if info is None:
            return None
        return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status

    def wait_exit(self, timeout: float | None) -> bool:
        """Wait until the leader exits (not reaping it) or `timeout` seconds pass; True if it exited."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.exited():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            if self._pidfd is not None:
                poller = select.poll()
                poller.register(self._pidfd, select.POLLIN)
                poller.poll(None if remaining is None else max(remaining * 1000, 1))
            else:
                time.sleep(POLL if remaining is None else min(POLL, remaining))
        return True

    def signal(self, sig: int) -> None:
        """Signal the whole group; a no-op once the leader is reaped (the pgid may be anyone's then)."""
        if self.proc.returncode is not None:
            return
        if HAS_KILLPG:
            killpg(self.pgid, sig)
        else:
            with contextlib.suppress(OSError):
                self.proc.send_signal(sig)

    def alive(self) -> bool:
        """Does any process of the group still run (zombies do not count)?"""
        if self.proc.returncode is not None:
            return False
        if not HAS_PROCFS:   # the leader's own zombie would count as a member: go by the leader
            return not self.exited()
        return bool(live_groups({self.pgid}))

    def terminate(self, grace: float | None = None) -> None:
        """SIGTERM the group, give all of it `grace` seconds, then SIGKILL whatever is left."""
        if self.proc.returncode is not None:
            return
        self.signal(signal.SIGTERM)
        deadline = time.monotonic() + (self.grace if grace is None else grace)
        while time.monotonic() < deadline and self.alive():
            time.sleep(POLL)
        self.signal(SIGKILL)

    def reap(self) -> int:
        """End the group: stop it if the leader still runs, kill its leftovers, reap the leader,
        unregister it. Returns the leader's exit status."""
        if self.proc.returncode is None:
            if not self.exited():
                self.terminate()
            # The leader is a zombie now, so the pgid still names this group: safe to signal.
            self.signal(SIGKILL)
        with _LOCK:   # unregistered and reaped at once: kill_all never signals a reaped pgid
            if _LIVE.get(self.pgid) is self:
                del _LIVE[self.pgid]
                _WATCHDOG.forget(self.pgid)
            code = self.proc.wait()
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        return code


# Reentrant: a signal handler calling kill_all() may interrupt the main thread while it holds
# the lock (single-threaded runs); a plain Lock would deadlock there.
_LOCK = threading.RLock()
_LIVE: dict[int, Group] = {}


def spawn(argv: Sequence[str], *, kind: str, cwd: str | os.PathLike[str] | None = None,
          env: Mapping[str, str] | None = None, stdin: FileArg = subprocess.DEVNULL,
          stdout: FileArg = None, stderr: FileArg = None, bufsize: int = -1,
          grace: float = KILL_GRACE) -> Group:
    """Start `argv` as the leader of a new session, registered until `Group.reap()`.

    `kind` ('worker', 'gate', 'service', ...) lets `kill_all` pick; `grace` is what the watchdog
    allows the group between SIGTERM and SIGKILL when codex-orch dies. Raises OSError when the
    command cannot be started.
    """
    with _LOCK:   # registered before any other thread can look: kill_all sees it
        proc = subprocess.Popen(list(argv), cwd=cwd, env=env, stdin=stdin, stdout=stdout, stderr=stderr,
                                bufsize=bufsize, start_new_session=True, preexec_fn=_PREEXEC)
        group = Group(proc, kind, grace)
        _LIVE[proc.pid] = group
        _WATCHDOG.watch(group)
    return group


def live_pgids(kinds: Collection[str] | None = None) -> list[int]:
    with _LOCK:
        return [pgid for pgid, g in _LIVE.items() if kinds is None or g.kind in kinds]


def kill_all(grace: float = KILL_GRACE, kinds: Collection[str] | None = None) -> int:
    """SIGTERM every live group (of `kinds`), wait up to `grace`, SIGKILL what is left; returns how many.

    Safe from another thread or a signal handler: the groups stay registered (and unreaped) until
    their owners reap them, and only still-registered groups are signalled.
    """
    with _LOCK:
        groups = [g for g in _LIVE.values() if kinds is None or g.kind in kinds]
        for group in groups:
            group.signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _any_alive(groups):
        time.sleep(0.05)
    with _LOCK:
        for group in groups:
            if _LIVE.get(group.pgid) is group:
                group.signal(SIGKILL)
    return len(groups)


def _any_alive(groups: list[Group]) -> bool:
    with _LOCK:
        registered = {g.pgid for g in groups if _LIVE.get(g.pgid) is g and g.proc.returncode is None}
        return bool(registered and live_groups(registered))


def run_to_end(argv: Sequence[str], *, cwd: str | os.PathLike[str] | None, env: Mapping[str, str] | None,
               stdout: FileArg, timeout: float | None, cancel: threading.Event | None = None,
               grace: float = KILL_GRACE, stderr: FileArg = subprocess.STDOUT) -> int | None:
    """Run a command (a gate) to its end: stdin closed, stderr into `stdout` (unless `stderr` says where).

    Returns its exit status (negative: killed by that signal), or None when it did not end by
    itself: `timeout` seconds passed or `cancel` was set (the group then gets SIGTERM, `grace`,
    SIGKILL). Whatever it left running in the background is killed when it ends, and on an
    exception (Ctrl-C) the whole group is stopped before it propagates. Raises OSError when the
    command cannot be started.
    """
    group = spawn(argv, kind='gate', cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=stdout,
                  stderr=stderr, grace=grace)
    deadline = None if timeout is None else time.monotonic() + timeout
    ended = False
    try:
        while not ended:
            if cancel is not None and cancel.is_set():
                break
            wait = CANCEL_POLL if cancel is not None else None
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                wait = remaining if wait is None else min(wait, remaining)
            ended = group.wait_exit(wait)
    finally:
        code = group.reap()
    return code if ended else None


_WATCHDOG = Watchdog(_LIVE)


def _at_exit() -> None:
    kill_all()
    with _LOCK:
        _WATCHDOG.close(wait=1.0)


atexit.register(_at_exit)
