"""Where cached task results live: git refs in the host repository (`refs/codex-orch/cache/<key>`).

An entry is a commit whose tree holds `entry.json` (the answer, the execution record, its origin, its key's
inputs), `prompt.md` (the normalised prompt, for `explain`), `logs/` (the event log and check logs) and, when a
signing key was set, `signature`; the task's commit is its parent so that the task's objects travel with it
through any git remote (`cache push` / `cache pull`: plain fetch and push of the refs). Entries are written
once and never replaced (`update-ref` with an empty old value). The interface (`get`, `put`, `entries`,
`delete`) is what another store (a local directory, an object store) implements the same way.

The signature is an HMAC-SHA256, under a key only trusted writers hold, of entry.json and of the patch a hit
replays (its sha256): a reader holding the key refuses an entry whose answer or commit was changed, or that
was never signed.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import re
import tempfile
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeGuard

from orch.adapters.git.run import check_name, own_worktree, ref_sha, run
from orch.errors import GitError

PREFIX = 'refs/codex-orch/cache/'
_ZERO = '0' * 40
ENTRY_LIMIT = 16 << 20   # bytes of an entry.json read at all (an answer, a record: far less)
_NAME = re.compile(r'[A-Za-z0-9][A-Za-z0-9._-]{0,254}')   # a task id, a run id, a host name
MAX_TIME = 1e11   # an origin's time: seconds since the epoch, before the year 5000
# What is read again and again in one process: start trees of commits (immutable), and each repository's entries
# with the refs listing they were read at (read again when it changed).
_START_TREES: dict[tuple[str, str, tuple[str, ...]], str] = {}
_ALL_DATA: dict[str, tuple[str, list[tuple[str, dict[str, Any]]]]] = {}
_OID = re.compile('[0-9a-f]{40}(?:[0-9a-f]{24})?')   # a full object id, SHA-1 or SHA-256
# The transports a cache remote may use, beside a local path (SAFE_CONFIG allows only that): never `ext::`.
_TRANSPORTS = tuple(arg for name in ('https', 'http', 'ssh', 'git')
                    for arg in ('-c', f'protocol.{name}.allow=always'))
_IDENTITY = {'GIT_AUTHOR_NAME': 'codex-orch', 'GIT_AUTHOR_EMAIL': 'codex-orch@localhost',
             'GIT_COMMITTER_NAME': 'codex-orch', 'GIT_COMMITTER_EMAIL': 'codex-orch@localhost'}


@dataclass(frozen=True)
class Entry:
    key: str
    data: dict[str, Any]      # entry.json: answer, execution, origin, commit, base
    ref_commit: str           # the entry's own commit (its tree: entry.json and logs)

    @property
    def commit(self) -> str | None:
        value = self.data.get('commit')
        return value if isinstance(value, str) else None

    @property
    def base(self) -> str | None:
        value = self.data.get('base')
        return value if isinstance(value, str) else None

    @property
    def inputs(self) -> dict[str, Any]:
        value = self.data.get('inputs')
        return value if isinstance(value, dict) else {}


class CacheStore(Protocol):
    def has(self, key: str) -> bool: ...
    def get(self, key: str) -> Entry | None: ...
    def signature_problem(self, entry: Entry, secret: bytes, ignore: str) -> str | None: ...
    def put(self, key: str, data: dict[str, Any], commit: str | None, logs: Mapping[str, bytes],
            prompt: str = '', secret: bytes | None = None, ignore: str = '') -> bool: ...
    def entries(self) -> list[tuple[str, float]]: ...
    def all_data(self) -> list[tuple[str, dict[str, Any]]]: ...
    def prompt(self, key: str) -> str | None: ...
    def delete(self, key: str) -> None: ...


class GitRefStore:
    """The cache in the repository's refs (see the module's doc)."""

    def __init__(self, repo: Path) -> None:
        self.repo = repo

    def has(self, key: str) -> bool:
        return ref_sha(self.repo, PREFIX + check_name(key, 'cache key')) is not None

    def get(self, key: str) -> Entry | None:
        ref = PREFIX + check_name(key, 'cache key')
        sha = ref_sha(self.repo, ref + '^{commit}')
        if sha is None:
            return None
        size = run(self.repo, 'cat-file', '-s', f'{sha}:entry.json', ok=(0, 128))
        if size.status != 0 or not size.text.isdigit() or int(size.text) > ENTRY_LIMIT:
            return None
        res = run(self.repo, 'cat-file', 'blob', f'{sha}:entry.json', ok=(0, 128))
        try:
            data = json.loads(res.out) if res.status == 0 else None
        except ValueError:
            data = None
        if not well_formed(data) or data.get('key') != key:
            return None
        commit, base = data.get('commit'), data.get('base')
        if commit is not None and not (self._is_commit(commit) and self._is_commit(base)):
            return None   # its objects did not travel with it
        return Entry(key, data, sha)

    def _is_commit(self, name: Any) -> bool:
        """`name` is a commit's full id (never a ref name or an expression) and the commit is here."""
        return isinstance(name, str) and _OID.fullmatch(name) is not None and \
            ref_sha(self.repo, f'{name}^{{commit}}') is not None

    def signature_problem(self, entry: Entry, secret: bytes, ignore: str) -> str | None:
        """Why `entry` is not signed under `secret` (None: it is)."""
        res = run(self.repo, 'cat-file', 'blob', f'{entry.ref_commit}:signature', ok=(0, 128))
        if res.status != 0:
            return 'it is not signed (a signing key is set: only signed entries are used)'
        try:
            text = run(self.repo, 'cat-file', 'blob', f'{entry.ref_commit}:entry.json').out
            wanted = _signature(secret, text, self._patch_digest(entry.base, entry.commit, ignore))
        except GitError as exc:   # an entry that cannot be read whole is refused, never a failed task
            return f'it cannot be read: {exc}'
        if not hmac.compare_digest(res.text.strip(), wanted):
            return 'its signature does not match its content (it was changed after it was signed, or signed ' \
                   'with another key)'
        return None

    def _patch_digest(self, base: str | None, commit: str | None, ignore: str) -> str:
        if not commit or not base:
            return ''
        return hashlib.sha256(patch(self.repo, base, commit, ignore)).hexdigest()

    def put(self, key: str, data: dict[str, Any], commit: str | None, logs: Mapping[str, bytes],
            prompt: str = '', secret: bytes | None = None, ignore: str = '') -> bool:
        """Write the entry unless one exists (written once, never replaced); True when written. With `secret`,
        signed (over entry.json and the patch from its `base` to `commit`, `ignore` left out as a hit does)."""
        ref = PREFIX + check_name(key, 'cache key')
        if ref_sha(self.repo, ref) is not None:
            return False
        text = json.dumps({**data, 'key': key, 'commit': commit}, indent=2, sort_keys=True).encode() + b'\n'
        log_lines = [f'100644 blob {_blob(self.repo, body)}\t{name}' for name, body in sorted(logs.items())]
        lines = [f'100644 blob {_blob(self.repo, text)}\tentry.json']
        if prompt:
            lines.append(f'100644 blob {_blob(self.repo, prompt.encode("utf-8"))}\tprompt.md')
        if secret is not None:
            base = data.get('base')
            signed = _signature(secret, text, self._patch_digest(base if isinstance(base, str) else None, commit,
                                                                 ignore))
            lines.append(f'100644 blob {_blob(self.repo, signed.encode())}\tsignature')
        if log_lines:
            lines.append(f'040000 tree {_tree(self.repo, log_lines)}\tlogs')
        tree = _tree(self.repo, lines)
        parents = ['-p', commit] if commit else []
        sha = _stdin(self.repo, ('commit-tree', tree, *parents), f'codex-orch cache entry {key}\n'.encode(),
                     env=_IDENTITY)
        res = run(self.repo, 'update-ref', ref, sha, _ZERO, ok=(0, 1, 128))
        return res.status == 0

    def entries(self) -> list[tuple[str, float]]:
        out = run(self.repo, 'for-each-ref', '--format=%(refname) %(committerdate:unix)', PREFIX).text
        found = []
        for line in out.splitlines():
            name, _, when = line.rpartition(' ')
            found.append((name[len(PREFIX):], float(when or 0)))
        return found

    def all_data(self) -> list[tuple[str, dict[str, Any]]]:
        """Every entry's key and entry.json (one git process, however many entries: for `explain`). Read again
        only when the entries changed: every miss of a run looks for its nearest entry."""
        listing = run(self.repo, 'for-each-ref', '--format=%(refname) %(objectname)', PREFIX).text
        known = _ALL_DATA.get(str(self.repo))
        if known is not None and known[0] == listing:
            return list(known[1])
        found = self._read_all([line.rpartition(' ')[0] for line in listing.splitlines()])
        _ALL_DATA[str(self.repo)] = (listing, found)
        return list(found)

    def _read_all(self, refs: list[str]) -> list[tuple[str, dict[str, Any]]]:
        if not refs:
            return []
        sizes = _batch(self.repo, '--batch-check', [f'{ref}:entry.json' for ref in refs]).splitlines()
        refs = [ref for ref, line in zip(refs, sizes, strict=True)
                if len(parts := line.split()) == 3 and parts[2].isdigit() and int(parts[2]) <= ENTRY_LIMIT]
        if not refs:
            return []
        out = _batch(self.repo, '--batch', [f'{ref}:entry.json' for ref in refs])
        found, pos = [], 0
        for ref in refs:
            header_end = out.find(b'\n', pos)
            header = out[pos:header_end if header_end >= 0 else len(out)].split()
            if len(header) != 3:   # "<name> missing"
                pos = header_end + 1
                continue
            size = int(header[2])
            body, pos = out[header_end + 1:header_end + 1 + size], header_end + 1 + size + 1
            try:
                data = json.loads(body)
            except ValueError:
                continue
            if well_formed(data):
                found.append((ref[len(PREFIX):], data))
        return found

    def prompt(self, key: str) -> str | None:
        res = run(self.repo, 'cat-file', 'blob', f'{PREFIX}{check_name(key, "cache key")}:prompt.md', ok=(0, 128))
        return res.out.decode('utf-8', 'replace') if res.status == 0 else None

    def delete(self, key: str) -> None:
        run(self.repo, 'update-ref', '-d', PREFIX + check_name(key, 'cache key'))


