"""Issue 13, items 8 and 9: `graph` shows the plan with the statuses `status` shows and writes nothing; `runs`
lists the runs; "the latest run" is the plan run used most recently (never a one-task run)."""
from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.support.gitrepo import commit_all, git
from tests.support.orchtest import THREE_TASK_SCRIPT, Host, edit_config, files_snapshot, make_host, three_task_plan

TOKEN = 'sk-proj-abcDEF1234567890abcdefXYZ'   # '-' is escaped in a label: redacted first, or it leaks
HOSTILE_TITLE = f'{TOKEN} "it"] --> n0\n```\n<script>x</script> \x1b[31m`rm`'




@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Host:
    return make_host(tmp_path, monkeypatch, capsys, THREE_TASK_SCRIPT)


def run_plan(host: Host, run_id: str, plan: dict[str, Any] | None = None, name: str = 'plan.json') -> None:
    host.write_plan(plan or three_task_plan(), name)
    rc, out, err = host.cli('run', '--plan-file', name, '--spec-file', 'spec.md', '--run-id', run_id)
    assert rc == 0, out + err


def one_task_plan(title: str = 'Note') -> dict[str, Any]:
    return {'version': 1, 'tasks': [{'id': 'N1', 'role': 'reviewer', 'title': title, 'description': 'Look.'}]}


def runs_json(host: Host) -> dict[str, Any]:
    rc, out, err = host.cli('runs', '--json')
    assert rc == 0, err
    return json.loads(out)


def mermaid_statuses(text: str) -> dict[str, str]:
    """Task id -> status, read back from the node labels and class lines of a Mermaid diagram."""
    labels = dict(re.findall(r'^\s+(n\d+)\["([^"]*)"\]$', text, re.M))
    classes = {node: cls for nodes, cls in re.findall(r'^\s+class ([\w,]+) st_(\w+)$', text, re.M)
               for node in nodes.split(',')}
    out = {}
    for node, label in labels.items():
        task_id, status = label.split(':', 1)[0], label.rsplit('<br/>', 1)[1]
        assert classes[node] == status, (node, label)
        out[task_id] = status
    return out


def test_without_a_run_graph_and_status_say_so_and_exit_2(host: Host) -> None:
    before = files_snapshot(host.repo / '.orchestrator')
    for args in (['graph'], ['graph', '--format', 'dot'], ['status']):
        rc, out, err = host.cli(*args)
        assert rc == 2 and out == '', (args, out, err)
        assert 'no runs in' in err and 'codex-orch run --plan-file' in err and 'Traceback' not in err
    rc, out, err = host.cli('graph', '--run-id', 'nope')
    assert rc == 2 and "run 'nope' does not exist" in err
    with pytest.raises(SystemExit) as bad:   # argparse's refusal, with exit code 2
        host.cli('graph', '--format', 'svg')
    assert bad.value.code == 2 and "invalid choice: 'svg'" in host.capsys.readouterr().err
    rc, out, err = host.cli('runs')
    assert rc == 0 and out.startswith('no runs yet')
    assert runs_json(host) == {'version': 1, 'latest': None, 'stale_computed': False, 'runs': []}
    assert files_snapshot(host.repo / '.orchestrator') == before


def test_graph_shows_the_statuses_of_status_and_writes_nothing(host: Host) -> None:
    plan = three_task_plan()
    plan['tasks'][2]['title'] = HOSTILE_TITLE
    run_plan(host, 'r1', plan)
    report = (host.run_dir('r1') / 'report.md').read_text()
    # the graph and the timeline, and no fence the hostile title could open or close
    assert report.count('```mermaid') == 2 and '<script>' not in report and report.count('```') == 4
    assert mermaid_statuses(report.split('```mermaid', 1)[1]) == {'T1': 'done', 'T2': 'done', 'T3': 'done'}

    plan['tasks'][1]['description'] = 'Test it twice.'   # T2 and, after it, T3 are stale now
    host.write_plan(plan)
    before = files_snapshot(host.repo / '.orchestrator')
    rc, out, err = host.cli('graph')
    assert rc == 0, err
    assert mermaid_statuses(out) == host.statuses() == {'T1': 'done', 'T2': 'stale', 'T3': 'stale'}
    assert out.startswith('flowchart TD\n') and out.count('-->') == 2          # T1 --> T2 --> T3, nothing added
    assert '<script>' not in out and '\x1b' not in out and '```' not in out
    assert 'abcDEF12' not in out and 'abcDEF12' not in report   # the token is redacted, not just escaped
    rc, dot, err = host.cli('graph', '--run-id', 'r1', '--format', 'dot')
    assert rc == 0, err
    assert dot.startswith('digraph plan {') and '"T1" -> "T2";' in dot and '"T2" -> "T3";' in dot
    assert 'stale"' in dot and '\\"it\\"' in dot
    for args in (['runs'], ['runs', '--json'], ['status', '--json']):
        assert host.cli(*args)[0] == 0
    assert files_snapshot(host.repo / '.orchestrator') == before   # graph, runs and status wrote nothing


