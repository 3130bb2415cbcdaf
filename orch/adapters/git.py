"""Every git operation codex-orch performs; the only module that imports GitPython.

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
  submodules (`_SAFE_CONFIG`), and nothing is committed that git would store as a pointer to another
  repository (a nested repository, a submodule a worker filled in or moved);
- every failure is a `GitError` with the command, git's stderr and a sentence saying what to do.

GitPython has no worktree API (gitpython-developers/GitPython#719), so everything goes through its
command wrapper. Needs git >= 2.24 (`merge --no-verify`, `%(trailers:key=...,valueonly)`).
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import os
import re
import shlex
import shutil
import stat
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, TypedDict

from orch.core.text import display_path
from orch.errors import GitError

# GitPython runs `git version` on import and raises ImportError when git is missing; with 'quiet' the
# import succeeds and the first command fails with GitCommandNotFound, which we turn into a GitError.
os.environ.setdefault('GIT_PYTHON_REFRESH', 'quiet')
import git as gitpython

# Variables that point git at a repository, index or object store other than the one found from the
# working directory. Git exports several of them to hooks (pre-commit issue #300).
_LOCATING_VARS = frozenset({
    'GIT_DIR', 'GIT_WORK_TREE', 'GIT_INDEX_FILE', 'GIT_OBJECT_DIRECTORY',
    'GIT_ALTERNATE_OBJECT_DIRECTORIES', 'GIT_COMMON_DIR', 'GIT_NAMESPACE', 'GIT_PREFIX',
    'GIT_QUARANTINE_PATH',
})
# Added to every command: never prompt for credentials or open an editor in an unattended run.
_FIXED_ENV = {'GIT_TERMINAL_PROMPT': '0', 'GIT_EDITOR': ':'}
# Given with -c on every command, so they beat every config file (git passes them on to the git
# processes it starts). A worker writes files in its worktree; none of them may run as the user:
_SAFE_CONFIG = (
    # No hook runs at all: a relative hooksPath (husky sets `.husky`) points into the worktree, where
    # a worker can write post-commit or reference-transaction, which `commit --no-verify` still runs.
    'core.hooksPath=/dev/null',
    # The fsmonitor hook is a command too. Empty means off, for git before 2.36 (a hook path) and after.
    'core.fsmonitor=',
    # A submodule directory in a worktree is the worker's: git must never run itself inside it.
    'submodule.recurse=false',
)
_SAFE_ARGS = tuple(arg for setting in _SAFE_CONFIG for arg in ('-c', setting))
_GITLINK = '160000'
_FALLBACK_IDENTITY = ('codex-orch', 'codex-orch@localhost')
_LOCK_FILE = 'codex-orch-commit.lock'
_TRAILER_KEY = re.compile(r'[A-Za-z0-9][A-Za-z0-9-]*')
_DEFAULT_HINT = 'Check the repository with `git status` and retry.'

_env_guard = threading.Lock()
_repo_locks: dict[str, threading.Lock] = {}
_repo_locks_guard = threading.Lock()


class CommitRefused(GitError):
    """`commit` refused the worktree's state: it is on another branch or commit than expected, or its
    changes hold a git repository. Nothing was staged or committed."""


class WorktreeInfo(TypedDict):
    path: Path
    head: str | None
    branch: str | None  # short name; None when detached or bare
    detached: bool
    bare: bool
    locked: bool
    prunable: bool  # its directory is gone; `prune_worktrees` drops the record


@dataclass(frozen=True)
class _Result:
    argv: list[str]
    status: int
    out: bytes
    err: str

    @property
    def text(self) -> str:
        return os.fsdecode(self.out).strip()


@dataclass(frozen=True)
class _Location:
    toplevel: Path
    git_dir: Path
    common_dir: Path

    @property
    def is_main(self) -> bool:
        # A linked worktree has its own git dir under <common>/worktrees/<name>.
        return self.git_dir == self.common_dir


# --- running git ---------------------------------------------------------------------------------

def _scrub_environment() -> None:
    # GitPython builds each child's environment from os.environ and can only add variables, never
    # remove them, so the locating ones are dropped from the process itself. Workers launched later
    # must not inherit them either. Normally there is nothing to drop and this costs one set test.
    if _LOCATING_VARS.isdisjoint(os.environ):
        return
    with _env_guard:
        for name in _LOCATING_VARS:
            os.environ.pop(name, None)


def _run(
    cwd: Path | None,
    *args: str,
    ok: tuple[int, ...] = (0,),
    env: Mapping[str, str] | None = None,
    stdin: BinaryIO | None = None,
    hint: str = _DEFAULT_HINT,
) -> _Result:
    """Run git (in `cwd` via -C) and return its result; exit codes outside `ok` raise GitError."""
    _scrub_environment()
    # `-C` rather than GitPython's working_dir: GitPython silently falls back to the process's cwd
    # when working_dir is not accessible, which could make git act on the wrong repository.
    argv = [gitpython.Git.GIT_PYTHON_GIT_EXECUTABLE or 'git', *_SAFE_ARGS]
    if cwd is not None:
        argv += ['-C', str(cwd)]
    argv += args
    try:
        status, out, err = gitpython.Git().execute(
            argv, with_extended_output=True, with_exceptions=False, stdout_as_string=False,
            istream=stdin, env={**_FIXED_ENV, **(env or {})},
        )
    except (gitpython.exc.GitError, OSError) as exc:
        raise GitError(f'cannot run git ({exc}); install git or put it on PATH, then retry') from exc
    if status not in ok:
        raise GitError(_failure(argv, status, err, hint))
    return _Result(argv, status, out, err)


def _failure(argv: list[str], status: int, err: str, hint: str) -> str:
    command = ' '.join(shlex.quote(a) for a in argv)
    detail = '\n'.join(f'  {line}' for line in (err.strip() or '(no output on stderr)').splitlines())
    return f'git failed (exit {status}): {command}\n{detail}\n{hint}'


def _check_name(value: str, what: str) -> str:
    # A leading '-' would be read as an option by git.
    if not value or value.startswith('-'):
        raise GitError(f'invalid {what} {value!r}; use a name that is not empty and does not start with "-".')
    return value


# --- where things are ----------------------------------------------------------------------------

# Where a directory sits in git does not change while it exists, and every commit asks twice:
# remembered per directory and its .git entry's identity, so a re-created worktree is looked up again.
_LOCATIONS: dict[tuple[str, int, int], _Location] = {}


def _locate(path: Path) -> _Location:
    path = Path(path)
    if not path.is_dir():
        raise GitError(f'not a git repository: {path} is not a directory (run codex-orch inside the repository)')
    key = _location_key(path)
    if key is not None and key in _LOCATIONS:
        return _LOCATIONS[key]
    res = _run(path, 'rev-parse', '--show-toplevel', '--git-dir', '--git-common-dir', ok=(0, 128))
    if res.status != 0:
        raise GitError(f'not a git repository: {path} (run codex-orch inside the repository)\n  {res.err.strip()}')
    top, git_dir, common = os.fsdecode(res.out).splitlines()[:3]
    # --git-dir and --git-common-dir may be relative to `path`; an absolute one is kept by `/`.
    loc = _Location(Path(top).resolve(), (path / git_dir).resolve(), (path / common).resolve())
    if key is not None:
        _LOCATIONS[key] = loc
    return loc


def _location_key(path: Path) -> tuple[str, int, int] | None:
    """(path, inode and mtime of its .git entry); None when it has none (a subdirectory: ask git)."""
    try:
        st = os.stat(path / '.git')
    except OSError:
        return None
    return (str(path.resolve()), st.st_ino, st.st_mtime_ns)


def _own_worktree(worktree: Path, action: str) -> _Location:
    """Locate a linked worktree that codex-orch may change; refuse the main checkout and subdirectories."""
    loc = _locate(worktree)
    if loc.is_main:
        raise GitError(
            f'refusing to {action} {worktree}: it is the main checkout of the repository, which codex-orch '
            'never changes; pass the path of a codex-orch worktree.')
    if loc.toplevel != Path(worktree).resolve():
        raise GitError(
            f'refusing to {action} {worktree}: it is not the top of a worktree (that is {loc.toplevel}); '
            'pass the worktree path itself.')
    return loc


def repo_root(path: Path) -> Path:
    """The top of the repository's main working tree, also when `path` is inside a linked worktree."""
    loc = _locate(path)
    if loc.is_main:
        return loc.toplevel
    main = list_worktrees(loc.toplevel)[0]  # git always lists the main worktree first
    if main['bare']:
        raise GitError(f'{path} belongs to a bare repository ({main["path"]}); run codex-orch in a normal clone.')
    return main['path']


