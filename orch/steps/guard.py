"""What a worker may not do to codex-orch through its worktree: change the control files (they decide what
later runs execute, unsandboxed) or the protected files (they decide whether its own work passes), or plant
symlinks that make codex-orch read or write outside it."""
from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from orch.adapters import git
from orch.core.config import Config
from orch.core.plan import Task
from orch.engine.scheduler import glob_match

# Files whose content codex-orch executes or obeys: its config, rules, schemas and prompts, the
# dodo.py that plain doit imports, and the scripts it starts as services.
CONTROL_FILES = ('.orchestrator/', 'dodo.py', 'scripts/start_codex_mem.sh')


def control_files(config: Config) -> tuple[str, ...]:
    """The control files (a trailing / is a whole directory), with the scripts of configured services."""
    scripts = [arg for svc in config.services for arg in svc.command
               if not arg.startswith('-') and '/' in arg and not os.path.isabs(arg) and '..' not in arg.split('/')]
    return tuple(dict.fromkeys([*CONTROL_FILES, *scripts]))


def touched_control_files(changed: list[str], config: Config) -> list[str]:
    patterns = control_files(config)
    return [path for path in changed
            if any(path.startswith(p) if p.endswith('/') else path == p for p in patterns)]


# Files that decide whether a worker's work passes: the test harness's configuration (a conftest.py can mark
# every test skipped; pyproject.toml's [tool.pytest.ini_options] addopts can deselect them), the instructions Codex
# obeys (AGENTS.md, .codex/) and CI. Globs as in a task's `paths` (`*` crosses `/`: `*/conftest.py` is one at any
# depth); matched without regard to case.
PROTECTED = ('conftest.py', '*/conftest.py', 'pytest.ini', 'tox.ini', 'noxfile.py', 'setup.cfg',
             'pyproject.toml', '*/pyproject.toml', 'AGENTS.md', '*/AGENTS.md', '.codex', '*/.codex', '*/.codex/*',
             '.github')


def protected_globs(config: Config, task: Task) -> tuple[str, ...]:
    """The defaults, with the config's `protect` and the plan task's own."""
    return tuple(dict.fromkeys([*PROTECTED, *config.protect, *task.protect]))


def touched_protected(changed: list[str], config: Config, task: Task) -> list[str]:
    """The changed files (added, modified or deleted) that are protected and not the task's own: a task owns a
    protected file only by naming it in its `paths`, as the exact path or by an entry that is itself protected
    (`tests/conftest.py`, `*/conftest.py`, `.github`), never through a broad glob such as `src/*`."""
    globs = [g.lower() for g in protected_globs(config, task)]
    naming = [p for p in task.paths if any(glob_match(g, p.lower()) for g in globs)]
    return [path for path in changed
            if any(glob_match(g, path.lower()) for g in globs)
            and path not in task.paths and not any(glob_match(p, path) for p in naming)]


def touched_protected_in(workdir: Path, changed: list[str], config: Config, task: Task) -> list[str]:
    """touched_protected of the changed files and of the git-ignored ones that match a protected glob: a worker's
    conftest.py that it also listed in .gitignore is never committed, yet pytest obeys it in the checks."""
    globs = protected_globs(config, task)
    ignored = [p.rstrip('/') for p in git.ignored_paths(workdir, [f':(icase){g}' for g in globs])]
    return touched_protected(sorted({*changed, *ignored}), config, task)


def protected_reason(touched: list[str]) -> str:
    return (f'the worker changed protected files: {", ".join(touched)}; nothing was committed (they decide whether '
            'its work passes: test configuration, agent instructions, CI; a plan task may change one only by '
            'naming it in its "paths", not through a broad glob)')


class EscapesWorktree(Exception):
    """A path inside the worktree goes through a symlink (it could lead anywhere)."""


def inside(root: Path, relative: str) -> Path:
    """`root / relative`, refusing any component that is a symlink, so codex-orch never follows one that a
    worker planted out of its worktree (nor reads a symlinked file's target into a commit)."""
    path = root
    for part in PurePosixPath(relative).parts:
        if part in ('..', '/'):
            raise EscapesWorktree(f'{relative}: must stay inside the worktree')
        path = path / part
        if path.is_symlink():
            raise EscapesWorktree(f'{path.relative_to(root).as_posix()} is a symlink (to {os.readlink(path)}); '
                                  'codex-orch does not follow symlinks in a worktree')
    return path