def test_the_latest_run_is_the_plan_run_used_most_recently(host: Host) -> None:
    rc, out, err = host.cli('task', '--role', 'reviewer', 'Look around', '--run-id', 't0')
    assert rc == 0, err
    rc, out, err = host.cli('resume')   # a one-task run is never the latest: nothing to resume by default
    assert rc == 2 and 'no plan runs' in err and '1 one-task run' in err and '--run-id' in err

    run_plan(host, 'r1')
    run_plan(host, 'r2', one_task_plan(), 'note.json')
    rc, out, err = host.cli('task', '--role', 'reviewer', 'Look again', '--run-id', 't1')   # newest of all
    assert rc == 0, err
    doc = runs_json(host)
    assert doc['latest'] == 'r2'
    assert host.status()['run']['run_id'] == 'r2'
    rows = {r['run_id']: r for r in doc['runs']}
    assert [r['run_id'] for r in doc['runs']] == ['t0', 'r1', 'r2', 't1']              # oldest first
    assert {k: rows['r1'][k] for k in ('kind', 'plan_file', 'tasks', 'counts', 'merged', 'latest', 'problem')} == {
        'kind': 'plan', 'plan_file': 'plan.json', 'tasks': 3, 'counts': {'done': 3}, 'merged': False,
        'latest': False, 'problem': None}
    assert (rows['t1']['kind'], rows['t1']['plan_file']) == ('task', '.orchestrator/runs/t1/plan.json')
    assert rows['r2']['merged'] is None   # a reviewer changes nothing: nothing to merge
    assert all(r['last_used'] for r in doc['runs'])

    rc, out, err = host.cli('resume', '--run-id', 'r1')   # the older run, resumed: now it is the latest
    assert rc == 0, out + err
    assert runs_json(host)['latest'] == 'r1'
    assert host.status()['run']['run_id'] == 'r1'
    rc, out, err = host.cli('graph')
    assert rc == 0 and set(mermaid_statuses(out)) == {'T1', 'T2', 'T3'}
    rc, out, err = host.cli('runs')
    assert rc == 0, err
    assert re.search(r'^\* +r1 +plan +plan\.json ', out, re.M) and re.search(r'^ +r2 +plan +note\.json ', out, re.M)
    assert '3 done' in out and 'stale tasks are not computed here' in out

    for rid in ('r1', 'r2'):   # runs from before `last used` was recorded: the newest created one
        (host.run_dir(rid) / 'used.json').unlink()
    assert runs_json(host)['latest'] == 'r2'
    (host.run_dir('r1') / 'used.json').write_text('{"last_used": "not a time"}')   # hand-edited: ignored
    assert runs_json(host)['latest'] == 'r2'


def test_runs_says_whether_a_result_is_merged(host: Host) -> None:
    run_plan(host, 'r1')
    assert {r['run_id']: r['merged'] for r in runs_json(host)['runs']} == {'r1': False}
    rc, out, err = host.cli('merge', '--run-id', 'r1', '--allow-automerge')
    assert rc == 0, out + err
    assert {r['run_id']: r['merged'] for r in runs_json(host)['runs']} == {'r1': True}
    rc, out, err = host.cli('clean', '--run-id', 'r1')   # branches gone: the recorded commits still tell
    assert rc == 0, out + err
    assert git(host.repo, 'branch', '--list', 'orch/*') == ''
    row = runs_json(host)['runs'][0]
    assert (row['merged'], row['counts']) == (True, {'done': 3})

    (host.repo / 'plan.json').unlink()   # the plan is gone: the counts are the recorded states, and why
    row = runs_json(host)['runs'][0]
    assert row['counts'] == {'done': 3} and 'plan.json' in row['problem'] and row['merged'] is True

    (host.run_dir('r1') / 'run.json').write_text('{not json')   # a broken record is listed, not a crash
    row = runs_json(host)['runs'][0]
    assert row['run_id'] == 'r1' and row['problem'].startswith('run.json: not valid JSON')
    rc, out, err = host.cli('runs')
    assert rc == 0 and 'r1' in out and 'not valid JSON' in out


def test_status_and_graph_read_doit_records_of_a_run_in_progress_without_writing(host: Host) -> None:
    """A run holding doit.db open (its -wal and -shm files there, a finished task in the WAL): read through them."""
    run_plan(host, 'r1')
    plan = three_task_plan()
    plan['tasks'][1]['description'] = 'Test it twice.'
    host.write_plan(plan)
    writer = sqlite3.connect(host.run_dir('r1') / 'doit.db')
    try:
        writer.execute('pragma journal_mode=wal')
        writer.execute("insert or replace into doit values ('unrelated', '{}')")   # lives in the WAL for now
        writer.commit()
        assert (host.run_dir('r1') / 'doit.db-wal').exists()
        # doit.db-shm is sqlite's shared memory: a reader of a live WAL takes its read lock in it (the run's
        # own connection rewrites it all the time); every file that holds data stays as it was
        shm = 'runs/r1/doit.db-shm'
        before = files_snapshot(host.repo / '.orchestrator')
        assert host.statuses() == {'T1': 'done', 'T2': 'stale', 'T3': 'stale'}
        rc, out, err = host.cli('graph')
        assert rc == 0 and mermaid_statuses(out) == {'T1': 'done', 'T2': 'stale', 'T3': 'stale'}
        after = files_snapshot(host.repo / '.orchestrator')
        assert shm in after and {k: v for k, v in after.items() if k != shm} == {
            k: v for k, v in before.items() if k != shm}
    finally:
        writer.close()


def test_runs_tells_a_merged_per_task_run(host: Host) -> None:
    edit_config(host.repo, {'use_single_workspace: true': 'use_single_workspace: false'})
    commit_all(host.repo, 'per-task workspaces')
    run_plan(host, 'p1')
    row = runs_json(host)['runs'][0]
    assert (row['workspace'], row['merged']) == ('per-task', False)
    rc, out, err = host.cli('merge', '--run-id', 'p1', '--allow-automerge')
    assert rc == 0, out + err
    assert runs_json(host)['runs'][0]['merged'] is True