def current_branch(root: Path) -> str | None:
    res = _run(root, 'symbolic-ref', '--quiet', 'HEAD', ok=(0, 1))
    return res.text.removeprefix('refs/heads/') if res.status == 0 else None


def head_state(worktree: Path) -> tuple[str | None, str]:
    """(branch checked out, or None when HEAD is detached; the commit HEAD is at) of a worktree."""
    return current_branch(worktree), rev_parse(worktree, 'HEAD')


def rev_parse(root: Path, ref: str) -> str:
    """The commit sha `ref` names (tags are peeled)."""
    _check_name(ref, 'revision')
    res = _run(root, 'rev-parse', '--verify', '--quiet', f'{ref}^{{commit}}', ok=(0, 1))
    if res.status != 0:
        raise GitError(f'unknown revision {ref!r} in {root}; check the branch or commit name.')
    return res.text


def git_version() -> tuple[int, ...]:
    match = re.search(r'(\d+(?:\.\d+)*)', _run(None, 'version').text)
    if match is None:
        raise GitError('cannot read the git version from `git version`; reinstall git.')
    return tuple(int(part) for part in match.group(1).split('.'))


def branch_tip(root: Path, branch: str) -> str | None:
    """The commit `branch` points at, or None when there is no such branch (never a same-named tag)."""
    return _ref_sha(root, f'refs/heads/{branch}')


def _ref_sha(root: Path, ref: str) -> str | None:
    res = _run(root, 'rev-parse', '--verify', '--quiet', ref, ok=(0, 1))
    return res.text if res.status == 0 else None


# --- worktrees -----------------------------------------------------------------------------------

def worktree_valid(path: Path) -> bool:
    """Whether `path` is the top of a working tree git recognises."""
    try:
        return _locate(path).toplevel == Path(path).resolve()
    except GitError:
        return False


def ensure_worktree(root: Path, path: Path, branch: str, start_commit: str) -> bool:
    """Make `path` a worktree on `branch`, creating the branch at `start_commit` if it is new.

    Idempotent. An existing branch keeps its tip (a worktree deleted by hand comes back with the work
    committed on it, not reset to `start_commit`). Returns True if something was created.
    """
    path = Path(path).resolve()
    _check_name(branch, 'branch name')
    if worktree_valid(path):
        _check_existing_worktree(root, path, branch)
        return False
    prune_worktrees(root)  # a record whose directory was deleted would block `worktree add`
    hint = (f'Check that {branch} is not checked out in another worktree and that {path} is free '
            '(move it away if it is not a worktree), then retry.')
    if _ref_sha(root, f'refs/heads/{branch}') is not None:
        _run(root, 'worktree', 'add', str(path), branch, hint=hint)
    else:
        start = rev_parse(root, start_commit)
        _run(root, 'worktree', 'add', '--no-track', '-b', branch, str(path), start, hint=hint)
    return True


def _check_existing_worktree(root: Path, path: Path, branch: str) -> None:
    loc, root_loc = _locate(path), _locate(root)
    if loc.common_dir != root_loc.common_dir or loc.is_main:
        raise GitError(f'{path} is not a worktree of the repository at {root}; move it away and retry.')
    actual = current_branch(path)
    if actual != branch:
        raise GitError(
            f'worktree {path} has {actual or "a detached HEAD"} checked out, not {branch}; '
            'remove it (codex-orch clean) and retry.')


