"""Issue 21 end to end with the real Codex CLI (pinned) against the local stand-in: a task repaired once and
reviewed with one fix round; report.md and summary.json tell its story — the failing check's tail, the round-1
findings kept after the approval, the fix commit and the gate run of the fix round — in clean text."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from orch.standin.server import Standin
from tests.support.gitrepo import commit_all, git
from tests.support.orchtest import Host, make_host
from tests.support.realcodex import use_real_codex

pytestmark = pytest.mark.e2e

CHECK = "printf '\\033[31mFAILED x\\033[0m\\n'; grep -q fixed src/x.py"
GATE = ('name: tests_gate\nscope: task\nroles: [implementer]\noutput: "{task_dir}/tests_gate.json"\n'
        'action:\n  shell: "grep -q fixed src/x.py"\n')


def write(path: str, content: str, at: int | None = None) -> str:
    directive = f'write-at {at} {path}' if at else f'write {path}'
    return f'[[standin: {directive}]]\n```\n{content}```\n'


def test_a_repaired_and_reviewed_task_s_story(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str], standin: Standin) -> None:
    host: Host = make_host(tmp_path, monkeypatch, capsys)
    use_real_codex(host.repo)
    (host.repo / '.orchestrator' / 'rules').mkdir()
    (host.repo / '.orchestrator' / 'rules' / 'gate.yaml').write_text(GATE)
    host.write_plan({'version': 1, 'title': 'Story', 'tasks': [
        # its first answer fails the check; the repair round (its 2nd prompt) fixes it; the review fix (3rd) too
        {'id': 'T1', 'role': 'implementer', 'title': 'Write x', 'paths': ['src/x.py'], 'checks': [CHECK],
         'description': 'Write x.\n' + write('src/x.py', 'broken\n') + write('src/x.py', 'fixed\n', at=2)
         + write('src/x.py', 'fixed, empty input too\n', at=3)},
        {'id': 'T2', 'role': 'reviewer', 'title': 'Review x', 'depends_on': ['T1'],
         'description': 'Review.\n[[standin: review-once x must handle empty input]]\n'}]})
    commit_all(host.repo, 'plan, gate, real codex')
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 0, out + err
    run_dir = host.run_dir()
    rows = {t['id']: t for t in json.loads((run_dir / 'summary.json').read_text())['tasks']}
    (repair,) = rows['T1']['rounds']
    assert repair['kind'] == 'repair' and repair['failed_check']['tail'] == 'FAILED x'
    (review,) = rows['T2']['rounds']
    assert review['kind'] == 'review' and review['findings'] == ['[major] x must handle empty input']
    fix = git(host.repo, 'log', '--format=%H', '-1', '--grep=review round 1', host.shared_branch())
    assert review['fix']['commit'] == fix and rows['T1']['commit'] == fix
    assert ('gate', 'tests_gate', True) in [(r['kind'], r['name'], r['passed']) for r in review['runs']]
    report = (run_dir / 'report.md').read_text()
    assert 'FAILED x' in report and 'x must handle empty input' in report and fix[:10] in report
    assert 'gate `tests_gate` in this round: passed' in report
    for name in ('report.md', 'junit.xml', 'summary.json'):
        assert b'\x1b' not in (run_dir / name).read_bytes(), name
