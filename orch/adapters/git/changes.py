"""Changes in a worktree: what git status reports, nested repositories, filled submodules, discarding."""
from __future__ import annotations

import os
import shutil
from pathlib import Path, PurePosixPath

from orch.adapters.git.run import GITLINK, locate, own_worktree, ref_sha, repo_lock, run


def status_entries(worktree: Path, pathspecs: list[str] | None = None, *,
                   submodules: bool = False) -> list[tuple[str, str]]:
    """(path, XY) pairs from `git status`; renames are reported as a deletion plus an addition.

    Submodules are left out unless `submodules` (only for the user's own checkout): in a worktree
    their directories are the worker's, and git would run `git status` inside them, with whatever
    config and attributes a worker put there. `filled_submodules` reports them instead.
    """
    # --no-optional-locks: a read must not take index.lock while another task commits.
    res = run(worktree, '--no-optional-locks', 'status', '--porcelain=v1', '-z', '--untracked-files=all',
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
    paths = {path for path, _ in status_entries(worktree)}
    paths.update(f'{name}/' for name in filled_submodules(worktree))
    return sorted(paths)


def ignored_paths(worktree: Path, pathspecs: list[str]) -> list[str]:
    """Untracked files (or whole directories, ending in '/') that git ignores and that match `pathspecs`,
    sorted: what `changed_paths` leaves out, though a tool run in the worktree still reads it."""
    if not pathspecs:
        return []
    res = run(worktree, '--no-optional-locks', 'status', '--porcelain=v1', '-z', '--ignored=matching',
              '--untracked-files=all', '--ignore-submodules=all', '--', *pathspecs)
    return sorted(os.fsdecode(field[3:]) for field in res.out.split(b'\0') if field.startswith(b'!! '))


def is_dirty(worktree: Path) -> bool:
    res = run(worktree, '--no-optional-locks', 'status', '--porcelain=v1', '-z', '--untracked-files=normal',
              '--ignore-submodules=all')
    return bool(res.out.strip(b'\0'))


def nested_repositories(worktree: Path, paths: list[str] | None = None) -> list[str]:
    """Git repositories inside the worktree that are not part of it, sorted, without a trailing '/'.

    Untracked directories with their own `.git` (`git init`, `git clone`, a `.git` file pointing
    anywhere): git would commit each as a gitlink, a pointer to a commit that exists nowhere else.
    With `paths` (worktree-relative), only those at, inside or containing one of them.
    """
    found = sorted(path.rstrip('/') for path, xy in status_entries(Path(worktree))
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
    head = ref_sha(worktree, 'HEAD')
    if head is None:
        return ()
    key = (str(locate(worktree).common_dir), head)
    if key not in _GITLINKS:
        res = run(worktree, 'ls-tree', '-r', '-z', '--full-tree', head)
        _GITLINKS[key] = tuple(os.fsdecode(entry.partition(b'\t')[2]) for entry in res.out.split(b'\0')
                               if entry.startswith(GITLINK.encode() + b' '))
    return _GITLINKS[key]


def same_gitlinks(worktree: Path, parent: str, child: str) -> None:
    """`child`, a commit on `parent` that added, moved or removed no gitlink, has the same submodules: known without
    reading its tree when the parent's are."""
    common = str(locate(worktree).common_dir)
    if (common, parent) in _GITLINKS:
        _GITLINKS[(common, child)] = _GITLINKS[(common, parent)]


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


def empty_filled_submodules(worktree: Path) -> None:
    """Every submodule directory a worker filled in, emptied again (see `filled_submodules`)."""
    _empty_submodules(Path(worktree), filled_submodules(worktree))


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
    loc = own_worktree(worktree, 'discard changes in')
    if paths is not None and not paths:
        return
    with repo_lock(loc.common_dir):
        if paths is None:
            filled = filled_submodules(worktree)
            if not filled and not is_dirty(worktree):   # the usual case: one cheap status instead of reset + clean
                return
            _empty_submodules(worktree, filled)
            run(worktree, 'reset', '--quiet', '--hard', 'HEAD')
            # -ff: also nested repositories, which a single -f keeps.
            run(worktree, 'clean', '-f', '-f', '-d', '--quiet')
            return
        _empty_submodules(worktree, filled_submodules(worktree, [_literal(p) for p in paths]))
        # Unstage first, so staged additions become untracked and `clean` removes them.
        run(worktree, 'reset', '--quiet', 'HEAD', '--', *paths)
        tracked = [path for path, xy in status_entries(worktree, paths) if xy != '??']
        if tracked:  # checkout errors on pathspecs matching nothing, so give it exact paths
            run(worktree, '--literal-pathspecs', 'checkout', '--quiet', 'HEAD', '--', *tracked)
        run(worktree, 'clean', '-f', '-f', '-d', '--quiet', '--', *paths)


def unmerged_paths(worktree: Path) -> list[str]:
    """The paths a merge, rebase or squash left conflicting in the index, sorted."""
    unmerged = run(worktree, 'ls-files', '--unmerged', '-z').out.split(b'\0')
    return sorted({os.fsdecode(entry.partition(b'\t')[2]) for entry in unmerged if entry})