def list_worktrees(root: Path) -> list[WorktreeInfo]:
    """Every worktree of the repository, the main one first."""
    if _worktree_list_has_z():
        return _parse_worktrees(os.fsdecode(_run(root, 'worktree', 'list', '--porcelain', '-z').out), '\0')
    return _parse_worktrees(os.fsdecode(_run(root, 'worktree', 'list', '--porcelain').out), '\n')


@functools.lru_cache(maxsize=1)
def _worktree_list_has_z() -> bool:
    return git_version() >= (2, 36)  # -z keeps paths with newlines intact


def _parse_worktrees(text: str, sep: str) -> list[WorktreeInfo]:
    result: list[WorktreeInfo] = []
    for record in text.split(sep * 2):
        attrs = dict(line.partition(' ')[::2] for line in record.split(sep) if line)
        if 'worktree' not in attrs:
            continue
        path = Path(attrs['worktree'])
        branch = attrs.get('branch')
        result.append(WorktreeInfo(
            path=path, head=attrs.get('HEAD'),
            branch=branch.removeprefix('refs/heads/') if branch else None,
            detached='detached' in attrs, bare='bare' in attrs, locked='locked' in attrs,
            # git < 2.31 has no 'prunable' annotation; a missing directory means the same.
            prunable='prunable' in attrs or not path.exists(),
        ))
    return result


def prune_worktrees(root: Path) -> None:
    _run(root, 'worktree', 'prune')


def snapshot_worktree(root: Path, path: Path, commit: str) -> None:
    """A throw-away detached worktree at `commit` (what a gate tests when others changed the shared one)."""
    path = Path(path).resolve()
    if path.exists() or any(Path(w['path']) == path for w in list_worktrees(root)):
        remove_worktree(root, path, force=True)
    prune_worktrees(root)
    _run(root, 'worktree', 'add', '--detach', str(path), rev_parse(root, commit),
         hint=f'Remove {path} and retry.')


def remove_worktree(root: Path, path: Path, *, force: bool = False) -> None:
    """Remove a worktree, also when its directory was already deleted by hand.

    Without `force`, git refuses a worktree with uncommitted or untracked files.
    """
    path = Path(path).resolve()
    if not path.exists():
        prune_worktrees(root)
        return
    _run(root, 'worktree', 'remove', *(['--force'] if force else []), str(path),
         hint=f'Commit or discard the changes in {path}, or remove it with force, then retry.')


def worktree_of_branch(root: Path, branch: str) -> Path | None:
    """The worktree (main checkout included) that has `branch` checked out, if any."""
    for wt in list_worktrees(root):
        if wt['branch'] == branch:
            return wt['path']
    return None


# --- changes in a worktree -----------------------------------------------------------------------

def _status_entries(worktree: Path, pathspecs: list[str] | None = None, *,
                    submodules: bool = False) -> list[tuple[str, str]]:
    """(path, XY) pairs from `git status`; renames are reported as a deletion plus an addition.

    Submodules are left out unless `submodules` (only for the user's own checkout): in a worktree
    their directories are the worker's, and git would run `git status` inside them, with whatever
    config and attributes a worker put there. `filled_submodules` reports them instead.
    """
    # --no-optional-locks: a read must not take index.lock while another task commits.
    res = _run(worktree, '--no-optional-locks', 'status', '--porcelain=v1', '-z', '--untracked-files=all',
               '--no-renames', *([] if submodules else ['--ignore-submodules=all']),
               *(['--', *pathspecs] if pathspecs else []))
    entries: list[tuple[str, str]] = []
    fields = iter(res.out.split(b'\0'))
    for field in fields:
        if not field:
            continue
        xy = field[:2].decode('ascii')
        entries.append((os.fsdecode(field[3:]), xy))
        if 'R' in xy or 'C' in xy:  # defensive: -z puts the source path in the next field
            source = os.fsdecode(next(fields))
            if 'R' in xy:
                entries.append((source, xy))
    return entries


def changed_paths(worktree: Path) -> list[str]:
    """Modified, deleted and untracked (not ignored) files, relative to the worktree, sorted.

    A nested repository is one entry ending in '/' (as git reports it), and so is a submodule whose
    directory is not empty (see `filled_submodules`): git would not commit their files one by one.
    """
    worktree = Path(worktree)
    paths = {path for path, _ in _status_entries(worktree)}
    paths.update(f'{name}/' for name in filled_submodules(worktree))
    return sorted(paths)


def is_dirty(worktree: Path) -> bool:
    res = _run(worktree, '--no-optional-locks', 'status', '--porcelain=v1', '-z', '--untracked-files=normal',
               '--ignore-submodules=all')
    return bool(res.out.strip(b'\0'))


def nested_repositories(worktree: Path, paths: list[str] | None = None) -> list[str]:
    """Git repositories inside the worktree that are not part of it, sorted, without a trailing '/'.

    Untracked directories with their own `.git` (`git init`, `git clone`, a `.git` file pointing
    anywhere): git would commit each as a gitlink, a pointer to a commit that exists nowhere else.
    With `paths` (worktree-relative), only those at, inside or containing one of them.
    """
    found = sorted(path.rstrip('/') for path, xy in _status_entries(Path(worktree))
                   if xy == '??' and path.endswith('/'))
    return _related_to(found, paths)


def filled_submodules(worktree: Path, paths: list[str] | None = None) -> list[str]:
    """Submodules of the repository whose directory in this worktree is not empty, sorted.

    codex-orch never initialises submodules in its worktrees (`worktree add` leaves their
    directories empty), so anything in one was written by a worker: git would silently drop files
    written there, or commit a moved submodule as a pointer to a commit that exists nowhere else.
    With `paths`, only those at, inside or containing one of them.
    """
    worktree = Path(worktree)
    filled = []
    for name in _gitlinks(worktree):
        fd = _open_inside(worktree, name)
        if fd is None:
            continue   # gone, or replaced by a file or a symlink: git sees that as a change of its own
        try:
            with os.scandir(fd) as entries:
                if next(entries, None) is not None:
                    filled.append(name)
        finally:
            os.close(fd)
    return _related_to(filled, paths)


