"""orch.runstate.atomic: files it writes follow the umask, a killed write leaves only a temp file that
sweep_temp recognises, and a rename is made durable by syncing its directory."""
from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orch.runstate import atomic
from tests.support.orchtest import REPO_ROOT


@pytest.fixture
def umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _python(code: str, *, env: dict[str, str] | None = None,
            prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*prefix, sys.executable, '-c', code], cwd=REPO_ROOT, capture_output=True, text=True,
                          env={**os.environ, 'PYTHONPATH': str(REPO_ROOT), **(env or {})}, timeout=60)


@pytest.mark.parametrize('mask', [0o022, 0o077, 0o002, 0o027], ids=lambda m: f'umask-{m:03o}')
def test_written_files_follow_the_umask(tmp_path: Path, umask: None, mask: int) -> None:
    os.umask(mask)
    new = tmp_path / 'sub' / 'new.txt'
    atomic.write_text(new, 'one\n')
    assert mode(new) == 0o666 & ~mask
    atomic.write_json(new, {'two': 2})           # a replaced file gets the same mode as a new one
    assert mode(new) == 0o666 & ~mask and '"two": 2' in new.read_text()
    assert os.listdir(new.parent) == ['new.txt']   # no temp file left


def test_the_umask_of_each_write_applies(tmp_path: Path, umask: None) -> None:
    """Nothing is cached: a process that changes its umask gets the new one on the next write."""
    os.umask(0o022)
    atomic.write_text(tmp_path / 'a', 'a')
    os.umask(0o077)
    atomic.write_text(tmp_path / 'b', 'b')
    assert (mode(tmp_path / 'a'), mode(tmp_path / 'b')) == (0o644, 0o600)


def test_a_write_killed_before_its_rename_leaves_a_temp_file_that_sweep_temp_removes(tmp_path: Path) -> None:
    root = tmp_path / 'run'
    root.mkdir()
    target = root / 'state.json'
    target.write_text('old\n')
    res = _python(f'import os; os.umask(0o022)\nfrom orch.runstate import atomic\n'
                  f'atomic.write_text(__import__("pathlib").Path({str(target)!r}), "new\\n")',
                  env={'ORCH_TEST_CRASH_AT': 'write:state.json'})
    assert res.returncode == -9, res.stderr
    assert target.read_text() == 'old\n'   # the reader still sees the old content whole
    left = [p for p in root.iterdir() if p != target]
    assert len(left) == 1 and re.fullmatch(r'\.state\.json\.[a-z0-9_]{8}\.tmp', left[0].name), left
    assert left[0].read_text() == 'new\n' and mode(left[0]) == 0o644
    assert atomic.sweep_temp(root) == 1
    assert [p.name for p in root.iterdir()] == ['state.json']


@pytest.mark.skipif(shutil.which('strace') is None, reason='needs strace to watch the system calls')
def test_the_directory_is_synced_after_the_rename(tmp_path: Path) -> None:
    """Without an fsync of the directory, a power cut after os.replace may lose the new name."""
    target = tmp_path / 'run.json'
    trace = tmp_path.parent / f'{tmp_path.name}.strace'
    res = _python(f'from pathlib import Path\nfrom orch.runstate import atomic\n'
                  f'atomic.write_text(Path({str(target)!r}), "x")',
                  prefix=('strace', '-f', '-qq', '-o', str(trace),
                          '-e', 'trace=openat,open,fsync,fdatasync,rename,renameat,renameat2'))
    if res.returncode != 0 and 'ptrace' in res.stderr:
        pytest.skip(f'strace cannot trace here: {res.stderr.strip()}')
    assert res.returncode == 0, res.stderr
    lines = trace.read_text().splitlines()
    renamed = [i for i, line in enumerate(lines)
               if re.search(r'rename\w*\(.*"' + re.escape(str(target)) + r'"', line) and line.endswith('= 0')]
    assert len(renamed) == 1, lines[-20:]
    after = lines[renamed[0] + 1:]
    opened = [m.group(1) for line in after
              if (m := re.search(r'open\w*\((?:AT_FDCWD, )?"' + re.escape(str(tmp_path)) + r'", [^)]*O_DIRECTORY'
                                 r'[^)]*\)\s+= (\d+)$', line))]
    assert opened, after
    assert any(re.search(rf'\bf(data)?sync\({opened[0]}\)\s+= 0$', line) for line in after), after


@pytest.mark.parametrize('old', [None, 'same text', 'same size', 'same text and more', 'same'])
def test_write_if_changed_writes_exactly_when_the_content_differs(tmp_path: Path, old: str | None) -> None:
    path = tmp_path / 'report.md'
    new = 'same text'
    if old is not None:
        path.write_text(old)
    inode = path.stat().st_ino if old is not None else None
    written = atomic.write_if_changed(path, new)
    assert path.read_text() == new
    assert written == (old != new)
    assert (path.stat().st_ino == inode) == (old == new)   # an equal file is left as it is


def test_write_if_changed_compares_a_big_file_block_by_block(tmp_path: Path) -> None:
    path = tmp_path / 'summary.json'
    text = 'x' * (3 << 20)
    path.write_text(text[:-1] + 'y')   # same size, the last block differs
    assert atomic.write_if_changed(path, text)
    assert not atomic.write_if_changed(path, text)


