"""The command line's entry point: `codex-orch --help` and `--version` import no command module (each
command's one-line help is kept in orch.main.COMMANDS, checked here against the command's own parser),
`codex-orch COMMAND ...` imports only that command, and a missing or unknown command is a usage error."""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from orch import __version__
from orch.main import COMMANDS, build_parser, main

# Third-party packages no command-less invocation needs (each costs tens of milliseconds to import).
HEAVY = ('doit', 'jsonschema', 'pydantic', 'pydantic_core', 'yaml', 'tabulate', 'dask')


def help_lines(parser: argparse.ArgumentParser) -> dict[str, str | None]:
    """command -> its one-line help, as the top-level parser lists it."""
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {action.dest: action.help for action in sub._choices_actions}


def subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


@pytest.mark.unit
def test_the_help_table_says_what_each_command_module_says() -> None:
    full = build_parser()   # imports every command module: each one's add_parser gives its help line
    table = {name: help_line for name, (_, _, help_line) in COMMANDS.items()}
    assert help_lines(full) == table, 'orch.main.COMMANDS drifted from the add_parser of a command module'
    assert build_parser(lean=True).format_help() == full.format_help()


@pytest.mark.unit
@pytest.mark.parametrize('name', list(COMMANDS))
def test_the_parser_of_the_command_being_run_is_its_modules_own(name: str) -> None:
    only, full = build_parser(name, lean=True), build_parser()
    assert help_lines(only) == help_lines(full)
    assert subparser(only, name).format_help() == subparser(full, name).format_help()


@pytest.mark.unit
@pytest.mark.parametrize('argv, message', [
    ([], 'the following arguments are required: COMMAND'),
    (['bogus'], "argument COMMAND: invalid choice: 'bogus' (choose from 'init', 'run',"),
    (['--bogus'], 'the following arguments are required: COMMAND'),
])
def test_no_command_or_an_unknown_one_is_a_usage_error(argv: list[str], message: str, capsys: Any) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith('usage: codex-orch [-h] [--version] COMMAND ...\n'), err
    assert f'codex-orch: error: {message}' in err


def imported(args: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run `python -X importtime -m orch ARGS`; the names of the modules it imported, in order."""
    proc = subprocess.run([sys.executable, '-X', 'importtime', '-m', 'orch', *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60)
    names = [line.rsplit('|', 1)[1].strip() for line in proc.stderr.splitlines()
             if line.startswith('import time:') and '|' in line]
    assert names and 'orch.main' in names, proc.stderr
    return proc, names


def heavy(names: list[str]) -> list[str]:
    return [n for n in names if n == 'orch.commands' or n.startswith('orch.commands.')
            or n.split('.')[0] in HEAVY]


@pytest.mark.parametrize('args', [['--version'], ['--help'], []])
def test_version_and_help_import_no_command_module(args: list[str], tmp_path: Path) -> None:
    proc, names = imported(args, tmp_path)
    assert not heavy(names), heavy(names)
    if args == ['--version']:
        assert (proc.returncode, proc.stdout) == (0, f'codex-orch {__version__}\n')
    elif args == ['--help']:
        assert proc.returncode == 0 and all(f'\n    {name} ' in proc.stdout for name in COMMANDS), proc.stdout
    else:
        assert proc.returncode == 2 and 'required: COMMAND' in proc.stderr


def test_a_commands_help_imports_that_command_alone(tmp_path: Path) -> None:
    proc, names = imported(['report', '--help'], tmp_path)
    assert proc.returncode == 0 and proc.stdout.startswith('usage: codex-orch report'), proc.stdout + proc.stderr
    commands = {module for module, _, _ in COMMANDS.values()}
    assert [n for n in names if n in commands] == ['orch.commands.report']


@pytest.mark.parametrize('command, not_imported', [
    ('run', 'orch.commands.dry_run'),      # only --dry-run needs it
    ('resume', 'orch.commands.dry_run'),
    ('prune', 'orch.engine.start'),        # only --resume needs the execution engine
])
def test_a_command_imports_what_only_one_of_its_branches_uses_in_that_branch(
        command: str, not_imported: str, tmp_path: Path) -> None:
    proc, names = imported([command, '--help'], tmp_path)
    assert proc.returncode == 0 and f'orch.commands.{command}' in names, proc.stdout + proc.stderr
    assert not_imported not in names


PROGRAM = '''
import atexit, sys, threading, time
from orch.main import cli
atexit.register(lambda: print('exit handler ran', flush=True))
if sys.argv[1:2] == ['thread']:
    def late() -> None:
        time.sleep(0.3)
        print('thread finished', flush=True)
    threading.Thread(target=late).start()
sys.argv = ['codex-orch', 'status']
print('before')   # (stdout a pipe: left in the buffer, flushed on the way out)
sys.exit(cli())   # as the console script and python -m orch call it
'''


@pytest.mark.parametrize('thread', [False, True])
def test_the_program_ends_as_a_normal_exit_would(tmp_path: Path, thread: bool) -> None:
    """cli() ends the process without the interpreter's teardown, but only after what a normal exit does first: the
    exit handlers ran, buffered output is written, the exit code is the command's; a thread still running is waited
    for (the normal exit then)."""
    res = subprocess.run([sys.executable, '-c', PROGRAM, *(['thread'] if thread else [])], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2, res   # not a repository: a usage error
    assert 'not a git repository' in res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == 'before' and 'exit handler ran' in lines, res.stdout
    assert ('thread finished' in lines) == thread, res.stdout


def test_main_with_arguments_returns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A caller's process (a script, the tests) goes on after the command."""
    monkeypatch.chdir(tmp_path)
    assert main(['status']) == 2


def test_a_profiled_program_still_writes_its_profile(tmp_path: Path) -> None:
    """`python -m cProfile -o FILE -m orch ...` writes FILE after the program: it gets the normal exit."""
    out = tmp_path / 'status.prof'
    res = subprocess.run([sys.executable, '-m', 'cProfile', '-o', str(out), '-m', 'orch', 'status'], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert 'not a git repository' in res.stderr, res   # (cProfile takes the SystemExit: its own exit code)
    assert out.is_file() and out.stat().st_size > 0
