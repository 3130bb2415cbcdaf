"""A worker's answer and file names that no encoder likes, and text meant for the terminal: recorded, shown
escaped, never a crash, never a second model request (fake codex; see orch/core/text.py for the policy)."""
from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from orch import output
from orch.engine.progress import Progress, describe_event
from tests.support.gitrepo import git
from tests.support.orchtest import Host, make_host

# A schema-valid implementer answer whose summary holds a lone surrogate, as JSON text (`\ud800`).
MAKE_FF_FILE = "printf 'bytes\\n' > \"$(printf 'caf\\377.txt')\""
EVIL = '\x1b]0;pwned\x07\x1b[2J\x1b[31mred\x1b[0m\u202e\x07'


def one_task(title: str = 'Do it', paths: list[str] | None = None) -> dict:
    task: dict = {'id': 'T1', 'role': 'implementer', 'title': title, 'description': 'x'}
    if paths is not None:
        task['paths'] = paths
    return {'version': 1, 'tasks': [task]}


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Host:
    return make_host(tmp_path, monkeypatch, capsys, {'default': {'answer': 'auto'}})


def surrogate_answer(host: Host, text: str = 'bad \\ud800 half \\udcff') -> str:
    """The fake's auto answer for the implementer schema, with `text` (JSON escapes) as its summary."""
    from tests.support.fake_codex import auto_document
    schema = json.loads((host.repo / '.orchestrator' / 'schemas' / 'implementer.json').read_text())
    doc = auto_document(schema)
    doc['summary'] = '@@SUMMARY@@'
    return json.dumps(doc).replace('@@SUMMARY@@', text)


def assert_records_are_utf8(host: Host) -> None:
    for path in host.run_dir().rglob('*'):
        if path.is_file() and path.suffix in ('.json', '.md', '.xml'):
            path.read_bytes().decode('utf-8')   # strict: a lone surrogate could not have been written


def test_answer_with_a_lone_surrogate_is_recorded_and_not_paid_twice(host: Host) -> None:
    host.script({'default': {'answer': surrogate_answer(host)}})
    host.write_plan(one_task())
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 0, out + err
    assert host.result('T1')['answer']['summary'] == 'bad \ufffd half \ufffd'
    assert host.statuses() == {'T1': 'done'}
    assert_records_are_utf8(host)
    assert 'bad \ufffd half \ufffd' in (host.run_dir() / 'report.md').read_text()
    host.clear_log()
    for _ in range(2):
        rc, out, err = host.cli('resume')
        assert rc == 0, out + err
    assert host.launches() == []


@pytest.mark.parametrize('paths', [None, ['*.txt']], ids=['unscoped', 'scoped'])
def test_file_named_with_a_non_utf8_byte_is_committed_and_recorded(host: Host, paths: list[str] | None) -> None:
    host.script({'default': {'answer': 'auto', 'commands': [MAKE_FF_FILE]}})
    host.write_plan(one_task(paths=paths))
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 0, out + err
    result = host.result('T1')
    assert 'caf\\xff.txt' in result['files_changed']   # shown with the byte as \xff
    tree = subprocess.run(['git', '-C', str(host.repo), 'ls-tree', '-r', '-z', '--name-only', result['commit']],
                          capture_output=True, check=True).stdout
    assert b'caf\xff.txt' in tree.split(b'\0')   # the very bytes the worker made
    worktree = host.repo / '.orchestrator' / 'worktrees' / host.run_dir().name
    assert git(worktree, 'status', '--porcelain') == ''   # nothing left behind uncommitted
    assert_records_are_utf8(host)
    host.clear_log()
    for _ in range(2):
        rc, out, err = host.cli('resume')
        assert rc == 0, out + err
    assert host.launches() == []
    rc, out, err = host.cli('status')
    assert rc == 0 and 'done' in out


def test_terminal_controls_in_a_worker_error_never_reach_the_terminal(host: Host) -> None:
    host.script({'default': {'fail': f'model says {EVIL} and \\ud800'}})
    host.write_plan(one_task())
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 1
    for text in (out, err):
        assert '\x1b' not in text and '\x07' not in text and '\u202e' not in text
    assert 'red' in out
    rc, out, err = host.cli('status')
    assert '\x1b' not in out + err and '\x07' not in out + err


def test_a_title_with_controls_and_a_surrogate_makes_a_clean_commit_subject(host: Host) -> None:
    host.script({'default': {'answer': 'auto', 'edits': {'out.txt': 'x\n'}}})
    host.write_plan(one_task(title=f'Add\n{EVIL} greet\ud800()'))
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 0, out + err
    subject = git(host.repo, 'log', '-1', '--format=%s', host.result('T1')['commit'])
    assert subject == 'T1: Add red\\u202e\\u0007 greet\ufffd()'


# --- the two printers ---------------------------------------------------------------------------------

def test_output_write_neutralises_controls_and_unencodable_text(capsys: pytest.CaptureFixture[str]) -> None:
    output.write_line(f'title: {EVIL} file caf\udcff.txt \ud800')
    out = capsys.readouterr().out
    assert out == 'title: red\\u202e\\u0007 file caf\\xff.txt \ufffd\n'


def test_emit_falls_back_to_escapes_on_a_narrow_stream() -> None:
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding='ascii', errors='strict')
    output.emit(stream, 'naïve ✓\n')
    assert raw.getvalue() == b'na\\xefve \\u2713\n'


def test_progress_lines_and_block_hold_no_foreign_control() -> None:
    buf = io.StringIO()
    prog = Progress(1, verbosity=2, stream=buf, tty=False, work_steps={'T1': 'work:T1'})
    prog.started('work:T1')
    prog.worker_event('T1', {'type': 'item.started', 'item': {'type': 'command_execution',
                                                              'command': f"echo '{EVIL}'\nrm -rf caf\udcff"}})
    prog.failed_step('work:T1', f'turn-failed: {EVIL}\nsecond line')
    text = buf.getvalue()
    assert '\x1b' not in text and '\x07' not in text and '\u202e' not in text and '\ud800' not in text
    assert 'caf\\xff' in text and 'second line' not in text
    tty = io.StringIO()
    block = Progress(1, verbosity=0, stream=tty, tty=True, work_steps={'T1': 'work:T1'})
    block.started('work:T1')
    block.worker_event('T1', {'type': 'item.completed', 'item': {'type': 'file_change', 'changes': [
        {'path': f'/w/{EVIL}\nx.txt'}]}})
    block.close()
    shown = tty.getvalue().replace('\x1b[F\x1b[2K', '')   # the block's own erase sequence
    assert '\x1b' not in shown and '\x07' not in shown


def test_describe_event_is_one_safe_line() -> None:
    text = describe_event({'type': 'item.started', 'item': {'type': 'command_execution',
                                                            'command': f'a\n{EVIL}\u2028b'}})
    assert text is not None and text.isprintable() and text.startswith('running: a red')


if sys.platform != 'linux':   # file names with arbitrary bytes: Linux file systems
    pytestmark = pytest.mark.skip('needs a file system that accepts any byte in a name')
