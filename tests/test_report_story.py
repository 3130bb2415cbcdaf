"""Issue 21: the report tells each task's story (its rounds with their evidence, the fix commit, the gate runs of
a fix round, the commit it ended with), draws the run as a timeline, and records clean text (no ANSI colours)."""
from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from orch.core import story
from orch.core.report import build_summary, render_json, render_junit, render_markdown
from orch.core.text import plain_json
from tests.support.gitrepo import commit_all, git
from tests.support.orchtest import make_host

# Coloured output, as pytest prints it under --color=yes; fails until src/x.py says "fixed".
CHECK = "printf '\\033[31mFAILED x\\033[0m\\n'; grep -q fixed src/x.py"
GATE = """name: tests_gate
scope: task
roles: [implementer]
output: "{task_dir}/tests_gate.json"
action:
  shell: "grep -q fixed src/x.py"
"""
# A gantt line: `section words`, or `words :tags, start, end` (epoch ms), none of : # ; in the words.
GANTT_LINE = re.compile(r'    (section [^:#;\n]+|[^:#;\n]+ :(?:(?:done|active|crit), )?\d+, \d+)')


def review(verdict: str, *findings: str) -> dict[str, Any]:
    return {'answer': {'status': 'done', 'summary': f'review: {verdict}', 'verdict': verdict,
                       'findings': [{'severity': 'major', 'file': 'src/x.py', 'line': 1, 'message': m}
                                    for m in findings],
                       'files_changed': [], 'decisions': [], 'follow_ups': []}}


def gantt_of(report: str) -> list[str]:
    start = report.index('```mermaid\ngantt\n') + len('```mermaid\n')
    return report[start:report.index('\n```', start)].splitlines()


