"""What several subcommands share: finding the repository, running a run to its end."""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from orch import output
from orch.adapters import git
from orch.runstate.runs import ORCH_DIR, RunInfo, run_dir


def find_repo(start: Path | None = None) -> Path:
    return git.repo_root(Path(start or Path.cwd()))


def ensure_orchestrator(repo: Path) -> list[str]:
    """First use in a repository: write the defaults, as `init` would; returns what was written.

    Every command that calls this starts a run, and a run starts from a commit: a repository without
    one is refused here, before anything is written.
    """
    written = _write_first_defaults(repo)
    if written:
        output.write_line(f'created {ORCH_DIR}/ with the default config, schemas and prompts', err=True)
    return written


@contextlib.contextmanager
def first_use(repo: Path) -> Iterator[None]:
    """ensure_orchestrator for a command that may still refuse its input in the body: then what was
    written here is taken back, so a refused command leaves the repository as it found it."""
    written = _write_first_defaults(repo)
    try:
        yield
    except BaseException:
        _take_back(repo, written)
        raise
    if written:
        output.write_line(f'created {ORCH_DIR}/ with the default config, schemas and prompts', err=True)


def _write_first_defaults(repo: Path) -> list[str]:
    if (repo / ORCH_DIR).is_dir():
        return []
    from orch.engine.start import require_commit
    require_commit(repo)
    from orch.commands.init import write_defaults
    return write_defaults(repo, force=False)


def _take_back(repo: Path, written: list[str]) -> None:
    """Remove the files first use wrote, then the directories left empty under .orchestrator/."""
    if not written:
        return
    for rel in written:
        with contextlib.suppress(OSError):
            (repo / rel).unlink()
    for dirpath, _, _ in os.walk(repo / ORCH_DIR, topdown=False):
        with contextlib.suppress(OSError):
            os.rmdir(dirpath)   # only an empty one: whatever else is there stays


# ---- what a run owns in git: its worktrees and branches (clean and prune take them apart)

def worktree_root(repo: Path, run_id: str) -> Path:
    return repo / ORCH_DIR / 'worktrees' / run_id


def checkouts_root(repo: Path, run_id: str) -> Path:
    """Where the run's tasks' private checkouts live (RunLayout.checkouts)."""
    return repo / ORCH_DIR / 'worktrees' / f'{run_id}.tasks'


def run_worktrees(repo: Path, run_id: str) -> list[git.WorktreeInfo]:
    """The run's worktree(s), its tasks' private checkouts (beside it, in `<run_id>.tasks/`) and its gates'."""
    root, checkouts = worktree_root(repo, run_id).resolve(), checkouts_root(repo, run_id).resolve()
    gates = f'{root.name}.gate.'   # a gate's checkout of a task's commit (RunLayout.gate_checkout)
    return [wt for wt in git.list_worktrees(repo)
            if Path(wt['path']) == root or root in Path(wt['path']).parents or checkouts in Path(wt['path']).parents
            or (Path(wt['path']).parent == root.parent and Path(wt['path']).name.startswith(gates))]


def run_branches(repo: Path, info: RunInfo, worktrees: list[git.WorktreeInfo]) -> list[str]:
    """The shared branch, or one branch per task that ran (each has a task directory), and those checked out."""
    names = [wt['branch'] for wt in worktrees if wt['branch']]
    if not info.per_task:
        names.append(info.shared_branch)
    else:
        tasks = run_dir(repo, info.run_id) / 'tasks'   # the plan file itself may be gone
        ids = sorted(p.name for p in tasks.iterdir() if p.is_dir()) if tasks.is_dir() else []
        from orch.engine.inputs import layout_for  # only here: it imports the config models and the compiler
        names += [layout_for(info).task_branch(t) for t in ids]
    return list(dict.fromkeys(names))
