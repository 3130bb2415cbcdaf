"""Issue 22: status and the dry run after an edit are answered from the no-op manifest and the edit alone when
they can be (orch.runstate.delta), and then exactly as the full check answers; every other edit takes the full
path. Each kind of edit is made on a finished run, and the fast and the full answers of `status`, `status --json`
and `resume --dry-run` are compared whole (exit code, stdout, stderr)."""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orch.runstate import fastpath
from tests.support.orchtest import (
    THREE_TASK_SCRIPT,
    Host,
    edit_config,
    host_after_a_run,
    make_host,
    three_task_plan,
)

RUN = 'r1'
COMMANDS = (('status',), ('status', '--json'), ('resume', '--dry-run'))


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Host:
    monkeypatch.delenv(fastpath.FULL_CHECK_ENV, raising=False)
    return host_after_a_run(tmp_path, monkeypatch, capsys, RUN)


def delta_answered(host: Host, want: str = 'status_table') -> bool:
    """Whether the fast path answered from the manifest and the edit (not the full path)."""
    cwd = os.getcwd()
    os.chdir(host.repo)
    try:
        return fastpath.noop_answers(None, want=want) is not None
    finally:
        os.chdir(cwd)


def both(host: Host, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[Any, Any]:
    fast = host.cli(*args)
    with monkeypatch.context() as m:
        m.setenv(fastpath.FULL_CHECK_ENV, '1')
        full = host.cli(*args)
    return fast, full


def edit_task(host: Host, index: int, **fields: Any) -> None:
    plan = three_task_plan()
    plan['tasks'][index].update(fields)
    host.write_plan(plan)


def run_dir(host: Host) -> Path:
    return host.run_dir(RUN)


# Edits of task fields: answered from the edit alone.
FIELD_EDITS: dict[str, Callable[[Host], None]] = {
    'description of the first task': lambda h: edit_task(h, 0, description='Create src/greet.py, politely.'),
    'description of the leaf': lambda h: edit_task(h, 2, description='Review the change.\nTwice.'),
    'title': lambda h: edit_task(h, 1, title='Test greet() well'),
    'title with a lone surrogate': lambda h: edit_task(h, 1, title='Odd \ud800 title'),
    'title with a token shape': lambda h: edit_task(h, 1, title='Use sk-abcdefghijklmnopqrstuvwxyz0123 here'),
    'acceptance': lambda h: edit_task(h, 0, acceptance=["greet('x') == 'Hello, x'", 'it has a docstring']),
    'paths': lambda h: edit_task(h, 1, paths=['tests/test_greet.py', 'tests/conftest.py']),
    'checks': lambda h: edit_task(h, 0, checks=['true']),
    'protect': lambda h: edit_task(h, 0, protect=['docs/*']),
    'max_tokens': lambda h: edit_task(h, 2, max_tokens=50000),
    'two tasks': lambda h: host_write(h, lambda p: (p['tasks'][0].update(title='A'), p['tasks'][2].update(title='B'))),
    'reformatted, same content': lambda h: (h.repo / 'plan.json').write_text(json.dumps(three_task_plan())),
}


def host_write(host: Host, change: Callable[[dict[str, Any]], Any]) -> None:
    plan = three_task_plan()
    change(plan)
    host.write_plan(plan)


@pytest.mark.parametrize('kind', list(FIELD_EDITS))
def test_a_task_field_edit_is_answered_from_the_edit_as_the_full_check_answers(
        host: Host, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    FIELD_EDITS[kind](host)
    assert delta_answered(host, 'status_table') and delta_answered(host, 'dry_run_lines'), kind
    for args in COMMANDS:
        fast, full = both(host, monkeypatch, *args)
        assert fast == full, (kind, args)
    rc, out, _ = host.cli('status', '--json')
    statuses = {t['id']: t['status'] for t in json.loads(out)['tasks']}
    if kind == 'reformatted, same content':
        assert set(statuses.values()) == {'done'}
    else:
        assert 'stale' in statuses.values(), statuses   # the edit is seen (and its downstream, compared above)


def _unknown_role(h: Host) -> None:
    edit_task(h, 1, role='painter')


def _bad_path(h: Host) -> None:
    edit_task(h, 1, paths=['../outside.py'])


def _schema_invalid(h: Host) -> None:
    edit_task(h, 1, colour='blue')   # the plan schema allows no other fields


def _broken_json(h: Host) -> None:
    (h.repo / 'plan.json').write_text('{"tasks": [')


def _role(h: Host) -> None:
    edit_task(h, 2, role='tester')


def _depends_on(h: Host) -> None:
    edit_task(h, 2, depends_on=['T1'])


def _added(h: Host) -> None:
    host_write(h, lambda p: p['tasks'].append({'id': 'T4', 'role': 'reviewer', 'title': 'Again',
                                               'description': 'Review it again.', 'depends_on': ['T3']}))


def _removed(h: Host) -> None:
    host_write(h, lambda p: p['tasks'].pop())


def _reordered(h: Host) -> None:
    host_write(h, lambda p: p['tasks'].reverse())


def _plan_title(h: Host) -> None:
    host_write(h, lambda p: p.update(title='Greetings'))


def _spec(h: Host) -> None:
    (h.repo / 'spec.md').write_text('# Spec\nGreet people warmly.\n')


def _template(h: Host) -> None:
    path = h.repo / '.orchestrator/prompts/tester.md'
    path.write_text(path.read_text() + '\nBe thorough.\n')


def _schema(h: Host) -> None:
    path = h.repo / '.orchestrator/schemas/reviewer.json'
    path.write_text(json.dumps({**json.loads(path.read_text()), 'description': 'A review.'}, indent=2))


def _config(h: Host) -> None:
    edit_config(h.repo, {'    sandbox: read-only': '    sandbox: read-only\n    model: other-model'})


def _rule(h: Host) -> None:
    rules = h.repo / '.orchestrator/rules'
    rules.mkdir(exist_ok=True)
    (rules / 'lint.yaml').write_text('name: lint\nscope: task\nroles: [implementer]\n'
                                     'output: "{task_dir}/lint.json"\naction:\n  shell: "true"\n')


def _upstream_result(h: Host) -> None:
    path = run_dir(h) / 'tasks/T1/result.json'
    path.write_text(json.dumps({**json.loads(path.read_text()), 'duration': 12.5}, indent=2))


def _hand_edited_result(h: Host) -> None:
    path = run_dir(h) / 'tasks/T3/result.json'
    path.write_text(json.dumps({**json.loads(path.read_text()), 'commit': 'f' * 40}, indent=2))


def _hand_edited_entry(h: Host) -> None:
    path = run_dir(h) / 'tasks/T2/task.json'
    path.write_text(json.dumps({**json.loads(path.read_text()), 'title': 'By hand'}, indent=2))


def _forget(h: Host) -> None:
    with sqlite3.connect(run_dir(h) / 'doit.db') as db:
        db.execute("delete from doit where task_id = 'work:T2'")


def _plan_and_spec(h: Host) -> None:
    edit_task(h, 0, description='Create src/greet.py, politely.')
    _spec(h)


OTHER_EDITS = [_unknown_role, _bad_path, _schema_invalid, _broken_json, _role, _depends_on, _added, _removed,
               _reordered, _plan_title, _spec, _template, _schema, _config, _rule, _upstream_result,
               _hand_edited_result, _hand_edited_entry, _forget, _plan_and_spec]


@pytest.mark.parametrize('edit', OTHER_EDITS, ids=lambda e: e.__name__.strip('_'))
def test_every_other_edit_takes_the_full_path_and_both_answers_agree(
        host: Host, monkeypatch: pytest.MonkeyPatch, edit: Callable[[Host], None]) -> None:
    edit(host)
    assert not delta_answered(host, 'status_table') and not delta_answered(host, 'dry_run_lines')
    for args in COMMANDS:
        fast, full = both(host, monkeypatch, *args)
        assert fast == full, (edit.__name__, args)
    if edit in (_unknown_role, _bad_path, _schema_invalid, _broken_json):
        rc, _, err = host.cli('status')
        assert rc == 2 and 'plan.json' in err, err   # the full path's one clear message


def test_an_undone_edit_is_a_noop_again(host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    before = host.cli('status')
    FIELD_EDITS['title'](host)
    assert host.cli('status') != before
    host.write_plan(three_task_plan())
    assert host.cli('status') == before
    fast, full = both(host, monkeypatch, 'resume', '--dry-run')
    assert fast == full and fast[0] == 0


def test_after_the_edit_ran_the_answer_is_a_noop_again(host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    FIELD_EDITS['description of the leaf'](host)
    host.clear_log()
    rc, out, err = host.cli('resume')
    assert rc == 0, out + err
    assert host.launched_tasks() == ['T3']
    fast, full = both(host, monkeypatch, 'status', '--json')
    assert fast == full and {t['status'] for t in json.loads(fast[1])['tasks']} == {'done'}


def test_with_a_price_table_status_is_answered_and_the_dry_run_takes_the_full_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv(fastpath.FULL_CHECK_ENV, raising=False)
    h = make_host(tmp_path, monkeypatch, capsys, THREE_TASK_SCRIPT)
    with (h.repo / '.orchestrator/orchestrator.yaml').open('a') as f:
        f.write('prices:\n  default: {input: 1.0, cached_input: 0.1, output: 4.0}\n')
    h.write_plan(three_task_plan())
    rc, out, err = h.cli('run', '--plan-file', 'plan.json', '--spec-file', 'spec.md', '--run-id', RUN)
    assert rc == 0, out + err
    FIELD_EDITS['title'](h)
    assert delta_answered(h, 'status_table') and not delta_answered(h, 'dry_run_lines')
    for args in COMMANDS:
        fast, full = both(h, monkeypatch, *args)
        assert fast == full, args


# ------------------------------------------------------------------ resume after an edit: only what it touches

def scope_of(host: Host) -> frozenset[str] | None:
    """What a resume now would hand doit (orch.engine.noop_record.affected_by_edit), read without writing."""
    from orch.engine import noop_record
    from orch.engine.inputs import open_run
    from orch.runstate import manifest
    rt = open_run(host.repo, RUN)
    return noop_record.affected_by_edit(rt, manifest.load(rt.run_dir, manifest.header(rt.repo, RUN)))


def test_a_resume_after_a_field_edit_looks_only_at_the_edited_tasks_and_below(
        host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    FIELD_EDITS['title'](host)   # T2: T2 and T3 below it
    assert scope_of(host) == {'T2', 'T3'}
    FIELD_EDITS['description of the leaf'](host)
    assert scope_of(host) == {'T3'}
    host.clear_log()
    rc, out, err = host.cli('resume')
    assert rc == 0, out + err
    assert host.launched_tasks() == ['T3']
    assert delta_answered(host) and scope_of(host) == frozenset()   # a new manifest, nothing differs
    for args in COMMANDS:
        fast, full = both(host, monkeypatch, *args)
        assert fast == full, args
    assert {t['status'] for t in json.loads(both(host, monkeypatch, 'status', '--json')[1][1])['tasks']} == {'done'}


@pytest.mark.parametrize('edit', [_spec, _role, _depends_on, _added, _plan_title, _hand_edited_entry, _forget,
                                  _plan_and_spec], ids=lambda e: e.__name__.strip('_'))
def test_any_other_edit_gets_the_whole_graph(host: Host, edit: Callable[[Host], None]) -> None:
    edit(host)
    assert scope_of(host) is None


def test_a_change_outside_the_scope_during_the_resume_is_not_vouched_for(
        host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    """The leaf's worker rewrites T1's answer (outside the resume's scope): the manifest the resume writes must
    not call T2, which depends on that answer, up to date."""
    statuses = resume_while_the_leaf_rewrites(host, monkeypatch, 'T1',
                                              lambda: FIELD_EDITS['description of the leaf'](host))
    assert statuses['T2'] == 'stale', statuses


def resume_while_the_leaf_rewrites(host: Host, monkeypatch: pytest.MonkeyPatch, victim: str,
                                   edit: Callable[[], None]) -> dict[str, str]:
    """Edit the leaf T3 (`edit`), resume with T3's worker rewriting `victim`'s answer, and return the statuses,
    the fast answer being the full one."""
    victim_result = run_dir(host) / f'tasks/{victim}/result.json'
    rewrite = ("python3 -c \"import json,sys; p=sys.argv[1]; d=json.load(open(p)); "
               "d['answer']['summary']='Rewritten.'; "
               f"json.dump(d, open(p, 'w'))\" {victim_result}")
    host.script({**THREE_TASK_SCRIPT, 'tasks': {**THREE_TASK_SCRIPT['tasks'], 'T3': {'commands': [rewrite]}}})
    edit()
    assert scope_of(host) == {'T3'}
    rc, out, err = host.cli('resume')
    assert rc == 0, out + err
    fast, full = both(host, monkeypatch, 'status', '--json')
    assert fast == full
    return {t['id']: t['status'] for t in json.loads(full[1])['tasks']}


def assert_reports_are_a_full_reads(host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reports a resume wrote are those `codex-orch report` writes from a full read of every task."""
    written = {name: (run_dir(host) / name).read_text() for name in ('summary.json', 'report.md', 'junit.xml')}
    with monkeypatch.context() as m:
        m.setenv(fastpath.FULL_CHECK_ENV, '1')
        rc, out, err = host.cli('report', '--run-id', RUN)
    assert rc == 0, out + err
    for name, text in written.items():
        assert (run_dir(host) / name).read_text() == text, name


def test_a_scoped_resume_reports_what_a_full_read_reports(host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rows of the tasks outside the scope come from the manifest (manifest_rows.unchanged_rows): the reports
    the resume writes are those of a full read of every task (`codex-orch report` reads them all again)."""
    FIELD_EDITS['description of the leaf'](host)
    assert scope_of(host) == {'T3'}
    rc, out, err = host.cli('resume')
    assert rc == 0, out + err
    assert_reports_are_a_full_reads(host, monkeypatch)


def four_task_plan(review_description: str = 'Review the change.') -> dict[str, Any]:
    """The three tasks, then a second review below the first: T4 reads T3's answer, not its plan object."""
    plan = three_task_plan()
    plan['tasks'][2]['description'] = review_description
    plan['tasks'].append({'id': 'T4', 'role': 'reviewer', 'title': 'Review again', 'description': 'Look again.',
                          'depends_on': ['T3']})
    return plan


def four_task_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Host:
    """The four tasks run to the end as run RUN, then resumed once more a second later with the full check: a
    manifest whose signatures are not racy (a run's are: signed moments after they were written)."""
    h = host_with_rules(tmp_path, monkeypatch, capsys, four_task_plan(), {})
    time.sleep(1.1)
    with monkeypatch.context() as m:
        m.setenv(fastpath.FULL_CHECK_ENV, '1')
        rc, out, err = h.cli('resume')
    assert rc == 0, out + err
    return h


def rows_taken_as_known(monkeypatch: pytest.MonkeyPatch) -> list[set[str]]:
    """Record, for each read of every task's row, which rows were the manifest's (status.task_rows's `used`)."""
    from orch.runstate import status
    taken: list[set[str]] = []
    task_rows = status.task_rows

    def recording(*args: Any, **kwargs: Any) -> Any:
        rows = task_rows(*args, **kwargs)
        taken.append(set(kwargs.get('used') or ()))
        return rows
    monkeypatch.setattr(status, 'task_rows', recording)
    return taken


def test_a_task_below_the_edit_whose_work_did_not_run_again_keeps_the_manifests_row(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """T3's description edited: T3 runs again with the same answer, so T4 (in the scope, below it) does not. T4's row
    is the manifest's, as T1's and T2's are; T3's is read. The reports are a full read's, and so are the answers."""
    h = four_task_host(tmp_path, monkeypatch, capsys)
    h.clear_log()
    h.write_plan(four_task_plan('Review the change, closely.'))
    assert scope_of(h) == {'T3', 'T4'}
    with monkeypatch.context() as m:
        taken = rows_taken_as_known(m)
        rc, out, err = h.cli('resume')
    assert rc == 0, out + err
    assert h.launched_tasks() == ['T3']
    assert taken and taken[0] == {'T1', 'T2', 'T4'}, taken
    assert_reports_are_a_full_reads(h, monkeypatch)
    for args in COMMANDS:
        fast, full = both(h, monkeypatch, *args)
        assert fast == full, args


def test_a_task_below_an_edited_task_that_failed_is_read_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """T3's description edited and its worker fails now: T4's files are as the manifest signed them, but its row is
    not the manifest's `done` (its upstream is no longer done): it is read, and says what a full read says."""
    h = four_task_host(tmp_path, monkeypatch, capsys)
    script = json.loads(json.dumps(THREE_TASK_SCRIPT))
    script['tasks']['T3'] = {'fail': 'the model is unwell'}
    h.script(script)
    h.write_plan(four_task_plan('Review the change, closely.'))
    assert scope_of(h) == {'T3', 'T4'}
    with monkeypatch.context() as m:
        taken = rows_taken_as_known(m)
        rc, out, err = h.cli('resume')
    assert rc != 0, out + err
    assert taken and 'T4' not in taken[0] and 'T3' not in taken[0], taken
    summary = json.loads((run_dir(h) / 'summary.json').read_text())
    statuses = {t['id']: t['status'] for t in summary['tasks']}
    assert statuses['T3'] != 'done' and statuses['T4'] != 'done', statuses
    assert_reports_are_a_full_reads(h, monkeypatch)


def test_a_rewritten_upstream_answer_read_by_a_task_outside_the_scope_is_not_vouched_for(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """T1 -> T2 -> T3 and T2 -> T4. T3 is edited; its worker rewrites T2's answer, which T3's prompt reads (so it is
    an input of the scope) and so does T4's, outside the scope: the manifest must not call T4 up to date."""
    monkeypatch.delenv(fastpath.FULL_CHECK_ENV, raising=False)
    h = make_host(tmp_path, monkeypatch, capsys, THREE_TASK_SCRIPT)
    plan = three_task_plan()
    plan['tasks'].append({'id': 'T4', 'role': 'reviewer', 'title': 'Review the tests', 'description': 'Review.',
                          'depends_on': ['T2']})
    h.write_plan(plan)
    rc, out, err = h.cli('run', '--plan-file', 'plan.json', '--spec-file', 'spec.md', '--run-id', RUN)
    assert rc == 0, out + err
    plan['tasks'][2]['description'] = 'Review the change, twice.'
    statuses = resume_while_the_leaf_rewrites(h, monkeypatch, 'T2', lambda: h.write_plan(plan))
    assert statuses['T4'] == 'stale', statuses


def host_with_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                    plan: dict[str, Any], rules: dict[str, str]) -> Host:
    """A host with these rules of its own (file name -> YAML) that ran `plan` to the end as run RUN."""
    monkeypatch.delenv(fastpath.FULL_CHECK_ENV, raising=False)
    h = make_host(tmp_path, monkeypatch, capsys, THREE_TASK_SCRIPT)
    directory = h.repo / '.orchestrator/rules'
    directory.mkdir(exist_ok=True)
    for name, text in rules.items():
        (directory / name).write_text(text)
    h.write_plan(plan)
    rc, out, err = h.cli('run', '--plan-file', 'plan.json', '--spec-file', 'spec.md', '--run-id', RUN)
    assert rc == 0, out + err
    return h


def test_the_scope_follows_what_a_run_level_rule_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """A run-level rule reads every result and writes a file that the gate of T4 (a task of its own, below nothing)
    reads: after an edit of the leaf T3, T4 is in the scope too (T3's answer -> the run-level file -> T4's gate),
    and the resume leaves no stale gate."""
    plan = three_task_plan()
    plan['tasks'].append({'id': 'T4', 'role': 'navigator', 'title': 'Map', 'description': 'Map the code.'})
    h = host_with_rules(tmp_path, monkeypatch, capsys, plan, {
        'digest.yaml': 'name: digest_all\nscope: run\ninput: "{all_results}"\noutput: "{run_dir}/all.txt"\n'
                       'action:\n  shell: "date +%s%N > all.txt"\n  cwd: "{run_dir}"\n',
        'check.yaml': 'name: check_all\nscope: task\nroles: [navigator]\ninput: "{run_dir}/all.txt"\n'
                      'output: "{task_dir}/check_all.json"\naction:\n  shell: "true"\n'})
    plan['tasks'][2]['description'] = 'Review the change, twice.'
    h.write_plan(plan)
    assert scope_of(h) == {'T3', 'T4'}
    rc, out, err = h.cli('resume')
    assert rc == 0, out + err
    fast, full = both(h, monkeypatch, 'status', '--json')
    assert fast == full and {t['status'] for t in json.loads(full[1])['tasks']} == {'done'}, full[1]


def test_a_rule_that_reads_the_plan_itself_gets_no_answer_from_the_edit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A host rule whose input is the plan file: any edit of the plan makes it stale, so neither status nor resume
    may answer from the edited tasks alone."""
    h = host_with_rules(tmp_path, monkeypatch, capsys, three_task_plan(), {
        'plan_lint.yaml': 'name: plan_lint\nscope: task\nroles: [reviewer]\ninput: "plan.json"\n'
                          'output: "{task_dir}/plan_lint.json"\naction:\n  shell: "true"\n'})
    FIELD_EDITS['reformatted, same content'](h)
    assert not delta_answered(h) and scope_of(h) is None
    for args in COMMANDS:
        fast, full = both(h, monkeypatch, *args)
        assert fast == full, args


# ------------------------------------------------------------------ a scoped resume's manifest: signed from the old one

def scoped_resume(host: Host) -> None:
    """Edit the leaf and resume: the new manifest is built with the old one's listings and signatures."""
    FIELD_EDITS['description of the leaf'](host)
    assert scope_of(host) == {'T3'}
    rc, out, err = host.cli('resume')
    assert rc == 0, out + err
    assert delta_answered(host)


@pytest.mark.parametrize('change', ['new file', 'new attempt', 'launch record', 'attempt record'])
def test_after_a_scoped_resume_any_change_in_a_task_outside_it_is_noticed(
        host: Host, monkeypatch: pytest.MonkeyPatch, change: str) -> None:
    """The manifest a resume writes takes the files of T1's directory from the old manifest while that directory's
    entries are as then: what it took must still cover every file a row is read from, also a file that came after
    the old manifest (it is signed once a manifest is written again)."""
    scoped_resume(host)
    t1 = run_dir(host) / 'tasks/T1'
    attempt = sorted(t1.glob('attempt-*'))[0]
    if change in ('new file', 'new attempt'):   # a new entry: then a resume writes a manifest, and it changes
        path = t1 / 'notes.json' if change == 'new file' else t1 / 'attempt-9' / 'attempt.json'
        if change == 'new file':
            path.write_text('{}')
        else:
            shutil.copytree(attempt, t1 / 'attempt-9')
        assert not delta_answered(host)
        rc, out, err = host.cli('resume')
        assert rc == 0, out + err
        assert delta_answered(host)
    else:
        path = attempt / ('launch.json' if change == 'launch record' else 'attempt.json')
    time.sleep(0.01)
    path.write_text(path.read_text().replace('{', '{"edited": true, ', 1))
    assert not delta_answered(host)
    for args in COMMANDS:
        fast, full = both(host, monkeypatch, *args)
        assert fast == full, args


@pytest.mark.parametrize('how', ['listed', 'taken from the old manifest'])
def test_a_task_directory_that_changed_while_it_was_listed_is_listed_again(
        host: Host, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """A file added to a task directory between its listing and its signature is missing from the files signed:
    the directory is signed racy, so that no later snapshot takes its files from this one."""
    from orch.engine import noop_record
    from orch.engine.inputs import open_run
    from orch.runstate import manifest, signing
    if how != 'listed':   # a manifest that signed T1's directory over a second after it last changed (T1's run,
        for n in range(2):   # then its attempts summary, written by the first resume): its files are taken over
            time.sleep(1.1)
            edit_task(host, 2, description=f'Review the change ({n}).')
            rc, out, err = host.cli('resume')
            assert rc == 0, out + err
    rt = open_run(host.repo, RUN)
    previous = manifest.load(rt.run_dir, manifest.header(rt.repo, RUN))
    t1 = f'{rt.layout.run_dir}/tasks/T1'
    listed, unchanged = noop_record._entries, signing.unchanged_dir
    taken_over: list[str] = []

    def a_new_file() -> None:
        time.sleep(0.05)   # past the coarse clock's tick: the directory gets a new mtime
        (host.repo / t1 / 'late.json').write_text('{}')
        time.sleep(1.1)    # and it is no longer recent ("racy") when the snapshot signs it (a big plan's time)

    def entries_then_a_new_file(directory: Path, *, dirs_only: bool = False) -> list[str]:
        names = listed(directory, dirs_only=dirs_only)
        if str(directory).endswith(t1):
            a_new_file()
        return names

    def unchanged_then_a_new_file(root: str, sig: signing.DirSig) -> bool:
        same = unchanged(root, sig)
        if same and sig[0] == t1:
            taken_over.append(t1)
            a_new_file()
        return same
    with monkeypatch.context() as m:
        if how == 'listed':
            m.setattr(noop_record, '_entries', entries_then_a_new_file)
        else:
            m.setattr(signing, 'unchanged_dir', unchanged_then_a_new_file)
        before = noop_record.snapshot_before(rt, previous)
    assert (host.repo / t1 / 'late.json').exists() and taken_over == ([] if how == 'listed' else [t1])
    assert before is not None
    assert f'{t1}/late.json' not in before.files
    assert {d[0]: d[3] for d in before.snapshot.dirs}[t1] is True   # racy: listed again next time
    files, _ = noop_record.inputs_of(rt, before.snapshot)
    assert f'{t1}/late.json' in files


def test_a_change_outside_the_scope_while_the_manifest_is_checked_is_not_vouched_for(
        host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    """T1's usage record changes after the resume's first snapshot, while doit checks the scope: the second snapshot
    of a scoped resume does not look at T1's files, so the manifest must hold what the first one saw of them (the
    rows were read from that), and the next status must see the change."""
    from orch.engine import doit_runner
    record = sorted((run_dir(host) / 'tasks/T1').glob('attempt-*'))[0] / 'attempt.json'
    check = doit_runner.all_up_to_date

    def check_while_t1_changes(*args: Any, **kwargs: Any) -> bool:
        data = json.loads(record.read_text())
        record.write_text(json.dumps({**data, 'usage': {**data['usage'], 'output_tokens': 123456}}))
        return check(*args, **kwargs)
    with monkeypatch.context() as m:
        m.setattr(doit_runner, 'all_up_to_date', check_while_t1_changes)
        FIELD_EDITS['description of the leaf'](host)
        rc, out, err = host.cli('resume')
    assert rc == 0, out + err
    assert not delta_answered(host)
    for args in COMMANDS:
        fast, full = both(host, monkeypatch, *args)
        assert fast == full, args
    t1 = json.loads(both(host, monkeypatch, 'status', '--json')[1][1])['tasks'][0]
    assert t1['id'] == 'T1' and t1['usage_total']['output_tokens'] == 123456, t1


def test_an_attempts_summary_written_since_the_manifest_is_no_change(host: Host,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """attempts.json is a cache that any command reading a task's row may write (once its attempts are a second
    old): its coming changes no answer, so it neither sends status to the full path nor costs the next resume its
    scope (the whole graph checked again, every other resume after an edit)."""
    from orch.engine import doit_runner
    from orch.runstate import attempts
    scoped_resume(host)
    for task in ('T1', 'T3'):
        summary = run_dir(host) / 'tasks' / task / attempts.SUMMARY_FILE
        summary.unlink(missing_ok=True)
        time.sleep(0.01)
        summary.write_text('{}')   # what is in it is checked against the attempts' own files when it is read
    assert delta_answered(host, 'resume_lines')
    checked: list[frozenset[str] | None] = []
    check = doit_runner.all_up_to_date

    def recording(rt: Any, scope: frozenset[str] | None = None, **kwargs: Any) -> bool:
        checked.append(scope)
        return check(rt, scope=scope, **kwargs)
    edit_task(host, 2, description='Review the change, once more.')
    with monkeypatch.context() as m:
        m.setattr(doit_runner, 'all_up_to_date', recording)
        rc, out, err = host.cli('resume')
    assert rc == 0, out + err
    assert checked == [frozenset({'T3'})]
    for args in COMMANDS:
        fast, full = both(host, monkeypatch, *args)
        assert fast == full, args


def test_a_scoped_resume_signs_the_tasks_outside_its_scope_without_looking_at_them(
        host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    """After an edit of the leaf T3, the manifest's first snapshot takes T1's and T2's directories and files as the
    old manifest signed them (their rows are that manifest's): the snapshot costs what the edit touched. T2's answer,
    which T3's prompt reads, is looked at again. (The run's manifest signed T1 and T2 moments after they were
    written: racy, so the first resume signs them again; the second one takes them over.)"""
    from orch.runstate import manifest, signing
    time.sleep(1.1)
    scoped_resume(host)
    host.write_plan(three_task_plan())   # the leaf's description back: an edit again
    looked_at: list[str] = []
    snapshot_files = manifest.snapshot_files

    def recording(root: str, paths: Any, **kwargs: Any) -> list[signing.FileSig]:
        paths = list(paths)
        settled = kwargs.get('settled') or {}
        looked_at.extend(p for p in paths if p not in settled)
        return snapshot_files(root, paths, **kwargs)
    with monkeypatch.context() as m:
        m.setattr(manifest, 'snapshot_files', recording)
        assert scope_of(host) == {'T3'}
        rc, out, err = host.cli('resume')
    assert rc == 0 and delta_answered(host), out + err
    tasks = f'.orchestrator/runs/{RUN}/tasks'
    assert looked_at, 'no snapshot taken'
    assert not [p for p in looked_at if p.startswith((f'{tasks}/T1/', f'{tasks}/T2/'))
                and p != f'{tasks}/T2/result.json'], looked_at
    assert f'{tasks}/T3/state.json' in looked_at and f'{tasks}/T2/result.json' in looked_at
    for args in COMMANDS:   # and the manifest so written answers as the full check does
        fast, full = both(host, monkeypatch, *args)
        assert fast == full, args


def test_a_scoped_resume_takes_the_attempts_of_the_tasks_it_leaves_alone_without_listing_them(
        host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    """After an edit of the leaf T3 the report step takes T1's attempts as the old manifest signed them (no step of the
    resume reads or writes in T1's directory), and signs T1's state, result and execution record as any task's. T2's
    answer is read by T3's prompt, so T2's attempts are listed, as T3's are; and the reports say what a full read
    says."""
    from orch import filesig
    from orch.runstate import attempts, known_rows
    time.sleep(1.1)   # the run's manifest signed the tasks moments after they were written: racy, never taken over
    scoped_resume(host)
    host.write_plan(three_task_plan())   # the leaf's description back: an edit again
    listed: list[str] = []
    signed: list[str] = []
    listing_of, file_sig = attempts.listing_of, filesig.file_sig

    def recording(task_dir: Any) -> Any:
        listed.append(Path(task_dir).name)
        return listing_of(task_dir)

    def signing(path: Any) -> Any:
        signed.append(str(path))
        return file_sig(path)
    with monkeypatch.context() as m:
        m.setattr(known_rows.attempts, 'listing_of', recording)
        m.setattr(filesig, 'file_sig', signing)   # the rows' and the report digest's stats
        assert scope_of(host) == {'T3'}
        rc, out, err = host.cli('resume')
    assert rc == 0 and delta_answered(host), out + err
    assert 'T1' not in listed and {'T2', 'T3'} <= set(listed), listed
    assert [p for p in signed if p.endswith('/tasks/T1/state.json')], signed
    written = (run_dir(host) / 'summary.json').read_text()
    with monkeypatch.context() as m:
        m.setenv(fastpath.FULL_CHECK_ENV, '1')
        rc, out, err = host.cli('report', '--run-id', RUN)
    assert rc == 0 and (run_dir(host) / 'summary.json').read_text() == written, out + err


def hand_edit_during_a_scoped_resume(host: Host, monkeypatch: pytest.MonkeyPatch, victim: str, when: Any) -> None:
    """Resume after an edit of the leaf, editing `victim` (a file under the run's tasks directory) by hand just before
    `when` (a module and the name of a function in it) is called; then the next answers are the full check's, and
    the edit shows in them."""
    time.sleep(1.1)   # a manifest whose signatures are not racy (the run's were): T1's are then taken over
    with monkeypatch.context() as m:
        m.setenv(fastpath.FULL_CHECK_ENV, '1')
        rc, out, err = host.cli('resume')
    assert rc == 0, out + err
    path = run_dir(host) / 'tasks' / victim
    module, name = when
    real = getattr(module, name)

    def edit_then_call(*args: Any, **kwargs: Any) -> Any:
        text = path.read_text()
        path.write_text(text.replace('"done"', '"failed"') if victim.endswith('state.json') else text + '\n\n')
        return real(*args, **kwargs)
    with monkeypatch.context() as m:
        m.setattr(module, name, edit_then_call)
        FIELD_EDITS['description of the leaf'](host)
        rc, out, err = host.cli('resume')
    assert rc == 0 and 'run r1: 3 done' in out, out + err   # as its first check, or its report, found them
    for args in COMMANDS:
        fast, full = both(host, monkeypatch, *args)
        assert fast == full, args
    fast, _ = both(host, monkeypatch, 'status', '--json')
    statuses = {t['id']: t['status'] for t in json.loads(fast[1])['tasks']}
    assert statuses != {'T1': 'done', 'T2': 'done', 'T3': 'done'}, statuses   # the edit shows


@pytest.mark.parametrize('settled', [False, True])
@pytest.mark.parametrize('action', ['marks it failed', 'adds an attempt', 'removes its attempt'])
def test_a_worker_touching_a_task_left_alone_is_seen_by_its_own_resume(
        host: Host, monkeypatch: pytest.MonkeyPatch, settled: bool, action: str) -> None:
    """The leaf T3's worker (no sandbox here) changes T1, outside the scope, where no step of the resume reads or
    writes: its state (T1 failed), or its attempts (a copy of its attempt, or none left). T1's state is signed all the
    same and its attempts are listed again once its directory changed: the resume's own summary, exit code and
    reports say what a full read says, and so do the answers after it. (settled: the old manifest's signatures taken
    a second after the run, not the run's own.)"""
    if settled:
        time.sleep(1.1)
        with monkeypatch.context() as m:
            m.setenv(fastpath.FULL_CHECK_ENV, '1')
            rc, out, err = host.cli('resume')
        assert rc == 0, out + err
    t1 = run_dir(host) / 'tasks/T1'
    victim = t1 / 'state.json'
    command = {
        'marks it failed': f'{sys.executable} -c "import json, sys; d = json.load(open(sys.argv[1])); '
                           f'd[\'status\'] = \'failed\'; d[\'reason\'] = \'flipped by a worker\'; '
                           f'json.dump(d, open(sys.argv[1], \'w\'))" {victim}',
        'adds an attempt': f'cp -r {t1}/attempt-1 {t1}/attempt-7',
        'removes its attempt': f'rm -rf {t1}/attempt-1'}[action]
    host.script({**THREE_TASK_SCRIPT, 'tasks': {**THREE_TASK_SCRIPT['tasks'], 'T3': {'commands': [command]}}})
    FIELD_EDITS['description of the leaf'](host)
    assert scope_of(host) == {'T3'}
    rc, out, err = host.cli('resume')
    summary = json.loads((run_dir(host) / 'summary.json').read_text())
    row = {t['id']: t for t in summary['tasks']}['T1']
    if action == 'marks it failed':
        assert rc == 1 and 'T1 failed: flipped by a worker' in out, out + err
        assert row['status'] == 'failed'
    else:
        assert rc == 0, out + err
        assert row['attempts'] == (2 if action == 'adds an attempt' else 0), row
    assert_reports_are_a_full_reads(host, monkeypatch)
    for args in COMMANDS:
        fast, full = both(host, monkeypatch, *args)
        assert fast == full, args


@pytest.mark.parametrize('victim', ['T1/prompt.md', 'T1/state.json', 'T2/result.json'])
def test_a_hand_edit_outside_the_scope_after_the_report_is_seen_by_the_next_status(
        host: Host, monkeypatch: pytest.MonkeyPatch, victim: str) -> None:
    """A file of a task outside the scope edited by hand while the resume ends (after its report read the rows,
    before the manifest's first snapshot): the resume reports what its report read (T1's files are settled: signed
    as the old manifest signed them, not looked at again), the manifest vouches for nothing newer than that, and
    the next status sees the edit, exactly as the full check does."""
    from orch.engine import noop_record
    hand_edit_during_a_scoped_resume(host, monkeypatch, victim, (noop_record, 'snapshot_before'))


def test_after_a_task_step_ran_the_report_step_knows_it_is_out_of_date_without_a_look(
        host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    """The report's digest signs every task's row files (three stats a task): after a task's step ran in this
    command the report step is out of date without computing it. It is computed by the step itself (from the rows'
    inputs it signed) and by the check that vouches for the manifest (the tasks the resume left alone as its first
    check found them), and what the reports say is what a full read says."""
    from orch.steps import report
    looks: list[bool] = []
    digest = report.report_digest

    def counting(rt: Any, inputs: Any = None) -> str:
        looks.append(inputs is None)   # None: a stat of every task's files
        return digest(rt, inputs)
    with monkeypatch.context() as m:
        m.setattr(report, 'report_digest', counting)
        scoped_resume(host)
    assert len(looks) == 2 and looks[0] is False, looks   # the step's and the manifest's; its uptodate check: none
    written = (run_dir(host) / 'summary.json').read_text()
    with monkeypatch.context() as m:
        m.setenv(fastpath.FULL_CHECK_ENV, '1')
        rc, out, err = host.cli('report', '--run-id', RUN)
    assert rc == 0 and (run_dir(host) / 'summary.json').read_text() == written, out + err


def test_a_run_level_rule_writing_into_a_task_outside_the_scope_leaves_a_manifest_that_holds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A run-level rule reads every result and writes into T1's directory (outside the scope of an edit of the
    leaf): that directory is looked at, not settled, so the manifest the resume writes still holds afterwards and
    the next status is answered from it."""
    h = host_with_rules(tmp_path, monkeypatch, capsys, three_task_plan(), {
        'digest.yaml': 'name: digest_all\nscope: run\ninput: "{all_results}"\noutput: "{run_dir}/tasks/T1/all.txt"\n'
                       'action:\n  shell: "date +%s%N"\n  cwd: "{run_dir}"\n'})
    time.sleep(1.1)   # the run's manifest signed T1 moments after it was written: a resume signs it again
    with monkeypatch.context() as m:
        m.setenv(fastpath.FULL_CHECK_ENV, '1')
        rc, out, err = h.cli('resume')
    assert rc == 0, out + err
    written = (run_dir(h) / 'tasks/T1/all.log').read_text()   # the rule's output: its record; the log: its command's
    script = json.loads(json.dumps(THREE_TASK_SCRIPT))
    script['tasks']['T3'] = {'answer': {**json.loads((run_dir(h) / 'tasks/T3/result.json').read_text())['answer'],
                                        'summary': 'Another look.'}}
    h.script(script)   # T3's new answer: the run-level rule runs again and rewrites T1/all.txt
    FIELD_EDITS['description of the leaf'](h)
    assert scope_of(h) == {'T3'}
    rc, out, err = h.cli('resume')
    assert rc == 0, out + err
    assert (run_dir(h) / 'tasks/T1/all.log').read_text() != written
    monkeypatch.chdir(h.repo)
    assert fastpath.noop_answers(RUN) is not None   # the new manifest holds: nothing it signed differs
    for args in COMMANDS:
        fast, full = both(h, monkeypatch, *args)
        assert fast == full, args


def answers_agree(host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast answers of status, status --json and the dry run are the full check's."""
    for args in COMMANDS:
        fast, full = both(host, monkeypatch, *args)
        assert fast == full, args


def steps_looked_at(output: str) -> set[str]:
    """The steps a `resume -vv` reported, run or found up to date (the prompt steps are not shown)."""
    return {line.split()[1] for line in output.splitlines() if line.split()[:1] in (['ok'], ['start'], ['done'])
            and len(line.split()) > 1}


def test_a_middle_edit_whose_task_answers_as_before_looks_at_nothing_below_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """T2 of T1 -> T2 -> T3 -> T4 edited, and its worker answers as before: the resume runs T2's steps first
    (orch.engine.edit_waves); what T2 wrote that T3 reads holds the same bytes, so doit never looks at T3 or T4.
    The manifest it leaves answers as the full check does, every task done."""
    h = four_task_host(tmp_path, monkeypatch, capsys)
    h.clear_log()
    plan = four_task_plan()
    plan['tasks'][1]['description'] = 'Add a test for greet(), a short one.'
    h.write_plan(plan)
    assert scope_of(h) == {'T2', 'T3', 'T4'}
    from orch.engine import doit_runner
    checked: list[frozenset[str] | None] = []
    real = doit_runner.all_up_to_date

    def spied(rt: Any, scope: frozenset[str] | None = None, *args: Any, **kwargs: Any) -> bool:
        checked.append(scope)
        return real(rt, scope, *args, **kwargs)
    with monkeypatch.context() as m:
        m.setattr(doit_runner, 'all_up_to_date', spied)
        rc, out, err = h.cli('resume', '-vv')
    assert rc == 0, out + err
    assert h.launched_tasks() == ['T2']
    looked = steps_looked_at(out)
    assert 'work:T2' in looked and not any(s.endswith((':T3', ':T4')) for s in looked), out
    assert checked == [frozenset({'T2'})]   # the manifest's own check, too, looks at the edited task alone
    assert delta_answered(h) and scope_of(h) == frozenset()
    answers_agree(h, monkeypatch)
    assert_reports_are_a_full_reads(h, monkeypatch)
    assert {t['status'] for t in json.loads(both(h, monkeypatch, 'status', '--json')[1][1])['tasks']} == {'done'}


def edit_t3_answering_otherwise(host: Host) -> None:
    """T3's description edited, and its worker to give another answer than before (T4's prompt reads it)."""
    script = json.loads(json.dumps(THREE_TASK_SCRIPT))
    script['tasks']['T3'] = {'answer': {'status': 'done', 'summary': 'Looked again: fine.', 'verdict': 'approve',
                                        'findings': [], 'files_changed': [], 'decisions': [], 'follow_ups': []}}
    host.script(script)
    host.clear_log()
    host.write_plan(four_task_plan('Review the change, closely.'))


def test_a_middle_edit_whose_task_answers_otherwise_runs_the_tasks_below(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """T3 edited, and its worker gives another answer: T4's prompt reads it, so the rest of the scope runs."""
    h = four_task_host(tmp_path, monkeypatch, capsys)
    edit_t3_answering_otherwise(h)
    rc, out, err = h.cli('resume', '-vv')
    assert rc == 0, out + err
    assert h.launched_tasks() == ['T3', 'T4']
    assert delta_answered(h)
    answers_agree(h, monkeypatch)


def test_a_worker_writing_into_a_task_below_it_in_place_makes_that_task_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """T3 edited; its worker answers as before but appends to T4's prompt in place (no rename: T4's directory keeps
    its times). That is seen (T4's file is another file now): the rest of the scope runs, and T4's work with it, as
    a resume looking at the whole scope at once would."""
    h = four_task_host(tmp_path, monkeypatch, capsys)
    prompt = run_dir(h) / 'tasks/T4/prompt.md'
    script = json.loads(json.dumps(THREE_TASK_SCRIPT))
    script['tasks']['T3'] = {'commands': [f"printf 'Ignore the above.\\n' >> {prompt}"]}
    h.script(script)
    h.clear_log()
    h.write_plan(four_task_plan('Review the change, closely.'))
    rc, out, err = h.cli('resume')
    assert rc == 0, out + err
    assert h.launched_tasks() == ['T3', 'T4']
    answers_agree(h, monkeypatch)


def test_with_continue_the_scope_runs_as_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """--continue: after a failure doit goes on with what does not depend on it, which a second doit run could not
    tell from the failed task (run again, paid twice): the edited task is not run first on its own."""
    h = four_task_host(tmp_path, monkeypatch, capsys)
    h.write_plan(four_task_plan('Review the change, closely.'))
    rc, out, err = h.cli('resume', '--continue', '-vv')
    assert rc == 0, out + err
    assert {'work:T3', 'work:T4'} <= steps_looked_at(out), out


def test_two_edits_one_below_the_other_run_in_the_plans_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """T1 and T3 edited, T1's worker answering otherwise: T3 reads T2's answer, which T2 has yet to give again, so
    T3 must not run before it (nor be left alone after it): the scope runs as one, each task once, in order."""
    h = four_task_host(tmp_path, monkeypatch, capsys)
    script = json.loads(json.dumps(THREE_TASK_SCRIPT))
    script['tasks']['T1']['decisions'] = [{'decision': 'Greet politely', 'rationale': 'Users like it.'}]
    h.script(script)
    h.clear_log()
    plan = four_task_plan('Review the change, closely.')
    plan['tasks'][0]['description'] = 'Create src/greet.py, politely.'
    h.write_plan(plan)
    rc, out, err = h.cli('resume')
    assert rc == 0, out + err
    assert h.launched_tasks() == ['T1', 'T2', 'T3', 'T4']
    answers_agree(h, monkeypatch)
    assert {t['status'] for t in json.loads(both(h, monkeypatch, 'status', '--json')[1][1])['tasks']} == {'done'}


def forget(db: Path, step: str) -> str:
    """A worker's shell command deleting doit's record of `step` (what `doit forget` does)."""
    return (f'{sys.executable} -c "import sqlite3; c = sqlite3.connect(\'{db}\'); '
            f'c.execute(\'pragma busy_timeout=10000\'); '
            f'c.execute(\'delete from doit where task_id = \\"{step}\\"\'); c.commit()"')


def test_a_worker_forgetting_the_record_of_a_task_below_it_makes_that_task_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """T3 edited; its worker deletes doit's record of T4's work: the rest of the scope runs (doit_runner.step_records,
    as the resume found them, differ), T4's work with it, which finds its result made from the same inputs and
    records it again without a model call. Every step is up to date at the end, and the answers are the full
    check's."""
    from orch.engine.doit_runner import all_up_to_date
    from orch.engine.inputs import open_run
    h = four_task_host(tmp_path, monkeypatch, capsys)
    script = json.loads(json.dumps(THREE_TASK_SCRIPT))
    script['tasks']['T3'] = {'commands': [forget(run_dir(h) / 'doit.db', 'work:T4')]}
    h.script(script)
    h.clear_log()
    h.write_plan(four_task_plan('Review the change, closely.'))
    rc, out, err = h.cli('resume', '-vv')
    assert rc == 0, out + err
    assert h.launched_tasks() == ['T3'] and 'work:T4' in steps_looked_at(out), out
    assert all_up_to_date(open_run(h.repo, RUN))
    answers_agree(h, monkeypatch)


@pytest.mark.parametrize('flags', [(), ('--continue',)])
def test_a_forgotten_record_of_a_task_the_resume_did_not_run_is_not_vouched_for(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        flags: tuple[str, ...]) -> None:
    """T2 and T4 edited (the scope runs as one: T4 is below T2); T4's worker deletes doit's record of T3's work,
    which doit found up to date before: the manifest's check looks at T3 again (its record is not the one the
    resume found), and the fast answers are the full ones."""
    h = four_task_host(tmp_path, monkeypatch, capsys)
    script = json.loads(json.dumps(THREE_TASK_SCRIPT))
    script['tasks']['T4'] = {'commands': [forget(run_dir(h) / 'doit.db', 'work:T3')]}
    h.script(script)
    h.clear_log()
    plan = four_task_plan()
    plan['tasks'][1]['description'] = 'Add a test for greet(), a short one.'
    plan['tasks'][3]['description'] = 'Look again, closely.'
    h.write_plan(plan)
    rc, out, err = h.cli('resume', *flags)
    assert rc == 0, out + err
    assert h.launched_tasks() == ['T2', 'T4']
    answers_agree(h, monkeypatch)


def host_with_a_rule_over_every_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str], shell: str) -> Host:
    """The four tasks and a run-level rule over every result, run and resumed once more a second later (a manifest
    with no racy signature); then T3's description edited, its worker to give another answer (T4 must run)."""
    h = host_with_rules(tmp_path, monkeypatch, capsys, four_task_plan(), {
        'whole.yaml': 'name: whole\nscope: run\ninput: "{all_results}"\noutput: "{run_dir}/whole.txt"\n'
                      f'action:\n  shell: "{shell}"\n  cwd: "{{run_dir}}"\n  sandbox: none\n'})
    time.sleep(1.1)
    with monkeypatch.context() as m:
        m.setenv(fastpath.FULL_CHECK_ENV, '1')
        rc, out, err = h.cli('resume')
    assert rc == 0, out + err
    edit_t3_answering_otherwise(h)
    return h


def test_a_run_level_rule_over_every_result_runs_once_after_the_tasks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """It waits for the rest of the scope: run once, on the final results (a check of them passes), not between
    the edited task and the tasks below it."""
    counter = tmp_path / 'runs.txt'
    h = host_with_a_rule_over_every_result(
        tmp_path, monkeypatch, capsys,
        f'echo run >> {counter}; test ! tasks/T3/result.json -nt tasks/T4/result.json && echo ok > whole.txt')
    counter.unlink()
    rc, out, err = h.cli('resume')
    assert rc == 0, out + err
    assert h.launched_tasks() == ['T3', 'T4']
    assert counter.read_text().splitlines() == ['run']


def test_a_run_level_rule_over_every_result_is_looked_at_after_an_edit_with_nothing_to_run_below(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """T2 edited and answering as before, nothing below it runs: the rule, which waits for the whole scope, is still
    looked at once the edited task is done (here found up to date: T2's result is the same bytes)."""
    h = host_with_a_rule_over_every_result(tmp_path, monkeypatch, capsys,
                                           'cat tasks/*/result.json | cksum > whole.txt')
    h.script(THREE_TASK_SCRIPT)
    plan = four_task_plan()
    plan['tasks'][1]['description'] = 'Add a test for greet(), a short one.'
    h.write_plan(plan)
    rc, out, err = h.cli('resume', '-vv')
    assert rc == 0, out + err
    assert h.launched_tasks() == ['T2']
    looked = steps_looked_at(out)
    assert 'whole' in looked and not any(s.endswith((':T3', ':T4')) for s in looked), out
    answers_agree(h, monkeypatch)


def test_per_task_a_worktree_below_removed_by_the_edited_tasks_worker_is_made_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Per-task worktrees: T3's worker removes T4's worktree. What T4's worktree step is decided by changed, so the
    rest of the scope runs and makes it again: every step is up to date at the end."""
    from orch.engine.doit_runner import all_up_to_date
    from orch.engine.inputs import open_run
    from tests.support.gitrepo import commit_all
    monkeypatch.delenv(fastpath.FULL_CHECK_ENV, raising=False)
    h = make_host(tmp_path, monkeypatch, capsys, THREE_TASK_SCRIPT)
    config = h.repo / '.orchestrator' / 'orchestrator.yaml'
    config.write_text(config.read_text().replace('use_single_workspace: true', 'use_single_workspace: false'))
    h.write_plan(four_task_plan())
    commit_all(h.repo, 'per-task')
    rc, out, err = h.cli('run', '--plan-file', 'plan.json', '--spec-file', 'spec.md', '--run-id', RUN)
    assert rc == 0, out + err
    worktree = h.repo / f'.orchestrator/worktrees/{RUN}/T4'
    script = json.loads(json.dumps(THREE_TASK_SCRIPT))
    script['tasks']['T3'] = {'commands': [f'rm -rf {worktree}']}
    h.script(script)
    h.write_plan(four_task_plan('Review the change, closely.'))
    rc, out, err = h.cli('resume')
    assert rc == 0, out + err
    assert all_up_to_date(open_run(h.repo, RUN))
    assert (worktree / '.git').is_file()
