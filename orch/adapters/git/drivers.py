"""The filter, merge and diff drivers a repository's own config defines, switched off on every git command that reads
a worktree (orch.adapters.git.run), and the listing they are read from, kept while the files it came from are as
they were."""
from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from orch.adapters.git.gitfiles import common_dir_of, git_dir_at, pointer
from orch.errors import GitError
from orch.filesig import Sig, file_sig, sig_is_racy

# The filter, merge and diff drivers the repository's own config files (its config, a worktree's config and what
# they include) define: a worker could have written them, and `.gitattributes` in its tree names them. Each is
# overridden on every command that reads a worktree's files: filters do nothing, a merge driver is git's own
# three-way text merge, a diff driver converts nothing and an external diff fails (codex-orch passes --no-ext-diff).
_DRIVER_KEY = re.compile(r'^(filter|merge|diff)\.(.+)\.(clean|smudge|process|required|driver|command|textconv)$',
                         re.IGNORECASE)
_REPO_SCOPES = frozenset({'local', 'worktree'})
_NO_DRIVER = {'filter': ('clean=', 'smudge=', 'process=', 'required=false'),
              'merge': ('driver=git merge-file --marker-size=%L %A %O %B',),
              'diff': ('command=', 'textconv=cat')}
LIST_ARGS = ('config', '--list', '-z', '--show-scope', '--show-origin', '--includes')


def kept(cwd: Path, git_dir: Path | None = None) -> list[str] | None:
    """The overrides of the repository config at `cwd` from a kept listing, or None: list it (`from_listing`).

    Listing them costs a git process before every command that reads a worktree (a dozen per task). The answer is
    kept while every file it was read from has the stat it had (ConfigFiles); a file written in the last second
    is no proof (the coarse clock): then the listing is not kept. It is kept per git dir, not per path: a task's
    checkout taken from the pool is a moved worktree, whose repository config is the one it had."""
    here = Path(os.path.abspath(cwd))
    with _overrides_guard:
        known = _overrides.get(_key(here, git_dir))
    if known is not None and known[1].unchanged(here):
        return known[0]
    return None


def sign(cwd: Path, git_dir: Path | None = None) -> ConfigFiles | None:
    """The files a listing at `cwd` reads, signed before it runs: a change during it shows next time. `git_dir`: the
    git dir a pinned checkout's commands name themselves (orch.adapters.git.run): its `.git` is not read."""
    return ConfigFiles.at(Path(os.path.abspath(cwd)), git_dir)


def from_listing(cwd: Path, files: ConfigFiles | None, out: bytes) -> list[str]:
    """`-c` arguments switching off every driver in the listing `out` (git config LIST_ARGS at `cwd`), kept when
    every file it came from can vouch for it."""
    here = Path(os.path.abspath(cwd))
    names: dict[tuple[str, str], None] = {}
    for scope, origin, name, value in _entries(out):
        if scope not in _REPO_SCOPES:
            continue
        if files is not None:
            files = files.reading(here, origin, name, value)
        match = _DRIVER_KEY.match(name)
        if match:
            if '=' in match.group(2):   # `-c` cannot name it
                raise GitError(f'refusing the repository at {cwd}: its config defines the driver {name!r}, which '
                               'codex-orch cannot switch off; remove it (git config --local --list --show-origin)')
            names[(match.group(1).lower(), match.group(2))] = None
    overrides = [arg for kind, name in names for setting in _NO_DRIVER[kind]
                 for arg in ('-c', f'{kind}.{name}.{setting}')]
    if files is not None and files.steady():
        with _overrides_guard:
            if len(_overrides) > 256:
                _overrides.clear()
            _overrides[_key(here, files.pinned)] = (overrides, files)
    return overrides


def _key(here: Path, git_dir: Path | None) -> str:
    return str(git_dir or git_dir_at(here) or here)


def _entries(out: bytes) -> Iterator[tuple[str, str, str, str]]:
    """(scope, origin, key, value) of each entry of `git config --list -z --show-scope --show-origin`:
    `scope NUL origin NUL key LF value NUL`."""
    fields = out.split(b'\0')
    for scope, origin, entry in zip(fields[0::3], fields[1::3], fields[2::3], strict=False):
        key, _, value = entry.partition(b'\n')
        yield os.fsdecode(scope), os.fsdecode(origin), os.fsdecode(key), os.fsdecode(value)


