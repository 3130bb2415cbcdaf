"""Moving commits as bundles (the Dask executor: no shared filesystem, no push credentials)."""
from __future__ import annotations

import os
import posixpath
import tempfile
from dataclasses import dataclass
from pathlib import Path

from orch.adapters.git.run import check_name, own_worktree, rev_parse, run
from orch.errors import GitError

_SNAPSHOT_IDENTITY = {'GIT_AUTHOR_NAME': 'codex-orch', 'GIT_AUTHOR_EMAIL': 'codex-orch@localhost',
                      'GIT_COMMITTER_NAME': 'codex-orch', 'GIT_COMMITTER_EMAIL': 'codex-orch@localhost',
                      'GIT_AUTHOR_DATE': '@0 +0000', 'GIT_COMMITTER_DATE': '@0 +0000'}


def init_repository(path: Path) -> None:
    """A new, empty repository at `path` (a worker's scratch repository)."""
    Path(path).mkdir(parents=True, exist_ok=True)
    run(path, 'init', '--quiet')


def scratch_checkout(path: Path, data: bytes, ref: str, commit: str, branch: str) -> None:
    """A plain repository at `path` with `commit` of the bundle checked out on a new `branch` (a remote unit's
    scratch repository). Its `.git` is a directory at the top of the tree the worker edits — the one directory
    of its writable root that Codex's workspace-write sandbox keeps read-only — not the gitdir of a linked
    worktree, whose shared repository (config, filters) would lie outside that protection."""
    init_repository(path)
    fetch_bundle(path, data, ref, 'refs/orch/start')
    run(path, 'checkout', '--quiet', '-b', check_name(branch, 'branch name'), check_name(commit, 'commit'))


def snapshot_commit(root: Path, commit: str) -> str:
    """A parentless commit with `commit`'s tree: what a remote worker starts from, without the history.

    Deterministic (fixed identity and dates): the same tree always gives the same snapshot."""
    tree = run(root, 'rev-parse', '--verify', f'{check_name(commit, "commit")}^{{tree}}').text
    res = run(root, 'commit-tree', tree, '-m', 'codex-orch snapshot', env=_SNAPSHOT_IDENTITY)
    return res.text


def create_bundle(root: Path, tip: str, ref: str, *, exclude: str | None = None) -> bytes:
    """A bundle of `tip` (as `ref`), without `exclude` and its history (then a prerequisite of the bundle)."""
    check_name(ref, 'ref')
    run(root, 'update-ref', ref, check_name(tip, 'commit'))
    with tempfile.TemporaryDirectory(prefix='codex-orch-bundle-') as tmp:
        path = Path(tmp) / 'unit.bundle'
        run(root, 'bundle', 'create', '--quiet', str(path), ref, *([f'^{check_name(exclude, "commit")}']
                                                                    if exclude else []))
        return path.read_bytes()


def fetch_bundle(root: Path, data: bytes, ref: str, into: str) -> str:
    """Fetch `ref` of a bundle (bytes) into the local ref `into`; returns the commit it names."""
    check_name(into, 'ref')
    with tempfile.TemporaryDirectory(prefix='codex-orch-bundle-') as tmp:
        path = Path(tmp) / 'result.bundle'
        path.write_bytes(data)
        # Objects from a bundle are another machine's: fsck them (a `.git` path in a tree, a malformed object).
        run(root, '-c', 'transfer.fsckObjects=true', '-c', 'fetch.fsckObjects=true', 'fetch', '--quiet',
            '--no-tags', '--no-write-fetch-head', str(path), f'+{ref}:{into}',
            hint='The bundle is damaged, holds objects git refuses (fsck), or its start commit is missing here.')
    return rev_parse(root, into)


def parents_of(root: Path, sha: str) -> list[str]:
    return run(root, 'rev-list', '--parents', '-n', '1', check_name(sha, 'commit'), '--').text.split()[1:]


@dataclass(frozen=True)
class TreeChange:
    path: str
    old_mode: str
    new_mode: str


def tree_changes(root: Path, a: str, b: str) -> list[TreeChange]:
    """What changes from commit `a` to commit `b` (no rename detection)."""
    res = run(root, 'diff-tree', '-r', '-z', '--raw', '--no-renames', '--no-commit-id',
              check_name(a, 'commit'), check_name(b, 'commit'), '--')
    fields = res.out.split(b'\0')
    out: list[TreeChange] = []
    for meta, path in zip(fields[0::2], fields[1::2], strict=False):
        old_mode, new_mode = meta.lstrip(b':').split(b' ')[:2]
        out.append(TreeChange(os.fsdecode(path), old_mode.decode(), new_mode.decode()))
    return out


_SYMLINK, _FILES, _GONE = '120000', ('100644', '100755'), '000000'
_MAX_LINK = 4096


def unpacked_refusal(root: Path, a: str, b: str, *, max_bytes: int, max_files: int) -> str | None:
    """Why the files commit `b` adds or changes over commit `a` must not be written, or None: more than `max_files`
    of them, more than `max_bytes` of content once unpacked (a bundle's size says nothing of it), a symbolic link
    replacing a tracked file, or one pointing out of the tree (absolute, up through `..`, or through another link).
    Reads the objects' sizes (and a link's target) only: nothing is checked out or written."""
    new = [(c, sha) for c, sha in _changed_blobs(root, a, b) if c.new_mode != _GONE]
    if len(new) > max_files:
        return f'writes {len(new)} files, more than the limit of {max_files} (executor.result_max_files)'
    sizes = _object_sizes(root, [sha for _, sha in new])
    total = sum(sizes)
    if total > max_bytes:
        return (f'unpacks to {total} bytes of files, more than the limit of {max_bytes} '
                '(executor.result_max_bytes)')
    for (change, sha), size in zip(new, sizes, strict=True):
        if change.new_mode != _SYMLINK:
            continue
        if change.old_mode in _FILES:
            return f'replaces the tracked file {change.path} with a symbolic link'
        target = run(root, 'cat-file', 'blob', sha).out if size <= _MAX_LINK else b'/'
        if _link_escapes(root, b, change.path, os.fsdecode(target)):
            return f'adds the symbolic link {change.path} pointing out of the tree ({os.fsdecode(target)[:200]!r})'
    return None