def _batch(repo: Path, mode: str, names: list[str]) -> bytes:
    with tempfile.TemporaryFile() as f:
        f.write(''.join(f'{name}\n' for name in names).encode())
        f.seek(0)
        return run(repo, 'cat-file', mode, stdin=f).out


def well_formed(data: Any) -> TypeGuard[dict[str, Any]]:
    """entry.json has the shape every reader of it relies on (else the entry is none: never a crash, never
    a number that is not one). What a field says is judged where it is used."""
    if not isinstance(data, dict):
        return False
    origin, execution = data.get('origin', {}), data.get('execution', {})
    if not isinstance(origin, dict) or not isinstance(execution, dict):
        return False
    # names shown in reports and the job summary: plain names, nothing Markdown or a terminal would act on
    if any(not _plain(origin.get(k, '?')) for k in ('task', 'run', 'host')) or not _number(origin.get('time', 0)) \
            or origin.get('time', 0) > MAX_TIME:
        return False
    usage = execution.get('usage') or {}
    inputs, files = data.get('inputs', {}), data.get('files_changed', [])
    return (isinstance(usage, dict) and all(_number(v) and isinstance(v, int) for v in usage.values())
            and isinstance(inputs, dict) and all(isinstance(v, str) for v in inputs.values())
            and isinstance(files, list) and all(isinstance(f, str) for f in files))


