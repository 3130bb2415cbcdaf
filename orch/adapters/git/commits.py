"""Commits: committing a worker's changes (with trailers, never a repository inside), finding them again,
and the history questions asked about them."""
from __future__ import annotations

import os
import re
import shlex
import tempfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from orch.adapters.git.changes import changed_paths, filled_submodules, nested_repositories, same_gitlinks
from orch.adapters.git.checkouts import head_state
from orch.adapters.git.run import (
    GITLINK,
    check_name,
    detached_head_of,
    identity_env,
    own_worktree,
    ref_sha,
    repo_lock,
    rev_parse,
    run,
)
from orch.core.text import display_path
from orch.errors import GitError

_TRAILER_KEY = re.compile(r'[A-Za-z0-9][A-Za-z0-9-]*')


class CommitRefused(GitError):
    """`commit` refused the worktree's state: it is on another branch or commit than expected, or its
    changes hold a git repository. Nothing was staged or committed."""


def _message_with_trailers(message: str, trailers: Mapping[str, str]) -> str:
    if not message.strip():
        raise ValueError('a commit message must not be empty')
    lines = []
    for key, value in trailers.items():
        if not _TRAILER_KEY.fullmatch(key):
            raise ValueError(f'invalid trailer key {key!r}: use letters, digits and "-"')
        if not value.strip() or '\n' in value or '\r' in value:
            raise ValueError(f'invalid value for trailer {key}: {value!r} (one non-empty line)')
        lines.append(f'{key}: {value.strip()}')
    return message.strip() + ('\n\n' + '\n'.join(lines) if lines else '') + '\n'


def _stage(worktree: Path, paths: list[str] | None) -> list[tuple[str, str, str]]:
    """Stage all changes, or exactly `paths`; return what is staged (`_staged`)."""
    if paths is None:
        run(worktree, 'add', '--all')
    else:
        wanted = {PurePosixPath(p).as_posix() for p in paths}
        selected = [p for p in changed_paths(worktree) if p in wanted]
        run(worktree, 'reset', '--quiet')  # leftovers staged by a failed attempt must not ride along
        if selected:
            run(worktree, '--literal-pathspecs', 'add', '--all', '--', *selected)
    return _staged(worktree)


def commit(
    worktree: Path,
    *,
    message: str,
    trailers: dict[str, str],
    paths: list[str] | None = None,
    author: tuple[str, str] | None = None,
    expect_branch: str | None = None,
    expect_head: str | None = None,
    detached: bool = False,
) -> str | None:
    """Commit all changes (or only `paths`) in a codex-orch worktree; None when nothing changed.

    Raises CommitRefused (a GitError), committing and staging nothing, when the worktree is not on `expect_branch`,
    not detached when `detached` (a task's private checkout) or its HEAD is not `expect_head` (when given: a worker
    must not switch branches, commit, reset or rebase), or when the changes hold a git repository: a nested one, a
    submodule a worker filled in (`nested_repositories`, `filled_submodules`) or any gitlink added or moved in the
    index.
    """
    worktree = Path(worktree)
    loc = own_worktree(worktree, 'commit in')
    text = _message_with_trailers(message, trailers)
    env = identity_env(worktree, author)
    with repo_lock(loc.common_dir):
        _check_head(worktree, expect_branch, expect_head, detached)
        parent = detached_head_of(worktree)
        _refuse_repositories(worktree, nested_repositories(worktree, paths), filled_submodules(worktree, paths))
        staged = _stage(worktree, paths)
        if not staged:
            return None
        gitlinks = _staged_gitlinks(staged)
        if gitlinks:
            run(worktree, 'reset', '--quiet')   # nothing stays staged after a refusal
            nested, moved = gitlinks
            _refuse_repositories(worktree, nested, moved)
        with tempfile.TemporaryFile() as msg:  # via stdin: no argv size limit, no option parsing
            msg.write(text.encode('utf-8'))
            msg.seek(0)
            # No hook runs at all (run.SAFE_CONFIG); --no-verify says so here too: the user's commit hooks
            # would judge (or rewrite) the worker's output, and validating it is the plan's job.
            run(worktree, 'commit', '--quiet', '--no-verify', '--cleanup=whitespace', '--file=-',
                env=env, stdin=msg)
        sha = rev_parse(worktree, 'HEAD')
        # What the commit changed is what was staged, against its parent: its record needs no history walk.
        _FILES[sha] = sorted({display_path(path) for _, _, path in staged})
        if parent is not None and not any(GITLINK in (old, new) for old, new, _ in staged):
            same_gitlinks(worktree, parent, sha)   # no submodule added, moved or removed
        return sha