def _related_to(found: list[str], paths: list[str] | None) -> list[str]:
    if paths is None:
        return found
    wanted = [PurePosixPath(p).as_posix() for p in paths]
    return [f for f in found if any(p == f or p.startswith(f'{f}/') or f.startswith(f'{p}/') for p in wanted)]


# The submodules (gitlinks) in a commit's tree, by repository and commit: a commit codex-orch makes
# never adds or moves one, so this is asked once per commit, not once per status.
_GITLINKS: dict[tuple[str, str], tuple[str, ...]] = {}


def _gitlinks(worktree: Path) -> tuple[str, ...]:
    head = _ref_sha(worktree, 'HEAD')
    if head is None:
        return ()
    key = (str(_locate(worktree).common_dir), head)
    if key not in _GITLINKS:
        res = _run(worktree, 'ls-tree', '-r', '-z', '--full-tree', head)
        _GITLINKS[key] = tuple(os.fsdecode(entry.partition(b'\t')[2]) for entry in res.out.split(b'\0')
                               if entry.startswith(_GITLINK.encode() + b' '))
    return _GITLINKS[key]


def _open_inside(worktree: Path, rel: str) -> int | None:
    """A descriptor of directory `rel` under `worktree`, following no symlink on the way; None if
    some part of it is missing, a symlink or not a directory."""
    fd = os.open(worktree, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in PurePosixPath(rel).parts:
            if part in ('.', '..'):
                return None
            inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = inner
    except OSError:
        os.close(fd)
        return None
    return fd


def _empty_submodules(worktree: Path, names: list[str]) -> None:
    """Empty submodule directories a worker filled, back to what `worktree add` made. Never follows a
    symlink: a worker may have put one there, pointing anywhere."""
    for name in names:
        fd = _open_inside(worktree, name)
        if fd is None:
            continue
        try:
            with os.scandir(fd) as it:
                entries = list(it)
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.name, dir_fd=fd)
                else:
                    os.unlink(entry.name, dir_fd=fd)
        finally:
            os.close(fd)


def _literal(pathspec: str) -> str:
    return pathspec.removeprefix(':(literal)')


def discard_changes(worktree: Path, paths: list[str] | None = None) -> None:
    """Reset tracked and delete untracked (not ignored) changes: all, or those matching pathspecs.

    Nested repositories and the contents of submodule directories go too (plain paths or
    `:(literal)` pathspecs name them): in a codex-orch worktree they are a worker's leftovers.
    """
    worktree = Path(worktree)
    loc = _own_worktree(worktree, 'discard changes in')
    if paths is not None and not paths:
        return
    with _repo_lock(loc.common_dir):
        if paths is None:
            filled = filled_submodules(worktree)
            if not filled and not is_dirty(worktree):   # the usual case: one cheap status instead of reset + clean
                return
            _empty_submodules(worktree, filled)
            _run(worktree, 'reset', '--quiet', '--hard', 'HEAD')
            # -ff: also nested repositories, which a single -f keeps.
            _run(worktree, 'clean', '-f', '-f', '-d', '--quiet')
            return
        _empty_submodules(worktree, filled_submodules(worktree, [_literal(p) for p in paths]))
        # Unstage first, so staged additions become untracked and `clean` removes them.
        _run(worktree, 'reset', '--quiet', 'HEAD', '--', *paths)
        tracked = [path for path, xy in _status_entries(worktree, paths) if xy != '??']
        if tracked:  # checkout errors on pathspecs matching nothing, so give it exact paths
            _run(worktree, '--literal-pathspecs', 'checkout', '--quiet', 'HEAD', '--', *tracked)
        _run(worktree, 'clean', '-f', '-f', '-d', '--quiet', '--', *paths)


# --- commits -------------------------------------------------------------------------------------

@contextlib.contextmanager
def _repo_lock(common_dir: Path) -> Iterator[None]:
    """Serialise index-writing operations on one repository, across threads and processes."""
    with _repo_locks_guard:
        lock = _repo_locks.setdefault(str(common_dir), threading.Lock())
    # flock alone would do across processes; the thread lock keeps threads from queuing in the kernel.
    with lock, open(common_dir / _LOCK_FILE, 'a') as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        yield  # closing the file releases the flock


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


def _identity_env(worktree: Path, author: tuple[str, str] | None) -> dict[str, str]:
    """Author/committer variables for one command: `author`, else git's identity, else the fallback."""
    if author is not None:
        name, email = author
        return {'GIT_AUTHOR_NAME': name, 'GIT_AUTHOR_EMAIL': email,
                'GIT_COMMITTER_NAME': name, 'GIT_COMMITTER_EMAIL': email}
    key = _identity_key(_locate(worktree).common_dir)
    if key not in _IDENTITY_GAPS:
        missing = []
        for role in ('AUTHOR', 'COMMITTER'):
            # `git var` fails exactly when `git commit` would: no usable configured identity.
            if _run(worktree, 'var', f'GIT_{role}_IDENT', ok=(0, 128)).status != 0:
                missing.append(role)
        _IDENTITY_GAPS[key] = tuple(missing)
    env: dict[str, str] = {}
    for role in _IDENTITY_GAPS[key]:
        env[f'GIT_{role}_NAME'], env[f'GIT_{role}_EMAIL'] = _FALLBACK_IDENTITY
    return env


# Which of author/committer git cannot name: asked again only when something it depends on
# changed (environment, repository or global config), not on every commit.
_IDENTITY_GAPS: dict[tuple[object, ...], tuple[str, ...]] = {}
_IDENTITY_VARS = ('GIT_AUTHOR_NAME', 'GIT_AUTHOR_EMAIL', 'GIT_COMMITTER_NAME', 'GIT_COMMITTER_EMAIL', 'EMAIL',
                  'HOME', 'XDG_CONFIG_HOME', 'GIT_CONFIG_GLOBAL', 'GIT_CONFIG_NOSYSTEM', 'GIT_CONFIG_SYSTEM')


