"""Command line entry point: parse, dispatch to one command module, map errors to exit codes."""
from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence

from orch import __version__, output
from orch.commands import clean as clean_cmd
from orch.commands import demo as demo_cmd
from orch.commands import doctor as doctor_cmd
from orch.commands import init as init_cmd
from orch.commands import merge as merge_cmd
from orch.commands import plan as plan_cmd
from orch.commands import prune as prune_cmd
from orch.commands import report as report_cmd
from orch.commands import resume as resume_cmd
from orch.commands import run as run_cmd
from orch.commands import status as status_cmd
from orch.commands import task as task_cmd
from orch.errors import EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED, OrchError
from orch.redact import redact


def _init(args: argparse.Namespace) -> int:
    from orch.commands.common import find_repo
    return init_cmd.init(find_repo(), force=args.force)


COMMANDS: dict[str, tuple[Callable[[argparse._SubParsersAction], None], Callable[[argparse.Namespace], int]]] = {
    'init': (init_cmd.add_parser, _init),
    'run': (run_cmd.add_parser, run_cmd.run),
    'resume': (resume_cmd.add_parser, resume_cmd.resume),
    'status': (status_cmd.add_parser, status_cmd.status),
    'report': (report_cmd.add_parser, report_cmd.report),
    'demo': (demo_cmd.add_parser, demo_cmd.demo),
    'doctor': (doctor_cmd.add_parser, doctor_cmd.doctor),
    'task': (task_cmd.add_parser, task_cmd.task),
    'plan': (plan_cmd.add_parser, plan_cmd.plan),
    'prune': (prune_cmd.add_parser, prune_cmd.prune),
    'merge': (merge_cmd.add_parser, merge_cmd.merge),
    'clean': (clean_cmd.add_parser, clean_cmd.clean),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:   # argparse's own exit code 2 is ours too; keep one line
        self.print_usage(sys.stderr)
        output.write_line(f'codex-orch: error: {message}', err=True)
        raise SystemExit(EXIT_BAD_INPUT)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog='codex-orch', description='Execute implementation plans with Codex workers, '
                     'as a build graph: re-running redoes only what changed.')
    parser.add_argument('--version', action='version', version=f'codex-orch {__version__}')
    sub = parser.add_subparsers(dest='command', required=True, metavar='COMMAND', parser_class=_Parser)
    for add_parser, _ in COMMANDS.values():
        add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command][1](args)
    except OrchError as exc:
        output.write_line(f'codex-orch: {exc}', err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        output.write_line('codex-orch: interrupted', err=True)
        return EXIT_INTERRUPTED
    except Exception:
        log = _write_crash_log()
        output.write_line(f'codex-orch: internal error: {sys.exc_info()[1]!r} (traceback in {log}); '
                          'please report it', err=True)
        return EXIT_INTERNAL


def _write_crash_log() -> str:
    fd, path = tempfile.mkstemp(prefix='codex-orch-crash-', suffix='.log')
    with os.fdopen(fd, 'w') as f:
        f.write(redact(f'codex-orch {__version__} at {dt.datetime.now().isoformat()}\n{" ".join(sys.argv)}\n\n'
                       + traceback.format_exc()))
    return path
