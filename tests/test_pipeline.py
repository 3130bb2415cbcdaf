"""Issue 10: the rules are the pipeline, plain doit in parallel is safe, and a crashing step obeys the
error contract (exit 3, a crash log, the task failed with its reason)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from orch.runstate.state import read_result
from tests.support.fake_codex import write_script
from tests.support.gitrepo import commit_all, git
from tests.support.orchtest import THREE_TASK_SCRIPT, Host, edit_config, make_host, three_task_plan


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Host:
    h = make_host(tmp_path, monkeypatch, capsys, {'default': {'answer': 'auto'}})
    h.write_plan(three_task_plan())
    return h


def host_rule(host: Host, text: str, name: str = 'gate.yaml') -> Path:
    path = host.repo / '.orchestrator' / 'rules' / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def builtin_rules_copy(host: Host, monkeypatch: pytest.MonkeyPatch, edit: dict[str, tuple[str, str]]) -> Path:
    """A copy of the built-in rules with edits ({file: (old, new)}), used in place of the shipped ones."""
    from orch.core import resources
    src = resources.builtin_rules_dir()
    dst = host.repo.parent / 'rules'
    dst.mkdir()
    for path in src.glob('*.yaml'):
        text = path.read_text()
        if path.name in edit:
            old, new = edit[path.name]
            assert old in text
            text = text.replace(old, new)
        (dst / path.name).write_text(text)
    monkeypatch.setattr(resources, 'builtin_rules_dir', lambda: dst)
    import orch.engine.inputs
    monkeypatch.setattr(orch.engine.inputs, 'builtin_rules_dir', lambda: dst)
    return dst


def nothing_ran(host: Host) -> bool:
    return host.launches() == [] and not (host.repo / '.orchestrator' / 'runs').exists()


GATE = """name: tests
scope: task
roles: [{role}]
output: "{{task_dir}}/tests.json"
action:
  shell: "true"
"""


@pytest.mark.parametrize('command', ['doctor', 'run'])
def test_a_gate_for_a_misspelt_role_is_refused(host: Host, command: str) -> None:
    path = host_rule(host, GATE.format(role='implementor'))
    args = ['run', '--plan-file', 'plan.json'] if command == 'run' else ['doctor']
    rc, out, err = host.cli(*args)
    assert rc == 2, out + err
    message = out + err
    assert f"{path}: rule 'tests': roles[0]: unknown role 'implementor'" in message
    assert 'configured roles: implementer, navigator, reviewer, tester' in message
    assert nothing_ran(host)


@pytest.mark.parametrize('text, key', [
    ('name: w2\nscope: task\noutput: "{task_dir}/x.json"\naction: codex_worker\n',
     "action: 'codex_worker' is a built-in step of the pipeline"),
    ('name: w2\nscope: task\noutput: "{task_dir}/x.json"\naction: frobnicate\n',
     "action: unknown action 'frobnicate'"),
])
def test_a_host_rule_with_a_builtin_or_unknown_action_is_refused(host: Host, text: str, key: str) -> None:
    path = host_rule(host, text)
    for args in (['doctor'], ['run', '--plan-file', 'plan.json']):
        rc, out, err = host.cli(*args)
        assert rc == 2, out + err
        assert f"{path}: rule 'w2': {key}" in out + err
    assert nothing_ran(host)


@pytest.mark.parametrize('file, old, new, message', [
    # the output other parts of codex-orch read back, moved
    ('work.yaml', 'result: "{task_dir}/result.json"', 'result: "{task_dir}/answer.json"',
     "rule 'work': output.result: must be '{task_dir}/result.json', where codex-orch reads it back"),
    # an input the worker needs, missing
    ('work.yaml', '  prompt: "{task_dir}/prompt.md"   # the output of the `prompt` rule\n', '',
     "rule 'work': input: missing the named input `prompt` (the codex_worker action reads the rendered "
     'prompt sent to Codex from it'),
    # a param the worker uses, missing
    ('work.yaml', '  sandbox: "{sandbox}"\n', '', "rule 'work': params: missing `sandbox`"),
    # an output renamed while its reader still names the old file
    ('prompt.yaml', 'prompt: "{task_dir}/prompt.md"', 'prompt: "{task_dir}/prompt.txt"',
     "rule 'work': input.prompt: '{task_dir}/prompt.md' is not the output of any rule"),
    # a log the action does not keep there
    ('work.yaml', 'log: "{task_dir}/attempt-*"', 'log: "{task_dir}/worker.log"',
     "rule 'work': log: the codex_worker action keeps its log in '{task_dir}/attempt-*'"),
])
def test_a_builtin_rule_its_action_cannot_honour_is_refused(host: Host, monkeypatch: pytest.MonkeyPatch,
                                                            file: str, old: str, new: str, message: str) -> None:
    rules = builtin_rules_copy(host, monkeypatch, {file: (old, new)})
    for args in (['doctor'], ['run', '--plan-file', 'plan.json']):
        rc, out, err = host.cli(*args)
        assert rc == 2, out + err
        shown = out + err
        assert message in shown, shown
        assert str(rules) in shown
    assert nothing_ran(host)


def test_the_worker_honours_its_rule_params(host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    """model and sandbox come from the rule's params, not from a second source in the code."""
    builtin_rules_copy(host, monkeypatch, {'work.yaml': ('model: "{model}"', 'model: "rule-model-{role}"')})
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 0, out + err
    models = {e['task_id']: e['argv'][e['argv'].index('-m') + 1] for e in host.launches()}
    assert models == {'T1': 'rule-model-implementer', 'T2': 'rule-model-tester', 'T3': 'rule-model-reviewer'}


