"""What several subcommands share: finding the repository, running a run to its end."""
from __future__ import annotations

from pathlib import Path

from orch import output
from orch.adapters import git
from orch.engine.inputs import layout_for
from orch.runstate.runs import ORCH_DIR, RunInfo, run_dir


def find_repo(start: Path | None = None) -> Path:
    return git.repo_root(Path(start or Path.cwd()))


def ensure_orchestrator(repo: Path) -> None:
    """First use in a repository: write the defaults, as `init` would."""
    if not (repo / ORCH_DIR).is_dir():
        from orch.commands.init import write_defaults
        write_defaults(repo, force=False)
        output.write_line(f'created {ORCH_DIR}/ with the default config, schemas and prompts', err=True)


# ---- what a run owns in git: its worktrees and branches (clean and prune take them apart)

def worktree_root(repo: Path, run_id: str) -> Path:
    return repo / ORCH_DIR / 'worktrees' / run_id


def run_worktrees(repo: Path, run_id: str) -> list[git.WorktreeInfo]:
    root = worktree_root(repo, run_id).resolve()
    return [wt for wt in git.list_worktrees(repo) if Path(wt['path']) == root or root in Path(wt['path']).parents]


def run_branches(repo: Path, info: RunInfo, worktrees: list[git.WorktreeInfo]) -> list[str]:
    """The shared branch, or one branch per task that ran (each has a task directory), and those checked out."""
    names = [wt['branch'] for wt in worktrees if wt['branch']]
    if not info.per_task:
        names.append(info.shared_branch)
    else:
        tasks = run_dir(repo, info.run_id) / 'tasks'   # the plan file itself may be gone
        ids = sorted(p.name for p in tasks.iterdir() if p.is_dir()) if tasks.is_dir() else []
        names += [layout_for(info).task_branch(t) for t in ids]
    return list(dict.fromkeys(names))