def plain_name(text: str) -> str:
    """`text` as a name an entry's origin may carry (a host name, whatever the machine calls itself)."""
    return re.sub(r'[^A-Za-z0-9._-]', '-', text)[:255] or '?'


def _plain(value: Any) -> bool:
    return isinstance(value, str) and (value == '?' or _NAME.fullmatch(value) is not None)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


def _blob(repo: Path, data: bytes) -> str:
    return _stdin(repo, ('hash-object', '-w', '--stdin'), data)


def _tree(repo: Path, lines: list[str]) -> str:
    return _stdin(repo, ('mktree',), ('\n'.join(lines) + '\n').encode())


def _stdin(repo: Path, args: tuple[str, ...], data: bytes, env: Mapping[str, str] | None = None) -> str:
    with tempfile.TemporaryFile() as f:
        f.write(data)
        f.seek(0)
        return run(repo, *args, stdin=f, env=env).text


def start_tree(repo: Path, commit: str, ignore: tuple[str, ...]) -> str:
    """start_tree_of, asked once per process for a commit named by its id (every task's key covers its run's base)."""
    if _OID.fullmatch(commit) is None:
        return start_tree_of(repo, commit, ignore)
    memo = (str(repo), commit, ignore)
    if memo not in _START_TREES:
        _START_TREES[memo] = start_tree_of(repo, commit, ignore)
    return _START_TREES[memo]


def start_tree_of(repo: Path, commit: str, ignore: tuple[str, ...]) -> str:
    """The digest of `commit`'s tree with the files `ignore` left out (a name ending in "/": everything under it):
    codex-orch's own (the decisions log names the run that wrote each entry; the plan file holds every task's entry,
    a task's own being in its prompt; of `.orchestrator/`, what decides a task's work is in its key already)."""
    out = run(repo, 'ls-tree', '-r', '--full-tree', '-z', check_name(commit, 'commit')).out
    kept_items = [item for item in out.split(b'\0') if item and _kept(item.split(b'\t', 1)[-1], ignore)]
    return hashlib.sha256(b'\0'.join(kept_items)).hexdigest()