def _identity_key(common_dir: Path) -> tuple[object, ...]:
    configs = [common_dir / 'config', Path(os.environ.get('GIT_CONFIG_GLOBAL') or '~/.gitconfig').expanduser(),
               Path(os.environ.get('XDG_CONFIG_HOME') or '~/.config').expanduser() / 'git' / 'config',
               Path(os.environ.get('GIT_CONFIG_SYSTEM') or '/etc/gitconfig')]
    stamps: list[int | None] = []
    for path in configs:
        try:
            stamps.append(os.stat(path).st_mtime_ns)
        except OSError:
            stamps.append(None)
    return (str(common_dir), *(os.environ.get(v) for v in _IDENTITY_VARS), *stamps)


def _stage(worktree: Path, paths: list[str] | None) -> bool:
    """Stage all changes, or exactly `paths`; return whether anything is staged."""
    if paths is None:
        _run(worktree, 'add', '--all')
    else:
        wanted = {PurePosixPath(p).as_posix() for p in paths}
        selected = [p for p in changed_paths(worktree) if p in wanted]
        _run(worktree, 'reset', '--quiet')  # leftovers staged by a failed attempt must not ride along
        if selected:
            _run(worktree, '--literal-pathspecs', 'add', '--all', '--', *selected)
    return _run(worktree, 'diff', '--cached', '--quiet', '--no-ext-diff', '--no-textconv', ok=(0, 1)).status == 1


def commit(
    worktree: Path,
    *,
    message: str,
    trailers: dict[str, str],
    paths: list[str] | None = None,
    author: tuple[str, str] | None = None,
    expect_branch: str | None = None,
    expect_head: str | None = None,
) -> str | None:
    """Commit all changes (or only `paths`) in a codex-orch worktree; None when nothing changed.

    Raises CommitRefused (a GitError), committing and staging nothing, when the worktree is not on `expect_branch` or
    its HEAD is not `expect_head` (when given: a worker must not switch branches, commit, reset or
    rebase), or when the changes hold a git repository: a nested one, a submodule a worker filled
    in (`nested_repositories`, `filled_submodules`) or any gitlink added or moved in the index.
    """
    worktree = Path(worktree)
    loc = _own_worktree(worktree, 'commit in')
    text = _message_with_trailers(message, trailers)
    env = _identity_env(worktree, author)
    with _repo_lock(loc.common_dir):
        _check_head(worktree, expect_branch, expect_head)
        _refuse_repositories(worktree, nested_repositories(worktree, paths), filled_submodules(worktree, paths))
        if not _stage(worktree, paths):
            return None
        staged = _staged_gitlinks(worktree)
        if staged:
            _run(worktree, 'reset', '--quiet')   # nothing stays staged after a refusal
            nested, moved = staged
            _refuse_repositories(worktree, nested, moved)
        with tempfile.TemporaryFile() as msg:  # via stdin: no argv size limit, no option parsing
            msg.write(text.encode('utf-8'))
            msg.seek(0)
            # No hook runs at all (_SAFE_CONFIG); --no-verify says so here too: the user's commit hooks
            # would judge (or rewrite) the worker's output, and validating it is the plan's job.
            _run(worktree, 'commit', '--quiet', '--no-verify', '--cleanup=whitespace', '--file=-',
                 env=env, stdin=msg)
        return rev_parse(worktree, 'HEAD')


def _check_head(worktree: Path, expect_branch: str | None, expect_head: str | None) -> None:
    if expect_branch is None and expect_head is None:
        return
    branch, sha = head_state(worktree)
    if expect_branch is not None and branch != expect_branch:
        where = f'on the branch {branch}' if branch else 'on a detached HEAD'
        raise CommitRefused(
            f'refusing to commit in {worktree}: the worktree is {where} (at {sha[:12]}), expected {expect_branch}; '
            'something in it (a worker?) switched branches. Nothing was committed. Switch it back '
            f'(git -C {shlex.quote(str(worktree))} switch {shlex.quote(expect_branch)}) or remove it '
            '(codex-orch clean), then run the task again.')
    if expect_head is not None and sha != rev_parse(worktree, expect_head):
        raise CommitRefused(
            f'refusing to commit in {worktree}: its HEAD is at {sha[:12]}, expected {expect_head[:12]}; something in '
            'it (a worker?) committed, reset or rebased. Nothing was committed. Check its history '
            f'(git -C {shlex.quote(str(worktree))} log), then run the task again.')


def _staged_gitlinks(worktree: Path) -> tuple[list[str], list[str]] | None:
    """Gitlinks the index adds (nested repositories) and moves (submodules) against HEAD; None if none."""
    # Index against HEAD only: nothing looks inside the submodule directories.
    res = _run(worktree, 'diff-index', '--cached', '--raw', '-z', '--no-renames', '--ignore-submodules=none',
               'HEAD', '--')
    fields = res.out.split(b'\0')
    added: list[str] = []
    moved: list[str] = []
    for meta, path in zip(fields[0::2], fields[1::2], strict=False):   # the output ends with NUL
        old_mode, new_mode = meta.lstrip(b':').split(b' ')[:2]
        if new_mode.decode() == _GITLINK:
            (moved if old_mode.decode() == _GITLINK else added).append(os.fsdecode(path))
    return (sorted(added), sorted(moved)) if added or moved else None


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


