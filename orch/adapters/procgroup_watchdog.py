"""The watchdog: one small process per codex-orch that stops every group still running when
codex-orch dies, however it dies (even by `kill -9`). orch.adapters.procgroup tells it which
groups run; this module is the process and the pipe to it.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

from orch.adapters.procgroup_identity import HAS_KILLPG

if TYPE_CHECKING:
    from orch.adapters.procgroup import Group

# Nothing outlives codex-orch, not even after `kill -9` of it.
#
# PR_SET_PDEATHSIG reaches only the direct child, and only with SIGTERM (see
# procgroup.die_with_parent): a grandchild (the native codex binary under the npm launcher, a
# server a service script put in the background, a gate's leftover) survives it, and a child that
# ignores SIGTERM survives too.
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

_WATCHDOG_CODE = r'''# codex-orch watchdog (orch/adapters/procgroup_watchdog.py)
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


class Watchdog:
    """The watchdog of this codex-orch process, started with the first group it is told about.

    `live` is procgroup's registry of live groups (read with procgroup's lock held), so that a
    watchdog started again after the first one was killed is told about every group.
    """

    def __init__(self, live: Mapping[int, Group]) -> None:
        self._live = live
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
        """Called with procgroup's lock held, so lines arrive in the order the groups started and ended."""
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
                for group in self._live.values():
                    self._write(_watch_line(group))

    def _write(self, line: str) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.write(self._fd, line.encode())

    def _start(self) -> bool:
        if self._broken or not sys.executable or not HAS_KILLPG:
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
