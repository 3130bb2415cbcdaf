"""Every git operation codex-orch performs; only its module `run` starts git.

The orchestrator, not the worker, owns git: it creates worktrees and branches, commits what a worker
changed, merges, fast-forwards and cleans. Each function takes explicit paths and reads the repository
afresh, so callers can treat it as a function of the repository state.

Safety rules live here so that no caller can forget them:
- the user's main checkout is never modified, except when `fast_forward` moves a *clean* checked-out
  base branch with `merge --ff-only`, which cannot lose work;
- every git command runs without the variables that locate a repository (GIT_DIR, GIT_WORK_TREE,
  GIT_INDEX_FILE, ...), so an orchestrator started from a git hook cannot act on the wrong repository;
- a worker is untrusted code and writes files in the worktree, so nothing there may run through
  codex-orch's git: every command runs with hooks and the fsmonitor hook off and never recurses into
  submodules (`run.SAFE_CONFIG`), and nothing is committed that git would store as a pointer to another
  repository (a nested repository, a submodule a worker filled in or moved);
- every failure is a `GitError` with the command, git's stderr and a sentence saying what to do.

Every operation is a git command (`run.run`). Needs git >= 2.24 (`merge --no-verify`, `%(trailers:key=...,valueonly)`).

One module per job; callers use the names below (`from orch.adapters import git; git.commit(...)`):
- `run`: running git (environment, safe config, errors), where things are, the repository lock, identity;
- `drivers`: the filter, merge and diff drivers of the repository's config, switched off, and their kept listing;
- `gitfiles`: what git's small files say (a checkout's git dir, its common dir, a detached HEAD), read directly;
- `checkouts`: worktrees and the branch each has checked out;
- `changes`: what changed in a worktree, nested repositories and submodules, discarding;
- `commits`: commits with trailers, finding them again, history;
- `merge`: merging task branches, fast-forwarding the base, deleting branches;
- `landing`: a task's private checkout, replaying its commits onto the run's tip, moving the run's branch;
- `seal`: the digest of the files that make git run commands;
- `bundles`: moving commits between machines as bundles.
"""
from __future__ import annotations

from orch.adapters.git.bundles import (
    TreeChange,
    apply_commit_changes,
    create_bundle,
    delete_ref,
    fetch_bundle,
    init_repository,
    parents_of,
    restore_paths,
    scratch_checkout,
    scratch_commit,
    snapshot_commit,
    tree_changes,
    unpacked_refusal,
)
from orch.adapters.git.changes import (
    changed_paths,
    discard_changes,
    filled_submodules,
    ignored_paths,
    is_dirty,
    nested_repositories,
)
from orch.adapters.git.checkouts import (
    WorktreeInfo,
    branch_tip,
    current_branch,
    ensure_worktree,
    head_state,
    list_worktrees,
    prune_worktrees,
    remove_worktree,
    repo_root,
    snapshot_worktree,
    worktree_of_branch,
    worktree_valid,
)
from orch.adapters.git.commits import (
    CommitRefused,
    commit,
    commit_files,
    commits_since,
    contains,
    find_commit_by_trailer,
    head_move,
    is_ancestor,
    trailer_of,
    unmerged_commits,
)
from orch.adapters.git.gitfiles import common_dir_of, detached_head, linked_git_dir
from orch.adapters.git.landing import (
    BranchMoved,
    abort_replay,
    add_checkout,
    advance_branch,
    move_checkout,
    move_worktree,
    reattach,
    replay_onto,
    reset_checkout,
    same_as_commit,
    squash_onto,
)
from orch.adapters.git.merge import (
    checkout_blockers,
    delete_branch,
    describe_blockers,
    fast_forward,
    merge_into_worktree,
    start_merge,
)
from orch.adapters.git.run import git_version, pin, rev_parse
from orch.adapters.git.seal import control_changes, control_digest
from orch.errors import GitError

__all__ = [
    'BranchMoved',
    'CommitRefused',
    'GitError',
    'TreeChange',
    'WorktreeInfo',
    'abort_replay',
    'add_checkout',
    'advance_branch',
    'apply_commit_changes',
    'branch_tip',
    'changed_paths',
    'checkout_blockers',
    'commit',
    'commit_files',
    'commits_since',
    'common_dir_of',
    'contains',
    'control_changes',
    'control_digest',
    'create_bundle',
    'current_branch',
    'delete_branch',
    'delete_ref',
    'describe_blockers',
    'detached_head',
    'discard_changes',
    'ensure_worktree',
    'fast_forward',
    'fetch_bundle',
    'filled_submodules',
    'find_commit_by_trailer',
    'git_version',
    'head_move',
    'head_state',
    'ignored_paths',
    'init_repository',
    'is_ancestor',
    'is_dirty',
    'linked_git_dir',
    'list_worktrees',
    'merge_into_worktree',
    'move_checkout',
    'move_worktree',
    'nested_repositories',
    'parents_of',
    'pin',
    'prune_worktrees',
    'reattach',
    'remove_worktree',
    'replay_onto',
    'repo_root',
    'reset_checkout',
    'restore_paths',
    'rev_parse',
    'same_as_commit',
    'scratch_checkout',
    'scratch_commit',
    'snapshot_commit',
    'snapshot_worktree',
    'squash_onto',
    'start_merge',
    'trailer_of',
    'tree_changes',
    'unmerged_commits',
    'unpacked_refusal',
    'worktree_of_branch',
    'worktree_valid',
]
