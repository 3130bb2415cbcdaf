"""Command line entry point: parse, dispatch to one command module, map errors to exit codes."""
from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from orch import __version__, output
from orch.errors import EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED, OrchError

# command -> (module, function). Only the module of the command being run is imported: every
# invocation pays for its own command, not for all fifteen (a no-op resume is start-up bound).
COMMANDS: dict[str, tuple[str, str]] = {
    'init': ('orch.commands.init', 'init_command'),
    'run': ('orch.commands.run', 'run'),
    'resume': ('orch.commands.resume', 'resume'),
    'redo': ('orch.commands.redo', 'redo'),
    'status': ('orch.commands.status', 'status'),
    'graph': ('orch.commands.graph', 'graph'),
    'runs': ('orch.commands.runs', 'runs'),
    'report': ('orch.commands.report', 'report'),
    'demo': ('orch.commands.demo', 'demo'),
    'doctor': ('orch.commands.doctor', 'doctor'),
    'task': ('orch.commands.task', 'task'),
    'plan': ('orch.commands.plan', 'plan'),
    'prune': ('orch.commands.prune', 'prune'),
    'merge': ('orch.commands.merge', 'merge'),
    'clean': ('orch.commands.clean', 'clean'),
    'cache': ('orch.commands.cache', 'cache'),
    'explain': ('orch.commands.explain', 'explain'),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:   # argparse's own exit code 2 is ours too; keep one line
        self.print_usage(sys.stderr)
        output.write_line(f'codex-orch: error: {message}', err=True)
        raise SystemExit(EXIT_BAD_INPUT)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; with `only`, just that subcommand's (the others are not imported)."""
    parser = _Parser(prog='codex-orch', description='Execute implementation plans with Codex workers, '
                     'as a build graph: re-running redoes only what changed.')
    parser.add_argument('--version', action='version', version=f'codex-orch {__version__}')
    sub = parser.add_subparsers(dest='command', required=True, metavar='COMMAND', parser_class=_Parser)
    for name, (module, _) in COMMANDS.items():
        if only is None or name == only:
            importlib.import_module(module).add_parser(sub)
    return parser


def _command_of(argv: Sequence[str]) -> str | None:
    first = next((a for a in argv if not a.startswith('-')), None)
    return first if first in COMMANDS else None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        simple = None
        if argv[:1] in (['status'], ['resume']):
            # Answered from the run's no-op manifest when nothing changed, before argparse is built
            # and before any command module loads (orch.runstate.fastpath).
            from orch.runstate import fastpath
            simple, answered = fastpath.from_argv(argv)
            if answered is not None:
                return answered
        args = build_parser(_command_of(argv)).parse_args(argv)
        if simple is not None:
            args.fast_path_tried = True   # the command need not check the manifest a second time
        module, function = COMMANDS[args.command]
        command: Callable[[argparse.Namespace], int] = getattr(importlib.import_module(module), function)
        return command(args)
    except OrchError as exc:
        output.write_line(f'codex-orch: {exc}', err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        output.write_line('codex-orch: interrupted', err=True)
        return EXIT_INTERRUPTED
    except Exception:
        from orch.crashlog import write_crash_log  # only on the way out: start-up stays lean
        log = write_crash_log(None)
        output.write_line(f'codex-orch: internal error: {sys.exc_info()[1]!r} (traceback in {log}); '
                          'please report it', err=True)
        return EXIT_INTERNAL