def test_repair_and_review_rounds_are_told_with_their_evidence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: Any) -> None:
    host = make_host(tmp_path, monkeypatch, capsys, {'tasks': {
        'T1': [{'edits': {'src/x.py': 'broken\n'}}, {'edits': {'src/x.py': 'fixed\n'}},
               {'edits': {'src/x.py': 'fixed, empty input too\n'}}],
        'T3': [review('request_changes', 'x must handle empty input'), review('approve')]}})
    host.write_plan({'version': 1, 'title': 'Story', 'tasks': [
        {'id': 'T1', 'role': 'implementer', 'title': 'Write x: the #1 part; quickly', 'description': 'Write it.',
         'paths': ['src/*'], 'checks': [CHECK]},
        {'id': 'T3', 'role': 'reviewer', 'title': 'Review x', 'description': 'Review it.', 'depends_on': ['T1']}]})
    (host.repo / '.orchestrator' / 'rules').mkdir()
    (host.repo / '.orchestrator' / 'rules' / 'gate.yaml').write_text(GATE)
    commit_all(host.repo, 'plan')
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 0, out + err
    run_dir = host.run_dir()
    fix = git(host.repo, 'log', '--format=%H', '-1', '--grep=review round 1', host.shared_branch())
    summary = json.loads((run_dir / 'summary.json').read_text())
    rows = {t['id']: t for t in summary['tasks']}
    # summary.json: the rounds of each task, in order, with their evidence
    (repair,) = rows['T1']['rounds']
    assert repair['kind'] == 'repair' and repair['round'] == 1
    assert repair['failed_check']['exit_code'] == 1 and repair['failed_check']['tail'] == 'FAILED x'
    (round1,) = rows['T3']['rounds']
    assert round1['kind'] == 'review' and round1['target'] == 'T1' and round1['passed'] is True
    assert round1['findings'] == ['[major] src/x.py:1: x must handle empty input']   # kept after the approval
    assert rows['T3']['findings'] is None
    assert round1['fix']['commit'] == fix   # the commit as it landed on the run's branch
    assert [(r['kind'], r['name'], r['passed']) for r in round1['runs']] == [
        ('check', 'check-1', True), ('gate', 'tests_gate', True)]
    assert rows['T1']['commit'] == fix and rows['T1']['fixed_by'] == [{'task': 'T3', 'round': 1, 'commit': fix}]
    assert rows['T1']['attempt_kinds'] == {'initial': 1, 'resume': 1}   # the fix turn is counted by its reviewer
    # report.md: the same story
    report = (run_dir / 'report.md').read_text()
    t1 = report[report.index('### T1 (done)'):report.index('### T3')]
    assert f'check `{CHECK}` failed (exit 1)' in t1 and '  FAILED x' in t1
    assert f'fixed in review round 1 of T3: commit `{fix[:10]}`' in t1 and f'ended with commit `{fix[:10]}`' in t1
    assert 'attempts: 2 worker launches (1 execution start, 1 round turn)' in t1
    t3 = report[report.index('### T3 (done)'):]
    assert 'review round 1: T3 asked for changes' in t3 and '[major] src/x.py:1: x must handle empty input' in t3
    assert f'fix by T1: commit `{fix[:10]}` (src/x.py)' in t3
    assert 'gate `tests_gate` in this round: passed' in t3 and 'then T3 answered: passes' in t3
    # the timeline: a gantt next to the graph, each line of its grammar's shape, the title's : # ; gone
    assert report.index('## Graph') < report.index('## Timeline')
    gantt = gantt_of(report)
    assert gantt[:3] == ['gantt', '    dateFormat x', '    axisFormat %H:%M:%S']
    assert all(GANTT_LINE.fullmatch(line) for line in gantt[3:]), gantt
    assert '    section T1 Write x the 1 part quickly' in gantt
    assert any(line.startswith('    repair round 1 :active, ') for line in gantt)
    assert any(line.startswith('    review round 1 :active, ') for line in gantt)
    assert any(line.startswith('    gate tests_gate :') for line in gantt)
    # JUnit: each round that began with a failure has its evidence
    cases = {c.get('name'): c for c in ET.parse(run_dir / 'junit.xml').getroot().iter('testcase')}
    flaky = cases['T1'].find('flakyFailure')
    assert flaky is not None and flaky.findtext('stackTrace', '').endswith('FAILED x')
    flaky = cases['T3'].find('flakyFailure')
    assert flaky is not None and 'x must handle empty input' in flaky.findtext('stackTrace', '')
    # clean text everywhere it is recorded; the raw log keeps the bytes
    for name in ('report.md', 'junit.xml', 'summary.json'):
        data = (run_dir / name).read_bytes()
        assert b'\x1b' not in data and '\ufffd'.encode() not in data, name
    assert b'\x1b[31mFAILED x\x1b[0m' in (run_dir / 'tasks/T1/checks/round-0/check-1.log').read_bytes()
    rc, out, err = host.cli('status', '--json')
    assert rc == 0 and '\\u001b' not in out and '\x1b' not in out


def row(task_id: str, **more: Any) -> dict[str, Any]:
    return {'id': task_id, 'role': 'implementer', 'title': f'Task {task_id}', 'status': 'done', 'attempts': 1,
            'depends_on': [], 'usage': None, 'duration': 1.0, **more}


def summary_of(tasks: list[dict[str, Any]]) -> dict[str, Any]:
    run = {'run_id': 'r1', 'base_branch': 'main', 'base_commit': 'a' * 40, 'plan_file': 'plan.json'}
    return build_summary(run, tasks)


def test_a_lone_or_cut_off_escape_never_becomes_a_replacement_character() -> None:
    tail = 'x\x1b[1;31mE\x1b[0m\x1b]8;;http://h\x07link\x1b]8;;\x07 and a lone \x1b'
    failed = {'command': 'c', 'exit_code': 1, 'passed': False, 'tail': tail}
    tasks = [row('T1', status='failed', reason=f'checks failed: {tail}', attempts=2, checks=[failed],
                 rounds=[{'kind': 'repair', 'round': 1, 'failed_check': failed}])]
    summary = plain_json(summary_of(tasks))
    for text in (render_markdown(summary), render_junit(summary), render_json(summary)):
        assert '\x1b' not in text and '\\u001b' not in text and '\ufffd' not in text
        assert 'xE' in text
    # rendering alone cleans what an older record kept raw
    raw = summary_of(tasks)
    assert '\ufffd' not in render_junit(raw) and '\x1b' not in render_junit(raw)


