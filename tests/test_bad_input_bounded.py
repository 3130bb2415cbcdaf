"""Bad input is exit 2, bounded: every input file is read through one reader (orch/core/files.py).

Directories, devices (`/dev/zero`), FIFOs and sockets are refused before they are opened; a regular
file is read with its size limit enforced while reading; nesting is bounded (no RecursionError);
a runs directory that cannot be written, a run id too long for the file system, a repository with no
commit, an existing demo directory and a run id naming another plan's run are refused. Each case is
exit 2 with one message naming the file, the place and the fix, memory stays bounded, and the
repository (every file, directory, ref and worktree) is exactly as it was before.

Run as root, permissions are ignored: the read-only runs directory case is skipped there (os.access
says so after the chmod), and the case that fails for root too, a FILE where the runs directory should
be, stands for it.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

import pytest

from orch.core import files
from orch.core.files import MAX_DEPTH, json_too_deep_at, load_yaml, read_input
from orch.errors import InputError
from tests.support.gitrepo import git
from tests.support.orchtest import REPO_ROOT, Host, make_host, three_task_plan
from tests.support.usercheckout import user_view

ORCH = '.orchestrator'
CFG = f'{ORCH}/orchestrator.yaml'
PLAN_SCHEMA = f'{ORCH}/schemas/plan.json'
IMPL_SCHEMA = f'{ORCH}/schemas/implementer.json'
IMPL_PROMPT = f'{ORCH}/prompts/implementer.md'
RULE = f'{ORCH}/rules/x.yaml'
RUN = ('run', '--plan-file', 'plan.json')
MEMORY_BOUND_KB = 100 * 1024


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Host:
    h = make_host(tmp_path, monkeypatch, capsys, {'default': {'answer': 'auto'}})
    h.write_plan(three_task_plan())
    return h


@contextlib.contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Fail instead of hanging: a read that blocks (a FIFO without a writer) is interrupted."""
    def expired(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError(f'still blocked after {seconds} s (reading a FIFO?)')
    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def tree(root: Path) -> dict[str, object]:
    """Every entry under root (.git aside) with its kind, mode and content hash; FIFOs, devices and
    sockets are described from lstat, never opened. Plus refs and worktrees."""
    entries: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not (dirpath == str(root) and d == '.git'))
        rel = os.path.relpath(dirpath, root)
        entries[rel + '/'] = ('dir', stat.S_IMODE(os.lstat(dirpath).st_mode))
        for name in sorted(filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]):
            path = Path(dirpath) / name
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                entries[f'{rel}/{name}'] = ('link', os.readlink(path))
            elif stat.S_ISREG(st.st_mode):
                entries[f'{rel}/{name}'] = ('file', st.st_size, hashlib.sha256(path.read_bytes()).hexdigest())
            else:
                entries[f'{rel}/{name}'] = ('special', stat.S_IFMT(st.st_mode))
    out: dict[str, object] = {'entries': entries}
    if (root / '.git').is_dir():
        out['refs'] = git(root, 'for-each-ref', '--format=%(refname) %(objectname)')
        out['worktrees'] = git(root, 'worktree', 'list', '--porcelain')
    return out


# ---- setups: each turns one path of the host repository into a hostile one

Setup = Callable[[Host], None]


def _replace(h: Host, rel: str) -> Path:
    path = h.repo / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir() and not path.is_symlink():
        path.rmdir()
    else:
        path.unlink(missing_ok=True)
    return path


def fifo(rel: str) -> Setup:
    return lambda h: os.mkfifo(_replace(h, rel))


def dev_zero(rel: str) -> Setup:
    return lambda h: _replace(h, rel).symlink_to('/dev/zero')


def directory(rel: str) -> Setup:
    def setup(h: Host) -> None:
        path = _replace(h, rel)
        path.mkdir()
        (path / 'inside.txt').write_text('x\n')
    return setup


def sock(rel: str) -> Setup:
    def setup(h: Host) -> None:
        server = socket.socket(socket.AF_UNIX)
        path = _replace(h, rel)
        cwd = os.getcwd()
        os.chdir(path.parent)   # AF_UNIX paths are limited to ~108 bytes: bind the short name
        try:
            server.bind(path.name)
        finally:
            os.chdir(cwd)
            server.close()   # the socket file stays
    return setup


def text(rel: str, content: str) -> Setup:
    def setup(h: Host) -> None:
        _replace(h, rel).write_text(content)
    return setup


def runs_is_a_file(h: Host) -> None:
    (h.repo / ORCH / 'runs').write_text('not a directory\n')