@pytest.mark.parametrize('old', [None, 'same text', 'same size', 'same text and more', 'same', ''])
@pytest.mark.parametrize('pieces', [['same text'], ['same', ' ', 'text'], ['', 'same tex', 't', '']])
def test_write_chunks_if_changed_writes_exactly_when_the_content_differs(
        tmp_path: Path, old: str | None, pieces: list[str]) -> None:
    """The chunked form (summary.json, never whole in memory): compared chunk by chunk as it is written; an equal
    file is left as it is and no temp file stays behind."""
    path = tmp_path / 'run' / 'summary.json'
    path.parent.mkdir()
    if old is not None:
        path.write_text(old)
    inode = path.stat().st_ino if old is not None else None
    written = atomic.write_chunks_if_changed(path, (p.encode() for p in pieces))
    assert path.read_text() == 'same text'
    assert written == (old != 'same text')
    assert (path.stat().st_ino == inode) == (old == 'same text')
    assert os.listdir(path.parent) == ['summary.json']


def test_a_chunked_write_that_fails_midway_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / 'run' / 'summary.json'
    path.parent.mkdir()
    path.write_text('old content')

    def chunks() -> Iterator[bytes]:
        yield b'new '
        raise RuntimeError('the renderer failed')
    with pytest.raises(RuntimeError):
        atomic.write_chunks_if_changed(path, chunks())
    assert path.read_text() == 'old content' and os.listdir(path.parent) == ['summary.json']


def test_an_unchanged_chunked_file_is_no_write_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unchanged summary.json makes no temp file: on a read-only or full disk a report that says the same is no
    error (the plain write_if_changed never wrote one either)."""
    path = tmp_path / 'summary.json'
    path.write_text('same text')

    def no_room(*_args: object) -> None:
        raise OSError(30, 'Read-only file system')
    monkeypatch.setattr(atomic, '_create_temp', no_room)
    assert atomic.write_chunks_if_changed(path, [b'same ', b'text']) is False
    with pytest.raises(OSError):
        atomic.write_chunks_if_changed(path, [b'same ', b'test'])
    assert path.read_text() == 'same text'


def test_a_chunked_file_that_differs_late_keeps_its_equal_part(tmp_path: Path) -> None:
    """The part compared equal is copied from the file itself (not kept in memory): the result is the new content,
    whatever the block the difference falls in."""
    path = tmp_path / 'summary.json'
    old = b''.join(b'%07d\n' % i for i in range(300_000))   # 2.4 MB: three copy blocks
    path.write_bytes(old)
    new = old[:-9] + b'changed!\n'
    chunks = [new[at:at + 4096] for at in range(0, len(new), 4096)]
    assert atomic.write_chunks_if_changed(path, iter(chunks)) is True
    assert path.read_bytes() == new
    assert atomic.write_chunks_if_changed(path, [new, b'and more']) is True
    assert path.read_bytes() == new + b'and more'
    assert atomic.write_chunks_if_changed(path, [new[:10]]) is True   # shorter
    assert path.read_bytes() == new[:10]


@pytest.mark.parametrize('kind', ['fifo', 'directory'])
def test_a_report_path_that_is_no_regular_file_never_blocks(tmp_path: Path, kind: str) -> None:
    """A FIFO put where a report goes would block a plain open for reading: it is taken as no file and replaced; a
    directory there fails the write as before. Both forms of the write, in a subprocess so that a hang fails."""
    path = tmp_path / 'summary.json'
    os.mkfifo(path) if kind == 'fifo' else path.mkdir()
    code = '\n'.join([
        'import sys; from pathlib import Path; from orch.runstate import atomic',
        'p = Path(sys.argv[1])',
        'for write in (lambda: atomic.write_chunks_if_changed(p, [b"new"]),',
        '              lambda: atomic.write_if_changed(p, "new")):',
        '    try:',
        '        print(write())',
        '    except IsADirectoryError:',
        '        print("directory")'])
    done = subprocess.run([sys.executable, '-c', code, str(path)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, 'PYTHONPATH': str(REPO_ROOT)})
    assert done.returncode == 0, done.stderr
    if kind == 'fifo':
        assert done.stdout.split() == ['True', 'False'] and path.read_text() == 'new'
    else:
        assert done.stdout.split() == ['directory', 'directory'] and path.is_dir()


def test_a_file_changed_in_place_while_it_is_compared_is_never_copied(tmp_path: Path) -> None:
    """The equal part is copied from the file itself: if the file was written in place since it was opened (an outside
    writer, the run's lock notwithstanding), the write fails rather than put a mix of both in place."""
    path = tmp_path / 'summary.json'
    path.write_bytes(b'A' * 100 + b'B')

    def chunks() -> Iterator[bytes]:
        yield b'A' * 50
        with open(path, 'r+b') as f:   # in place: the same inode, new times
            f.write(b'QQQQQ')
        os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
        yield b'A' * 50
        yield b'C'
    with pytest.raises(OSError, match='changed while'):
        atomic.write_chunks_if_changed(path, chunks())
    assert path.read_bytes() == b'QQQQQ' + b'A' * 95 + b'B'   # as the outside writer left it
    assert not [name for name in os.listdir(tmp_path) if name.endswith('.tmp')]