def replay(workdir: Path, base: str, commit: str, ignore: str) -> None:
    """Write the changes of the cached `commit` (over its parent `base`) into a task's checkout, `ignore` left out
    (the decisions log: the task's own entry is written again by this run). GitError when they do not apply."""
    own_worktree(workdir, 'replay a cached result in')
    changes = patch(workdir, base, commit, ignore)
    if not changes:
        return
    with tempfile.TemporaryFile() as f:
        f.write(changes + b'\n')
        f.seek(0)
        run(workdir, 'apply', '--binary', '--whitespace=nowarn', '-', stdin=f)


def patch(repo: Path, base: str, commit: str, ignore: str) -> bytes:
    """The changes from `base` to `commit`, `ignore` left out, as a binary patch."""
    excluded = ('--', '.', f':(exclude,top){ignore}') if ignore else ()
    return run(repo, 'diff', '--binary', '--full-index', '--no-renames', '--no-ext-diff', '--no-textconv',
               check_name(base, 'commit'), check_name(commit, 'commit'), *excluded).out


def change_digest(repo: Path, commit: str, ignore: tuple[str, ...]) -> str:
    """A task's own change: its commit against its parent, as paths, modes and blob ids (`ignore` left out, as
    in start_tree); the same work landed anywhere has the same digest."""
    out = run(repo, 'diff-tree', '-r', '-z', '--no-renames', '--no-commit-id', '--root',
              check_name(commit, 'commit')).out
    fields = out.split(b'\0')
    kept = [b'%s\0%s' % (meta, path) for meta, path in zip(fields[0::2], fields[1::2], strict=False)
            if path and _kept(path, ignore)]
    return hashlib.sha256(b'\0'.join(kept)).hexdigest()


def _kept(path: bytes, ignore: tuple[str, ...]) -> bool:
    files = {name.encode() for name in ignore if not name.endswith('/')}
    dirs = tuple(name.encode() for name in ignore if name.endswith('/'))
    return path not in files and not path.startswith(dirs)


def _signature(secret: bytes, entry_json: bytes, patch_digest: str) -> str:
    # the bytes as git gives them back (orch.adapters.git.run strips the final newline), written or read
    entry_digest = hashlib.sha256(entry_json.rstrip(b'\n')).hexdigest()
    message = f'codex-orch-cache-signature/1\0{entry_digest}\0{patch_digest}'.encode()
    return 'hmac-sha256:' + hmac.new(secret, message, hashlib.sha256).hexdigest()


def fetch(repo: Path, remote: str) -> str:
    """`cache pull`: the remote's cache entries this repository lacks (an entry here is kept, even when the remote
    has another under its key: entries are written once, and either verifies the same way)."""
    name = check_name(remote, 'remote')
    have = _local_refs(repo)
    wanted = [ref for ref in _remote_refs(repo, name) if ref not in have]
    return ''.join(run(repo, *_TRANSPORTS, 'fetch', '--no-tags', '--no-write-fetch-head', name,
                       *(f'{ref}:{ref}' for ref in chunk)).err for chunk in _chunks(wanted))


def push(repo: Path, remote: str, only: Collection[str] | None = None) -> str:
    """`cache push`: the entries the remote lacks (never forced, never replacing one it has); `only`: of these
    keys."""
    name = check_name(remote, 'remote')
    theirs = set(_remote_refs(repo, name))
    mine = _local_refs(repo) if only is None else _local_refs(repo) & {PREFIX + key for key in only}
    wanted = [ref for ref in sorted(mine) if ref not in theirs]
    return ''.join(run(repo, *_TRANSPORTS, 'push', '--quiet', name, *(f'{ref}:{ref}' for ref in chunk)).err
                   for chunk in _chunks(wanted))


def _local_refs(repo: Path) -> set[str]:
    return set(run(repo, 'for-each-ref', '--format=%(refname)', PREFIX).text.splitlines())


def _remote_refs(repo: Path, remote: str) -> list[str]:
    out = run(repo, *_TRANSPORTS, 'ls-remote', '--refs', remote, f'{PREFIX}*').text
    return [line.split('\t', 1)[1] for line in out.splitlines() if '\t' in line]


def _chunks(refs: list[str], size: int = 500) -> list[list[str]]:
    return [refs[i:i + size] for i in range(0, len(refs), size)]


def parents(repo: Path, commit: str) -> list[str]:
    return run(repo, 'rev-list', '--parents', '-n', '1', check_name(commit, 'commit')).text.split()[1:]
