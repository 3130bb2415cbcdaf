"""Item 10 of issue 13: status and a no-op resume answered from the run's no-op manifest.

The fast answer must say "nothing to do" exactly when doit would: a touched file with the same content is
still a no-op; every kind of edit is not, and the full path then gives the reasons; a hand-deleted
worktree is noticed; a failed task is never a no-op; a manifest of another version, or a corrupt one, is
ignored. `fast()` is the fast path's own verdict (its answers, or None: the full path decides).
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from orch import filesig
from orch.runstate import attempts, fastpath, manifest, signing
from orch.runstate.lock import RunLock
from tests.support.orchtest import (
    THREE_TASK_SCRIPT,
    Host,
    edit_config,
    files_snapshot,
    host_after_a_run,
    make_host,
    three_task_plan,
)

RUN = 'r1'


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Host:
    monkeypatch.delenv(fastpath.FULL_CHECK_ENV, raising=False)
    h = make_host(tmp_path, monkeypatch, capsys, THREE_TASK_SCRIPT)
    h.write_plan(three_task_plan())
    rc, out, err = h.cli('run', '--plan-file', 'plan.json', '--spec-file', 'spec.md', '--run-id', RUN)
    assert rc == 0, out + err
    return h


def fast(host: Host) -> dict[str, Any] | None:
    cwd = os.getcwd()
    os.chdir(host.repo)
    try:
        return fastpath.noop_answers(None)
    finally:
        os.chdir(cwd)


def full(host: Host, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str, str]:
    with monkeypatch.context() as m:
        m.setenv(fastpath.FULL_CHECK_ENV, '1')
        return host.cli(*args)


def rows(host: Host, monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[str, Any]]:
    rc, out, err = full(host, monkeypatch, 'status', '--json')
    assert rc == 0, err
    return {t['id']: t for t in json.loads(out)['tasks']}


def rewrite_same(path: Path) -> None:
    data = path.read_bytes()
    time.sleep(0.01)
    path.write_bytes(data)   # new mtime (and ctime), same content


def run_dir(host: Host) -> Path:
    return host.run_dir(RUN)


# ------------------------------------------------------------------ the fast answer is the full one

def test_a_finished_run_is_answered_from_its_manifest_as_the_full_path_answers(
        host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    assert fast(host) is not None
    host.clear_log()
    for args in (['status'], ['status', '--json'], ['resume'], ['resume', '-q'], ['resume', '--dry-run']):
        assert host.cli(*args) == full(host, monkeypatch, *args), args
    assert host.launched_tasks() == []
    assert fast(host) is not None   # the full no-op resumes wrote it again
    before = files_snapshot(host.repo)
    for args in (['status'], ['status', '--json'], ['status', '--watch'], ['resume', '--dry-run']):
        rc, _, _ = host.cli(*args)
        assert rc == 0
    assert files_snapshot(host.repo) == before   # status and the dry run wrote nothing, anywhere
    rc, _, _ = host.cli('resume')
    assert rc == 0
    after = files_snapshot(host.repo)
    changed = {path for path in set(before) | set(after) if before.get(path) != after.get(path)}
    # What every resume writes, the full path too: the lock's PID and which run was used last (replaced
    # atomically, so the run directory's own entry changes too).
    assert changed == {f'.orchestrator/runs/{RUN}', f'.orchestrator/runs/{RUN}/lock',
                       f'.orchestrator/runs/{RUN}/used.json'}
    assert host.launched_tasks() == []


def test_a_fast_status_writes_nothing_and_loads_no_doit(host: Host) -> None:
    before = files_snapshot(host.repo / '.orchestrator')
    code = ('import sys; from orch.main import main; rc = main(["status"]); '
            'print("doit" in sys.modules, "pydantic" in sys.modules, "git" in sys.modules); sys.exit(rc)')
    done = subprocess.run([sys.executable, '-c', code], cwd=host.repo, capture_output=True, text=True,
                          env={**os.environ, 'PYTHONPATH': str(Path(__file__).resolve().parents[1])})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == 'False False False'
    assert files_snapshot(host.repo / '.orchestrator') == before


def test_touched_files_with_the_same_content_are_still_a_noop(host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    rd = run_dir(host)
    for path in (host.repo / 'spec.md', host.repo / 'plan.json', host.repo / '.orchestrator/orchestrator.yaml',
                 host.repo / '.orchestrator/prompts/implementer.md', host.repo / '.orchestrator/schemas/tester.json',
                 rd / 'tasks/T1/task.json', rd / 'tasks/T1/result.json', rd / 'tasks/T2/prompt.md',
                 rd / 'doit.db', rd / 'run.json'):
        rewrite_same(path)
    assert fast(host) is not None
    assert all(r['status'] == 'done' for r in rows(host, monkeypatch).values())   # doit agrees


# ------------------------------------------------------------------ every kind of edit is noticed

def _edit_plan(host: Host) -> str:
    plan = three_task_plan()
    plan['tasks'][1]['description'] = 'Test src/greet.py twice.'
    host.write_plan(plan)
    return 'T2'


def _edit_spec(host: Host) -> str:
    (host.repo / 'spec.md').write_text('# Spec\nGreet people warmly.\n')
    return 'T1'


def _edit_template(host: Host) -> str:
    path = host.repo / '.orchestrator/prompts/tester.md'
    path.write_text(path.read_text() + '\nBe thorough.\n')
    return 'T2'


def _edit_schema(host: Host) -> str:
    path = host.repo / '.orchestrator/schemas/reviewer.json'
    schema = json.loads(path.read_text())
    schema['description'] = 'A review.'
    path.write_text(json.dumps(schema, indent=2))
    return 'T3'


def _edit_config(host: Host) -> str:
    edit_config(host.repo, {'    sandbox: read-only': '    sandbox: read-only\n    model: other-model'})
    return 'T3'


def _edit_upstream_result(host: Host) -> str:
    path = run_dir(host) / 'tasks/T1/result.json'
    result = json.loads(path.read_text())
    result['duration'] = 12.5
    path.write_text(json.dumps(result, indent=2))
    return 'T2'


def _delete_prompt(host: Host) -> str:
    (run_dir(host) / 'tasks/T3/prompt.md').unlink()
    return 'T3'


def _forget_in_doit_db(host: Host) -> str:
    with sqlite3.connect(run_dir(host) / 'doit.db') as db:
        db.execute("delete from doit where task_id = 'work:T2'")
    return 'T2'


RELAUNCHES = (_edit_plan, _edit_spec, _edit_template, _edit_schema, _edit_config)


@pytest.mark.parametrize('edit', [_edit_plan, _edit_spec, _edit_template, _edit_schema, _edit_config,
                                  _edit_upstream_result, _delete_prompt, _forget_in_doit_db])
def test_every_edit_is_not_a_noop_and_the_full_path_says_why(host: Host, monkeypatch: pytest.MonkeyPatch,
                                                             edit: Any) -> None:
    task = edit(host)
    assert fast(host) is None
    row = rows(host, monkeypatch)[task]
    assert row['status'] == 'stale' and row['reasons'], row
    host.clear_log()
    rc, out, err = host.cli('resume')
    assert rc == 0, out + err
    if edit in RELAUNCHES:   # the others re-render an identical prompt: doit stops there, as it should
        assert task in host.launched_tasks()
    assert (run_dir(host) / f'tasks/{task}/prompt.md').exists()
    assert fast(host) is not None   # up to date again: the resume wrote a new manifest


def test_a_new_host_rule_is_not_a_noop(host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    rules = host.repo / '.orchestrator/rules'
    rules.mkdir(exist_ok=True)
    (rules / 'lint.yaml').write_text('name: lint\nscope: task\nroles: [implementer]\n'
                                     'output: "{task_dir}/lint.json"\naction:\n  shell: "true"\n')
    assert fast(host) is None
    host.clear_log()
    rc, out, err = host.cli('resume')   # the full path runs the new gate; then a no-op again
    assert rc == 0, out + err
    assert (run_dir(host) / 'tasks/T1/lint.json').exists()
    assert fast(host) is not None


def test_a_hand_deleted_worktree_is_noticed_and_re_attached(host: Host) -> None:
    worktree = host.repo / '.orchestrator/worktrees' / RUN
    assert (worktree / '.git').exists()
    shutil.rmtree(worktree)
    assert fast(host) is None
    rc, out, err = host.cli('resume')
    assert rc == 0, out + err
    assert (worktree / '.git').exists()
    assert fast(host) is not None


def test_per_task_worktrees_each_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv(fastpath.FULL_CHECK_ENV, raising=False)
    h = make_host(tmp_path, monkeypatch, capsys, THREE_TASK_SCRIPT)
    edit_config(h.repo, {'use_single_workspace: true': 'use_single_workspace: false'})
    h.write_plan(three_task_plan())
    rc, out, err = h.cli('run', '--plan-file', 'plan.json', '--spec-file', 'spec.md', '--run-id', RUN)
    assert rc == 0, out + err
    assert fast(h) is not None
    worktree = h.repo / '.orchestrator/worktrees' / RUN / 'T2'
    shutil.rmtree(worktree)
    assert fast(h) is None
    rc, out, err = h.cli('resume')
    assert rc == 0, out + err
    assert (worktree / '.git').is_file() and fast(h) is not None


def test_a_hand_edited_task_entry_is_stale_in_both_answers(host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    """task.json edited by hand: doit re-runs the prompt, but the entry still differs from the plan, so
    status keeps calling the task stale; a manifest must then not call it done."""
    path = run_dir(host) / 'tasks/T3/task.json'
    entry = json.loads(path.read_text())
    path.write_text(json.dumps({**entry, 'title': 'Edited by hand'}, indent=2, sort_keys=True) + '\n')
    assert fast(host) is None
    host.cli('resume')
    assert rows(host, monkeypatch)['T3']['status'] == 'stale'
    assert fast(host) is None


def test_a_pruned_worktree_record_is_noticed(host: Host) -> None:
    admin = host.repo / '.git/worktrees'
    shutil.rmtree(next(admin.iterdir()))
    assert fast(host) is None


def test_a_changed_task_state_or_a_new_attempt_is_noticed(host: Host) -> None:
    state = run_dir(host) / 'tasks/T2/state.json'
    data = json.loads(state.read_text())
    state.write_text(json.dumps({**data, 'status': 'failed', 'reason': 'by hand'}))
    assert fast(host) is None
    state.write_text(json.dumps(data, indent=2, sort_keys=True) + '\n')
    (run_dir(host) / 'tasks/T3/attempt-9').mkdir()
    assert fast(host) is None


def test_a_failed_task_is_never_a_noop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv(fastpath.FULL_CHECK_ENV, raising=False)
    script = {'default': {'answer': 'auto'}, 'tasks': {'T2': {'fail': 'model overloaded'}}}
    h = make_host(tmp_path, monkeypatch, capsys, script)
    h.write_plan(three_task_plan())
    rc, _, _ = h.cli('run', '--plan-file', 'plan.json', '--spec-file', 'spec.md', '--run-id', RUN)
    assert rc != 0
    assert not manifest.path_of(h.run_dir(RUN)).exists()
    assert fast(h) is None
    rc, _, _ = h.cli('resume')   # fails again: still no manifest
    assert rc != 0 and fast(h) is None


def test_a_run_in_progress_is_left_to_the_full_path(host: Host) -> None:
    lock = RunLock(run_dir(host))
    lock.acquire()
    try:
        assert fast(host) is None
    finally:
        lock.release()
    assert fast(host) is not None


def test_plain_doit_run_drops_the_manifest_and_doit_list_does_not(host: Host) -> None:
    env = {**os.environ, 'PYTHONPATH': str(Path(__file__).resolve().parents[1])}
    path = manifest.path_of(run_dir(host))
    subprocess.run([sys.executable, '-m', 'doit', 'list'], cwd=host.repo, env=env, capture_output=True, check=True)
    assert path.exists()
    subprocess.run([sys.executable, '-m', 'doit', 'forget', 'work:T3'], cwd=host.repo, env=env,
                   capture_output=True, check=True)
    assert not path.exists() and fast(host) is None


def test_a_manifest_of_another_version_or_a_corrupt_one_is_ignored(host: Host,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    path = manifest.path_of(run_dir(host))
    with monkeypatch.context() as m:
        m.setattr('orch.__version__', '0.0.1-older')
        assert fast(host) is None
    good = path.read_text()
    data = json.loads(good)
    for key, other in (('format', manifest.FORMAT + 1), ('orch_path', '/another/checkout/orch'),
                       ('prefix', '/another/venv')):   # the same version installed elsewhere is other code
        path.write_text(json.dumps({**data, 'header': {**data['header'], key: other}}))
        assert fast(host) is None, key
    for corrupt in (good[: len(good) // 2], '[]', '{"header": {}}', ''):
        path.write_text(corrupt)
        assert fast(host) is None
    host.clear_log()
    rc, out, err = host.cli('resume')   # the full path: nothing to run, and a valid manifest again
    assert rc == 0 and host.launched_tasks() == [], out + err
    assert fast(host) is not None


def test_resume_options_the_fast_path_does_not_answer(host: Host) -> None:
    import argparse

    def args(**kw: Any) -> argparse.Namespace:
        base = {'run_id': None, 'spec_file': None, 'jobs': None, 'quiet': 0, 'verbose': 0, 'keep_going': False,
                'discard_changes': False}
        return argparse.Namespace(**{**base, **kw})
    cwd = os.getcwd()
    os.chdir(host.repo)
    try:
        assert fastpath.resume(args(verbose=1)) is None          # lists every up-to-date step
        assert fastpath.resume(args(spec_file='spec.md')) is None
        assert fastpath.resume(args(jobs=0)) is None              # refused by the full path
        assert fastpath.resume(args(dry_run=True, spec_file='spec.md')) is None   # a dry run with a new spec
        assert fastpath.resume(args(run_id='../r1')) is None
        assert fastpath.resume(args(run_id='other')) is None
        os.environ['GITHUB_STEP_SUMMARY'] = str(host.repo / 'summary.md')
        try:
            assert fastpath.resume(args()) is None                # the full path may append the report
        finally:
            del os.environ['GITHUB_STEP_SUMMARY']
        assert fastpath.resume(args()) == 0
    finally:
        os.chdir(cwd)


# ------------------------------------------------------------------ the signatures themselves (pure)

@pytest.mark.unit
def test_signatures_content_not_mtime(tmp_path: Path) -> None:
    a, b = tmp_path / 'a.txt', tmp_path / 'b.txt'
    a.write_text('one')
    b.write_text('two')
    old = time.time_ns() - 10 * filesig.RACY_NS
    for p in (a, b):
        os.utime(p, ns=(old, old))
    m = manifest.build(str(tmp_path), {}, ['a.txt', 'b.txt', 'missing.txt'], ['.'], {})
    assert m is not None
    assert manifest.first_difference(str(tmp_path), m) is None
    rewrite_same(a)                                    # touched: same content
    assert manifest.first_difference(str(tmp_path), m) is None
    b.write_text('TWO')                                # same size, other content
    assert manifest.first_difference(str(tmp_path), m) == 'b.txt'
    b.write_text('two')
    (tmp_path / 'missing.txt').write_text('')          # appeared (and the listing changed)
    assert manifest.first_difference(str(tmp_path), m) == 'missing.txt'
    (tmp_path / 'missing.txt').unlink()
    assert manifest.first_difference(str(tmp_path), m) is None
    a.unlink()
    assert manifest.first_difference(str(tmp_path), m) == 'a.txt'


@pytest.mark.unit
def test_an_in_place_rewrite_with_its_old_mtime_is_still_seen(tmp_path: Path) -> None:
    f = tmp_path / 'f'
    f.write_text('abc')
    st = f.stat()
    m = manifest.build(str(tmp_path), {}, ['f'], [], {})
    assert m is not None
    with open(f, 'r+') as h:
        h.write('xyz')
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))    # mtime and size as before: ctime and content differ
    assert manifest.first_difference(str(tmp_path), m) == 'f'


@pytest.mark.unit
def test_a_racy_file_is_compared_by_content_even_when_its_stat_is_equal(tmp_path: Path) -> None:
    f = tmp_path / 'f'
    f.write_text('abc')
    m = manifest.build(str(tmp_path), {}, ['f'], [], {})
    assert m is not None and m.files[0][6] is True       # just written: racy
    path, mtime, ctime, size, ino, digest, racy = m.files[0]
    forged = manifest.Manifest(m.header, [(path, mtime, ctime, size, ino, 'not-its-hash', racy)], [], {})
    assert manifest.first_difference(str(tmp_path), forged) == 'f'   # not trusted by stat alone


@pytest.mark.unit
def test_snapshots_differ_when_something_changed_between_them(tmp_path: Path) -> None:
    f = tmp_path / 'f'
    f.write_text('abc')
    one = manifest.build(str(tmp_path), {}, ['f'], ['.'], {})
    two = manifest.build(str(tmp_path), {}, ['f'], ['.'], {}, previous=one)
    assert one is not None and two is not None and manifest.agrees(one, two)
    f.write_text('abd')
    three = manifest.build(str(tmp_path), {}, ['f'], ['.'], {}, previous=two)
    assert three is not None and not manifest.agrees(two, three)


@pytest.mark.unit
def test_load_refuses_other_headers_and_bad_shapes(tmp_path: Path) -> None:
    head = manifest.header(tmp_path, 'r1')
    m = manifest.build(str(tmp_path), head, [], [], {'x': 1})
    assert m is not None
    manifest.save(tmp_path, m)
    assert manifest.load(tmp_path, head) is not None
    assert manifest.load(tmp_path, {**head, 'run_id': 'r2'}) is None
    assert manifest.load(tmp_path, {**head, 'codex_orch': 'other'}) is None
    for text in ('{', 'null', '{"header": 1}', json.dumps({'header': {**head, 'format': manifest.FORMAT},
                                                           'files': [['a']], 'dirs': [], 'answers': {}})):
        manifest.path_of(tmp_path).write_text(text)
        assert manifest.load(tmp_path, head) is None
    manifest.invalidate(tmp_path)
    manifest.invalidate(tmp_path)   # twice: nothing to remove is fine
    assert manifest.load(tmp_path, head) is None


@pytest.mark.unit
@pytest.mark.parametrize('argv', [
    ['status'], ['status', '--json'], ['status', '--watch', '--json'], ['status', '--run-id', 'r1'],
    ['resume'], ['resume', '-q'], ['resume', '-q', '--quiet'], ['resume', '--run-id', 'r1', '-j', '3'],
    ['resume', '--continue', '--discard-changes', '--jobs', '12'], ['resume', '-j', '0'], ['resume', '--dry-run'],
])
def test_the_plain_forms_parse_as_argparse_parses_them(argv: list[str]) -> None:
    from orch.main import build_parser
    simple = fastpath._simple_namespace(argv)
    assert simple is not None
    assert vars(simple) == vars(build_parser(argv[0]).parse_args(argv))


@pytest.mark.unit
@pytest.mark.parametrize('argv', [
    ['status', '--js'], ['status', '--run-id=r1'], ['status', '--run-id'], ['status', '--run-id', '-x'],
    ['resume', '-qq'], ['resume', '-v'], ['resume', '--spec-file', 's.md'], ['resume', '-j', 'x'],
    ['resume', '-j', '-1'], ['resume', '--help'], ['run'], [],
])
def test_other_forms_go_through_argparse(argv: list[str]) -> None:
    assert fastpath._simple_namespace(argv) is None


def test_a_fast_resume_makes_its_run_the_latest_as_a_full_one_does(host: Host) -> None:
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--spec-file', 'spec.md', '--run-id', 'r2')
    assert rc == 0, out + err
    assert host.cli('status')[1].startswith('run r2')
    assert fast(host) is not None   # r2's own manifest
    rc, out, _ = host.cli('resume', '--run-id', RUN)
    assert rc == 0 and out.startswith(f'run {RUN}: 3 done')
    assert host.cli('status')[1].startswith(f'run {RUN}')   # used most recently: the latest now


def test_any_file_of_a_task_directory_and_a_removed_task_are_noticed(host: Host,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    tasks = run_dir(host) / 'tasks'
    # (attempts.json is no input: a cache of the attempts' own files, written once they are a second old)
    for name in sorted(p.name for p in (tasks / 'T2').iterdir() if p.is_file() and p.name != attempts.SUMMARY_FILE):
        path = tasks / 'T2' / name
        data = path.read_bytes()
        path.write_bytes(data + b' ')   # any file beside result.json (execution.json, rounds ...) counts
        assert fast(host) is None, name
        path.write_bytes(data)
        assert fast(host) is not None, name
    shutil.copytree(tasks / 'T3', tasks / 'T9')   # a task the plan no longer has: status lists it as removed
    assert fast(host) is None
    rc, out, _ = full(host, monkeypatch, 'status')
    assert rc == 0 and 'removed' in out and 'T9' in out


@pytest.mark.parametrize('what', ['plan', 'config', 'rule', 'template'])
def test_an_edit_made_during_the_run_is_seen_by_the_next_status(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str], what: str) -> None:
    """The run compiled its graph from the inputs as it read them; an edit made while it went (here by the last
    task's worker, after every other task ran) must not be vouched for by the manifest the run writes."""
    monkeypatch.delenv(fastpath.FULL_CHECK_ENV, raising=False)
    h = make_host(tmp_path, monkeypatch, capsys, THREE_TASK_SCRIPT)
    h.write_plan(three_task_plan())
    edit = {
        'plan': f"sed -i 's/Create src/Make src/' {h.repo / 'plan.json'}",
        'config': f"sed -i 's/    sandbox: read-only/    sandbox: read-only\\n    model: other-model/' "
                  f"{h.repo / '.orchestrator/orchestrator.yaml'}",
        'rule': f"mkdir -p {h.repo / '.orchestrator/rules'} && "
                f"printf 'name: lint\\nscope: task\\nroles: [implementer]\\n"
                f"output: \"{{task_dir}}/lint.json\"\\naction:\\n  shell: \"true\"\\n' > "
                f"{h.repo / '.orchestrator/rules/lint.yaml'}",
        'template': f"echo 'Be brief.' >> {h.repo / '.orchestrator/prompts/implementer.md'}",
    }[what]
    h.script({**THREE_TASK_SCRIPT, 'tasks': {**THREE_TASK_SCRIPT['tasks'], 'T3': {'commands': [edit]}}})
    rc, out, err = h.cli('run', '--plan-file', 'plan.json', '--spec-file', 'spec.md', '--run-id', RUN)
    assert rc == 0, out + err
    assert fast(h) is None   # the manifest does not vouch for a state the run did not see
    rc, out, err = h.cli('status', '--json')
    assert rc == 0, err
    statuses = {t['id']: t['status'] for t in json.loads(out)['tasks']}
    affected = 'T3' if what == 'config' else 'T1'   # the reviewer's model; else the implementer's entry or inputs
    assert statuses[affected] != 'done', statuses
    assert (rc, out, err) == full(h, monkeypatch, 'status', '--json')


def test_a_new_secret_in_the_environment_is_a_new_state(host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    """A secret now in the environment is redacted from the plan entries as they are compared: the one in T1's
    entry makes it differ from its task.json. The manifest of the environment without it must not answer."""
    assert fast(host) is not None
    monkeypatch.setenv('GREETING_TOKEN', 'greet.py')
    assert fast(host) is None
    rc, out, err = full(host, monkeypatch, 'status', '--json')
    assert rc == 0, err
    assert {t['id']: t['status'] for t in json.loads(out)['tasks']}['T1'] == 'stale'
    assert host.cli('status', '--json') == (rc, out, err)


def test_an_edited_launch_record_is_noticed(host: Host) -> None:
    """A row reads each attempt's kind from its launch.json: an edit of it is a new state for status."""
    (launch,) = (run_dir(host) / 'tasks/T2').glob('attempt-*/launch.json')
    launch.write_text(json.dumps({**json.loads(launch.read_text()), 'kind': 'repair'}))
    assert fast(host) is None


@pytest.mark.unit
@pytest.mark.parametrize('count', [0, 1, 3, 7, 9000])
def test_the_manifest_saved_in_two_files_and_chunks_reads_back_as_it_was(tmp_path: Path, count: int) -> None:
    answers = {'status_table': 'T1 done "q" \u00e9\n', 'status_doc': '"\\x\u00e9' * (1 << 19), 'lines': ['a', 'b']}
    where = ['', 'a/', 'a/b/', '/abs/', 'a/b/']   # no directory, nested, absolute, one again after another
    files = [(f'{where[i % 5]}f{i}\u00e9', i, i + 1, i + 2, i + 3, f'h{i}', i % 3 == 0) for i in range(count)]
    files += [('gone', None, None, None, None, None, False), ('/top', 1, 2, 3, 4, 'x', False)]
    m = manifest.Manifest({'h': 1, 'format': manifest.FORMAT}, files, [('d', 1, 'x', False, 2)], answers,
                          {'delta': True})
    manifest.save(tmp_path, m)
    back = manifest.load(tmp_path, {'h': 1})
    assert back is not None
    assert sorted(back.files, key=str) == sorted(m.files, key=str) and len(back.files) == len(m.files)
    assert (back.header, back.dirs, back.answers, back.index) == (m.header, m.dirs, m.answers, m.index)
    # status reads the first file only: the large answer is in the second
    assert 'status_doc' not in json.loads(manifest.path_of(tmp_path).read_bytes())['answers']
    peeked = manifest.peek(tmp_path, {'h': 1})
    assert peeked is not None and peeked.answers == {k: v for k, v in answers.items() if k != 'status_doc'}


@pytest.mark.unit
@pytest.mark.parametrize('damage', ['gone', 'cut', 'other'])
def test_a_second_file_not_the_one_written_with_the_first_vouches_for_nothing(tmp_path: Path, damage: str) -> None:
    """The content hashes and the status document are checked against the hash the first file holds: a second file
    lost, cut short or from another manifest gives no hash (a changed stat is then a difference) and no document."""
    f = tmp_path / 'f'
    f.write_text('abc')
    head = manifest.header(tmp_path, 'r1')
    m = manifest.build(str(tmp_path), head, ['f'], [], {'status_table': 't', 'status_doc': '{}'})
    assert m is not None
    m = manifest.Manifest(m.header, [(*m.files[0][:6], False)], [], m.answers)   # trusted by stat
    manifest.save(tmp_path, m)
    more = tmp_path / manifest.MORE
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))   # same content, another mtime
    good = manifest.peek(tmp_path, head)
    assert good is not None and manifest.first_difference(str(tmp_path), good) is None   # the content hash says so
    assert good.all_answers() == {'status_table': 't', 'status_doc': '{}'}
    if damage == 'gone':
        more.unlink()
    elif damage == 'cut':
        more.write_bytes(more.read_bytes()[:-3])
    else:
        other = manifest.Manifest(m.header, [(m.files[0][0], *m.files[0][1:5], 'bogus', False)], [], m.answers)
        manifest.save(tmp_path / 'elsewhere', other)
        more.write_bytes((tmp_path / 'elsewhere' / manifest.MORE).read_bytes())
    manifest.invalidate(tmp_path / 'none')   # (forget the manifest read above)
    found = manifest.peek(tmp_path, head)
    assert found is not None and found.answers == {'status_table': 't'}
    assert manifest.first_difference(str(tmp_path), found) == 'f'
    assert found.all_answers() is None and found.whole() is None and manifest.load(tmp_path, head) is None


