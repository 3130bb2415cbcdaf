"""The machine's result cache: a bare git repository shared by every repository and run on the machine (config
`cache.local`: by default `$XDG_CACHE_HOME/codex-orch/results.git`, else `~/.cache/codex-orch/results.git`;
`false` turns it off).

It holds the same refs as a repository's own cache (`refs/codex-orch/cache/<key>`, orch.adapters.cache_store),
with their objects. A lookup reads the host repository's refs first, then this store: an entry found here is
fetched into the host repository (its ref and its objects) and from then on is a host entry, used exactly as one
(signature check, replay, verification). A result written to the host's refs is pushed here too when this store
lacks its key (never forced: an entry is written once, never replaced). A store that cannot be read or written
is a warning, never a failed run.

The store is created on its first write: `git init --bare` in a temporary directory beside it, then renamed into
place, so no run ever sees half of one (when two create it at once, one rename wins and the other's directory is
dropped); git's own ref locking keeps concurrent writers from corrupting its refs.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orch import output
from orch.adapters.cache_store import PREFIX, Entry, GitRefStore
from orch.adapters.git.run import check_name, run
from orch.errors import GitError

STORE_NAME = 'results.git'


def local_path(repo: Path, setting: bool | str) -> Path | None:
    """Where the machine's store is for `cache.local` = `setting` (None: off). A relative path is taken from the
    repository's root, `~` is the user's home."""
    if setting is False:
        return None
    if setting is True:
        xdg = os.environ.get('XDG_CACHE_HOME', '')
        root = Path(xdg) if os.path.isabs(xdg) else Path.home() / '.cache'   # XDG: a relative value is ignored
        return root / 'codex-orch' / STORE_NAME
    return Path(os.path.abspath(repo / Path(setting).expanduser()))


def open_store(repo: Path, setting: bool | str) -> GitRefStore:
    """The cache a run reads and writes: the repository's refs, with the machine's store behind them unless off."""
    path = local_path(repo, setting)
    return GitRefStore(repo) if path is None else WithLocal(repo, LocalStore(path))


class LocalStore(GitRefStore):
    """The bare repository at `path`, read as a GitRefStore; empty while it does not exist."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.path = path

    def exists(self) -> bool:
        # Only a bare repository's own layout: git run at a plain directory would find a repository above it.
        return (self.path / 'HEAD').is_file() and (self.path / 'objects').is_dir() and (self.path / 'refs').is_dir()

    def create(self) -> None:
        if self.exists():
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fresh = Path(tempfile.mkdtemp(prefix=f'.{self.path.name}.', dir=self.path.parent))
        except OSError as exc:
            raise GitError(f'cannot create the local result cache at {self.path}: {exc}; set cache.local to a '
                           'writable directory, or to false') from exc
        try:
            run(None, 'init', '--quiet', '--bare', str(fresh))
            os.rename(fresh, self.path)
        except OSError as exc:
            if not self.exists():   # else another run created it first: theirs is used
                raise GitError(f'cannot create the local result cache at {self.path}: {exc}; set cache.local to '
                               'a new directory, or to false') from exc
        finally:
            shutil.rmtree(fresh, ignore_errors=True)

    def has(self, key: str) -> bool:
        return self.exists() and super().has(key)

    def get(self, key: str) -> Entry | None:
        return super().get(key) if self.exists() else None

    def put(self, key: str, data: dict[str, Any], commit: str | None, logs: Mapping[str, bytes],
            prompt: str = '', secret: bytes | None = None, ignore: str = '') -> bool:
        self.create()
        return super().put(key, data, commit, logs, prompt, secret, ignore)

    def entries(self) -> list[tuple[str, float]]:
        return super().entries() if self.exists() else []

    def all_data(self) -> list[tuple[str, dict[str, Any]]]:
        return super().all_data() if self.exists() else []

    def prompt(self, key: str) -> str | None:
        return super().prompt(key) if self.exists() else None

    def collect(self) -> None:
        """Drop the objects no entry needs any more (git's own grace period kept: a run writing now is safe)."""
        if self.exists():
            run(self.path, 'gc', '--quiet')


def peek(store: GitRefStore, key: str) -> tuple[GitRefStore, Entry | None]:
    """The entry under `key` and the store whose repository holds its objects (the repository's refs first, then
    the machine's store), fetching nothing: for the dry run, which reads the entry where it is."""
    if not isinstance(store, WithLocal):
        return store, store.get(key)
    entry = store.host.get(key)
    if entry is not None or store.host.has(key) or not store.local.has(key):
        return store.host, entry
    return store.local, store.local.get(key)


class WithLocal(GitRefStore):
    """The host repository's cache with the machine's store behind it (see the module's doc): `get` and `put`
    reach both, `all_data` and `prompt` read both (the nearest entry of a miss may be the machine's); `has`,
    `signature_problem`, `entries` and `delete` are the repository's refs' (an entry is checked once it is there)."""

    def __init__(self, repo: Path, local: LocalStore) -> None:
        super().__init__(repo)
        self.local = local
        self.host = GitRefStore(repo)

    def get(self, key: str) -> Entry | None:
        holder, entry = peek(self, key)
        if holder is not self.local:
            return entry
        ref = PREFIX + check_name(key, 'cache key')
        try:
            run(self.repo, 'fetch', '--quiet', '--no-tags', '--no-write-fetch-head', str(self.local.path),
                f'{ref}:{ref}')
        except GitError as exc:
            output.write_line(f'warning: cannot take the cache entry {key[:12]} from the local result cache '
                              f'{self.local.path}: {exc}', err=True)
            return None
        return super().get(key)

    def put(self, key: str, data: dict[str, Any], commit: str | None, logs: Mapping[str, bytes],
            prompt: str = '', secret: bytes | None = None, ignore: str = '') -> bool:
        written = super().put(key, data, commit, logs, prompt, secret, ignore)
        if super().has(key) and not self.local.has(key):
            try:
                self.local.create()
                ref = PREFIX + check_name(key, 'cache key')
                res = run(self.repo, 'push', '--quiet', '--no-verify', str(self.local.path), f'{ref}:{ref}',
                          ok=(0, 1))
                if res.status != 0 and not self.local.has(key):   # else another run wrote it first
                    raise GitError(res.err.strip() or f'git push exited {res.status}')
            except GitError as exc:
                output.write_line(f'warning: the cache entry {key[:12]} is in the repository but not in the local '
                                  f'result cache {self.local.path}: {exc}', err=True)
        return written

    def all_data(self) -> list[tuple[str, dict[str, Any]]]:
        """The host's entries, then the machine's whose keys the host lacks (the nearest entry may be either)."""
        mine = super().all_data()
        have = {key for key, _ in mine}
        return mine + [(key, data) for key, data in self.local.all_data() if key not in have]

    def prompt(self, key: str) -> str | None:
        found = super().prompt(key)
        return found if found is not None else self.local.prompt(key)