def test_an_exception_in_a_step_is_an_internal_error_with_a_crash_log(host: Host,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import orch.steps.prompt

    def broken(*args: Any, **kwargs: Any) -> str:
        raise UnicodeEncodeError('utf-8', 'x', 0, 1, 'injected')
    monkeypatch.setattr(orch.steps.prompt, 'render', broken)
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 3, out + err
    status = {t['id']: t for t in host.status()['tasks']}
    assert status['T1']['status'] == 'failed'
    reason = status['T1']['reason']
    assert reason.startswith('internal error in prompt:T1: UnicodeEncodeError:'), reason
    assert 'interrupted' not in reason
    log = Path(reason.rsplit('(traceback in ', 1)[1].rstrip(')'))
    assert log.parent == host.run_dir() and log.is_file()
    text = log.read_text()
    for needle in ('codex-orch ', 'python: ', 'platform: ', 'git: git version', 'codex: ', 'argv: ',
                   'Traceback (most recent call last)', 'injected'):
        assert needle in text, needle
    assert 'internal error in prompt:T1' in err
    assert host.launches() == []   # nothing was paid for


def test_plain_doit_in_parallel_commits_each_task_its_own_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """`doit run -n 3 -P thread` never sets a jobs count: the scheduler must still keep tasks apart."""
    tasks = [{'id': t, 'role': 'implementer', 'title': f'Task {t}', 'description': f'Do {t}.', 'depends_on': [],
              'paths': [f'{t.lower()}/*']} for t in ('A', 'B', 'C')]
    host = make_host(tmp_path, monkeypatch, capsys, {'default': {'fail': 'not yet'}})
    edit_config(host.repo, {'failure_retries: 1 ': 'failure_retries: 0 '})   # fail at once, no backoff
    host.write_plan({'version': 1, 'title': 'Parallel', 'tasks': tasks})
    commit_all(host.repo, 'plan')
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--continue')
    assert rc == 1   # the run exists; every task failed without editing anything
    host.script({'default': {'answer': 'auto'}, 'tasks': {
        'A': {'edits': {'a/one.txt': 'A\n'}, 'sleep': 2},   # the slow one: the others commit while it works
        'B': {'edits': {'b/two.txt': 'B\n'}},
        'C': {'edits': {'c/three.txt': 'C\n'}}}})
    host.clear_log()
    done = subprocess.run([sys.executable, '-m', 'doit', 'run', '-n', '3', '-P', 'thread'], cwd=host.repo,
                          capture_output=True, text=True, env=os.environ.copy(), timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    spans = {e['task_id']: (e['started_at'], e['ended_at']) for e in host.launches()}
    assert spans["B"][0] < spans["A"][1] and spans['C'][0] < spans['A'][1], spans   # really in parallel
    branch = host.shared_branch()
    for tid, own in (('A', 'a/one.txt'), ('B', 'b/two.txt'), ('C', 'c/three.txt')):
        commit = host.result(tid)['commit']
        files = git(host.repo, 'show', '--format=', '--name-only', commit).splitlines()
        assert [f for f in files if not f.startswith('docs/')] == [own], (tid, files)
        assert git(host.repo, 'show', f'{branch}:{own}').strip() == tid
    subjects = git(host.repo, 'log', '--format=%s', branch).splitlines()
    assert sorted(s for s in subjects if s[:2] in ('A:', 'B:', 'C:')) == ['A: Task A', 'B: Task B', 'C: Task C']
    assert json.loads(subprocess.run([sys.executable, '-m', 'orch', 'status', '--json'], cwd=host.repo,
                                     capture_output=True, text=True, check=True).stdout)['tasks'][0]['status'] == 'done'


def test_a_gate_sees_the_task_s_landed_commit_whatever_its_cwd(host: Host) -> None:
    """A gate tests exactly its task's landed commit: a checkout of it, never the run's worktree (where the user
    may have uncommitted changes)."""
    host_rule(host, 'name: where\nscope: task\nroles: [implementer]\noutput: "{task_dir}/where.json"\n'
                    'action:\n  shell: \'echo "$ORCH_WORKTREE" > where.txt; git -C "$ORCH_WORKTREE" rev-parse HEAD '
                    '>> where.txt\'\n  cwd: "{task_dir}"\n')
    write_script(host.bin, THREE_TASK_SCRIPT)
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 0, out + err
    seen, head = (host.run_dir() / 'tasks' / 'T1' / 'where.txt').read_text().split()
    assert Path(seen).name == f'{host.run_dir().name}.gate.T1.where'
    assert head == read_result(host.run_dir() / 'tasks' / 'T1')['commit']


def test_a_failing_run_level_rule_fails_the_run(host: Host) -> None:
    """A run-scope shell rule belongs to no task: its failure must still reach the exit code."""
    host_rule(host, 'name: lint_all\nscope: run\noutput: "{run_dir}/lint_all.json"\ninput: "{all_results}"\n'
                    'action:\n  shell: "exit 4"\n', name='lint.yaml')
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 1, out + err
    assert 'FAILED lint_all:' in out and host.statuses() == {'T1': 'done', 'T2': 'done', 'T3': 'done'}


def test_a_kill_between_result_and_state_leaves_no_task_stuck(host: Host) -> None:
    """result.json written, state.json still 'running' by a dead process, doit's record lost: the resume
    finishes the state instead of leaving the task 'interrupted' for ever."""
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--run-id', 'r1')
    assert rc == 0, out + err
    state_file = host.run_dir() / 'tasks' / 'T3' / 'state.json'
    st = json.loads(state_file.read_text())
    state_file.write_text(json.dumps({**st, 'status': 'running', 'pid': 2 ** 22 + 1}))
    (host.run_dir() / 'doit.db').unlink()
    host.clear_log()
    rc, out, err = host.cli('resume')
    assert rc == 0, out + err
    assert host.launches() == [] and host.statuses() == {'T1': 'done', 'T2': 'done', 'T3': 'done'}


def test_a_missing_result_is_reason_no_result(host: Host) -> None:
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 0, out + err
    (host.run_dir() / 'tasks' / 'T2' / 'result.json').unlink()
    rows = {t['id']: t for t in host.status()['tasks']}
    assert rows['T2']['status'] == 'pending'
    assert rows['T2']['reasons'] == [{'code': 'no_result', 'detail': 'it has no valid result'}]