DEEP_JSON = '[' * 100_000
# Nine levels of aliases, nine each: 9**9 (387 million) strings when expanded, 1 KB as written.


def _alias_level(i: int) -> str:
    name, items = 'abcdefghi'[i], ['"lol"'] * 9 if i == 0 else ['*' + 'abcdefghi'[i - 1]] * 9
    return f'{name}: &{name} [{", ".join(items)}]\n'


ALIAS_BOMB = ''.join(_alias_level(i) for i in range(9))
DEEP_FLOW_YAML = '[' * 100_000
DEEP_BLOCK_YAML = '- ' * 1000 + 'x\n'
DEEP_SCHEMA = '{"a": ' * 150 + '1' + '}' * 150   # parses, but deeper than MAX_DEPTH
# A string full of brackets is no nesting: the place reported is the real one, on line 2.
DEEP_AFTER_STRING = '{"title": "' + '[' * 500 + '",\n "tasks": ' + '[' * 100_000

# id, setup, argv, fragments the one message must hold (the file, the place or kind, the fix)
CASES: list[tuple[str, Setup | None, tuple[str, ...], list[str]]] = [
    # -- the config
    ('config-directory', directory(CFG), RUN,
     ['orchestrator.yaml: is a directory, not a config file', 'remove it to use the defaults']),
    ('config-fifo', fifo(CFG), RUN, ['orchestrator.yaml: is a FIFO (named pipe), not a config file',
                                     'only a regular file is read', 'replace it with the YAML config']),
    ('config-dev-zero', dev_zero(CFG), RUN, ['orchestrator.yaml: is a character device (a symlink to /dev/zero)',
                                             'not a config file', 'remove it to use the defaults']),
    ('config-socket', sock(CFG), RUN, ['orchestrator.yaml: is a socket, not a config file']),
    ('config-deep-flow-yaml', text(CFG, DEEP_FLOW_YAML), RUN,
     ['orchestrator.yaml: line 1 column 101: nested more than 100 levels deep', 'check that this is the right file']),
    ('config-deep-block-yaml', text(CFG, DEEP_BLOCK_YAML), RUN,
     ['orchestrator.yaml: line 1 column 201: nested more than 100 levels deep', 'a config is never that deep']),
    ('config-yaml-date', text(CFG, 'jobs: 2024-01-01\n'), RUN,   # a date is no JSON: quoting it was a TypeError
     ['orchestrator.yaml: 1 problem', 'jobs: Input should be a valid integer (got "2024-01-01")']),
    ('config-alias-bomb', text(CFG, ALIAS_BOMB + 'codex:\n  extra_args: *i\n'), RUN,
     ['orchestrator.yaml', 'codex.extra_args[0]: Input should be a valid string (got [[[[[[[["lol", "lol"',
      'commented defaults']),
    ('config-alias-loop', text(CFG, 'codex:\n  extra_args: &a [*a]\n'), RUN,
     ['orchestrator.yaml', 'codex.extra_args[0]: Input should be a valid string (got [...)']),
    # -- the plan
    ('plan-fifo', fifo('plan.json'), RUN,
     ['plan.json: is a FIFO (named pipe), not a plan file', 'check --plan-file']),
    ('plan-dev-zero-symlink', dev_zero('plan.json'), RUN,   # the plan is recorded resolved: /dev/zero
     ['/dev/zero: is a character device, not a plan file', 'check --plan-file']),
    ('plan-dev-zero', None, ('run', '--plan-file', '/dev/zero'),
     ['/dev/zero: is a character device, not a plan file', 'check --plan-file']),
    ('plan-socket', sock('plan.json'), RUN, ['plan.json: is a socket, not a plan file']),
    ('plan-deep-json', text('plan.json', DEEP_JSON), RUN,
     ['plan.json: line 1 column 101: nested more than 100 levels deep', 'a plan is never that deep']),
    ('plan-deep-after-brackets-in-a-string', text('plan.json', DEEP_AFTER_STRING), RUN,
     ['plan.json: line 2 column 110: nested more than 100 levels deep']),
    # -- the spec
    ('spec-fifo', fifo('spec.fifo'), (*RUN, '--spec-file', 'spec.fifo'),
     ['--spec-file spec.fifo: is a FIFO (named pipe), not a spec file', 'pass a UTF-8 text file']),
    ('spec-dev-zero', dev_zero('zero.md'), (*RUN, '--spec-file', 'zero.md'),
     ['--spec-file zero.md: resolves to /dev/zero, outside the repository', 'copy the spec into the repository']),
    # -- schemas, templates, host rules
    ('plan-schema-fifo', fifo(PLAN_SCHEMA), RUN, ['plan.json: is a FIFO (named pipe), not a schema file',
                                                  'cannot read schema', 'codex-orch init --force']),
    ('role-schema-dev-zero', dev_zero(IMPL_SCHEMA), RUN,
     ['implementer.json: is a character device (a symlink to /dev/zero), not a schema file']),
    ('role-schema-directory', directory(IMPL_SCHEMA), RUN, ['implementer.json: is a directory, not a schema file']),
    ('role-schema-deep', text(IMPL_SCHEMA, DEEP_SCHEMA), RUN,
     ['implementer.json: line 1 column 601: nested more than 100 levels deep']),
    ('role-schema-very-deep', text(IMPL_SCHEMA, DEEP_JSON), RUN,
     ['implementer.json: line 1 column 101: nested more than 100 levels deep']),
    ('template-fifo', fifo(IMPL_PROMPT), RUN,
     ['implementer.md: is a FIFO (named pipe), not a prompt template file', 'codex-orch init --force']),
    ('template-dev-zero', dev_zero(IMPL_PROMPT), RUN,
     ['implementer.md: is a character device (a symlink to /dev/zero), not a prompt template file']),
    ('template-directory', directory(IMPL_PROMPT), RUN, ['implementer.md: is a directory, not a prompt template']),
    ('rule-fifo', fifo(RULE), RUN, ['x.yaml: is a FIFO (named pipe), not a rule file', 'a rule is a YAML file']),
    ('rule-dev-zero', dev_zero(RULE), RUN, ['x.yaml: is a character device (a symlink to /dev/zero)']),
    ('rule-directory', directory(RULE), RUN, ['x.yaml: is a directory, not a rule file',
                                              'move it out of the rules directory']),
    ('rule-alias-bomb', text(RULE, ALIAS_BOMB + 'name: *i\nscope: task\noutput: "{task_dir}/x.json"\n'
                                              'action: {shell: "true"}\n'), RUN, ['x.yaml: rule 0', 'name']),
    ('rule-deep-yaml', text(RULE, DEEP_FLOW_YAML), RUN,
     ['x.yaml: line 1 column 101: nested more than 100 levels deep', 'a rule file is never that deep']),
    # -- where runs are written, and run ids
    ('runs-dir-is-a-file', runs_is_a_file, RUN,
     ['runs: is not a directory', 'keeps each run in', 'move', 'out of the way']),
    ('run-id-too-long', None, (*RUN, '--run-id', 'a' * 300),
     ["--run-id 'aaaa", '300 characters long, at most 100', 'choose a shorter run id']),
    ('run-id-too-long-for-resume', None, ('resume', '--run-id', 'b' * 300), ['300 characters long, at most 100']),
    ('run-id-too-long-for-status', None, ('status', '--run-id', 'c' * 256), ['256 characters long, at most 100']),
]