def test_the_timeline_has_the_graph_s_limit_and_fallback() -> None:
    tasks = [row(f'T{i}', started_at=1000.0 + i, ended_at=1001.5 + i) for i in range(3)]
    text = story.render_gantt(tasks)
    assert text is not None and '    done :done, 1000000, 1001500' in text
    big = [row(f'T{i}', started_at=1000.0, ended_at=1001.0) for i in range(3000)]
    assert story.gantt_for_github(big) is None
    report = render_markdown(summary_of(big))
    assert '## Timeline' in report and '3000 tasks: more than GitHub draws' in report and 'gantt' not in report
    assert '## Timeline' not in render_markdown(summary_of([row('T1')]))   # nothing ran: no timeline
    hostile = row('T1', title='a: b # c ; d\n```\ntitle x', started_at=1.0, ended_at=2.0)
    assert all(GANTT_LINE.fullmatch(line) for line in (story.render_gantt([hostile]) or '').splitlines()[3:])


def test_reasons_speak_of_the_plan_never_of_run_directory_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: Any) -> None:
    import os
    import subprocess
    import sys

    from tests.support.orchtest import host_after_a_run
    host = host_after_a_run(tmp_path, monkeypatch, capsys)
    tasks = host.repo / '.orchestrator' / 'runs' / 'r1' / 'tasks'
    # T1 ran again with another answer, and T2's prompt was rendered from it, but T2 has not run yet
    result = json.loads((tasks / 'T1' / 'result.json').read_text())
    result['answer']['summary'] = 'another answer'
    (tasks / 'T1' / 'result.json').write_text(json.dumps(result))
    (tasks / 'T2' / 'prompt.md').write_text((tasks / 'T2' / 'prompt.md').read_text() + '\nanother answer\n')
    rows = {t['id']: t for t in host.status()['tasks']}
    assert rows['T2']['reason'] == "prompt of T2 changed because upstream T1's answer changed"
    assert '.orchestrator' not in json.dumps([r['reasons'] for r in rows.values()])
    env = {**os.environ, 'PYTHONPATH': str(Path(__file__).resolve().parents[1])}
    subprocess.run([sys.executable, '-m', 'doit', 'forget', 'work:T3'], cwd=host.repo, env=env,
                   capture_output=True, check=True)
    rows = {t['id']: t for t in host.status()['tasks']}
    assert rows['T3']['reasons'][:1] == [{'code': 'forgotten', 'detail': 'forgotten (doit forget)'}]


def test_summary_json_in_pieces_is_the_text_whole() -> None:
    """summary.json is written in pieces (orch.engine.reports): the pieces joined are render_json's text, valid JSON
    that reads back as the summary, a line per task."""
    from orch.core.report import render_json_chunks
    tasks = [{'id': f'T{i}', 'role': 'implementer', 'status': 'done', 'attempts': 1, 'summary': 'a "quoted"\nline',
              'decisions': [{'decision': 'd', 'rationale': 'r'}] if i % 2 else []} for i in range(3)]
    summary = build_summary({'run_id': 'r1', 'base_commit': 'abc', 'plan_file': 'plan.json'}, tasks)
    pieces = list(render_json_chunks(summary))
    text = ''.join(pieces)
    assert text == render_json(summary) and len(pieces) > len(tasks)
    assert json.loads(text) == json.loads(json.dumps(summary))
    lines = text.splitlines()
    assert sum(line.startswith('    {"attempts"') for line in lines) == 3   # each task one line
    assert build_summary({'run_id': 'r1', 'base_commit': 'abc', 'plan_file': 'plan.json'}, [])['tasks'] == []
    assert json.loads(render_json(build_summary({'run_id': 'r1', 'base_commit': 'a', 'plan_file': 'p'}, [])))
