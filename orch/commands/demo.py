"""`codex-orch demo`: the whole pipeline, offline, with the real Codex CLI against a local model stand-in.

In a throw-away repository it writes an example spec and plan, runs them (worktree, workers,
commits, results, report), then runs again to show that nothing is redone.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from orch import output
from orch.adapters.codex_bin import INSTALL_HINT, find_codex
from orch.errors import InputError, LaunchError
from orch.runstate.state import read_result
from orch.standin.server import Standin, write_codex_home

SPEC = """# Greeting library

Provide `greet(name)` in `src/greet.py` returning `"Hello, <name>!"`, with a test in
`tests/test_greet.py`, and have the change reviewed.
"""

BUGGY = 'def greet(name: str) -> str:\n    return f"Hello {name}"\n'
GREET = 'def greet(name: str) -> str:\n    return f"Hello, {name}!"\n'
STRIPPED = 'def greet(name: str) -> str:\n    return f"Hello, {name.strip()}!"\n'
TEST = 'from src.greet import greet\n\n\ndef test_greet():\n    assert greet("Ada") == "Hello, Ada!"\n'


def demo_plan(python: str = sys.executable) -> dict[str, Any]:
    """The example plan. The [[standin: ...]] lines script the local model stand-in (a real model would
    just read them as part of the description): T1's first version is wrong, so its check fails and a
    repair round fixes it; the reviewer asks for one change, which goes back to T1's thread."""
    check = (f'{shlex.quote(python)} -c "from src.greet import greet; r = greet(\'Ada\'); '
             'assert r == \'Hello, Ada!\', r"')
    return {'version': 1, 'title': 'Greeting library', 'tasks': [
        {'id': 'T1', 'role': 'implementer', 'title': 'Add greet()', 'paths': ['src/greet.py'],
         'description': ('Create src/greet.py with greet(name).\n'
                         f'[[standin: write src/greet.py]]\n```\n{BUGGY}```\n'
                         f'[[standin: write-at 2 src/greet.py]]\n```\n{GREET}```\n'
                         f'[[standin: write-at 3 src/greet.py]]\n```\n{STRIPPED}```\n'),
         'acceptance': ['greet("Ada") == "Hello, Ada!"'], 'checks': [check]},
        {'id': 'T2', 'role': 'tester', 'title': 'Test greet()', 'depends_on': ['T1'],
         'paths': ['tests/test_greet.py'],
         'description': f'Add a pytest test.\n[[standin: write tests/test_greet.py]]\n```\n{TEST}```\n'},
        {'id': 'T3', 'role': 'reviewer', 'title': 'Review the change', 'depends_on': ['T1', 'T2'],
         'description': ('Review src/greet.py and its test against the spec.\n'
                         '[[standin: review-once greet() should strip whitespace around the name]]\n')},
    ]}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser('demo', help='run an example plan offline: real Codex CLI, local model stand-in')
    p.add_argument('--dir', help='where to create the demo repository (default: a new temp dir)')


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(['git', '-C', str(repo), *args], check=True, capture_output=True, text=True).stdout


def _checked_dir(given: str | None) -> Path | None:
    """--dir, resolved and checked before anything is written: the demo makes a new repository there."""
    if not given:
        return None
    root = Path(given).resolve()
    repo = root / 'greeting'
    if root.exists() and not root.is_dir():
        raise InputError(f'--dir {given}: {root} is a file, not a directory; choose another --dir '
                         '(a new or existing directory)')
    if repo.exists() or repo.is_symlink():
        raise InputError(f'--dir {given}: {repo} already exists (a demo ran there before?); choose another '
                         f'--dir, or remove {repo} to run the demo there again')
    return root


def _make_repo(root: Path) -> Path:
    repo = root / 'greeting'
    try:
        repo.mkdir(parents=True)
    except OSError as exc:
        raise InputError(f'--dir {root}: cannot create {repo}: {exc.strerror or exc}; choose another --dir '
                         '(one you can write to)') from None
    _git(repo, 'init', '-q', '-b', 'main')
    (repo / 'README.md').write_text('# greeting\n')
    (repo / 'spec.md').write_text(SPEC)
    (repo / 'plan.json').write_text(json.dumps(demo_plan(), indent=2) + '\n')
    _git(repo, 'add', '-A')
    _git(repo, '-c', 'user.name=codex-orch demo', '-c', 'user.email=demo@codex-orch.invalid',
         'commit', '-q', '-m', 'greeting: spec and plan')
    return repo


@contextlib.contextmanager
def _env(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def demo(args: argparse.Namespace) -> int:
    from orch.main import main
    root = _checked_dir(args.dir)
    binary = find_codex()
    if binary is None:
        raise LaunchError(f'the demo runs the real Codex CLI, and no codex executable was found: {INSTALL_HINT}')
    root = root or Path(tempfile.mkdtemp(prefix='codex-orch-demo-'))
    repo = _make_repo(root)
    with Standin() as server:
        env = write_codex_home(root / 'codex-home', server.base_url)
        identity = {'GIT_AUTHOR_NAME': 'codex-orch demo', 'GIT_AUTHOR_EMAIL': 'demo@codex-orch.invalid',
                    'GIT_COMMITTER_NAME': 'codex-orch demo', 'GIT_COMMITTER_EMAIL': 'demo@codex-orch.invalid'}
        with _env({**env, **identity}), contextlib.chdir(repo):
            output.write_line(f'== demo repository: {repo}')
            output.write_line(f'== codex: {binary}; model: local stand-in at {server.base_url}\n')
            rc = main(['init'])
            (repo / '.orchestrator' / 'orchestrator.yaml').write_text(f'codex:\n  binary: {binary}\n')
            output.write_line('\n== codex-orch run --plan-file plan.json --spec-file spec.md')
            rc = main(['run', '--plan-file', 'plan.json', '--spec-file', 'spec.md', '--run-id', 'demo'])
            if rc != 0:
                return rc
            _show(repo)
            before = len(server.requests)
            output.write_line('\n== second run: codex-orch resume (everything is up to date)')
            rc = main(['resume', '--run-id', 'demo'])
            output.write_line(f'model requests during the second run: {len(server.requests) - before}')
    output.write_line(f'\nreport: {repo}/.orchestrator/runs/demo/report.md')
    return rc


def _show(repo: Path) -> None:
    run = json.loads((repo / '.orchestrator' / 'runs' / 'demo' / 'run.json').read_text())
    output.write_line(f'\n== worktree .orchestrator/worktrees/demo on branch {run["shared_branch"]}:')
    output.write(_git(repo, 'log', '--format=  %h %s', f'{run["base_commit"]}..{run["shared_branch"]}'))
    output.write_line('\n== results (tasks/<id>/result.json, and how each was made: execution.json):')
    for tid in ('T1', 'T2', 'T3'):
        result = read_result(repo / '.orchestrator' / 'runs' / 'demo' / 'tasks' / tid) or {}
        rounds = [f'{n} {kind} round{"s" if n != 1 else ""}' for kind, n in
                  (('repair', result.get('repair_rounds', 0)), ('review', result.get('review_rounds', 0)),
                   ('conflict', result.get('conflict_rounds', 0))) if n]
        shown = f' ({", ".join(rounds)})' if rounds else ''
        output.write_line(f'  {tid} {result["role"]:<11} {result["answer"]["status"]}{shown}: '
                          f'{result["answer"]["summary"]}')
    output.write_line('\n== report.md:')
    output.write(Path(repo / '.orchestrator' / 'runs' / 'demo' / 'report.md').read_text())
