"""`codex-orch init`: write the default config, schemas, prompts and a dodo.py into a repository."""
from __future__ import annotations

import argparse
from pathlib import Path

from orch import output
from orch.core.resources import defaults_dir
from orch.runstate import atomic
from orch.runstate.runs import ORCH_DIR

DODO = '''"""doit entry point: `doit list`, `doit info TASK`, `doit run` on the latest codex-orch run."""
from orch.engine.doit_runner import dodo_namespace

globals().update(dodo_namespace())
'''
GITIGNORE = 'runs/\nworktrees/\ncodex-home/\n'


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser('init', help='write the default .orchestrator/ (config, schemas, prompts) and a dodo.py')
    p.add_argument('--force', action='store_true', help='overwrite existing default files')


def write_defaults(repo: Path, *, force: bool) -> list[str]:
    written = []
    source = defaults_dir()
    target = repo / ORCH_DIR
    for path in sorted(source.rglob('*')):
        rel = path.relative_to(source)
        if not path.is_file() or rel.parts[0] in ('runs', 'worktrees', 'codex-home', '__pycache__') \
                or path.suffix not in ('.yaml', '.json', '.md'):
            continue
        dest = target / rel
        if dest.exists() and not force:
            continue
        atomic.write_bytes(dest, path.read_bytes())
        written.append(f'{ORCH_DIR}/{rel.as_posix()}')
    if not (target / '.gitignore').exists():
        atomic.write_text(target / '.gitignore', GITIGNORE)
        written.append(f'{ORCH_DIR}/.gitignore')
    if not (repo / 'dodo.py').exists():
        atomic.write_text(repo / 'dodo.py', DODO)
        written.append('dodo.py')
    return written


def init(repo: Path, *, force: bool = False) -> int:
    written = write_defaults(repo, force=force)
    for item in written:
        output.write_line(f'wrote {item}')
    if not written:
        output.write_line(f'{ORCH_DIR}/ is already set up (use --force to restore the defaults)')
    return 0




def init_command(args: argparse.Namespace) -> int:
    from orch.commands.common import find_repo
    return init(find_repo(), force=args.force)
