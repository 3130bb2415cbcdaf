"""`--spec-file`: a UTF-8 text file inside the repository."""
from __future__ import annotations

from pathlib import Path

from orch.core.files import read_input, universal_newlines
from orch.errors import InputError

MAX_SPEC_BYTES = 5 * 1024 * 1024
_FIX = 'pass a UTF-8 text file'


def check_spec(path: str | Path, repo: Path) -> str:
    """Validate the spec and return its path relative to the repository root (POSIX)."""
    given = Path(path)
    absolute = given if given.is_absolute() else Path.cwd() / given
    try:
        resolved = absolute.resolve(strict=True)
    except (FileNotFoundError, NotADirectoryError, RuntimeError) as exc:
        raise InputError(f'--spec-file {path}: file not found (check the path; a relative one starts '
                         'at the current directory)') from exc
    except OSError as exc:
        raise InputError(f'--spec-file {path}: cannot open it: {exc.strerror} (check the path)') from exc
    if resolved.is_dir():
        raise InputError(f'--spec-file {path}: is a directory; pass a text file (UTF-8)')
    try:
        relative = resolved.relative_to(repo.resolve())
    except ValueError as exc:
        raise InputError(f'--spec-file {path}: resolves to {resolved}, outside the repository {repo} '
                         '(copy the spec into the repository; symlinks may not point outside it)') from exc
    data = read_input(resolved, limit=MAX_SPEC_BYTES, what='spec', fix=_FIX, shown=f'--spec-file {path}')
    nul = data.find(b'\0')
    if nul >= 0:
        raise InputError(f'--spec-file {path}: binary file: byte {nul} is NUL '
                         '(a spec must be UTF-8 text)')
    try:
        data.decode('utf-8')
    except UnicodeDecodeError as exc:
        raise InputError(f'--spec-file {path}: not UTF-8 text (byte {exc.start} is invalid; '
                         're-save the file as UTF-8)') from exc
    return relative.as_posix()


def read_spec(repo: Path, relative: str | None) -> str:
    """The spec's text for a prompt, read with the same bounds as check_spec."""
    if not relative:
        return ''
    data = read_input(repo / relative, limit=MAX_SPEC_BYTES, what='spec', fix=_FIX,
                      missing="restore it, or resume with another --spec-file")
    nul = data.find(b'\0')
    if nul >= 0:   # as check_spec refuses it before a run
        raise InputError(f'{relative}: the spec is now a binary file: byte {nul} is NUL (a spec must be UTF-8 '
                         'text; restore it, or resume with another --spec-file)')
    try:
        return universal_newlines(data.decode('utf-8'))
    except UnicodeDecodeError as exc:
        raise InputError(f'{relative}: the spec is no longer UTF-8 text (byte {exc.start} is invalid; '
                         're-save the file as UTF-8)') from exc
