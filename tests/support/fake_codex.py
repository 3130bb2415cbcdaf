"""A scriptable stand-in for the `codex` CLI (`codex exec --json`), for integration tests.

Run as `python fake_codex.py exec ...`, normally through the shell shim that
`install_fake_codex()` writes. It parses argv like codex 0.169.0 (see
reference/codex-exec.md), prints real-looking JSONL events, writes `-o` like the real CLI
(empty at start, the last agent message only at turn.completed) and reports usage cumulatively
per thread.

Behaviour comes from a JSON script (env FAKE_CODEX_SCRIPT):

    {"default": B, "tasks": {"T1": B, "T2": [B1, B2, ...]}}

The task is the prompt line `Task id: <id>`; on `resume` it comes from the thread's state. A
list is consumed one behaviour per invocation (the last one repeats). Behaviour keys:
    answer          "auto" (default: a document valid for --output-schema), an object, or a raw string
    decisions       list merged into an auto answer when the schema has `decisions`
    edits           {relative path: content | null (delete)} applied under -C, with file_change items
    commands        [shell command, ...] run under -C, with command_execution items
    sleep           seconds to sleep before answering
    exit            exit code after the normal output
    fail            message: emit `error` + `turn.failed`, rc 1
    stderr          text printed on stderr (as codex prints its logs and warnings)
    hang            after thread.started, sleep "forever"
    silent          print nothing, sleep "forever"
    garbage         N (or true = 3, or a list of strings): non-JSON lines after thread.started
    flood_mb        N MB of valid item events before answering (streamed)
    huge_line_mb    one valid JSON line of N MB before answering (streamed)
    no_turn_completed  emit the message, then exit 0 without turn.completed
    child           spawn `sleep 300` in the same process group (holding stdout), log its pid
    usage           per-turn usage (reported cumulatively over the thread)
    write_outside   absolute path to write outside -C
    delete_workdir  rm -rf the -C directory
    touch           absolute path: created once the turn started (a test knows the turn is under way)
    wait_for        absolute path: after `touch`, wait until it exists (at most `wait_timeout` s, default
                    "forever"), then go on: the test decides when the turn may end

State (env FAKE_CODEX_STATE, a directory): thread → task id and cumulative usage, and the
per-task call counters (file-locked: parallel fakes run). Log (env FAKE_CODEX_LOG): one JSON line
per invocation, written at the end with one O_APPEND write.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

VERSION = 'codex-cli 0.169.0'
SCRIPT_FILE = 'fake-codex-script.json'
STATE_DIR = 'fake-codex-state'
LOG_FILE = 'fake-codex-log.jsonl'
ENDING_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
DEFAULT_USAGE = {'input_tokens': 100, 'cached_input_tokens': 10, 'output_tokens': 20,
                 'reasoning_output_tokens': 5}
TASK_RE = re.compile(r'^Task id: (\S+)\s*$', re.MULTILINE)
FOREVER = 600.0   # "forever", bounded so a leaked fake cannot linger for hours

VALUE_FLAGS = {'-C': 'cd', '--cd': 'cd', '-s': 'sandbox', '--sandbox': 'sandbox',
               '--output-schema': 'schema', '-o': 'output', '--output-last-message': 'output',
               '-m': 'model', '--model': 'model', '-c': 'config', '--config': 'config',
               '--add-dir': 'add_dir', '--enable': 'features', '--disable': 'features',
               '-p': 'profile', '--profile': 'profile'}
BOOL_FLAGS = {'--json', '--skip-git-repo-check', '--ephemeral', '--ignore-user-config',
              '--strict-config', '--full-auto', '--dangerously-bypass-approvals-and-sandbox'}
BEFORE_RESUME_ONLY = {'-C', '--cd', '-s', '--sandbox', '--add-dir'}


# ---------------------------------------------------------------------------------------------
# Helpers for tests

REAL_CODEX = Path(__file__).resolve().parents[2] / 'tools' / 'codex-cli' / 'node_modules' / '.bin' / 'codex'


def install_fake_codex(bin_dir: Path, script: dict[str, Any] | None) -> Path:
    """Write `bin_dir/codex` (a shim running this file) and the script; returns bin_dir.

    The shim defaults FAKE_CODEX_SCRIPT, FAKE_CODEX_STATE and FAKE_CODEX_LOG to files in
    bin_dir; values already in the environment win.
    """
    bin_dir = Path(bin_dir).absolute()
    bin_dir.mkdir(parents=True, exist_ok=True)
    write_script(bin_dir, script)
    defaults = {'FAKE_CODEX_SCRIPT': bin_dir / SCRIPT_FILE, 'FAKE_CODEX_STATE': bin_dir / STATE_DIR,
                'FAKE_CODEX_LOG': bin_dir / LOG_FILE}
    lines = ['#!/bin/sh']
    for name, value in defaults.items():
        lines.append(f'if [ -z "${{{name}:-}}" ]; then {name}={shlex.quote(str(value))}; export {name}; fi')
    # `codex sandbox` (checks, gates, setup: orch.adapters.sandbox) is the real CLI's: no fake of the sandbox
    if REAL_CODEX.is_file():
        lines.append(f'if [ "${{1:-}}" = sandbox ]; then exec {shlex.quote(str(REAL_CODEX))} "$@"; fi')
    lines.append(f'exec {shlex.quote(sys.executable)} {shlex.quote(str(Path(__file__).absolute()))} "$@"')
    shim = bin_dir / 'codex'
    shim.write_text('\n'.join(lines) + '\n')
    shim.chmod(0o755)
    return bin_dir


def write_script(bin_dir: Path, script: dict[str, Any] | None) -> None:
    """Replace the behaviour script of an installed fake (None = default behaviour)."""
    path = Path(bin_dir) / SCRIPT_FILE
    if script is None:
        path.unlink(missing_ok=True)
    else:
        path.write_text(json.dumps(script, indent=2))


def read_log(path: Path) -> list[dict[str, Any]]:
    """The invocation log (a file, or a bin_dir from install_fake_codex)."""
    path = Path(path)
    if path.is_dir():
        path = path / LOG_FILE
    if not path.exists():
        return []
    # Only whole lines: a fake appending its line while this reads can be seen half written (a busy machine).
    complete = path.read_text().rpartition('\n')[0]
    return [json.loads(line) for line in complete.splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------------
# argv

class UsageError(Exception):
    """A clap-style usage error: rc 2."""


class StartupError(Exception):
    """A failure before the turn starts: rc 1, message on stderr, nothing on stdout."""


@dataclass
class Args:
    flags: set[str] = field(default_factory=set)
    values: dict[str, list[str]] = field(default_factory=dict)
    resume: bool = False
    thread_id: str | None = None
    prompt: str | None = None

    def value(self, key: str) -> str | None:
        found = self.values.get(key)
        return found[-1] if found else None


def parse_argv(argv: list[str]) -> Args:
    if not argv or argv[0] not in ('exec', 'e'):
        raise UsageError(f"error: unrecognized subcommand {argv[0] if argv else ''!r} (fake codex knows `exec`)")
    args = Args()
    positionals: list[str] = []
    rest = argv[1:]
    i = 0
    while i < len(rest):
        i = _parse_one(rest, i, args, positionals)
    _assign_positionals(args, positionals)
    return args


def _parse_one(rest: list[str], i: int, args: Args, positionals: list[str]) -> int:
    token = rest[i]
    name, eq, inline = token.partition('=') if token.startswith('--') else (token, '', '')
    if token == 'resume' and not args.resume and not positionals:
        args.resume = True
        return i + 1
    if args.resume and name in BEFORE_RESUME_ONLY:
        raise UsageError(f"error: unexpected argument '{name}' found")
    if name in BOOL_FLAGS:
        args.flags.add(name)
        return i + 1
    if name in VALUE_FLAGS:
        if eq:
            args.values.setdefault(VALUE_FLAGS[name], []).append(inline)
            return i + 1
        if i + 1 >= len(rest):
            raise UsageError(f"error: a value is required for '{name}' but none was supplied")
        args.values.setdefault(VALUE_FLAGS[name], []).append(rest[i + 1])
        return i + 2
    if token.startswith('-') and token != '-':
        raise UsageError(f"error: unexpected argument '{token}' found")
    positionals.append(token)
    return i + 1


def _assign_positionals(args: Args, positionals: list[str]) -> None:
    if args.resume:
        if not positionals or positionals[0] == '--last':
            raise UsageError('error: fake codex needs an explicit thread id after `resume`')
        args.thread_id, positionals = positionals[0], positionals[1:]
    if len(positionals) > 1:
        raise UsageError(f"error: unexpected argument '{positionals[1]}' found")
    args.prompt = positionals[0] if positionals else None


# ---------------------------------------------------------------------------------------------
# Invocation log and signals

class Log:
    """One JSON line per invocation, written once at the end (or when a signal ends us)."""

    def __init__(self, argv: list[str]) -> None:
        self.path = os.environ.get('FAKE_CODEX_LOG') or None
        self.entry: dict[str, Any] = {
            'pid': os.getpid(), 'pgid': os.getpgid(0), 'argv': argv, 'cwd': os.getcwd(),
            'task_id': None, 'thread_id': None, 'resume': False, 'prompt': '',
            'started_at': time.time(), 'traceparent': os.environ.get('TRACEPARENT')}
        self.written = False

    def done(self, rc: int, **extra: Any) -> int:
        # The ending signals wait until the line is written: a SIGTERM landing between the flag and the write
        # (codex-orch killed just as we end by ourselves) would run on_term, see the flag, and die unlogged.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, ENDING_SIGNALS)
        try:
            if self.written or not self.path:
                return rc
            self.written = True
            self.entry.update(extra, rc=rc, ended_at=time.time())
            data = (json.dumps(self.entry) + '\n').encode()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, data)   # one O_APPEND write: lines of parallel fakes never interleave
            finally:
                os.close(fd)
            return rc
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def _install_signal_handlers(log: Log) -> None:
    def on_term(signum: int, _frame: Any) -> None:
        # codex-orch's end can bring two SIGTERMs (the parent-death signal and its watchdog's): a second one
        # re-entering here would kill us before the first one's log line is written.
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        log.done(-signum, signal=signum)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)   # die by the signal like the real CLI (returncode -15)

    def on_int(signum: int, _frame: Any) -> None:
        log.done(1, signal=signum)
        os._exit(1)   # the real CLI exits 1 on SIGINT

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    signal.signal(signal.SIGINT, on_int)


# ---------------------------------------------------------------------------------------------
# State: threads and call counters

class State:
    def __init__(self) -> None:
        root = os.environ.get('FAKE_CODEX_STATE')
        if not root:
            script = os.environ.get('FAKE_CODEX_SCRIPT')
            root = f'{script}.state' if script else os.path.join(tempfile.gettempdir(), 'fake-codex-state')
        self.root = Path(root)
        (self.root / 'threads').mkdir(parents=True, exist_ok=True)

    def load_thread(self, thread_id: str) -> dict[str, Any] | None:
        path = self.root / 'threads' / f'{_safe(thread_id)}.json'
        return json.loads(path.read_text()) if path.exists() else None

    def save_thread(self, thread_id: str, data: dict[str, Any]) -> None:
        path = self.root / 'threads' / f'{_safe(thread_id)}.json'
        tmp = path.with_suffix(f'.{os.getpid()}.tmp')
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)

    def next_call(self, key: str) -> int:
        """0 for the first invocation for `key`, then 1, 2, ... (safe across processes)."""
        counters = self.root / 'counters.json'
        with open(self.root / 'counters.lock', 'a+') as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = json.loads(counters.read_text()) if counters.exists() else {}
            index = int(data.get(key, 0))
            data[key] = index + 1
            counters.write_text(json.dumps(data))
        return index


def _safe(name: str) -> str:
    return re.sub(r'[^A-Za-z0-9_.-]', '_', name)


def load_script() -> dict[str, Any]:
    path = os.environ.get('FAKE_CODEX_SCRIPT')
    if not path or not os.path.exists(path):
        return {}
    return json.loads(Path(path).read_text())


def pick_behaviour(script: dict[str, Any], task_id: str | None, state: State) -> tuple[dict[str, Any], int]:
    tasks = script.get('tasks') or {}
    entry = tasks[task_id] if task_id is not None and task_id in tasks else script.get('default', {})
    call = state.next_call(task_id if task_id is not None else '_default')
    if isinstance(entry, list):
        return (entry[min(call, len(entry) - 1)] if entry else {}), call
    return (entry or {}), call


# ---------------------------------------------------------------------------------------------
# The auto answer: a small generator of a document valid for a (strict-style) JSON schema

def auto_document(schema: Any, root: Any = None, name: str = 'value', depth: int = 0) -> Any:
    root = schema if root is None else root
    if not isinstance(schema, dict) or depth > 20:
        return None
    if '$ref' in schema:
        return auto_document(_resolve_ref(root, schema['$ref']), root, name, depth + 1)
    if 'const' in schema:
        return schema['const']
    if schema.get('enum'):
        return schema['enum'][0]
    for key in ('anyOf', 'oneOf', 'allOf'):
        if schema.get(key):
            return auto_document(schema[key][0], root, name, depth + 1)
    return _auto_typed(schema, _schema_type(schema), root, name, depth)


def _schema_type(schema: dict[str, Any]) -> str:
    typ = schema.get('type')
    if isinstance(typ, list):
        non_null = [t for t in typ if t != 'null']
        return non_null[0] if non_null else 'null'
    if isinstance(typ, str):
        return typ
    return 'object' if 'properties' in schema else 'array' if 'items' in schema else 'string'


def _auto_typed(schema: dict[str, Any], typ: str, root: Any, name: str, depth: int) -> Any:
    if typ == 'object':
        props = schema.get('properties') or {}
        return {key: auto_document(sub, root, key, depth + 1) for key, sub in props.items()}
    if typ == 'array':
        count = int(schema.get('minItems', 0))
        return [auto_document(schema.get('items', {}), root, name, depth + 1) for _ in range(count)]
    if typ in ('integer', 'number'):
        low = schema.get('minimum', schema.get('exclusiveMinimum', -1) + 1)
        return int(low) if typ == 'integer' else float(low)
    if typ == 'boolean':
        return True
    if typ == 'null':
        return None
    text = f'auto {name}'
    return text.ljust(int(schema.get('minLength', 0)), '.')


def _resolve_ref(root: Any, ref: str) -> Any:
    if not ref.startswith('#'):
        return {}
    node = root
    for part in ref.lstrip('#').split('/'):
        if part:
            node = node.get(part.replace('~1', '/').replace('~0', '~'), {}) if isinstance(node, dict) else {}
    return node


# ---------------------------------------------------------------------------------------------
# Emitting events

class Emitter:
    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.next_id = 0

    def emit(self, event: dict[str, Any]) -> None:
        self.out.write(json.dumps(event, separators=(',', ':'), ensure_ascii=False).encode() + b'\n')
        self.out.flush()

    def item(self, phase: str, item: dict[str, Any], new: bool = True) -> dict[str, Any]:
        if new:
            item = {'id': f'item_{self.next_id}', **item}
            self.next_id += 1
        self.emit({'type': f'item.{phase}', 'item': item})
        return item

    def raw(self, data: bytes) -> None:
        self.out.write(data)
        self.out.flush()


@dataclass
class Run:
    args: Args
    behaviour: dict[str, Any]
    workdir: Path
    schema: Any
    thread_id: str
    task_id: str | None
    state: State
    thread: dict[str, Any]
    log: Log
    out: Emitter


def perform(run: Run) -> int:
    """The turn, step by step, in the real CLI's event order."""
    b = run.behaviour
    if b.get('silent'):
        _sleep_forever()
    run.out.emit({'type': 'thread.started', 'thread_id': run.thread_id})
    if b.get('stderr'):
        print(b['stderr'], file=sys.stderr, flush=True)
    run.state.save_thread(run.thread_id, run.thread)   # the rollout exists from here: resumable
    if b.get('hang'):
        _sleep_forever()
    _emit_garbage(run.out, b.get('garbage'))
    run.out.emit({'type': 'turn.started'})
    _side_effects(run)
    _stream_bulk(run.out, b)
    if b.get('sleep'):
        time.sleep(float(b['sleep']))
    if b.get('fail'):
        return _fail(run.out, str(b['fail']))
    text = answer_text(b, run.schema)
    run.out.item('completed', {'type': 'agent_message', 'text': text})
    if b.get('no_turn_completed'):
        return int(b.get('exit', 0))
    _complete(run, text)
    return int(b.get('exit', 0))