@pytest.mark.unit
def test_a_listing_leaves_out_an_attempts_summary_file_but_not_a_directory_so_named(tmp_path: Path) -> None:
    empty = signing.listing_hash(str(tmp_path))
    (tmp_path / 'attempts.json').write_text('{}')   # a cache any reader of a row may write
    assert signing.listing_hash(str(tmp_path)) == empty
    (tmp_path / 'attempts.json').unlink()
    (tmp_path / 'attempts.json').mkdir()   # e.g. a task of that name in the tasks directory
    assert signing.listing_hash(str(tmp_path)) != empty


def test_a_secret_holding_a_quote_never_reaches_the_manifest_or_a_fast_answer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The status document is kept as JSON text, where a quote in a secret is escaped: it is redacted as data."""
    monkeypatch.delenv(fastpath.FULL_CHECK_ENV, raising=False)
    secret = 'open "sesame" 42'
    monkeypatch.setenv('DOOR_TOKEN', secret)
    h = make_host(tmp_path, monkeypatch, capsys, THREE_TASK_SCRIPT)
    plan = three_task_plan()
    plan['tasks'][1]['title'] = f'Test it with {secret}'
    h.write_plan(plan)
    rc, out, err = h.cli('run', '--plan-file', 'plan.json', '--spec-file', 'spec.md', '--run-id', RUN)
    assert rc == 0, out + err
    assert fast(h) is not None
    stored = (h.run_dir(RUN) / manifest.MANIFEST).read_text()
    assert secret not in stored and json.dumps(secret)[1:-1] not in stored
    for edit in ('none', 'a new title'):   # then answered from the manifest and the edit (orch.runstate.delta)
        if edit != 'none':
            plan['tasks'][2]['title'] = f'Review it with {secret}'
            h.write_plan(plan)
        for args in (('status',), ('status', '--json')):
            for rc, out, err in (h.cli(*args), full(h, monkeypatch, *args)):
                assert rc == 0 and secret not in out + err and json.dumps(secret)[1:-1] not in out + err, (edit, args)
        assert 'Test it with [REDACTED]' in out   # the title, in status --json
    assert 'Review it with [REDACTED]' in out


@pytest.mark.parametrize('what', ['an attempt added', 'a task directory added'])
def test_a_directory_whose_mtime_was_set_back_still_differs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str], what: str) -> None:
    """An entry added to a directory, then the directory's mtime put back (`touch -r`, `cp -a`, `rsync -a` do that):
    its ctime moved, which nobody can set back, so the fast answer is not the old one."""
    monkeypatch.delenv(fastpath.FULL_CHECK_ENV, raising=False)
    h = host_after_a_run(tmp_path, monkeypatch, capsys, 'r1')
    time.sleep(1.1)   # then a manifest whose signatures are not racy: they are trusted by their stat
    with monkeypatch.context() as m:
        m.setenv(fastpath.FULL_CHECK_ENV, '1')
        rc, out, err = h.cli('resume')
    assert rc == 0, out + err
    found = manifest.load(h.run_dir('r1'), manifest.header(h.repo, 'r1'))
    tasks = h.run_dir('r1') / 'tasks'
    assert found is not None and not [d for d in found.dirs if d[0].endswith(('/tasks', '/T1')) and d[3]]
    target = tasks / 'T1' if what == 'an attempt added' else tasks
    st = os.stat(target)
    if what == 'an attempt added':
        shutil.copytree(sorted(target.glob('attempt-*'))[0], target / 'attempt-9')
    else:
        shutil.copytree(tasks / 'T3', tasks / 'T9')
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert manifest.first_difference(str(h.repo), found) is not None
    fast = h.cli('status', '--json')
    with monkeypatch.context() as m:
        m.setenv(fastpath.FULL_CHECK_ENV, '1')
        full = h.cli('status', '--json')
    assert fast == full


@pytest.mark.parametrize('which', [manifest.MANIFEST, manifest.MORE])
def test_a_manifest_nested_too_deep_is_no_manifest(host: Host, monkeypatch: pytest.MonkeyPatch, which: str) -> None:
    """JSON nested deeper than the parser goes (written by anyone who can write the run directory) is a manifest
    that is not one: status and resume take the full path, they do not fail."""
    directory = run_dir(host)
    (directory / which).write_text('[' * 100000 + ']' * 100000)
    if which == manifest.MORE:   # the first file must name it by its hash, or it is not read at all
        import hashlib
        first = json.loads((directory / manifest.MANIFEST).read_text())
        first['more'] = hashlib.blake2b((directory / which).read_bytes(), digest_size=16).hexdigest()
        (directory / manifest.MANIFEST).write_text(json.dumps(first))
    for args in (('status',), ('status', '--json'), ('resume', '--dry-run'), ('resume',)):
        rc, out, err = host.cli(*args)
        assert rc == 0 and 'internal error' not in out + err, (args, out + err)


@pytest.mark.unit
def test_a_racy_signature_is_settled_only_when_its_stat_and_content_still_hold(tmp_path: Path) -> None:
    """A file signed moments after it was written is compared by content at every check (racy); once a second has
    passed, a signature whose stat and content are still the ones signed becomes a plain one. Not when the stat
    moved, nor when the content is not what was signed, nor while it is recent."""
    for name in ('same', 'edited', 'forged', 'recent'):
        (tmp_path / name).write_text('abc')
    st = os.stat(tmp_path / 'recent')   # recent however long the machine takes: its mtime an hour ahead
    os.utime(tmp_path / 'recent', ns=(st.st_atime_ns, time.time_ns() + 3600 * 10**9))
    m = manifest.build(str(tmp_path), {}, ['same', 'edited', 'forged', 'recent'], [], {})
    assert m is not None and all(f[6] for f in m.files)   # all just written
    files = [(*f[:5], 'not-its-hash', f[6]) if f[0] == 'forged' else f for f in m.files]
    time.sleep(1.1)
    (tmp_path / 'edited').write_text('abd')
    settled = manifest.settle_racy(str(tmp_path), files)
    assert {f[0]: f[6] for f in settled} == {'same': False, 'edited': True, 'forged': True, 'recent': True}
    assert [f[:6] for f in settled] == [f[:6] for f in files]   # nothing else changes
    assert manifest.first_difference(str(tmp_path), manifest.Manifest(m.header, settled, [], {})) == 'edited'


@pytest.mark.unit
def test_a_racy_signature_older_than_the_filesystems_clock_is_settled_at_once(tmp_path: Path) -> None:
    """With the run's clock file, a signature taken moments after its file was written is settled without waiting for
    the racy second: the file's times are before the filesystem's clock, touched just now. One with a time at or after
    that clock (a write in the same tick, here a time set ahead) stays racy, and so does one whose content changed."""
    for name in ('written', 'ahead', 'edited'):
        (tmp_path / name).write_text('abc')
    st = os.stat(tmp_path / 'ahead')
    os.utime(tmp_path / 'ahead', ns=(st.st_atime_ns, time.time_ns() + 3600 * 10**9))
    signed_at = time.monotonic()
    m = manifest.build(str(tmp_path), {}, ['written', 'ahead', 'edited'], [], {})
    assert m is not None and all(f[6] for f in m.files)   # all just written: racy by the second
    if any(os.stat(tmp_path / f[0]).st_mtime_ns % 10**9 == 0 for f in m.files):
        pytest.skip('a filesystem with whole-second file times')
    time.sleep(0.05)   # past the filesystem clock's tick (a few ms); a slower machine only moves it further
    with open(tmp_path / 'edited', 'r+') as f:   # same size, same inode: only the content tells
        f.write('abd')
    os.utime(tmp_path / 'edited', ns=(os.stat(tmp_path / 'edited').st_atime_ns, m.files[2][1]))
    without = manifest.settle_racy(str(tmp_path), m.files)
    if time.monotonic() - signed_at < 0.9:   # (a machine that stalled a second has let the second pass)
        assert [f[6] for f in without] == [True, True, True]   # the second has not passed
    settled = manifest.settle_racy(str(tmp_path), m.files, clock=tmp_path / manifest.CLOCK)
    assert {f[0]: f[6] for f in settled} == {'written': False, 'ahead': True, 'edited': True}
    assert (tmp_path / manifest.CLOCK).stat().st_size == 0


def test_a_resume_right_after_doit_wrote_its_database_leaves_it_settled(host: Host) -> None:
    """The manifest a resume writes moments after doit.db was last written signs it settled (the filesystem's clock
    has moved past it), so the next no-op status compares it by stat, not by hashing it."""
    plan = three_task_plan()
    plan['tasks'][2]['description'] += ' Again.'
    host.write_plan(plan)
    rc, out, err = host.cli('resume')
    assert rc == 0, out + err
    run_dir = host.run_dir()
    m = manifest.load(run_dir, manifest.header(host.repo, run_dir.name))
    assert m is not None
    (db,) = [f for f in m.files if f[0].endswith('/doit.db')]
    assert db[6] is False or db[1] % 10**9 == 0, db   # settled (unless the filesystem's times are whole seconds)


@pytest.mark.unit
@pytest.mark.parametrize('kind', ['fifo', 'symlink', 'directory'])
def test_a_clock_file_that_is_no_regular_file_is_no_clock(tmp_path: Path, kind: str) -> None:
    """Whatever was put where the clock file goes (a FIFO would block a plain open for writing, a symlink would
    touch another file), the racy signatures are settled by the second alone, and nothing hangs."""
    clock = tmp_path / manifest.CLOCK
    target = tmp_path / 'elsewhere'
    target.write_text('x')
    if kind == 'fifo':
        os.mkfifo(clock)
    elif kind == 'symlink':
        clock.symlink_to(target)
    else:
        clock.mkdir()
    before = target.stat().st_mtime_ns
    code = ('import sys; from pathlib import Path; from orch.runstate import manifest; '
            'print(manifest._filesystem_now(Path(sys.argv[1])))')
    done = subprocess.run([sys.executable, '-c', code, str(clock)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, 'PYTHONPATH': str(Path(manifest.__file__).parents[2])})
    assert done.returncode == 0 and done.stdout.strip() == 'None', done.stdout + done.stderr
    assert target.stat().st_mtime_ns == before
