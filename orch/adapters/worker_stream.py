"""Reading a worker's stdout with deadlines: the three time limits, a non-blocking reader that notices a
process that exited (even when an orphan keeps the pipe open), and a splitter of the byte stream into
JSONL lines with a bounded line length (memory stays flat whatever codex prints)."""
from __future__ import annotations

import contextlib
import os
import selectors
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from orch.adapters.events import EventStream
from orch.adapters.procgroup import leader_exited
from orch.core.redact import redact_jsonl_line, secret_values

MAX_LINE_BYTES = 8 * 1024 * 1024   # a longer stdout line is skipped (counted as garbage)
READ_CHUNK = 256 * 1024
EOF_POLL = 0.002
POLL = 0.1                         # how often cancel/timeouts are checked while waiting
EXIT_QUIET = 0.2                   # after the leader exits, stop once stdout is quiet this long


@dataclass
class Clock:
    """The three limits, checked against monotonic time."""
    start: float
    total: float | None
    idle: float | None
    first: float | None
    last_output: float | None = None

    def expired(self, now: float) -> str | None:
        if self.total is not None and now - self.start >= self.total:
            return 'total'
        if self.last_output is None:
            if self.first is not None and now - self.start >= self.first:
                return 'first-event'
        elif self.idle is not None and now - self.last_output >= self.idle:
            return 'idle'
        return None

    def wait_budget(self, now: float) -> float:
        """Seconds until the nearest limit, capped at POLL so cancel is noticed quickly."""
        budgets = [POLL]
        if self.total is not None:
            budgets.append(self.start + self.total - now)
        if self.last_output is None and self.first is not None:
            budgets.append(self.start + self.first - now)
        if self.last_output is not None and self.idle is not None:
            budgets.append(self.last_output + self.idle - now)
        return max(min(budgets), 0.0)


class StdoutReader:
    """Reads a child's stdout until EOF and exit, a limit, or a cancel.

    Any byte on stdout counts as activity for the idle and first-event limits. When the leader
    has exited but an orphan still holds the pipe open (no EOF ever), reading stops once the
    pipe has been quiet for EXIT_QUIET seconds.
    """

    def __init__(self, proc: subprocess.Popen[bytes], clock: Clock, consume: Callable[[bytes], None]) -> None:
        assert proc.stdout is not None
        self.proc = proc
        self.fd = proc.stdout.fileno()
        self.clock = clock
        self.consume = consume
        self.eof = False
        self.quiet_since: float | None = None

    def run(self, stopping: Callable[[], bool]) -> str | None:
        with selectors.DefaultSelector() as sel:
            sel.register(self.fd, selectors.EVENT_READ)
            while True:
                if stopping():
                    return 'interrupted'
                limit = self.clock.expired(time.monotonic())
                if limit is not None:
                    return f'timeout:{limit}'
                if self._finished(sel):
                    return None

    def _finished(self, sel: selectors.BaseSelector) -> bool:
        """One wait-and-read step; True when the process is done and stdout drained."""
        now = time.monotonic()
        exited = leader_exited(self.proc)
        if self.eof:
            if not exited:
                # stdout closed, the process exits within moments: poll finely, or each attempt
                # would pay up to a whole poll interval here (benchmarks: ~30 ms per task).
                time.sleep(min(EOF_POLL, self.clock.wait_budget(now)))
            return exited
        if sel.select(min(EXIT_QUIET, POLL) if exited else self.clock.wait_budget(now)):
            self.quiet_since = None
            self._read()
            return False
        return exited and self._quiet_enough(now)

    def _read(self) -> None:
        chunk = os.read(self.fd, READ_CHUNK)
        if not chunk:
            self.eof = True
            return
        self.clock.last_output = time.monotonic()
        self.consume(chunk)

    def _quiet_enough(self, now: float) -> bool:
        self.quiet_since = self.quiet_since or now
        return now - self.quiet_since >= EXIT_QUIET


def consume_lines(lines: Iterator[bytes | None], stream: EventStream, on_event: Callable[[dict], None] | None) -> None:
    for line in lines:
        if line is None:
            stream.note_garbage()
            continue
        event = stream.feed_line(line)
        if event is not None and on_event is not None:
            with contextlib.suppress(Exception):   # a progress display bug must never break the worker
                on_event(event)


class RedactedLog:
    """What goes into events.jsonl: each line codex printed, redacted (orch.core.redact.redact_jsonl_line), as
    it arrives; a line too long to keep is noted by a line that is no JSON (counted as garbage, as it was)."""

    def __init__(self, sink: BinaryIO) -> None:
        self._sink = sink
        self._values = secret_values()

    def tee(self, lines: Iterator[bytes | None]) -> Iterator[bytes | None]:
        for line in lines:
            if line is None:
                self._sink.write(b'[codex-orch: a line over %d bytes was left out]\n' % MAX_LINE_BYTES)
            else:
                self._sink.write(redact_jsonl_line(line, self._values) + b'\n')
            yield line


class LineSplitter:
    """Split a byte stream into lines without ever buffering more than `limit` bytes.

    `feed` yields complete lines (without the newline) and None for each line that was
    longer than `limit` (its bytes are dropped as they arrive).
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._buf = bytearray()
        self._skipping = False

    def feed(self, chunk: bytes) -> Iterator[bytes | None]:
        start = 0
        while True:
            nl = chunk.find(b'\n', start)
            if nl == -1:
                self._add(chunk[start:])
                return
            yield self._end_line(chunk[start:nl])
            start = nl + 1

    def flush(self) -> Iterator[bytes | None]:
        if self._skipping or self._buf:
            yield self._end_line(b'')

    def _add(self, piece: bytes) -> None:
        if self._skipping:
            return
        self._buf += piece
        if len(self._buf) > self._limit:
            self._buf = bytearray()
            self._skipping = True

    def _end_line(self, piece: bytes) -> bytes | None:
        self._add(piece)
        if self._skipping:
            self._skipping = False
            return None
        line = bytes(self._buf)
        self._buf = bytearray()
        return line
