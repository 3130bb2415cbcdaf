"""Running git, and what the other modules of orch.adapters.git share; the only module that starts git.

`run` is the one way a command starts: without the variables that locate a repository, with
`SAFE_CONFIG` (no hook, no fsmonitor, no submodule recursion), in the C locale (its messages are read), and
with every failure turned into a `GitError` saying what to do, and the drivers the repository's own config defines
switched off on every command that reads a worktree (orch.adapters.git.drivers). Also here: name checks, where a
directory sits in git (`locate`, `own_worktree`, `rev_parse`), the per-repository lock and the committer identity.

git is started directly (subprocess): everything codex-orch does is a plain command (worktrees have no API in
any Python git library), and a library's import alone cost 40 ms of every command's start.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shlex
import subprocess
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from orch.adapters.git import drivers
from orch.adapters.git.gitfiles import detached_head, linked_git_dir, linked_git_dir_file, loose_branch, pointer
from orch.errors import GitError

# Variables that point git at a repository, index or object store other than the one found from the
# working directory. Git exports several of them to hooks (pre-commit issue #300).
_LOCATING_VARS = frozenset({
    'GIT_DIR', 'GIT_WORK_TREE', 'GIT_INDEX_FILE', 'GIT_OBJECT_DIRECTORY',
    'GIT_ALTERNATE_OBJECT_DIRECTORIES', 'GIT_COMMON_DIR', 'GIT_NAMESPACE', 'GIT_PREFIX',
    'GIT_QUARANTINE_PATH',
})

# Added to every command: never prompt for credentials or open an editor in an unattended run; messages in
# English (some are read: a missing ref, a conflict).
_FIXED_ENV = {'GIT_TERMINAL_PROMPT': '0', 'GIT_EDITOR': ':', 'GIT_SEQUENCE_EDITOR': ':', 'GIT_PAGER': 'cat',
              'LANGUAGE': 'C', 'LC_ALL': 'C'}
GIT = 'git'

# Given with -c on every command, so they beat every config file (git passes them on to the git
# processes it starts). A worker writes files in its worktree; none of them may run as the user:
SAFE_CONFIG = (
    # No hook runs at all: a relative hooksPath (husky sets `.husky`) points into the worktree, where
    # a worker can write post-commit or reference-transaction, which `commit --no-verify` still runs.
    'core.hooksPath=/dev/null',
    # The fsmonitor hook is a command too. Empty means off, for git before 2.36 (a hook path) and after.
    'core.fsmonitor=',
    # A submodule directory in a worktree is the worker's: git must never run itself inside it.
    'submodule.recurse=false', 'fetch.recurseSubmodules=false',
    # No signing or signature check (gpg.program), no credential helper or askpass, no pager, no automatic gc.
    'commit.gpgSign=false', 'tag.gpgSign=false', 'merge.verifySignatures=false', 'log.showSignature=false',
    'credential.helper=', 'core.askPass=', 'core.pager=cat', 'gc.auto=0',
    # No transport but reading a local file (a bundle): never `ext::` (a command) or a remote helper.
    'protocol.allow=never', 'protocol.file.allow=always',
)
_SAFE_ARGS = tuple(arg for setting in SAFE_CONFIG for arg in ('-c', setting))
# Subcommands that never read a worktree's files, attributes or a merge driver: no override needed.
_NO_CONTENT = frozenset({'rev-parse', 'config', 'update-ref', 'for-each-ref', 'cat-file', 'ls-tree', 'rev-list',
                         'commit-tree', 'version', 'var', 'symbolic-ref', 'show-ref', 'merge-base', 'bundle',
                         'fetch', 'init', 'log', 'check-ref-format', 'mktree'})
GITLINK = '160000'
_FALLBACK_IDENTITY = ('codex-orch', 'codex-orch@localhost')
_LOCK_FILE = 'codex-orch-commit.lock'
_DEFAULT_HINT = 'Check the repository with `git status` and retry.'

_env_guard = threading.Lock()
_repo_locks: dict[str, threading.Lock] = {}
_repo_locks_guard = threading.Lock()


@dataclass(frozen=True)
class Result:
    argv: list[str]
    status: int
    out: bytes
    err: str

    @property
    def text(self) -> str:
        return os.fsdecode(self.out).strip()


@dataclass(frozen=True)
class Location:
    toplevel: Path
    git_dir: Path
    common_dir: Path

    @property
    def is_main(self) -> bool:
        # A linked worktree has its own git dir under <common>/worktrees/<name>.
        return self.git_dir == self.common_dir


# --- running git ---------------------------------------------------------------------------------

def _scrub_environment() -> None:
    # The locating variables are dropped from the process itself: git's children get its environment, and
    # workers launched later must not inherit them either. Normally there is nothing to drop and this costs
    # one set test.
    if _LOCATING_VARS.isdisjoint(os.environ):
        return
    with _env_guard:
        for name in _LOCATING_VARS:
            os.environ.pop(name, None)


def run(
    cwd: Path | None,
    *args: str,
    ok: tuple[int, ...] = (0,),
    env: Mapping[str, str] | None = None,
    stdin: BinaryIO | None = None,
    hint: str = _DEFAULT_HINT,
) -> Result:
    """Run git (in `cwd` via -C) and return its result; exit codes outside `ok` raise GitError."""
    _scrub_environment()
    # `-C` rather than a working directory for the process: git then fails on a directory it cannot enter
    # instead of acting on another repository.
    argv = [GIT, *_SAFE_ARGS]
    if cwd is not None:
        argv += ['-C', str(cwd)]
        pinned = _pinned(cwd)
        if pinned is not None:
            argv += _explicit(pinned)
        if _subcommand(args) not in _NO_CONTENT:
            argv += _driver_overrides(cwd, pinned)
    argv += args
    return _execute(argv, ok, env, stdin, hint)


def _explicit(pinned: Location) -> list[str]:
    return [f'--git-dir={pinned.git_dir}', f'--work-tree={pinned.toplevel}']


def _execute(argv: list[str], ok: tuple[int, ...], env: Mapping[str, str] | None, stdin: BinaryIO | None,
             hint: str) -> Result:
    try:
        done = subprocess.run(argv, stdin=stdin if stdin is not None else subprocess.DEVNULL, capture_output=True,
                              env={**os.environ, **_FIXED_ENV, **(env or {})}, check=False)
    except OSError as exc:
        raise GitError(f'cannot run git ({exc}); install git or put it on PATH, then retry') from exc
    # Without its last line break: output is read as a value (a sha, a name); a patch adds it back.
    out = done.stdout[:-1] if done.stdout.endswith(b'\n') else done.stdout
    err = done.stderr.decode('utf-8', 'surrogateescape').removesuffix('\n')
    if done.returncode not in ok:
        raise GitError(failure(argv, done.returncode, err, hint))
    return Result(argv, done.returncode, out, err)


def _subcommand(args: tuple[str, ...]) -> str:
    rest = iter(args)
    for arg in rest:
        if arg in ('-c', '-C'):
            next(rest, None)
        elif not arg.startswith('-'):
            return arg
    return ''


def _driver_overrides(cwd: Path, pinned: Location | None) -> list[str]:
    """`-c` arguments switching off every driver the repository's own config files at `cwd` define
    (orch.adapters.git.drivers): from a kept listing, else from a new one."""
    git_dir = pinned.git_dir if pinned is not None else None
    known = drivers.kept(cwd, git_dir)
    if known is not None:
        return known
    files = drivers.sign(cwd, git_dir)
    explicit = _explicit(pinned) if pinned is not None else []
    res = _execute([GIT, *_SAFE_ARGS, '-C', str(cwd), *explicit, *drivers.LIST_ARGS], (0, 1, 128), None, None,
                   _DEFAULT_HINT)
    if res.status != 0:   # not a repository (yet): no repository config to override
        return []
    return drivers.from_listing(cwd, files, res.out)


def failure(argv: list[str], status: int, err: str, hint: str) -> str:
    command = ' '.join(shlex.quote(a) for a in argv)
    detail = '\n'.join(f'  {line}' for line in (err.strip() or '(no output on stderr)').splitlines())
    return f'git failed (exit {status}): {command}\n{detail}\n{hint}'


def check_name(value: str, what: str) -> str:
    # A leading '-' would be read as an option by git.
    if not value or value.startswith('-'):
        raise GitError(f'invalid {what} {value!r}; use a name that is not empty and does not start with "-".')
    return value


# --- where things are ----------------------------------------------------------------------------

# Where a directory sits in git does not change while its .git entry says the same, and every commit asks twice:
# remembered per directory and what its .git entry says, so a re-created or re-pointed worktree is looked up again.
_LOCATIONS: dict[tuple[str, object], Location] = {}


def locate(path: Path) -> Location:
    path = Path(path)
    if not path.is_dir():
        raise GitError(f'not a git repository: {path} is not a directory (run codex-orch inside the repository)')
    key = _location_key(path)
    if key is not None and key in _LOCATIONS:
        return _LOCATIONS[key]
    res = run(path, 'rev-parse', '--show-toplevel', '--git-dir', '--git-common-dir', ok=(0, 128))
    if res.status != 0:
        raise GitError(f'not a git repository: {path} (run codex-orch inside the repository)\n  {res.err.strip()}')
    top, git_dir, common = os.fsdecode(res.out).splitlines()[:3]
    # --git-dir and --git-common-dir may be relative to `path`; an absolute one is kept by `/`.
    loc = Location(Path(top).resolve(), (path / git_dir).resolve(), (path / common).resolve())
    if key is not None:
        _LOCATIONS[key] = loc
    return loc


def moved(source: Path, target: Path, locate_source: Location | None) -> None:
    """`git worktree move` took the worktree at `source` (located as `locate_source`) to `target`: its git dir stays
    where it was, so its location is known without asking git, once the `.git` at `target` names that git dir."""
    key = _location_key(Path(target))
    named = linked_git_dir(Path(target))
    if locate_source is None or key is None or named is None or named.resolve() != locate_source.git_dir:
        return
    _LOCATIONS[key] = Location(Path(target).resolve(), locate_source.git_dir, locate_source.common_dir)


def known_location(path: Path) -> Location | None:
    """Where `path` sits in git, if it was asked already (and its `.git` entry says what it said); never runs git."""
    key = _location_key(Path(path))
    return _LOCATIONS.get(key) if key is not None else None


def _location_key(path: Path) -> tuple[str, object] | None:
    """(path, what its .git entry says: a file's content, a directory's identity); None when it has none (a
    subdirectory: ask git). By content, not by stat: a worker can put a file's times back, not its content."""
    said = pointer(path / '.git')
    return (str(path.resolve()), said) if said is not None else None