def _side_effects(run: Run) -> None:
    b = run.behaviour
    if b.get('child'):
        # Inherits stdout on purpose: an orphan holding the pipe is what the worker must survive.
        child = subprocess.Popen(['sleep', '300'], stdin=subprocess.DEVNULL)
        run.log.entry['child_pid'] = child.pid
    run.out.item('completed', {'type': 'reasoning', 'text': '**Working** on the task'})
    if b.get('touch'):
        Path(b['touch']).touch()
    if b.get('wait_for'):
        deadline = time.monotonic() + float(b.get('wait_timeout', FOREVER))
        while not Path(b['wait_for']).exists() and time.monotonic() < deadline:
            time.sleep(0.01)
    for command in b.get('commands') or []:
        _run_command(run.out, run.workdir, command)
    if b.get('edits'):
        _apply_edits(run.out, run.workdir, b['edits'])
    if b.get('write_outside'):
        Path(b['write_outside']).parent.mkdir(parents=True, exist_ok=True)
        Path(b['write_outside']).write_text('written outside the workspace\n')
    if b.get('delete_workdir'):
        shutil.rmtree(run.workdir, ignore_errors=True)


def _run_command(out: Emitter, workdir: Path, command: str) -> None:
    shown = f'/bin/bash -lc {shlex.quote(command)}'
    item = out.item('started', {'type': 'command_execution', 'command': shown, 'aggregated_output': '',
                                'exit_code': None, 'status': 'in_progress'})
    done = subprocess.run(['bash', '-c', command], cwd=workdir, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out.item('completed', {**item, 'aggregated_output': done.stdout.decode('utf-8', 'replace'),
                           'exit_code': done.returncode,
                           'status': 'completed' if done.returncode == 0 else 'failed'}, new=False)


def _apply_edits(out: Emitter, workdir: Path, edits: dict[str, str | None]) -> None:
    changes = []
    for rel, content in edits.items():
        path = (workdir / rel).absolute()
        kind = 'delete' if content is None else 'update' if path.exists() else 'add'
        changes.append({'path': str(path), 'kind': kind})
    item = out.item('started', {'type': 'file_change', 'changes': changes, 'status': 'in_progress'})
    for rel, content in edits.items():
        path = workdir / rel
        if content is None:
            path.unlink(missing_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
    out.item('completed', {**item, 'status': 'completed'}, new=False)


def _emit_garbage(out: Emitter, garbage: Any) -> None:
    if not garbage:
        return
    if isinstance(garbage, list):
        lines = [str(g) for g in garbage]
    else:
        lines = [f'garbage line {i}: this is {{not json' for i in range(3 if garbage is True else int(garbage))]
    for line in lines:
        out.raw(line.encode() + b'\n')


def _stream_bulk(out: Emitter, b: dict[str, Any]) -> None:
    """flood_mb and huge_line_mb, written piecewise so the fake never holds them in memory."""
    if b.get('flood_mb'):
        budget = int(float(b['flood_mb']) * 1024 * 1024)
        filler = 'x' * 8000
        while budget > 0:
            out.item('completed', {'type': 'command_execution', 'command': "/bin/bash -lc 'flood'",
                                          'aggregated_output': filler, 'exit_code': 0, 'status': 'completed'})
            budget -= len(filler) + 150
    if b.get('huge_line_mb'):
        out.raw(b'{"type":"item.completed","item":{"id":"item_huge","type":"agent_message","text":"')
        for _ in range(int(float(b['huge_line_mb']) * 16)):
            out.out.write(b'y' * 65536)
        out.raw(b'"}}\n')


def _fail(out: Emitter, message: str) -> int:
    out.emit({'type': 'error', 'message': message})
    out.emit({'type': 'turn.failed', 'error': {'message': message}})
    return 1


def answer_text(b: dict[str, Any], schema: Any) -> str:
    answer = b.get('answer', 'auto')
    if answer == 'auto':
        answer = auto_document(schema) if schema is not None else {'status': 'done'}
        props = schema.get('properties', {}) if isinstance(schema, dict) else {}
        if isinstance(answer, dict) and 'decisions' in props and 'decisions' in b:
            answer['decisions'] = b['decisions']
    if isinstance(answer, str):
        return answer
    return json.dumps(answer)


def _complete(run: Run, text: str) -> None:
    turn = run.behaviour.get('usage') or DEFAULT_USAGE
    previous = run.thread.get('usage') or {}
    keys = ['input_tokens', 'cached_input_tokens', 'cache_write_input_tokens', 'output_tokens',
            'reasoning_output_tokens']
    cumulative = {k: int(previous.get(k, 0)) + int(turn.get(k, 0)) for k in keys}
    run.thread['usage'] = cumulative
    run.state.save_thread(run.thread_id, run.thread)
    run.out.emit({'type': 'turn.completed', 'usage': cumulative})
    output = run.args.value('output')
    if output:
        Path(output).write_text(text)   # byte for byte, no trailing newline, only on success


def _sleep_forever() -> None:
    time.sleep(FOREVER)
    sys.exit(1)


# ---------------------------------------------------------------------------------------------
# Startup checks, like the real CLI

def new_thread_id() -> str:
    """UUIDv7-looking: 48-bit milliseconds, version 7, variant bits, random rest."""
    value = (int(time.time() * 1000) << 80) | secrets.randbits(80)
    value = (value & ~(0xF << 76)) | (0x7 << 76)
    value = (value & ~(0x3 << 62)) | (0x2 << 62)
    h = f'{value:032x}'
    return f'{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}'


def _check_workdir(args: Args) -> Path:
    workdir = Path(args.value('cd') or os.getcwd()).absolute()
    if not workdir.is_dir():
        raise StartupError('Error: No such file or directory (os error 2)')
    if '--skip-git-repo-check' not in args.flags and not _in_git(workdir):
        raise StartupError('Not inside a trusted directory and --skip-git-repo-check was not specified.')
    return workdir


def _in_git(path: Path) -> bool:
    return any((p / '.git').exists() for p in (path, *path.parents))


def _load_schema(args: Args) -> Any:
    name = args.value('schema')
    if name is None:
        return None
    try:
        text = Path(name).read_text()
    except OSError as exc:
        raise StartupError(f'Failed to read output schema file {name}: {exc}') from exc
    try:
        return json.loads(text)
    except ValueError as exc:
        raise StartupError(f'Output schema file {name} is not valid JSON: {exc}') from exc


def _read_prompt(args: Args) -> str:
    if args.prompt not in (None, '-'):
        return args.prompt or ''
    prompt = sys.stdin.buffer.read().decode('utf-8', 'replace')
    if not prompt.strip():
        raise StartupError('No prompt provided via stdin.')
    return prompt


def _prepare_output(args: Args) -> None:
    output = args.value('output')
    if output is None:
        return
    if not Path(output).parent.is_dir():
        raise StartupError(f'Error: failed to write last message file {output}: No such file or directory')
    Path(output).write_bytes(b'')   # created/truncated at startup, as the real CLI does


def _identify(args: Args, prompt: str, state: State) -> tuple[str, str | None, dict[str, Any]]:
    if args.resume:
        assert args.thread_id is not None
        thread = state.load_thread(args.thread_id)
        if thread is None:
            raise StartupError('Error: thread/resume: thread/resume failed: no rollout found for thread id '
                               f'{args.thread_id} (code -32600)')
        return args.thread_id, thread.get('task_id'), thread
    match = TASK_RE.search(prompt)
    task_id = match.group(1) if match else None
    return new_thread_id(), task_id, {'task_id': task_id, 'usage': {}}


def start(args: Args, log: Log) -> int:
    workdir = _check_workdir(args)
    schema = _load_schema(args)
    prompt = _read_prompt(args)
    _prepare_output(args)
    state = State()
    thread_id, task_id, thread = _identify(args, prompt, state)
    behaviour, call = pick_behaviour(load_script(), task_id, state)
    log.entry.update(task_id=task_id, thread_id=thread_id, resume=args.resume, prompt=prompt[:2000],
                     workdir=str(workdir), call=call, model=args.value('model'),
                     sandbox=args.value('sandbox'))
    run = Run(args, behaviour, workdir, schema, thread_id, task_id, state, thread, log,
              Emitter(sys.stdout.buffer))
    return perform(run)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ('--version', '-V'):
        print(VERSION)
        return 0
    log = Log(argv)
    _install_signal_handlers(log)
    try:
        args = parse_argv(argv)
        rc = start(args, log)
    except UsageError as exc:
        print(f'{exc}\n\nUsage: codex exec [OPTIONS] [PROMPT] [COMMAND]', file=sys.stderr)
        rc = 2
    except StartupError as exc:
        print(str(exc), file=sys.stderr)
        rc = 1
    except BrokenPipeError:
        rc = 1   # the reader went away
    return log.done(rc)


if __name__ == '__main__':
    sys.exit(main())