def _check_head(worktree: Path, expect_branch: str | None, expect_head: str | None, detached: bool) -> None:
    if expect_branch is None and expect_head is None and not detached:
        return
    branch, sha = head_state(worktree)
    if detached and branch is not None:
        raise CommitRefused(
            f'refusing to commit in {worktree}: its HEAD is on the branch {branch}, where codex-orch left it detached; '
            'something in it (a worker?) switched it to a branch. Nothing was committed. Remove the checkout '
            f'(git worktree remove --force {shlex.quote(str(worktree))}), then resume: the task runs again.')
    if expect_branch is not None and branch != expect_branch:
        where = f'on the branch {branch}' if branch else 'on a detached HEAD'
        raise CommitRefused(
            f'refusing to commit in {worktree}: the worktree is {where} (at {sha[:12]}), expected {expect_branch}; '
            'something in it (a worker?) switched branches. Nothing was committed. Switch it back '
            f'(git -C {shlex.quote(str(worktree))} switch {shlex.quote(expect_branch)}) or remove it '
            '(codex-orch clean), then run the task again.')
    if expect_head is not None and sha != expect_head and sha != rev_parse(worktree, expect_head):
        raise CommitRefused(
            f'refusing to commit in {worktree}: its HEAD is at {sha[:12]}, expected {expect_head[:12]} '
            f'({head_move(worktree, expect_head, sha)}); something in it (a worker?) committed, reset or rebased. '
            f'Nothing was committed. Check its history (git -C {shlex.quote(str(worktree))} log), then run the task '
            'again.')


def head_move(root: Path, expected: str, actual: str) -> str:
    """What moved a HEAD from `expected` (where codex-orch left it) to `actual`, in words."""
    move = f'HEAD moved from {expected[:12]} to {actual[:12]}'
    if is_ancestor(root, expected, actual):
        count = len(run(root, 'rev-list', f'{check_name(expected, "commit")}..{check_name(actual, "commit")}',
                        '--').text.split())
        return f'{move}: {count} commit{"s" if count != 1 else ""} codex-orch did not make'
    if is_ancestor(root, actual, expected):
        return f'{move}: a reset codex-orch did not make'
    return f'{move}: a reset or rebase codex-orch did not make'


def _staged(worktree: Path) -> list[tuple[str, str, str]]:
    """(old mode, new mode, path) of every change the index holds against HEAD, gitlinks included."""
    # Index against HEAD only: nothing looks inside the submodule directories.
    res = run(worktree, 'diff-index', '--cached', '--raw', '-z', '--no-renames', '--ignore-submodules=none',
              'HEAD', '--')
    fields = res.out.split(b'\0')
    staged = []
    for meta, path in zip(fields[0::2], fields[1::2], strict=False):   # the output ends with NUL
        old_mode, new_mode = meta.lstrip(b':').split(b' ')[:2]
        staged.append((old_mode.decode(), new_mode.decode(), os.fsdecode(path)))
    return staged


def _staged_gitlinks(staged: list[tuple[str, str, str]]) -> tuple[list[str], list[str]] | None:
    """Gitlinks the index adds (nested repositories) and moves (submodules) against HEAD; None if none."""
    added = sorted(path for old, new, path in staged if new == GITLINK and old != GITLINK)
    moved = sorted(path for old, new, path in staged if new == GITLINK and old == GITLINK)
    return (added, moved) if added or moved else None


def _refuse_repositories(worktree: Path, nested: list[str], submodules: list[str]) -> None:
    problems = []
    if nested:
        problems.append(
            f'{_listed(nested)} {"is a git repository" if len(nested) == 1 else "are git repositories"} inside the '
            'worktree (made by git init or git clone?), which git would commit as a gitlink: a pointer to a commit '
            'that exists nowhere else. Remove its .git to have its files committed as ordinary files, or delete it')
    if submodules:
        problems.append(
            f'the submodule{"s" if len(submodules) > 1 else ""} {_listed(submodules)} changed: codex-orch does not '
            'initialise submodules in its worktrees, so files written in one would be lost and a moved one would '
            'point at a commit that exists nowhere else. Change a submodule in its own repository, and its pointer '
            'by hand')
    if problems:
        raise CommitRefused(f'refusing to commit in {worktree}: ' + '; '.join(problems) +
                       '. Nothing was committed; a resume discards these leftovers and runs the task again.')


