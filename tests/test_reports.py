"""Reports of a run: report.md, junit.xml and summary.json agree with `status --json`; CI step summary."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from orch.core.report import build_summary, render_junit, render_markdown
from tests.support.orchtest import THREE_TASK_SCRIPT, Host, make_host, three_task_plan

INVALID = {'answer': {'status': 'done', 'summary': 'missing fields'}}


@pytest.fixture
def failed_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Host:
    """T1 fails (invalid answer), T2 and T3 wait for it, the independent T4 is done."""
    step_summary = tmp_path / 'step-summary.md'
    step_summary.write_text('# earlier step\n')
    monkeypatch.setenv('GITHUB_STEP_SUMMARY', str(step_summary))
    host = make_host(tmp_path, monkeypatch, capsys,
                     {**THREE_TASK_SCRIPT, 'tasks': {**THREE_TASK_SCRIPT['tasks'], 'T1': INVALID,
                                                     'T4': {'edits': {'other.txt': 'x\n'}}}})
    plan = three_task_plan()
    plan['tasks'].append({'id': 'T4', 'role': 'implementer', 'title': 'Independent', 'description': 'x',
                          'paths': ['other.txt']})
    host.write_plan(plan)
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--continue')
    assert rc == 1, out + err
    return host


def table_rows(markdown: str) -> dict[str, list[str]]:
    rows = {}
    for line in markdown.splitlines():
        if line.startswith('| ') and not line.startswith('| task'):
            cells = [c.strip() for c in line.strip('|').split(' | ')]
            rows[cells[0]] = cells
    return rows


def check_report_md_has_a_row_per_task_and_the_failure_reason(failed_run: Host) -> None:
    report = (failed_run.run_dir() / 'report.md').read_text()
    rows = table_rows(report)
    assert sorted(rows) == ['T1', 'T2', 'T3', 'T4']
    assert rows['T1'][1:4] == ['implementer', 'failed', '2']
    assert rows['T4'][2] == 'done' and len(rows['T4'][6]) == 10   # short commit sha
    assert rows['T2'][2] == 'pending'
    assert '## Failures' in report
    assert "**T1** (failed): invalid-output" in report and "'files_changed' is a required property" in report


def check_junit_parses_with_one_case_per_task(failed_run: Host) -> None:
    root = ET.parse(failed_run.run_dir() / 'junit.xml').getroot()
    suite = root.find('testsuite')
    assert suite is not None
    assert (suite.get('tests'), suite.get('failures'), suite.get('skipped')) == ('4', '1', '2')
    cases = {case.get('name'): case for case in suite.iter('testcase')}
    assert sorted(cases) == ['T1', 'T2', 'T3', 'T4']
    failure = cases['T1'].find('failure')
    assert failure is not None and 'files_changed' in (failure.text or '')
    assert cases['T4'].find('failure') is None and cases['T4'].find('skipped') is None
    assert cases['T2'].find('skipped') is not None


def check_summary_json_matches_status_json(failed_run: Host) -> None:
    summary = json.loads((failed_run.run_dir() / 'summary.json').read_text())
    status = failed_run.status()
    keys = ('id', 'role', 'status', 'attempts', 'reason', 'commit')
    assert [{k: t[k] for k in keys} for t in summary['tasks']] == [{k: t[k] for k in keys} for t in status['tasks']]
    assert summary['counts'] == {'done': 1, 'failed': 1, 'pending': 2}
    assert summary['run']['run_id'] == status['run']['run_id']
    assert summary['usage']['input_tokens'] > 0


def check_github_step_summary_gets_the_markdown_appended(failed_run: Host, tmp_path: Path) -> None:
    step_summary = tmp_path / 'step-summary.md'
    report = (failed_run.run_dir() / 'report.md').read_text()
    assert step_summary.read_text() == '# earlier step\n' + report + '\n'
    rc, out, err = failed_run.cli('report')
    assert rc == 0, err
    assert step_summary.read_text().count('# codex-orch run ') == 2   # appended, never overwritten


def test_reports_of_a_run_with_a_failure(failed_run: Host, tmp_path: Path) -> None:
    # one run, four views of it (a run costs far more than the checks)
    check_report_md_has_a_row_per_task_and_the_failure_reason(failed_run)
    check_junit_parses_with_one_case_per_task(failed_run)
    check_summary_json_matches_status_json(failed_run)
    check_github_step_summary_gets_the_markdown_appended(failed_run, tmp_path)


def row(**overrides: Any) -> dict[str, Any]:
    base = {'id': 'T1', 'role': 'implementer', 'status': 'done', 'attempts': 1, 'reason': None, 'usage': None,
            'duration': 1.5, 'commit': None, 'files_changed': [], 'summary': 'ok'}
    return {**base, **overrides}


RUN = {'run_id': 'r1', 'base_branch': 'main', 'base_commit': 'a' * 40, 'plan_file': 'plan.json'}


def test_pipe_in_a_summary_does_not_split_the_table_row() -> None:
    markdown = render_markdown(build_summary(RUN, [row(summary='either a | b, or c\nand d')]))
    line = next(line for line in markdown.splitlines() if line.startswith('| T1'))
    header = next(line for line in markdown.splitlines() if line.startswith('| task'))
    assert line.replace('\\|', '').count('|') == header.count('|')
    assert 'either a \\| b, or c and d' in line


def test_junit_survives_control_characters_in_reasons() -> None:
    reason = 'non-zero-exit: \x1b[31merror\x1b[0m: codex crashed\x00'
    xml = render_junit(build_summary(RUN, [row(status='failed', reason=reason, summary='sum\x07mary')]))
    case = ET.fromstring(xml).find('testsuite/testcase')
    assert case is not None
    failure = case.find('failure')
    assert failure is not None and 'codex crashed' in (failure.text or '') and '\x1b' not in (failure.text or '')


def test_token_totals_count_every_paid_attempt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """An invalid answer, a schema retry and a failed execution are paid too: the totals count them all."""
    host = make_host(tmp_path, monkeypatch, capsys, {'tasks': {'T1': [{'answer': {'status': 'done'}},
                                                                      {'answer': {'status': 'done'}}]}})
    host.write_plan({'version': 1, 'tasks': [{'id': 'T1', 'role': 'implementer', 'title': 't', 'description': 'd'}]})
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 1   # two invalid answers (the first and its schema retry): failed
    host.script({'tasks': {'T1': {'answer': 'auto'}}})
    rc, out, err = host.cli('resume')
    assert rc == 0, out + err
    attempts = len(host.launches())
    assert attempts == 3
    summary = json.loads((host.run_dir() / 'summary.json').read_text())
    assert summary['usage_total']['input_tokens'] == 100 * attempts   # the fake's 100 input tokens per call
    assert summary['usage']['input_tokens'] == 100                    # the latest execution's
    assert set(summary['usage_total']) == set(summary['usage'])
    row = summary['tasks'][0]
    assert (row['usage_total']['input_tokens'], row['usage']['input_tokens']) == (100 * attempts, 100)
    assert host.result('T1')['usage']['input_tokens'] == 100    # the result: its own execution's
    report = (host.run_dir() / 'report.md').read_text()
    assert f'Tokens: {90 * attempts} billed input, {10 * attempts} cached input' in report
    assert 'The latest execution of each task: 100 input' in report
    assert f'{100 * attempts}/' in report and '(latest 100/' in report
