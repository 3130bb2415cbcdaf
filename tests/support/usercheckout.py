"""What a user sees of their own checkout, to prove codex-orch left it alone."""
from __future__ import annotations

from pathlib import Path

from tests.support.gitrepo import git, snapshot


def user_view(repo: Path) -> dict[str, str]:
    """HEAD, status, and every ref that is not one of codex-orch's (`refs/heads/orch/...`)."""
    snap = snapshot(repo)
    refs = [line for line in snap['refs'].splitlines() if not line.startswith('refs/heads/orch/')]
    return {'head': snap['head'], 'symbolic_head': snap['symbolic_head'], 'status': snap['status'],
            'refs': '\n'.join(refs)}


def orch_branches(repo: Path) -> list[str]:
    return git(repo, 'for-each-ref', '--format=%(refname:short)', 'refs/heads/orch/').splitlines()


def worktree_paths(repo: Path) -> list[Path]:
    """Linked worktrees git knows about (the main checkout excluded)."""
    lines = git(repo, 'worktree', 'list', '--porcelain').splitlines()
    paths = [Path(line.split(' ', 1)[1]) for line in lines if line.startswith('worktree ')]
    return paths[1:]
