"""`--spec-file`: a UTF-8 text file inside the repository."""
from __future__ import annotations

from pathlib import Path

from orch.errors import InputError

MAX_SPEC_BYTES = 5 * 1024 * 1024


def check_spec(path: str | Path, repo: Path) -> str:
    """Validate the spec and return its path relative to the repository root (POSIX)."""
    given = Path(path)
    absolute = given if given.is_absolute() else Path.cwd() / given
    try:
        resolved = absolute.resolve(strict=True)
    except (FileNotFoundError, RuntimeError) as exc:
        raise InputError(f'--spec-file {path}: file not found (check the path; a relative one starts '
                         'at the current directory)') from exc
    if resolved.is_dir():
        raise InputError(f'--spec-file {path}: is a directory; pass a text file (UTF-8)')
    if not resolved.is_file():
        raise InputError(f'--spec-file {path}: not a regular file; pass a text file (UTF-8)')
    try:
        relative = resolved.relative_to(repo.resolve())
    except ValueError as exc:
        raise InputError(f'--spec-file {path}: resolves to {resolved}, outside the repository {repo} '
                         '(copy the spec into the repository; symlinks may not point outside it)') from exc
    if resolved.stat().st_size > MAX_SPEC_BYTES:
        raise InputError(f'--spec-file {path}: larger than {MAX_SPEC_BYTES // 2**20} MB; a spec is a text document')
    try:
        data = resolved.read_bytes()
    except OSError as exc:
        raise InputError(f'--spec-file {path}: cannot read it: {exc.strerror} (check its permissions)') from exc
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
    if not relative:
        return ''
    return (repo / relative).read_text(encoding='utf-8')
