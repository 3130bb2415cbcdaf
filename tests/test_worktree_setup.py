"""`worktree.setup`: commands run in every new checkout of a task before its worker starts, so that checks and
gates test what the user's checkout tests (git-ignored build outputs); a failing or hanging one fails the task,
with its output, before any model request."""
from __future__ import annotations

import json
import signal
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from tests.support.gitrepo import commit_all, git
from tests.support.orchtest import Host, cli_subprocess, edit_config, make_host
from tests.support.procs import sleeping, unique_nap, wait_for

# The "user's checkout" builds locale/app.mo (git-ignored) from locale/app.po; the tests need it.
FILES = {'README.md': 'hello\n', '.gitignore': 'locale/*.mo\n', 'locale/app.po': 'msgid "hi"\nmsgstr "salut"\n'}
BUILD = 'sed -n "s/^msgstr //p" locale/app.po > locale/app.mo'
CHECK = 'grep -q salut locale/app.mo'


def plan(checks: list[str] | None = None, tasks: int = 1) -> dict[str, Any]:
    return {'version': 1, 'title': 'Setup', 'tasks': [
        {'id': f'T{n}', 'role': 'implementer', 'title': f'Task {n}', 'description': 'Do it.', 'paths': [f'src/{n}.py'],
         'depends_on': [f'T{n - 1}'] if n > 1 else [], 'checks': [CHECK] if checks is None else checks}
        for n in range(1, tasks + 1)]}


def make(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any, script: dict[str, Any],
         setup: list[str] | None, config: dict[str, str] | None = None, the_plan: dict[str, Any] | None = None) -> Host:
    host = make_host(tmp_path, monkeypatch, capsys, script, files=FILES)
    edit_config(host.repo, {**({'  setup: []': f'  setup: {json.dumps(setup)}'} if setup is not None else {}),
                            **(config or {})})
    host.write_plan(the_plan or plan())
    commit_all(host.repo, 'plan and config')
    return host


def row(host: Host, task_id: str = 'T1') -> dict[str, Any]:
    return next(t for t in host.status()['tasks'] if t['id'] == task_id)


def attempts(host: Host, task_id: str = 'T1') -> list[Path]:
    return sorted((host.run_dir() / 'tasks' / task_id).glob('attempt-*'))


@pytest.mark.parametrize('with_setup', [True, False])
def test_setup_builds_the_ignored_file_a_check_needs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any,
                                                     with_setup: bool) -> None:
    seen = tmp_path / 'seen-by-worker.txt'   # outside the repository: what the worker found in its checkout
    where = tmp_path / 'where-seen-by-worker.txt'
    script = {'tasks': {'T1': {'edits': {'src/1.py': 'X = 1\n'}, 'commands': [
        f'cat locale/app.mo > {seen} || true', f'cat locale/where.mo > {where} || true']}}}
    host = make(tmp_path, monkeypatch, capsys, script,
                [BUILD, 'echo "task $ORCH_TASK_ID in $ORCH_WORKTREE" > locale/where.mo'] if with_setup else None,
                config={'repair_rounds: 2 ': 'repair_rounds: 0 '})
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    t1 = row(host)
    if not with_setup:   # the same check on the same checkout, without the build it needs: it fails
        assert rc == 1, out + err
        assert t1['status'] == 'failed' and t1['reason'].startswith(f'checks failed: {CHECK} (exit 2)'), t1['reason']
        assert t1['setup'] == [] and seen.read_text() == ''
        return
    assert rc == 0, out + err
    assert t1['status'] == 'done' and [c['passed'] for c in t1['checks']] == [True]
    assert seen.read_text() == '"salut"\n'   # built before the worker started
    assert [(s['command'], s['exit_code'], s['log']) for s in t1['setup']] == [
        (BUILD, 0, f'{host.run_dir().relative_to(host.repo)}/tasks/T1/setup/1.log'),
        ('echo "task $ORCH_TASK_ID in $ORCH_WORKTREE" > locale/where.mo', 0,
         f'{host.run_dir().relative_to(host.repo)}/tasks/T1/setup/2.log')]
    checkout = host.repo / '.orchestrator' / 'worktrees' / f'{host.run_dir().name}.tasks' / 'T1'
    assert where.read_text() == f'task T1 in {checkout}\n'   # the task's own checkout, as its checks see it
    # the built files stay out of the task's commit (git ignores them), which holds the worker's work only
    assert git(host.repo, 'show', '--name-only', '--format=', host.shared_branch()) == 'src/1.py'
    report = (host.run_dir() / 'report.md').read_text()
    assert f'**T1** setup `{BUILD}`: passed' in report
    edit_config(host.repo, {'> locale/where.mo': '> locale/where.mo; true'})
    host.clear_log()
    assert host.statuses() == {'T1': 'done'}   # another setup is no input of the work: nothing runs again
    assert host.cli('resume')[0] == 0 and host.launches() == []


