"""Command line entry point: parse, dispatch to one command module, map errors to exit codes."""
from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import sys
import threading
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import NoReturn

from orch import __version__
from orch.collect import rarer_full_collections
from orch.errors import EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED, OrchError

# command -> (module, function, its one-line help). Only the module of the command being run is
# imported: every invocation pays for its own command, not for all of them (a no-op resume is start-up
# bound), and `codex-orch --help` / `--version` import none, so the help line of each command is here
# as well as in its module's add_parser (tests/test_main.py checks the two agree).
COMMANDS: dict[str, tuple[str, str, str]] = {
    'init': ('orch.commands.init', 'init_command',
             'write the default .orchestrator/ (config, schemas, prompts) and a dodo.py'),
    'run': ('orch.commands.run', 'run', 'execute a plan file'),
    'resume': ('orch.commands.resume', 'resume', 're-run what is stale, failed or unfinished in a run'),
    'redo': ('orch.commands.redo', 'redo',
             'execute tasks again, each in a fresh Codex thread; their dependents follow when a result changes'),
    'status': ('orch.commands.status', 'status', 'show the state of each task of a run'),
    'graph': ('orch.commands.graph', 'graph',
              "print the plan's dependency graph with each task's status (Mermaid, or Graphviz dot)"),
    'runs': ('orch.commands.runs', 'runs',
             'list the runs: kind, plan, created, last used, tasks per status, merged'),
    'report': ('orch.commands.report', 'report', 'write the Markdown, JSON and JUnit reports of a run'),
    'demo': ('orch.commands.demo', 'demo', 'run an example plan offline: real Codex CLI, local model stand-in'),
    'doctor': ('orch.commands.doctor', 'doctor', 'check the codex binary, git, config, schemas and prompts'),
    'task': ('orch.commands.task', 'task',
             'run one prompt with one role (prints the validated answer as JSON)'),
    'plan': ('orch.commands.plan', 'plan',
             'have the navigator write an implementation plan for a spec (validated)'),
    'prune': ('orch.commands.prune', 'prune',
              'sweep old runs: worktrees, run directories, merged branches (dry run unless --apply)'),
    'merge': ('orch.commands.merge', 'merge', "fast-forward the run's base branch to the run's result "
              '(only shows what it would do without --allow-automerge)'),
    'clean': ('orch.commands.clean', 'clean', "remove a run's worktrees and merged branches (its results stay)"),
    'cache': ('orch.commands.cache', 'cache', 'the cache of verified task results: pull, push, ls, gc'),
    'explain': ('orch.commands.explain', 'explain',
                "why a task's result came from the result cache, or why it missed"),
}


def _load(module: str) -> ModuleType:
    """Import a command module by the import statement's machinery, which `-X importtime` reports
    (importlib.import_module's import is missing from that list, its own imports listed as top-level)."""
    __import__(module)
    return sys.modules[module]


def _say(text: str) -> None:
    """An error line on stderr, through orch.output: imported only when there is one to say, its
    redaction (~15 ms of imports) being nothing --help and --version need."""
    from orch import output
    output.write_line(text, err=True)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:   # argparse's own exit code 2 is ours too; keep one line
        self.print_usage(sys.stderr)
        _say(f'codex-orch: error: {message}')
        raise SystemExit(EXIT_BAD_INPUT)


def build_parser(only: str | None = None, *, lean: bool = False) -> argparse.ArgumentParser:
    """The argument parser. By default with every command's own parser, which imports every command
    module. With `only`, that command's own parser and the others entered by their one-line help alone
    (COMMANDS; no other module is imported); with `lean` and no `only`, all of them entered so: enough
    for `codex-orch --help`, `--version` and a usage error."""
    parser = _Parser(prog='codex-orch', description='Execute implementation plans with Codex workers, '
                     'as a build graph: re-running redoes only what changed.')
    parser.add_argument('--version', action='version', version=f'codex-orch {__version__}')
    sub = parser.add_subparsers(dest='command', required=True, metavar='COMMAND', parser_class=_Parser)
    for name, (module, _, help_line) in COMMANDS.items():
        if name == only or (only is None and not lean):
            _load(module).add_parser(sub)
        else:
            sub.add_parser(name, help=help_line)
    return parser


def _leave_now(code: int) -> int:
    """End the process without the interpreter's teardown, which frees every object one by one: 0.15-0.2 s after a
    resume of 10,000 tasks, 70-90 ms after a status answered from the no-op manifest (a sixth of that answer).

    What a normal exit does before the teardown is done first: the exit handlers run (a tracing exporter flushes,
    temporary directories go, logging shuts down) and the output streams are flushed. A thread still running (none
    should be by now) gets the normal exit instead, which waits for it, and so does a process being profiled or
    traced: the code is returned."""
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        return code
    if sys.getprofile() is not None or sys.gettrace() is not None:
        return code   # a profiler or a debugger writes its findings after the program: the normal exit
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(OSError, ValueError):   # a reader that went away got what it got
            if stream is not None:
                stream.flush()
    os._exit(code)


def _command_of(argv: Sequence[str]) -> str | None:
    first = next((a for a in argv if not a.startswith('-')), None)
    return first if first in COMMANDS else None


def cli() -> int:
    """The program (`codex-orch`, `python -m orch`): the command, then the process ends (see _leave_now)."""
    return _leave_now(main())


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command (argv: its arguments, by default the process's) and return its exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    rarer_full_collections()
    try:
        simple = None
        if argv[:1] in (['status'], ['resume']):
            # Answered from the run's no-op manifest when nothing changed, before argparse is built
            # and before any command module loads (orch.runstate.fastpath).
            from orch.runstate import fastpath
            simple, answered = fastpath.from_argv(argv)
            if answered is not None:
                return answered
        args = build_parser(_command_of(argv), lean=True).parse_args(argv)
        if simple is not None:
            args.fast_path_tried = True   # the command need not check the manifest a second time
        module, function, _ = COMMANDS[args.command]
        command: Callable[[argparse.Namespace], int] = getattr(_load(module), function)
        return command(args)
    except OrchError as exc:
        _say(f'codex-orch: {exc}')
        return exc.exit_code
    except KeyboardInterrupt:
        _say('codex-orch: interrupted')
        return EXIT_INTERRUPTED
    except Exception:
        from orch.crashlog import write_crash_log  # only on the way out: start-up stays lean
        log = write_crash_log(None)
        _say(f'codex-orch: internal error: {sys.exc_info()[1]!r} (traceback in {log}); please report it')
        return EXIT_INTERNAL