def find_commit_by_trailer(worktree: Path, key: str, value: str, *, since: str | None = None) -> str | None:
    """Newest commit reachable from HEAD (after `since`, exclusive) with trailer `key` equal to `value`."""
    if not _TRAILER_KEY.fullmatch(key) or not value.strip():
        raise ValueError(f'invalid trailer {key!r}: {value!r}')
    value = value.strip()
    revs = f'{_check_name(since, "revision")}..HEAD' if since else 'HEAD'
    # git parses the trailer block (keys match case-insensitively); --grep only narrows the walk.
    fmt = f'%H%x1f%(trailers:key={key},valueonly,unfold,separator=%x1f)'
    res = _run(worktree, 'log', '-z', f'--format={fmt}', '--fixed-strings', f'--grep={value}', revs, '--')
    for record in os.fsdecode(res.out).split('\0'):
        sha, _, values = record.partition('\x1f')
        if value in (v.strip() for v in values.split('\x1f')):
            return sha.strip()
    return None


def commit_files(repo: Path, sha: str) -> list[str]:
    """Files a commit changed (against its first parent), sorted, for records: an undecodable byte of a name
    is written `\\xNN` (orch.core.text.display_path), so these are names to show, not pathspecs."""
    parents = _run(repo, 'rev-list', '--parents', '-n', '1', _check_name(sha, 'commit'), '--').text.split()[1:]
    trees = [parents[0], sha] if parents else ['--root', sha]
    res = _run(repo, 'diff-tree', '-r', '-z', '--name-only', '--no-renames', '--no-commit-id', *trees)
    return sorted({display_path(os.fsdecode(p)) for p in res.out.split(b'\0') if p})


# --- history and branches ------------------------------------------------------------------------

def is_ancestor(root: Path, a: str, b: str) -> bool:
    res = _run(root, 'merge-base', '--is-ancestor', _check_name(a, 'revision'), _check_name(b, 'revision'),
               ok=(0, 1))
    return res.status == 0


def contains(root: Path, tip: str, sha: str) -> bool:
    """Whether commit `sha` is in the history of `tip`; False when the repository has no such commit."""
    if _ref_sha(root, f'{_check_name(sha, "commit")}^{{commit}}') is None:
        return False
    return is_ancestor(root, sha, tip)


def unmerged_commits(root: Path, branch: str, base: str) -> int:
    """How many commits `branch` has that `base` does not."""
    revs = f'{_check_name(base, "revision")}..{_check_name(branch, "branch name")}'
    return int(_run(root, 'rev-list', '--count', revs, '--').text)


def merge_into_worktree(worktree: Path, branches: list[str], message: str, *,
                        union: tuple[str, ...] = ()) -> list[str]:
    """Merge `branches` one by one into a clean worktree's HEAD with --no-ff.

    Returns [] on success. On a conflict everything is rolled back to the starting HEAD, the worktree
    is left clean, and the sorted conflicting paths are returned. A conflict only in `union` paths
    (append-only logs such as the decisions file) is resolved by keeping both sides' lines.
    """
    worktree = Path(worktree)
    loc = _own_worktree(worktree, 'merge into')
    env = _identity_env(worktree, None)
    with _repo_lock(loc.common_dir):
        if is_dirty(worktree):
            raise GitError(f'cannot merge into {worktree}: it has uncommitted changes; commit or discard them first.')
        start = rev_parse(worktree, 'HEAD')
        try:
            for branch in branches:
                conflicts = _merge_one(worktree, branch, message, env, union)
                if conflicts:
                    _restore(worktree, start)
                    return conflicts
        except GitError:
            _restore(worktree, start)
            raise
    return []


def _merge_one(worktree: Path, branch: str, message: str, env: Mapping[str, str],
               union: tuple[str, ...] = ()) -> list[str]:
    res = _run(worktree, 'merge', '--no-ff', '--no-edit', '--no-verify', '--quiet', '-m', message,
               _check_name(branch, 'branch name'), ok=(0, 1), env=env)
    if res.status == 0:
        return []
    if _ref_sha(worktree, 'MERGE_HEAD') is None:  # failed before merging anything: not a conflict
        raise GitError(_failure(res.argv, res.status, res.err or os.fsdecode(res.out),
                                f'Check that {branch} exists and that the merge can run in {worktree}.'))
    unmerged = _run(worktree, 'ls-files', '--unmerged', '-z').out.split(b'\0')
    conflicts = sorted({os.fsdecode(entry.partition(b'\t')[2]) for entry in unmerged if entry})
    if conflicts and set(conflicts) <= set(union) and all(_union_resolve(worktree, p) for p in conflicts):
        _run(worktree, 'commit', '--quiet', '--no-verify', '--no-edit', '--cleanup=strip', env=env)
        return []
    return conflicts


def _union_resolve(worktree: Path, path: str) -> bool:
    """Resolve a conflicted file with the lines of both sides (`git merge-file --union`) and stage it."""
    res = _run(worktree, 'checkout-index', '--stage=all', '--temp', '--', path)
    temps = [None if t == '.' else worktree / t for t in res.text.partition('\t')[0].split(' ')]
    try:
        base, ours, theirs = temps
        if ours is None or theirs is None:   # deleted on one side: not a log both appended to
            return False
        _run(worktree, 'merge-file', '--union', '-q', str(ours), str(base or os.devnull), str(theirs))
        os.replace(ours, worktree / path)
        _run(worktree, '--literal-pathspecs', 'add', '--', path)
        return True
    finally:
        for temp in temps:
            if temp is not None:
                temp.unlink(missing_ok=True)


def _restore(worktree: Path, sha: str) -> None:
    # The worktree was clean before the merge, so anything now untracked came from the merge.
    _run(worktree, 'reset', '--quiet', '--hard', sha)
    _run(worktree, 'clean', '-f', '-d', '--quiet')