def _listed(paths: list[str]) -> str:
    return ', '.join(paths[:10]) + (f' and {len(paths) - 10} more' if len(paths) > 10 else '')


def find_commit_by_trailer(worktree: Path, key: str, value: str, *, since: str | None = None,
                           tip: str = 'HEAD') -> str | None:
    """Newest commit reachable from `tip` (after `since`, exclusive) with trailer `key` equal to `value`."""
    if not _TRAILER_KEY.fullmatch(key) or not value.strip():
        raise ValueError(f'invalid trailer {key!r}: {value!r}')
    value = value.strip()
    revs = f'{check_name(since, "revision")}..{check_name(tip, "revision")}' if since else check_name(tip, 'revision')
    # git parses the trailer block (keys match case-insensitively); --grep only narrows the walk.
    fmt = f'%H%x1f%(trailers:key={key},valueonly,unfold,separator=%x1f)'
    res = run(worktree, 'log', '-z', f'--format={fmt}', '--fixed-strings', f'--grep={value}', revs, '--')
    for record in os.fsdecode(res.out).split('\0'):
        sha, _, values = record.partition('\x1f')
        if value in (v.strip() for v in values.split('\x1f')):
            return sha.strip()
    return None


# commit_files of the commits `commit` made in this process: a commit's files are a function of the commit alone.
_FILES: dict[str, list[str]] = {}


def commit_files(repo: Path, sha: str) -> list[str]:
    """Files a commit changed (against its first parent), sorted, for records: an undecodable byte of a name
    is written `\\xNN` (orch.core.text.display_path), so these are names to show, not pathspecs."""
    if sha in _FILES:
        return list(_FILES[sha])
    parents = run(repo, 'rev-list', '--parents', '-n', '1', check_name(sha, 'commit'), '--').text.split()[1:]
    trees = [parents[0], sha] if parents else ['--root', sha]
    res = run(repo, 'diff-tree', '-r', '-z', '--name-only', '--no-renames', '--no-commit-id', *trees)
    return sorted({display_path(os.fsdecode(p)) for p in res.out.split(b'\0') if p})


# --- history -------------------------------------------------------------------------------------

def is_ancestor(root: Path, a: str, b: str) -> bool:
    res = run(root, 'merge-base', '--is-ancestor', check_name(a, 'revision'), check_name(b, 'revision'),
              ok=(0, 1))
    return res.status == 0


def contains(root: Path, tip: str, sha: str) -> bool:
    """Whether commit `sha` is in the history of `tip`; False when the repository has no such commit."""
    if ref_sha(root, f'{check_name(sha, "commit")}^{{commit}}') is None:
        return False
    return is_ancestor(root, sha, tip)


def unmerged_commits(root: Path, branch: str, base: str) -> int:
    """How many commits `branch` has that `base` does not."""
    revs = f'{check_name(base, "revision")}..{check_name(branch, "branch name")}'
    return int(run(root, 'rev-list', '--count', revs, '--').text)


def commits_since(root: Path, tip: str, since: str) -> list[str]:
    """The commits from `since` (exclusive) to `tip` along first parents, oldest first."""
    res = run(root, 'rev-list', '--first-parent', '--reverse',
               f'{check_name(since, "commit")}..{check_name(tip, "commit")}', '--')
    return res.text.split()


def trailer_of(root: Path, sha: str, key: str) -> str | None:
    """The value of trailer `key` in commit `sha`'s message, or None."""
    if not _TRAILER_KEY.fullmatch(key):
        raise ValueError(f'invalid trailer key {key!r}')
    res = run(root, 'log', '-1', f'--format=%(trailers:key={key},valueonly,unfold)', check_name(sha, 'commit'),
               '--')
    value = res.text.strip().splitlines()
    return value[0].strip() if value else None