@dataclass(frozen=True)
class ConfigFiles:
    """Every file the repository config at a directory is read from: the `.git` entry that says which repository it
    is and the git dir's `commondir` (by content), the git dir's `config.worktree`, the common `config`, every file the
    listing came from and every file an include names, also one that does not exist yet (by stat). A conditional
    include on the branch adds the git dir's HEAD; one on another config's values (`hasconfig:`) is not followed:
    nothing kept."""

    # The pointers are compared by what they say, not by stat: codex-orch itself writes them whenever it makes a
    # checkout, and a stat taken within a second of that would keep nothing (see `steady`). A `.git` directory is
    # the same one while its inode is (its times change with every index write). The `.git` entry is the one at the
    # directory asked about (a worktree moved keeps its listing), `commondir` the one in the git dir it names.
    dot_git: object   # unused for a pinned checkout (`pinned`: its git dir, named on every command)
    commondir: tuple[Path, object]
    sigs: tuple[tuple[Path, Sig], ...]
    head: tuple[Path, Sig]   # the git dir's HEAD, signed before the listing: kept only if an include needs it
    on_branch: bool = False
    pinned: Path | None = None

    @staticmethod
    def at(cwd: Path, pinned: Path | None = None) -> ConfigFiles | None:
        """The files every listing at `cwd` reads; None when `cwd` is not a checkout's top (git would look above)."""
        dot_git = cwd / '.git'
        git_dir = pinned or git_dir_at(cwd)
        if git_dir is None:
            return None
        common = common_dir_of(git_dir)   # as git opens it: `..` after a symlink is the kernel's
        paths = [git_dir / 'config.worktree', common / 'config']
        return ConfigFiles(None if pinned else pointer(dot_git),
                           (git_dir / 'commondir', pointer(git_dir / 'commondir')),
                           tuple((p, file_sig(p)) for p in paths), (git_dir / 'HEAD', file_sig(git_dir / 'HEAD')),
                           pinned=pinned)

    def reading(self, cwd: Path, origin: str, key: str, value: str) -> ConfigFiles | None:
        """These files and those one repository-scope entry of the listing adds; None: such a listing is not kept."""
        if not origin.startswith('file:'):
            return None
        source = cwd / origin.removeprefix('file:')
        more = [source]
        lowered = key.lower()
        if lowered == 'extensions.refstorage':   # HEAD is then no file to watch (reftable)
            return None
        on_branch = self.on_branch
        if lowered == 'include.path' or (lowered.startswith('includeif.') and lowered.endswith('.path')):
            condition = lowered.removeprefix('includeif.').removesuffix('.path') if lowered != 'include.path' else ''
            if condition.startswith('hasconfig:'):
                return None
            on_branch = on_branch or condition.startswith('onbranch:')
            if value.startswith('%(prefix)/'):   # relative to git's installation: not followed
                return None
            target = Path(os.path.expanduser(value))
            more.append(target if target.is_absolute() else source.parent / target)
        known = {path for path, _ in self.sigs}
        return ConfigFiles(self.dot_git, self.commondir,
                           (*self.sigs, *((p, file_sig(p)) for p in more if p not in known)), self.head, on_branch,
                           self.pinned)

    def kept(self) -> tuple[tuple[Path, Sig], ...]:
        return (*self.sigs, self.head) if self.on_branch else self.sigs

    def unchanged(self, cwd: Path) -> bool:
        return ((self.pinned is not None or pointer(cwd / '.git') == self.dot_git)
                and pointer(self.commondir[0]) == self.commondir[1]
                and all(file_sig(path) == sig for path, sig in self.kept()))

    def steady(self) -> bool:
        """No file signed by stat written in the last second, nor one whose time is a whole second (a filesystem
        with coarse times): its stat then tells its content (orch.filesig.is_racy), and a file the listing read
        changed after it would show here."""
        now = time.time_ns()
        return not any(sig_is_racy(now, sig) for _, sig in self.kept())


_overrides: dict[str, tuple[list[str], ConfigFiles]] = {}
_overrides_guard = threading.Lock()