def fast_forward(root: Path, branch: str, to_sha: str) -> None:
    """Move `branch` to `to_sha` if that is a fast-forward; change nothing otherwise.

    A checked-out branch is moved with `merge --ff-only` in its worktree so the files follow; that
    worktree must be clean. A branch not checked out is moved with a compare-and-swap update-ref.
    """
    ref = f'refs/heads/{_check_name(branch, "branch name")}'
    old = _ref_sha(root, ref)
    if old is None:
        raise GitError(f'cannot fast-forward {branch}: no such branch in {root}; check the base branch name.')
    new = rev_parse(root, to_sha)
    if old == new:
        return
    if not is_ancestor(root, old, new):
        ahead = unmerged_commits(root, old, new)
        raise GitError(
            f'cannot fast-forward {branch} to {new[:12]}: the base has diverged ({branch} has {ahead} '
            f'commit(s) not in {new[:12]}). Merge {branch} into the run branch, or merge by hand, then retry.')
    with _repo_lock(_locate(root).common_dir):
        checkout = _live_worktree_of_branch(root, branch)
        if checkout is None:
            _run(root, 'update-ref', '-m', f'codex-orch: fast-forward {branch}', ref, new, old,
                 hint=f'{branch} moved while codex-orch was updating it; run the merge again.')
            return
        _refuse_dirty_checkout(checkout, branch, old, new)
        _run(checkout, 'merge', '--ff-only', '--quiet', new,
             hint=f'Nothing was changed; make {checkout} clean and run the merge again.')


def _live_worktree_of_branch(root: Path, branch: str) -> Path | None:
    for wt in list_worktrees(root):
        if wt['branch'] == branch and not wt['prunable']:
            return wt['path']
    return None


def checkout_blockers(checkout: Path, old: str, new: str) -> tuple[list[str], list[str]]:
    """What stops a fast-forward of `checkout` from `old` to `new`: (tracked changes, untracked
    files the update would overwrite). Unrelated untracked files (a plan.json, an uncommitted
    .orchestrator/) do not block: a fast-forward never touches them."""
    entries = _status_entries(checkout, submodules=True)   # the user's own checkout and submodules
    dirty = sorted({path for path, xy in entries if xy != '??'})
    untracked = {path for path, xy in entries if xy == '??'}
    incoming = _run(checkout, 'diff', '--name-only', '-z', '--no-ext-diff', '--no-textconv', '--diff-filter=A',
                    old, new).out
    return dirty, sorted(p for p in map(os.fsdecode, incoming.split(b'\0')) if p in untracked)


def describe_blockers(branch: str, checkout: Path, dirty: list[str], clobbered: list[str]) -> str:
    problems = dirty + clobbered
    shown = ', '.join(problems[:10]) + (f' and {len(problems) - 10} more' if len(problems) > 10 else '')
    what = 'uncommitted changes' if dirty else 'untracked files the merge would overwrite'
    return (f'refusing to fast-forward {branch}: it is checked out in {checkout}, which has {what} '
            f'({shown}). Commit, move or stash them there, then run the merge again; nothing was changed.')


def _refuse_dirty_checkout(checkout: Path, branch: str, old: str, new: str) -> None:
    dirty, clobbered = checkout_blockers(checkout, old, new)
    if dirty or clobbered:
        raise GitError(describe_blockers(branch, checkout, dirty, clobbered))


def delete_branch(root: Path, branch: str, *, base: str, force: bool = False) -> bool:
    """Delete `branch` if it is fully merged into `base` (or `force`); never a checked-out branch.

    Returns False, changing nothing, when the branch is missing, checked out, or (without force)
    has commits not in `base`.
    """
    ref = f'refs/heads/{_check_name(branch, "branch name")}'
    old = _ref_sha(root, ref)
    if old is None or worktree_of_branch(root, branch) is not None:
        return False
    if not force and unmerged_commits(root, ref, base) > 0:
        return False
    # Compare-and-swap: if someone committed to the branch since the check, nothing is deleted.
    _run(root, 'update-ref', '-d', ref, old, hint=f'{branch} moved while codex-orch was deleting it; retry.')
    return True


# --- moving commits as bundles (the Dask executor: no shared filesystem, no push credentials) ---------

_SNAPSHOT_IDENTITY = {'GIT_AUTHOR_NAME': 'codex-orch', 'GIT_AUTHOR_EMAIL': 'codex-orch@localhost',
                      'GIT_COMMITTER_NAME': 'codex-orch', 'GIT_COMMITTER_EMAIL': 'codex-orch@localhost',
                      'GIT_AUTHOR_DATE': '@0 +0000', 'GIT_COMMITTER_DATE': '@0 +0000'}


def init_repository(path: Path) -> None:
    """A new, empty repository at `path` (a worker's scratch repository)."""
    Path(path).mkdir(parents=True, exist_ok=True)
    _run(path, 'init', '--quiet')


# What in a repository's git directories makes git run commands or read other files: filter and diff drivers
# and includes (config), a worktree's own config, attributes, where its repository is (commondir), borrowed
# objects (alternates). A worker must not have changed any of it by the time codex-orch runs git on its work.
_CONTROL_FILES = (('common', 'config'), ('common', 'info/attributes'), ('common', 'objects/info/alternates'),
                  ('own', 'config.worktree'), ('own', 'commondir'))


def control_digest(worktree: Path) -> dict[str, str]:
    """What the worktree's `.git` entry is (its type and inode) and a hash of each control file of its
    repository, keyed `.git` and `.git/<name>` (for a linked worktree, in its repository's git directory)."""
    worktree = Path(worktree)
    st = os.lstat(worktree / '.git')
    loc = _locate(worktree)
    seal = {'.git': f'{stat.S_IFMT(st.st_mode)}:{st.st_dev}:{st.st_ino}'}
    for where, name in _CONTROL_FILES:
        path = (loc.common_dir if where == 'common' else loc.git_dir) / name
        try:
            seal[f'.git/{name}'] = hashlib.sha256(path.read_bytes()).hexdigest()
        except FileNotFoundError:
            seal[f'.git/{name}'] = '-'
        except OSError as exc:
            seal[f'.git/{name}'] = f'? {exc}'
    return seal


def control_changes(worktree: Path, sealed: Mapping[str, str]) -> list[str]:
    """Which of `sealed` (a control_digest) differ now; `.git` itself when it cannot be read at all."""
    try:
        now = control_digest(worktree)
    except (OSError, GitError):
        return ['.git']
    return [name for name in sealed if now.get(name) != sealed[name]]