def own_worktree(worktree: Path, action: str) -> Location:
    """Locate a linked worktree that codex-orch may change; refuse the main checkout, subdirectories and a checkout
    whose git dir is not one its repository keeps for it. Once accepted, the checkout is pinned: every later git
    command in it names its git dir and work tree itself, so git never reads its `.git` again (a worker, or a
    process it left behind, may rewrite that file, or a git dir it points at, at any moment)."""
    top = Path(worktree).resolve()
    pinned = _pinned(top)
    if pinned is not None:
        return pinned
    loc = locate(worktree)
    if loc.is_main:
        raise GitError(
            f'refusing to {action} {worktree}: it is the main checkout of the repository, which codex-orch '
            'never changes; pass the path of a codex-orch worktree.')
    if loc.toplevel != top:
        raise GitError(
            f'refusing to {action} {worktree}: it is not the top of a worktree (that is {loc.toplevel}); '
            'pass the worktree path itself.')
    problem = _registration_problem(top, loc)
    if problem:
        raise GitError(f'refusing to {action} {worktree}: {problem}; something in it (a worker?) changed its .git. '
                       'Remove it (git worktree remove --force), then resume.')
    _PINS[str(top)] = loc
    return loc


def _registration_problem(top: Path, loc: Location) -> str | None:
    """Why `loc` is not a worktree its repository keeps for `top` (None when it is): its git dir must be one of the
    common dir's `worktrees/`, whose `gitdir` file names this checkout, and the common dir must be the
    repository's codex-orch runs in (when known) and lie outside the checkout."""
    if loc.git_dir.parent != loc.common_dir / 'worktrees':
        return f'its git dir {loc.git_dir} is not one of {loc.common_dir / "worktrees"}'
    if loc.common_dir.is_relative_to(top) or (_TRUSTED and str(loc.common_dir) not in _TRUSTED):
        return f'its repository {loc.common_dir} is not the one codex-orch runs in'
    if not _registered_for(loc.git_dir, top):
        return f'{loc.git_dir} is not registered for it'
    return None


