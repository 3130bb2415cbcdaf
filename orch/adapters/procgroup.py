"""Process groups of the commands codex-orch runs on the host: workers, gates and services.

Every command starts in its own session, so it and everything it starts form one process group
that is signalled as a whole (the npm codex launcher orphans its native binary when only the
launcher is killed; a service script leaves its server behind). The rules, in one place:

- a group is signalled only while its leader is ours and unreaped: the leader's zombie keeps
  the pgid from being reused, so `Group.signal` can never reach a stranger;
- stopping is SIGTERM, a grace for the whole group (a shell may die at once while the server it
  started cleans up), then SIGKILL; when a command ends by itself its leftovers get SIGKILL;
- nothing outlives codex-orch, even after `kill -9` of it (see `_Watchdog`);
- a group left behind by an earlier codex-orch is killed only when it provably is that group:
  its leader's pid *and* start time (field 22 of /proc/<pid>/stat) and the boot still match.

Linux first: elsewhere there is no parent-death signal and no start time, so stale groups are
never killed (nothing can be verified), but spawning and stopping work wherever `killpg` exists.
"""
from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from orch.runstate.atomic import write_json

KILL_GRACE = 1.5      # seconds between SIGTERM and SIGKILL unless a caller says otherwise
POLL = 0.02           # how often a group is looked at while it is being stopped
CANCEL_POLL = 0.1     # how often run_to_end looks at its cancel event

SIGKILL: int = getattr(signal, 'SIGKILL', signal.SIGTERM)
_HAS_KILLPG = hasattr(os, 'killpg')
_PROC = Path('/proc')
_HAS_PROCFS = (_PROC / 'self' / 'stat').exists()

FileArg = int | IO[Any] | None


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
    write_json(path, asdict(identity))


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
    if not _HAS_KILLPG or not identity.matches():
        return False
    pgid = identity.pid
    _killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _live_groups({pgid}):
        time.sleep(POLL)
    if identity.matches() or process_start_time(pgid) is None:
        _killpg(pgid, SIGKILL)
    return True


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
        if _HAS_KILLPG:
            _killpg(self.pgid, sig)
        else:
            with contextlib.suppress(OSError):
                self.proc.send_signal(sig)

    def alive(self) -> bool:
        """Does any process of the group still run (zombies do not count)?"""
        if self.proc.returncode is not None:
            return False
        if not _HAS_PROCFS:   # the leader's own zombie would count as a member: go by the leader
            return not self.exited()
        return bool(_live_groups({self.pgid}))

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
        return bool(registered and _live_groups(registered))


def run_to_end(argv: Sequence[str], *, cwd: str | os.PathLike[str] | None, env: Mapping[str, str] | None,
               stdout: FileArg, timeout: float | None, cancel: threading.Event | None = None,
               grace: float = KILL_GRACE) -> int | None:
    """Run a command (a gate) to its end: stdin closed, stderr into `stdout`.

    Returns its exit status (negative: killed by that signal), or None when it did not end by
    itself: `timeout` seconds passed or `cancel` was set (the group then gets SIGTERM, `grace`,
    SIGKILL). Whatever it left running in the background is killed when it ends, and on an
    exception (Ctrl-C) the whole group is stopped before it propagates. Raises OSError when the
    command cannot be started.
    """
    group = spawn(argv, kind='gate', cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=stdout,
                  stderr=subprocess.STDOUT, grace=grace)
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


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _live_groups(pgids: set[int]) -> set[int]:
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
    if not present or not _HAS_PROCFS:
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


# ---------------------------------------------------------------------------------------------
# The watchdog: nothing outlives codex-orch, not even after `kill -9` of it.
#
# PR_SET_PDEATHSIG reaches only the direct child, and only with SIGTERM (see die_with_parent):
# a grandchild (the native codex binary under the npm launcher, a server a service script put in
# the background, a gate's leftover) survives it, and a child that ignores SIGTERM survives too.
# So each codex-orch process has one tiny watchdog process, started with the first group. It reads
# a pipe whose only write end codex-orch holds (close-on-exec, so no child inherits it): "+ pgid
# start-time grace" when a group starts, "- pgid" before it is reaped. When codex-orch dies, however
# it dies, the kernel closes that write end; the watchdog reads EOF and stops every group still
# listed: SIGTERM, the group's grace, SIGKILL. One per codex-orch rather than one per group: a
# Python start (~20 ms) once per run instead of per worker and gate, and a single pipe to maintain.
# It runs in its own session, so a Ctrl-C or hang-up aimed at the terminal cannot take it down
# before it has done its job. A group is skipped when its leader's pid now belongs to a process
# with another start time (reused); a leader already reaped by init leaves members that still carry
# the pgid, which Linux does not hand out again while they live, so those are signalled.