def _link_escapes(root: Path, commit: str, path: str, target: str) -> bool:
    """Whether the link `path` -> `target` of `commit` may lead out of its tree: an absolute target, one whose `..`
    climbs above the top, or one that goes through another symbolic link of the tree (`sub/b -> ..` makes
    `sub/b/..` the top's parent, which a lexical reading calls the top). Resolved component by component."""
    if target.startswith('/'):
        return True
    parts = [p for p in posixpath.dirname(path).split('/') if p]
    names = [n for n in target.split('/') if n not in ('', '.')]
    through: list[str] = []   # the paths the target goes through (each must be a directory, not a link)
    for i, name in enumerate(names):
        if name == '..':
            if not parts:
                return True
            parts.pop()
            continue
        parts.append(name)
        if i < len(names) - 1:
            through.append('/'.join(parts))
    if not through:
        return False
    wanted = set(through)
    listed = run(root, '--literal-pathspecs', 'ls-tree', '-z', '--full-tree', check_name(commit, 'commit'), '--',
                 *sorted(wanted)).out.split(b'\0')
    for entry in listed:   # `<mode> <type> <sha>\t<path>`; ls-tree may list more than the paths asked for
        meta, _, entry_path = entry.partition(b'\t')
        if meta.startswith(_SYMLINK.encode() + b' ') and os.fsdecode(entry_path) in wanted:
            return True
    return False


def _changed_blobs(root: Path, a: str, b: str) -> list[tuple[TreeChange, str]]:
    res = run(root, 'diff-tree', '-r', '-z', '--raw', '--no-renames', '--no-commit-id',
              check_name(a, 'commit'), check_name(b, 'commit'), '--')
    fields = res.out.split(b'\0')
    out: list[tuple[TreeChange, str]] = []
    for meta, path in zip(fields[0::2], fields[1::2], strict=False):
        old_mode, new_mode, _, new_sha = meta.lstrip(b':').split(b' ')[:4]
        out.append((TreeChange(os.fsdecode(path), old_mode.decode(), new_mode.decode()), new_sha.decode()))
    return out


def _object_sizes(root: Path, shas: list[str]) -> list[int]:
    if not shas:
        return []
    with tempfile.TemporaryFile() as f:
        f.write(''.join(f'{sha}\n' for sha in shas).encode())
        f.seek(0)
        lines = run(root, 'cat-file', '--batch-check=%(objectsize)', stdin=f).text.splitlines()
    if len(lines) != len(shas) or not all(line.isdigit() for line in lines):
        raise GitError(f'cannot read the sizes of the objects of a commit in {root}: {lines[:3]}')
    return [int(line) for line in lines]


def apply_commit_changes(worktree: Path, a: str, b: str) -> None:
    """Write the changes from commit `a` to commit `b` into a codex-orch worktree's files (not the index).

    Refuses (GitError, nothing written: `git apply` is atomic) when they conflict with the worktree."""
    own_worktree(worktree, 'apply changes in')
    patch = run(worktree, 'diff', '--binary', '--full-index', '--no-renames', '--no-ext-diff', '--no-textconv',
                check_name(a, 'commit'), check_name(b, 'commit'), '--').out
    if not patch:
        return
    with tempfile.TemporaryFile() as f:
        f.write(patch + b'\n')   # run() strips the output's last line break; a patch needs it
        f.seek(0)
        run(worktree, 'apply', '--binary', '--whitespace=nowarn', '-', stdin=f,
            hint='The change does not apply to the files of the run\'s branch (another task changed them).')


def restore_paths(worktree: Path, paths: list[str]) -> None:
    """Put `paths` back as HEAD has them (deleting those HEAD lacks): undoes a half-applied change."""
    own_worktree(worktree, 'restore files in')
    for path in paths:
        tracked = run(worktree, '--literal-pathspecs', 'ls-tree', '--name-only', 'HEAD', '--', path).text
        if tracked:
            run(worktree, '--literal-pathspecs', 'checkout', 'HEAD', '--', path)
        else:
            full = Path(worktree) / path
            if full.is_symlink() or full.is_file():
                full.unlink()


def scratch_commit(worktree: Path, message: str) -> str | None:
    """Commit everything in a worker's scratch worktree (a remote unit); None when nothing changed."""
    run(worktree, 'add', '--all')
    if run(worktree, 'diff', '--cached', '--quiet', '--no-ext-diff', '--no-textconv', ok=(0, 1)).status == 0:
        return None
    with tempfile.TemporaryFile() as msg:
        msg.write(message.encode('utf-8'))
        msg.seek(0)
        run(worktree, 'commit', '--quiet', '--no-verify', '--file=-', env=_SNAPSHOT_IDENTITY, stdin=msg)
    return rev_parse(worktree, 'HEAD')


def delete_ref(root: Path, ref: str) -> None:
    run(root, 'update-ref', '-d', check_name(ref, 'ref'))