def _registered_for(git_dir: Path, top: Path | str) -> bool:
    """Whether the `gitdir` file of a linked worktree's git dir (git's record of where it is) names `top`/.git."""
    named = linked_git_dir_file(git_dir / 'gitdir')
    return named is not None and os.path.abspath(git_dir / named) == os.path.join(top, '.git')


# Checkouts own_worktree accepted, by resolved path (see there); forgotten when codex-orch moves or removes one.
_PINS: dict[str, Location] = {}
# The common dirs of the repositories codex-orch was started in (repo_root): a pinned checkout must belong to one.
_TRUSTED: set[str] = set()


def trust(root: Path) -> None:
    """The repository at `root` is one codex-orch runs in (or makes worktrees in): its checkouts may be pinned."""
    _TRUSTED.add(str(locate(root).common_dir))


def forget(path: Path) -> None:
    """Codex-orch is about to remove, move or re-create the worktree at `path`: what it knew of it goes."""
    _PINS.pop(str(Path(path).resolve()), None)


def _pinned(cwd: Path) -> Location | None:
    """The pinned location of the checkout at `cwd`, if any. Its registration is read again each time (one small
    file): a `git worktree prune` drops the git dir of a checkout whose `.git` is gone, and a new worktree may get
    its name; a pin that lost it refuses, it never falls back to reading the checkout's `.git`."""
    if not _PINS:
        return None
    top = os.path.realpath(cwd)
    pinned = _PINS.get(top)
    if pinned is None:
        return None
    if not _registered_for(pinned.git_dir, top):
        raise GitError(f'refusing to run git in {top}: the git dir it was pinned to ({pinned.git_dir}) is not '
                       'registered for it any more (its .git was removed, and the record pruned?); remove the '
                       'checkout (git worktree remove --force, or delete it and run git worktree prune), then resume.')
    return pinned