def scratch_checkout(path: Path, data: bytes, ref: str, commit: str, branch: str) -> None:
    """A plain repository at `path` with `commit` of the bundle checked out on a new `branch` (a remote unit's
    scratch repository). Its `.git` is a directory at the top of the tree the worker edits — the one directory
    of its writable root that Codex's workspace-write sandbox keeps read-only — not the gitdir of a linked
    worktree, whose shared repository (config, filters) would lie outside that protection."""
    init_repository(path)
    fetch_bundle(path, data, ref, 'refs/orch/start')
    _run(path, 'checkout', '--quiet', '-b', _check_name(branch, 'branch name'), _check_name(commit, 'commit'))


def snapshot_commit(root: Path, commit: str) -> str:
    """A parentless commit with `commit`'s tree: what a remote worker starts from, without the history.

    Deterministic (fixed identity and dates): the same tree always gives the same snapshot."""
    tree = _run(root, 'rev-parse', '--verify', f'{_check_name(commit, "commit")}^{{tree}}').text
    res = _run(root, 'commit-tree', tree, '-m', 'codex-orch snapshot', env=_SNAPSHOT_IDENTITY)
    return res.text


def create_bundle(root: Path, tip: str, ref: str, *, exclude: str | None = None) -> bytes:
    """A bundle of `tip` (as `ref`), without `exclude` and its history (then a prerequisite of the bundle)."""
    _check_name(ref, 'ref')
    _run(root, 'update-ref', ref, _check_name(tip, 'commit'))
    with tempfile.TemporaryDirectory(prefix='codex-orch-bundle-') as tmp:
        path = Path(tmp) / 'unit.bundle'
        _run(root, 'bundle', 'create', '--quiet', str(path), ref, *([f'^{_check_name(exclude, "commit")}']
                                                                     if exclude else []))
        return path.read_bytes()


def fetch_bundle(root: Path, data: bytes, ref: str, into: str) -> str:
    """Fetch `ref` of a bundle (bytes) into the local ref `into`; returns the commit it names."""
    _check_name(into, 'ref')
    with tempfile.TemporaryDirectory(prefix='codex-orch-bundle-') as tmp:
        path = Path(tmp) / 'result.bundle'
        path.write_bytes(data)
        # Objects from a bundle are another machine's: fsck them (a `.git` path in a tree, a malformed object).
        _run(root, '-c', 'transfer.fsckObjects=true', '-c', 'fetch.fsckObjects=true', 'fetch', '--quiet',
             '--no-tags', '--no-write-fetch-head', str(path), f'+{ref}:{into}',
             hint='The bundle is damaged, holds objects git refuses (fsck), or its start commit is missing here.')
    return rev_parse(root, into)


def parents_of(root: Path, sha: str) -> list[str]:
    return _run(root, 'rev-list', '--parents', '-n', '1', _check_name(sha, 'commit'), '--').text.split()[1:]


@dataclass(frozen=True)
class TreeChange:
    path: str
    old_mode: str
    new_mode: str


def tree_changes(root: Path, a: str, b: str) -> list[TreeChange]:
    """What changes from commit `a` to commit `b` (no rename detection)."""
    res = _run(root, 'diff-tree', '-r', '-z', '--raw', '--no-renames', '--no-commit-id',
               _check_name(a, 'commit'), _check_name(b, 'commit'), '--')
    fields = res.out.split(b'\0')
    out: list[TreeChange] = []
    for meta, path in zip(fields[0::2], fields[1::2], strict=False):
        old_mode, new_mode = meta.lstrip(b':').split(b' ')[:2]
        out.append(TreeChange(os.fsdecode(path), old_mode.decode(), new_mode.decode()))
    return out


def apply_commit_changes(worktree: Path, a: str, b: str) -> None:
    """Write the changes from commit `a` to commit `b` into a codex-orch worktree's files (not the index).

    Refuses (GitError, nothing written: `git apply` is atomic) when they conflict with the worktree."""
    _own_worktree(worktree, 'apply changes in')
    patch = _run(worktree, 'diff', '--binary', '--full-index', '--no-renames', '--no-ext-diff', '--no-textconv',
                 _check_name(a, 'commit'), _check_name(b, 'commit'), '--').out
    if not patch:
        return
    with tempfile.TemporaryFile() as f:
        f.write(patch + b'\n')   # GitPython strips the output's last newline; a patch needs it
        f.seek(0)
        _run(worktree, 'apply', '--binary', '--whitespace=nowarn', '-', stdin=f,
             hint='The change does not apply to the files of the run\'s branch (another task changed them).')


def restore_paths(worktree: Path, paths: list[str]) -> None:
    """Put `paths` back as HEAD has them (deleting those HEAD lacks): undoes a half-applied change."""
    _own_worktree(worktree, 'restore files in')
    for path in paths:
        tracked = _run(worktree, '--literal-pathspecs', 'ls-tree', '--name-only', 'HEAD', '--', path).text
        if tracked:
            _run(worktree, '--literal-pathspecs', 'checkout', 'HEAD', '--', path)
        else:
            full = Path(worktree) / path
            if full.is_symlink() or full.is_file():
                full.unlink()


def scratch_commit(worktree: Path, message: str) -> str | None:
    """Commit everything in a worker's scratch worktree (a remote unit); None when nothing changed."""
    _run(worktree, 'add', '--all')
    if _run(worktree, 'diff', '--cached', '--quiet', '--no-ext-diff', '--no-textconv', ok=(0, 1)).status == 0:
        return None
    with tempfile.TemporaryFile() as msg:
        msg.write(message.encode('utf-8'))
        msg.seek(0)
        _run(worktree, 'commit', '--quiet', '--no-verify', '--file=-', env=_SNAPSHOT_IDENTITY, stdin=msg)
    return rev_parse(worktree, 'HEAD')


def delete_ref(root: Path, ref: str) -> None:
    _run(root, 'update-ref', '-d', _check_name(ref, 'ref'))