def test_a_failing_setup_fails_the_task_with_its_output_before_any_model_request(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    host = make(tmp_path, monkeypatch, capsys, {'default': {'edits': {'src/1.py': 'X = 1\n'}}},
                ['echo compiling', 'echo "msgfmt: command not found" >&2; exit 4', 'echo third'],
                the_plan=plan([]))
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 1, out + err
    assert host.launches() == [] and attempts(host) == []   # no codex was started, nothing paid
    reason = ('setup failed: echo "msgfmt: command not found" >&2; exit 4 (exit 4): msgfmt: command not found; '
              'the worker was not started')
    t1 = row(host)
    assert (t1['status'], t1['reason']) == ('failed', reason)
    assert [(s['exit_code'], s['tail']) for s in t1['setup']] == [(0, 'compiling'), (4, 'msgfmt: command not found')]
    assert f'T1 failed: {reason}' in out
    report = (host.run_dir() / 'report.md').read_text()
    assert '## Failures' in report and '  msgfmt: command not found' in report
    suite = ET.parse(host.run_dir() / 'junit.xml').getroot().find('testsuite')
    assert suite is not None and suite.get('failures') == '1'
    failure = suite.find('testcase/failure')
    assert failure is not None and 'msgfmt: command not found' in (failure.text or '')
    assert json.loads((host.run_dir() / 'summary.json').read_text())['counts'] == {'failed': 1}
    # fixed, the task runs again: setup first, then its worker
    edit_config(host.repo, {'exit 4': 'true'})
    rc, out, err = host.cli('resume')
    assert rc == 0, out + err
    assert host.launched_tasks() == ['T1']
    assert [(s['exit_code'], s['tail']) for s in row(host)['setup']] == [
        (0, 'compiling'), (0, 'msgfmt: command not found'), (0, 'third')]


def test_a_setup_hanging_past_its_timeout_is_killed_with_its_process_group(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    # In the sandbox's PID namespace `$!` means nothing out here: its child is found by its unique command line.
    nap = unique_nap()
    command = f'sleep {nap} & echo building; wait'
    host = make(tmp_path, monkeypatch, capsys, {}, [command],
                config={'setup_timeout: 1800': 'setup_timeout: 1'})
    started = time.monotonic()
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 1, out + err
    assert time.monotonic() - started < 60
    t1 = row(host)
    assert t1['reason'] == f'setup failed: {command} (timed out after 1 s): building; the worker was not started'
    assert t1['setup'][0]['exit_code'] is None
    assert host.launches() == [] and attempts(host) == []
    wait_for(lambda: not sleeping(nap), timeout=10)   # its background child went with it


def test_setup_runs_for_each_fresh_execution_not_when_an_interrupted_one_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    """A kill during a repair round: the resume goes on in the checkout it kept, without a second setup; a task
    that runs again afresh (its inputs changed) gets its setup again."""
    edit = {'src/1.py': 'X = 1\n'}
    host = make(tmp_path, monkeypatch, capsys,
                {'tasks': {'T1': [{'edits': edit}, {'edits': {'src/1.py': 'X = 2\n'}, 'sleep': 30}]}},
                ['echo "setup $ORCH_TASK_ID $(cat /proc/sys/kernel/random/uuid)"', BUILD],
                the_plan=plan(['test -f src/done.txt']))

    def setup_mark() -> str:   # a setup that ran says so in its output, differently each time
        return str(row(host)['setup'][0]['tail'])
    proc = cli_subprocess(host.repo, 'run', '--plan-file', 'plan.json')
    try:
        def repairing() -> bool:
            found = list((host.repo / '.orchestrator' / 'runs').glob('*/tasks/T1/rounds.json'))
            return bool(found) and json.loads(found[0].read_text()).get('phase') == 'repairing' and \
                len(list(found[0].parent.glob('attempt-*/events.jsonl'))) >= 2
        wait_for(repairing, timeout=60)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    first = setup_mark()
    assert first.startswith('setup T1 ')
    host.script({'tasks': {'T1': [{'edits': {'src/done.txt': 'ok\n'}}]}})
    rc, out, err = host.cli('resume')
    assert rc == 0, out + err
    assert setup_mark() == first               # the interrupted execution went on in its checkout
    assert host.launches()[-1]['resume']        # in the same thread: the repair round
    the_plan = plan(['test -f src/done.txt'])
    the_plan['tasks'][0]['description'] = 'Do it again.'
    host.write_plan(the_plan)
    rc, out, err = host.cli('resume')
    assert rc == 0, out + err
    assert setup_mark() not in ('', first)     # a fresh execution: setup again


def test_each_per_task_worktree_gets_its_setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: Any) -> None:
    host = make(tmp_path, monkeypatch, capsys, {'tasks': {'T1': {'edits': {'src/1.py': 'X = 1\n'}},
                                                          'T2': {'edits': {'src/2.py': 'Y = 2\n'}}}},
                [BUILD], config={'use_single_workspace: true': 'use_single_workspace: false'},
                the_plan=plan(tasks=2))
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 0, out + err
    for task_id in ('T1', 'T2'):
        assert [s['passed'] for s in row(host, task_id)['setup']] == [True]
        worktree = host.repo / '.orchestrator' / 'worktrees' / host.run_dir().name / task_id
        assert (worktree / 'locale' / 'app.mo').read_text() == '"salut"\n'


@pytest.mark.parametrize('value, problem', [
    ('{setup_timeout: soon}', "worktree.setup_timeout: Input should be a valid number, unable to parse string as a "
                              "number (got 'soon')"),
    ('{setup: make}', "worktree.setup: Input should be a valid list (got 'make')"),
    ('{setup: [""]}', "worktree.setup[0]: String should have at least 1 character (got '')"),
    ('{steup: [make]}', 'worktree.steup: unknown key (remove it or check its spelling)'),
])
def test_a_bad_setup_config_exits_2_naming_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any,
                                                   value: str, problem: str) -> None:
    host = make(tmp_path, monkeypatch, capsys, {}, None)
    path = host.repo / '.orchestrator' / 'orchestrator.yaml'
    text = path.read_text()
    start = text.index('worktree:\n')
    end = text.index('\n\n', start)
    path.write_text(f'{text[:start]}worktree: {value}{text[end:]}')
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 2, out + err
    assert f'  {problem}' in err.splitlines(), err
    assert host.launches() == [] and not (host.repo / '.orchestrator' / 'runs').exists()


@pytest.mark.parametrize('with_setup', [True, False])
def test_a_gate_s_snapshot_gets_the_setup_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any,
                                              with_setup: bool) -> None:
    """A gate tests a fresh snapshot of the task's landed commit: it needs the ignored build output as much as the
    task's checks did; without setup, that is the gate's failure, with the evidence."""
    host = make(tmp_path, monkeypatch, capsys, {'tasks': {'T1': {'edits': {'src/1.py': 'X = 1\n'}}}},
                [BUILD] if with_setup else None, the_plan=plan(checks=[]))
    rule = host.repo / '.orchestrator' / 'rules' / 'gate.yaml'
    rule.parent.mkdir(parents=True, exist_ok=True)
    rule.write_text('name: l10n_gate\nscope: task\nroles: [implementer]\ninput: ["{task_dir}/result.json"]\n'
                    f'output: "{{task_dir}}/l10n_gate.json"\naction:\n  shell: {json.dumps(CHECK)}\n')
    commit_all(host.repo, 'gate')
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    gates = row(host)['gates']
    assert [g['name'] for g in gates] == ['l10n_gate']
    if with_setup:
        assert rc == 0 and gates[0]['passed'], out + err
    else:
        assert rc == 1 and not gates[0]['passed'], out + err