@pytest.mark.parametrize('setup, argv, fragments', [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_exit_2_bounded_and_writes_nothing(
        host: Host, setup: Setup | None, argv: tuple[str, ...], fragments: list[str]) -> None:
    if setup is not None:
        setup(host)
    before = tree(host.repo)
    # The peak of what Python allocated during the command (ru_maxrss would hide growth under an earlier peak).
    tracemalloc.start()
    try:
        with deadline(60):
            rc, out, err = host.cli(*argv)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_BOUND_KB * 1024, f'the command allocated {peak} bytes at its peak'
    assert rc == 2, out + err
    assert 'Traceback' not in err and 'internal error' not in err, err
    assert err.startswith('codex-orch: ') and err.count('codex-orch:') == 1, err   # one message (lines may follow)
    for fragment in fragments:
        assert fragment in err, f'{fragment!r} not in:\n{err}'
    assert tree(host.repo) == before
    assert host.launches() == []


def test_a_read_only_runs_directory_is_exit_2(host: Host) -> None:
    runs = host.repo / ORCH / 'runs'
    runs.mkdir(exist_ok=True)
    runs.chmod(0o555)
    try:
        if os.access(runs, os.W_OK):
            pytest.skip('permissions are ignored for this user (root); runs-dir-is-a-file covers the case')
        before = tree(host.repo)
        rc, out, err = host.cli(*RUN)
        assert rc == 2, out + err
        assert f'{runs}: cannot create the run' in err and 'Permission denied' in err and 'writable' in err
        assert tree(host.repo) == before
    finally:
        runs.chmod(0o755)


def test_a_runs_directory_the_kernel_refuses_is_exit_2(host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    """The message for EACCES and EROFS (a read-only mount refuses root too), whoever runs the tests: the
    kernel's refusal is simulated at the first write of a run, taking its lock."""
    import orch.runstate.lock
    for code in (errno.EACCES, errno.EROFS):
        def refuse(self: object, code: int = code) -> None:
            raise OSError(code, os.strerror(code), str(host.repo / ORCH / 'runs' / 'r1'))
        monkeypatch.setattr(orch.runstate.lock.RunLock, 'acquire', refuse)
        before = tree(host.repo)
        rc, out, err = host.cli(*RUN, '--run-id', 'r1')
        assert rc == 2, out + err
        assert f'{host.repo / ORCH}: cannot create the run r1 there: {os.strerror(code)}' in err, err
        assert 'make' in err and 'writable' in err
        assert tree(host.repo) == before


def test_dev_zero_is_bounded_in_a_process_with_little_memory(host: Host) -> None:
    """In its own process under `ulimit -v` (1.5 GB of address space): before the reader, a plan or config
    on /dev/zero grew to 4.8 GB and died of MemoryError (exit 3)."""
    dev_zero(CFG)(host)
    env = {**os.environ, 'PYTHONPATH': str(REPO_ROOT)}
    for config_on_zero in (True, False):
        if not config_on_zero:
            (host.repo / CFG).unlink()
        res = subprocess.run(['bash', '-c', 'ulimit -v 1500000 && exec "$@"', 'bash', sys.executable, '-m', 'orch',
                              'run', '--plan-file', '/dev/zero' if not config_on_zero else 'plan.json'],
                             cwd=host.repo, env=env, capture_output=True, text=True, timeout=120)
        assert res.returncode == 2, res.stderr
        assert 'character device' in res.stderr and '/dev/zero' in res.stderr, res.stderr


# ---- the reader itself

def test_the_size_bound_holds_while_reading_a_file_that_reports_no_size(tmp_path: Path) -> None:
    """/proc files are regular files of st_size 0: only the bound on the read itself stops them."""
    proc = Path('/proc/self/smaps')
    if not proc.is_file() or proc.stat().st_size != 0:
        pytest.skip('needs /proc')
    with pytest.raises(InputError, match=r'smaps: plan is larger than 0 MB$'):
        read_input(proc, limit=100, what='plan', fix='check --plan-file')
    assert len(read_input(proc, limit=10 * files.MB, what='plan', fix='x')) > 100
    exact = tmp_path / 'exact'
    exact.write_bytes(b'x' * 1000)
    assert read_input(exact, limit=1000, what='plan', fix='x') == b'x' * 1000
    exact.write_bytes(b'x' * 1001)
    with pytest.raises(InputError, match='larger than'):
        read_input(exact, limit=1000, what='plan', fix='x')


def test_a_fifo_with_a_writer_is_refused_too(tmp_path: Path) -> None:
    path = tmp_path / 'fifo'
    os.mkfifo(path)
    writer = subprocess.Popen(['sh', '-c', f'exec 3>"{path}"; sleep 30'])   # holds the FIFO open for writing
    try:
        with deadline(20), pytest.raises(InputError, match=r'is a FIFO \(named pipe\), not a config file'):
            read_input(path, limit=100, what='config', fix='x')
    finally:
        writer.kill()
        writer.wait()


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r'nope: spec file not found \(restore it\)$'):
        read_input(tmp_path / 'nope', limit=10, what='spec', fix='x', missing='restore it')
    (tmp_path / 'f').write_text('x')
    with pytest.raises(InputError, match=r'f/g: spec file not found'):   # a file where a directory should be
        read_input(tmp_path / 'f' / 'g', limit=10, what='spec', fix='x')
    if os.geteuid() != 0:
        (tmp_path / 'f').chmod(0)
        with pytest.raises(InputError, match=r'cannot read the spec file: Permission denied \(check its permissions'):
            read_input(tmp_path / 'f', limit=10, what='spec', fix='x')


def test_nesting_is_bounded_and_located() -> None:
    assert json_too_deep_at('[' * MAX_DEPTH + ']' * MAX_DEPTH) == ''
    assert json_too_deep_at('{"a": "[[[[[[", "b": ' + '[' * 200) == 'line 1 column 121: '
    assert load_yaml('a: ' + '[' * (MAX_DEPTH - 1) + ']' * (MAX_DEPTH - 1)) is not None
    with pytest.raises(files.NestingError) as exc:
        load_yaml('a:\n  ' + '[' * MAX_DEPTH)
    mark = exc.value.problem_mark
    assert mark is not None and (mark.line, mark.column) == (1, MAX_DEPTH + 1)


# ---- first use, a repository without commits, the demo, run ids

def test_a_repository_without_a_commit_gets_nothing_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    host = make_host(tmp_path, monkeypatch, capsys)
    repo = tmp_path / 'empty'
    repo.mkdir()
    git(repo, 'init', '--quiet', '--initial-branch=main')
    (repo / 'plan.json').write_text(json.dumps(three_task_plan()))
    (repo / 'spec.md').write_text('# Spec\n')
    empty = Host(repo=repo, bin=host.bin, capsys=capsys)
    before = tree(repo)
    for argv in (RUN, ('task', '--role', 'implementer', 'Fix it'), ('plan', '--spec-file', 'spec.md')):
        rc, out, err = empty.cli(*argv)
        assert rc == 2, out + err
        assert 'the repository has no commit yet; commit something first' in err, err
        assert 'created .orchestrator' not in err
        assert tree(repo) == before, argv   # no .orchestrator/, no dodo.py
    assert host.launches() == []


def test_a_refused_first_run_takes_its_defaults_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The first `run` in a repository writes .orchestrator/ and dodo.py; refused, it leaves neither."""
    host = make_host(tmp_path, monkeypatch, capsys)
    fresh = tmp_path / 'fresh'
    fresh.mkdir()
    git(fresh, 'init', '--quiet', '--initial-branch=main')
    (fresh / 'README.md').write_text('hi\n')
    git(fresh, 'add', '-A')
    git(fresh, 'commit', '--quiet', '-m', 'initial')
    (fresh / 'plan.json').write_text('{"tasks": [')
    user = Host(repo=fresh, bin=host.bin, capsys=capsys)
    before, checkout = tree(fresh), user_view(fresh)
    rc, out, err = user.cli(*RUN)
    assert rc == 2 and 'not valid JSON' in err, out + err
    assert 'created .orchestrator' not in err
    assert tree(fresh) == before and user_view(fresh) == checkout
    (fresh / 'plan.json').write_text(json.dumps(three_task_plan()))
    rc, out, err = user.cli(*RUN)   # the same command with a good plan: first use happens, and the run
    assert rc == 0, out + err
    assert 'created .orchestrator/' in err and (fresh / ORCH / 'orchestrator.yaml').is_file()


def test_demo_into_an_existing_demo_is_exit_2_and_changes_nothing(
        tmp_path: Path, host: Host) -> None:
    old = tmp_path / 'demo' / 'greeting'
    old.mkdir(parents=True)
    (old / 'README.md').write_text('my earlier demo\n')
    before = tree(tmp_path / 'demo')
    rc, out, err = host.cli('demo', '--dir', str(tmp_path / 'demo'))
    assert rc == 2, out + err
    assert f'{old} already exists' in err and 'choose another --dir, or remove' in err, err
    assert tree(tmp_path / 'demo') == before
    a_file = tmp_path / 'a-file'
    a_file.write_text('x\n')
    rc, out, err = host.cli('demo', '--dir', str(a_file))
    assert rc == 2 and 'is a file, not a directory; choose another --dir' in err, err
    assert a_file.read_text() == 'x\n'


def test_a_run_id_of_another_plan_is_refused_and_the_same_plan_edited_continues(host: Host) -> None:
    rc, out, err = host.cli(*RUN, '--run-id', 'r1')
    assert rc == 0, out + err
    other = {'version': 1, 'tasks': [{'id': 'X1', 'role': 'implementer', 'title': 'Other', 'description': 'd',
                                      'paths': ['other.txt']}]}
    host.write_plan(other, 'other.json')
    host.clear_log()
    before = tree(host.repo)
    rc, out, err = host.cli('run', '--plan-file', 'other.json', '--run-id', 'r1')
    assert rc == 2, out + err
    assert ('--run-id r1: that run executes the plan plan.json, not other.json' in err
            and 'choose a new run id' in err and '`codex-orch resume --run-id r1`' in err), err
    assert tree(host.repo) == before and host.launches() == []
    # The same plan file, edited: that is how a run is continued.
    plan = three_task_plan()
    plan['tasks'].append({'id': 'T4', 'role': 'implementer', 'title': 'More', 'description': 'd',
                          'depends_on': ['T1'], 'paths': ['more.txt']})
    host.write_plan(plan)
    rc, out, err = host.cli(*RUN, '--run-id', 'r1')
    assert rc == 0, out + err
    assert host.launched_tasks() == ['T4']
    # A run id of the longest allowed length works.
    rc, out, err = host.cli(*RUN, '--run-id', 'r' * 100)
    assert rc == 0, out + err