_WATCHDOG_CODE = r'''# codex-orch watchdog (orch/adapters/procgroup.py)
import os, signal, time
for s in (signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGTSTP):
    signal.signal(s, signal.SIG_IGN)
groups, pending = {}, b''
while True:
    try:
        chunk = os.read(0, 65536)
    except OSError:
        break
    if not chunk:
        break
    *lines, pending = (pending + chunk).split(b'\n')
    for line in lines:
        f = line.split()
        try:
            if len(f) == 4 and f[0] == b'+':
                groups[int(f[1])] = (None if f[2] == b'-' else int(f[2]), float(f[3]))
            elif len(f) == 2 and f[0] == b'-':
                groups.pop(int(f[1]), None)
        except ValueError:
            pass

def start_time(pid):
    try:
        with open('/proc/%d/stat' % pid, 'rb') as fh:
            return int(fh.read().rpartition(b')')[2].split()[19])
    except (OSError, ValueError, IndexError):
        return None

def ours(pgid, started):
    now = start_time(pgid)
    return started is None or now is None or now == started

def killpg(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except OSError:
        pass

def live(pgids):
    present = set()
    for pgid in pgids:
        try:
            os.killpg(pgid, 0)
            present.add(pgid)
        except ProcessLookupError:
            pass
        except OSError:
            present.add(pgid)
    if not present or not os.path.exists('/proc/self/stat'):
        return present
    found = set()
    for name in os.listdir('/proc'):
        if name.isdigit():
            try:
                with open('/proc/%s/stat' % name, 'rb') as fh:
                    f = fh.read().rpartition(b')')[2].split()
                if f[0] != b'Z' and int(f[2]) in present:
                    found.add(int(f[2]))
            except (OSError, ValueError, IndexError):
                pass
    return found

left = {pgid: (started, grace) for pgid, (started, grace) in groups.items() if ours(pgid, started)}
for pgid in left:
    killpg(pgid, signal.SIGTERM)
began = time.monotonic()
while left:
    running = live(set(left))
    elapsed = time.monotonic() - began
    for pgid, (started, grace) in list(left.items()):
        if pgid not in running:
            del left[pgid]
        elif elapsed >= grace:
            if ours(pgid, started):
                killpg(pgid, signal.SIGKILL)
            del left[pgid]
    if left:
        time.sleep(0.05)
'''


class _Watchdog:
    def __init__(self) -> None:
        self._fd: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._owner: int | None = None
        self._broken = False

    def watch(self, group: Group) -> None:
        self._send(_watch_line(group))

    def forget(self, pgid: int) -> None:
        self._send(f'- {pgid}\n')

    def close(self, wait: float) -> None:
        """Let the watchdog go (it stops what is still listed) and reap it if it is quick."""
        if self._fd is not None and self._owner == os.getpid():
            os.close(self._fd)
            self._fd = None
            if self._proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._proc.wait(timeout=wait)

    def _send(self, line: str) -> None:
        """Called with _LOCK held, so lines arrive in the order the groups started and ended."""
        if self._owner != os.getpid():
            # First use, or a forked copy of codex-orch whose inherited pipe is the parent's.
            if self._fd is not None:
                os.close(self._fd)
            self._fd = self._proc = None
            self._owner = os.getpid()
        if self._fd is None and not self._start():
            return
        assert self._fd is not None
        try:
            os.write(self._fd, line.encode())   # < PIPE_BUF: atomic
        except OSError:
            # It died (someone killed it): start another and tell it every live group.
            os.close(self._fd)
            self._fd = None
            if self._proc is not None:
                self._proc.poll()   # reap the dead one
            if self._start():
                for group in _LIVE.values():
                    self._write(_watch_line(group))

    def _write(self, line: str) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.write(self._fd, line.encode())

    def _start(self) -> bool:
        if self._broken or not sys.executable or not _HAS_KILLPG:
            return False
        read_end, write_end = os.pipe()   # both close-on-exec (PEP 446): no child inherits them
        try:
            # -I -S: no site, no environment, no user code; just the stdlib loop above.
            self._proc = subprocess.Popen([sys.executable, '-I', '-S', '-c', _WATCHDOG_CODE], stdin=read_end,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                          start_new_session=True)
        except OSError:
            os.close(write_end)
            self._broken = True   # PDEATHSIG still covers the direct children
            return False
        finally:
            os.close(read_end)
        self._fd = write_end
        self._owner = os.getpid()
        return True


def _watch_line(group: Group) -> str:
    start = group.identity.start_time
    return f'+ {group.pgid} {"-" if start is None else start} {group.grace:g}\n'


_WATCHDOG = _Watchdog()


def _at_exit() -> None:
    kill_all()
    with _LOCK:
        _WATCHDOG.close(wait=1.0)


atexit.register(_at_exit)