def pin(worktree: Path) -> Location:
    """Pin a checkout codex-orch made or keeps for a task (own_worktree): done as soon as it exists, before any
    worker may write its `.git`."""
    return own_worktree(worktree, 'use')


def detached_head_of(path: Path) -> str | None:
    """gitfiles.detached_head, from the pinned git dir for a pinned checkout (its own `.git` is not read)."""
    pinned = _pinned(path)
    return detached_head(path, pinned.git_dir if pinned is not None else None)


_FULL_SHA = re.compile(r'[0-9a-f]{40}|[0-9a-f]{64}')


def commit_arg(root: Path, ref: str) -> str:
    """`ref` for a command that takes a commit and fails on an unknown one (checkout, worktree add): a full sha as it
    is (the command checks it), anything else resolved to one first (a tag is peeled, a name is never an option)."""
    return ref if _FULL_SHA.fullmatch(ref) else rev_parse(root, ref)


def rev_parse(root: Path, ref: str) -> str:
    """The commit sha `ref` names (tags are peeled)."""
    check_name(ref, 'revision')
    if ref == 'HEAD' and (head := detached_head_of(root)) is not None:
        return head
    res = run(root, 'rev-parse', '--verify', '--quiet', f'{ref}^{{commit}}', ok=(0, 1))
    if res.status != 0:
        raise GitError(f'unknown revision {ref!r} in {root}; check the branch or commit name.')
    return res.text


def git_version() -> tuple[int, ...]:
    match = re.search(r'(\d+(?:\.\d+)*)', run(None, 'version').text)
    if match is None:
        raise GitError('cannot read the git version from `git version`; reinstall git.')
    return tuple(int(part) for part in match.group(1).split('.'))


def ref_sha(root: Path, ref: str) -> str | None:
    """The sha `ref` names, unpeeled; None when there is no such ref. A detached HEAD and a branch's loose ref are
    read from their files (gitfiles); git is asked for anything else."""
    if ref == 'HEAD' and (head := detached_head_of(root)) is not None:
        return head
    if ref.startswith('refs/heads/'):
        with contextlib.suppress(GitError):   # not a repository: git says so below
            loc = _pinned(root) or locate(root)
            if (sha := loose_branch(loc.common_dir, ref)) is not None:
                return sha
    res = run(root, 'rev-parse', '--verify', '--quiet', ref, ok=(0, 1))
    return res.text if res.status == 0 else None


# --- one writer at a time, and who commits -------------------------------------------------------

@contextlib.contextmanager
def repo_lock(common_dir: Path) -> Iterator[None]:
    """Serialise index-writing operations on one repository, across threads and processes."""
    with _repo_locks_guard:
        lock = _repo_locks.setdefault(str(common_dir), threading.Lock())
    # flock alone would do across processes; the thread lock keeps threads from queuing in the kernel.
    with lock, open(common_dir / _LOCK_FILE, 'a') as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        yield  # closing the file releases the flock


def identity_env(worktree: Path, author: tuple[str, str] | None) -> dict[str, str]:
    """Author/committer variables for one command: `author`, else git's identity, else the fallback."""
    if author is not None:
        name, email = author
        return {'GIT_AUTHOR_NAME': name, 'GIT_AUTHOR_EMAIL': email,
                'GIT_COMMITTER_NAME': name, 'GIT_COMMITTER_EMAIL': email}
    key = _identity_key(locate(worktree).common_dir)
    if key not in _IDENTITY_GAPS:
        missing = []
        for role in ('AUTHOR', 'COMMITTER'):
            # `git var` fails exactly when `git commit` would: no usable configured identity.
            if run(worktree, 'var', f'GIT_{role}_IDENT', ok=(0, 128)).status != 0:
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
