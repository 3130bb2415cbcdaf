"""Live progress of a run: which tasks run, for how long, counts, and the worker's latest activity.

Two renderings: on a terminal a status block redrawn in place; elsewhere (CI, pipes) one plain
line per event, so logs stay greppable. Verbosity: 0 = start/end lines only for failures and the
final summary, 1 = every task start and end, 2 = also each worker activity.

Reasons and activities quote workers (their commands, file names, error texts): every line is made
terminal-safe (orch.core.text), so only the display's own escape sequences reach the terminal.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from orch.core.redact import RedactingStream
from orch.core.text import one_line, terminal_safe

TICK_SECONDS = 1.0    # how often a terminal's status block is redrawn while nothing happens


class Progress:
    def __init__(self, total: int, *, verbosity: int = 1, stream: TextIO | RedactingStream | None = None,
                 tty: bool | None = None, work_steps: dict[str, str] | None = None) -> None:
        # task id -> the step whose outcome is the task's: only those count as tasks done or failed
        self.work_steps = dict(work_steps or {})
        self._task_steps = set(self.work_steps.values())
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self.verbosity = verbosity
        self.total = total
        self.done = self.failed = self.skipped = 0
        self.running: dict[str, float] = {}
        self.activity: dict[str, str] = {}
        self._lock = threading.Lock()
        self._drawn = 0
        self._last_draw = 0.0
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        # step name -> what else the terminal block shows of it (its round, its tokens so far), set by the run
        self.details: Callable[[str], str] | None = None

    # -- events from the doit reporter
    def started(self, name: str) -> None:
        with self._lock:
            self.running[name] = time.time()
            self._emit(f'start  {name}', level=1)
            self._start_ticker()

    def finished(self, name: str) -> None:
        with self._lock:
            took = time.time() - self.running.pop(name, time.time())
            self.activity.pop(name, None)
            self.done += name in self._task_steps
            self._emit(f'done   {name} ({took:.1f}s)', level=1)

    def failed_step(self, name: str, reason: str) -> None:
        with self._lock:
            took = time.time() - self.running.pop(name, time.time())
            self.activity.pop(name, None)
            first = reason.strip().splitlines()[0] if reason.strip() else 'failed'
            if first.startswith('blocked:'):
                # Never started: it waits for a failed dependency (status: pending), it did not fail.
                self._emit(f'blocked {name}: {first.removeprefix("blocked:").strip()}', level=1)
                return
            self.failed += name in self._task_steps
            self._emit(f'FAILED {name} ({took:.1f}s): {first}', level=0)

    def up_to_date(self, name: str) -> None:
        with self._lock:
            self.skipped += name in self._task_steps
            self._emit(f'ok     {name} (up to date)', level=2)

    # -- events from a worker's stream (called from worker threads)
    def worker_event(self, task_id: str, event: dict[str, Any]) -> None:
        text = describe_event(event)
        if not text:
            return
        with self._lock:
            name = self.work_steps.get(task_id, task_id)
            self.activity[name] = text
            if self.tty:
                self._redraw(force=False)
            elif self.verbosity >= 2:
                self._line(f'       {name}: {text}')

    def remote(self, task_id: str, text: str, *, line: bool) -> None:
        """Where a task's work step runs (the Dask executor): its activity, and with `line` a line of its own."""
        with self._lock:
            name = self.work_steps.get(task_id, task_id)
            self.activity[name] = text
            if line:
                self._emit(f'       {name}: {text}', level=1)
            elif self.tty:
                self._redraw(force=False)

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            self._clear()

    def _start_ticker(self) -> None:
        """On a terminal, keep the elapsed times moving while a worker is quiet (a silent worker must not
        look like a hung run)."""
        if self.tty and self._ticker is None and not self._stop.is_set():
            self._ticker = threading.Thread(target=self._tick, name='progress-ticker', daemon=True)
            self._ticker.start()

    def _tick(self) -> None:
        while not self._stop.wait(TICK_SECONDS):
            with self._lock:
                if self.running and not self._stop.is_set():
                    self._redraw(force=True)

    # -- rendering
    def _emit(self, text: str, level: int) -> None:
        if self.verbosity >= level:
            self._clear()
            self._line(text)
        if self.tty:
            self._redraw(force=True)

    def _line(self, text: str) -> None:
        self.stream.write(terminal_safe(text) + '\n')
        self.stream.flush()

    def _clear(self) -> None:
        if self.tty and self._drawn:
            self.stream.write('\x1b[F\x1b[2K' * self._drawn)
            self._drawn = 0

    def _redraw(self, force: bool) -> None:
        now = time.time()
        if not force and now - self._last_draw < 0.2:
            return
        self._clear()
        lines = [f'[{self.done + self.skipped}/{self.total} tasks done ({self.skipped} up to date), '
                 f'{self.failed} failed, {len(self.running)} running]']
        for name, since in sorted(self.running.items()):
            act = self.activity.get(name, '')
            extra = self._details(name)
            lines.append(f'  {name} {now - since:5.0f}s{f" [{extra}]" if extra else ""} {act[:80]}')
        # The block is erased by counting lines, so each must take exactly one row: a wrapped one
        # would leave its first half on the screen at every redraw.
        width = max(10, self._columns() - 1)
        lines = [_one_row(line)[:width] for line in lines]
        self.stream.write('\n'.join(lines) + '\n')
        self.stream.flush()
        self._drawn = len(lines)
        self._last_draw = now

    def _details(self, name: str) -> str:
        try:
            return self.details(name) if self.details is not None else ''
        except Exception:   # a display detail never stops a run
            return ''

    def _columns(self) -> int:
        try:
            return os.get_terminal_size(self.stream.fileno()).columns or 80
        except (OSError, ValueError, AttributeError):
            return 80


def _one_row(text: str) -> str:
    """Terminal-safe and without a line break, but keeping the block's own alignment spaces."""
    return ' '.join(terminal_safe(text).replace('\t', ' ').splitlines())


def describe_event(event: dict[str, Any]) -> str | None:
    """A worker event as a short human phrase on one line, or None when it says nothing new."""
    text = _describe(event)
    # Commands often span lines (heredocs, `&&` chains); progress shows one line per task, and a
    # command or file name may hold control characters meant for the terminal.
    return one_line(text) if text else None


def _describe(event: dict[str, Any]) -> str | None:
    kind = event.get('type')
    item = event.get('item') or {}
    itype = item.get('type')
    if kind == 'item.started' and itype == 'command_execution':
        return f'running: {item.get("command", "")}'
    if kind == 'item.completed' and itype == 'file_change':
        paths = [c.get('path', '') for c in item.get('changes') or []]
        return 'edited: ' + ', '.join(p.rsplit('/', 1)[-1] for p in paths)
    if kind == 'item.completed' and itype == 'reasoning':
        return 'thinking'
    if kind == 'item.completed' and itype == 'agent_message':
        return 'answered'
    if kind == 'turn.started':
        return 'waiting for the model'
    return None
