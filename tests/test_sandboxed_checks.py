"""Issue 19: checks, gates and setup commands run the worker's code inside Codex's own sandbox (`codex sandbox`
of the pinned CLI, orch/adapters/sandbox.py): they write only the task's checkout, get no secret-looking
variable, and a run whose sandbox cannot work refuses to start. Real processes, the real sandbox."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orch.adapters.codex_bin import find_codex
from tests.support.gitrepo import commit_all, git
from tests.support.orchtest import Host, make_host

if find_codex() is None:   # pragma: no cover - the pinned CLI is part of a source checkout
    pytest.skip('the pinned Codex CLI is not installed (tools/codex-cli)', allow_module_level=True)

TOKEN = 'ghp_' + 'Q7x' * 12


def make(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any, edits: dict[str, str],
         checks: list[str], config: str = '') -> Host:
    host = make_host(tmp_path, monkeypatch, capsys, {'default': {'edits': edits}})
    if config:
        path = host.repo / '.orchestrator' / 'orchestrator.yaml'
        path.write_text(path.read_text() + '\n' + config)
    host.write_plan({'version': 1, 'title': 'Sandbox', 'tasks': [
        {'id': 'T1', 'role': 'implementer', 'title': 'Work', 'description': 'Do it.', 'paths': ['*', '*/*'],
         'checks': checks}]})
    commit_all(host.repo, 'plan')
    return host


def add_rule(host: Host, text: str) -> None:
    (host.repo / '.orchestrator' / 'rules').mkdir(exist_ok=True)
    (host.repo / '.orchestrator' / 'rules' / 'gate.yaml').write_text(text)
    commit_all(host.repo, 'gate')


def test_a_check_writing_outside_the_checkout_fails_and_writes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    victim = tmp_path / 'victim.txt'
    host = make(tmp_path, monkeypatch, capsys, {'check.sh': f'echo owned > {victim} && echo inside > in.txt\n'},
                ['sh check.sh'])
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 1, out + err
    assert not victim.exists()
    row = host.status()['tasks'][0]
    assert row['status'] == 'failed' and row['reason'].startswith('checks failed: sh check.sh (exit 2)')
    assert 'Read-only file system' in row['checks'][0]['tail']


def test_a_planted_pytest_sees_no_token_and_none_reaches_a_commit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    monkeypatch.setenv('GITHUB_TOKEN', TOKEN)
    shadow = ('import os\n'
              "open('token.txt', 'w').write(os.environ.get('GITHUB_TOKEN', ''))\n"
              "print('1 passed')\n")
    host = make(tmp_path, monkeypatch, capsys, {'pytest/__init__.py': '', 'pytest/__main__.py': shadow},
                ['python -m pytest -q'])
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 0, out + err   # the shadow "passes": it ran, in the checkout, and wrote token.txt there
    branch = host.shared_branch()
    assert git(host.repo, 'show', f'{branch}:token.txt') == ''
    history = git(host.repo, 'log', '-p', '--all', '--format=%H %B')
    assert 'pytest/__main__.py' in history and TOKEN not in history



def test_unsandboxed_checks_and_setup_get_no_token_either(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    """`check_sandbox: none` lifts the sandbox, not the secrets: a planted pytest run as a check (and a setup
    command) still runs the worker's code, and gets none of the variables workers do not get."""
    monkeypatch.setenv('GITHUB_TOKEN', TOKEN)
    monkeypatch.setenv('ORCH_TEST_SEEN', str(tmp_path / 'seen'))   # unsandboxed: it may write here
    shadow = ('import os\n'
              "open(os.environ['ORCH_TEST_SEEN'] + '-check', 'w').write(os.environ.get('GITHUB_TOKEN', 'none'))\n"
              "print('1 passed')\n")
    host = make(tmp_path, monkeypatch, capsys, {'pytest/__init__.py': '', 'pytest/__main__.py': shadow},
                ['python -m pytest -q'])
    path = host.repo / '.orchestrator' / 'orchestrator.yaml'
    text = path.read_text().replace('  check_sandbox: role ', '  check_sandbox: none ')
    text = text.replace('  setup: []', '  setup: [\'printf "%s" "${GITHUB_TOKEN:-none}" > "$ORCH_TEST_SEEN-setup"\']')
    path.write_text(text)
    commit_all(host.repo, 'unsandboxed')
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 0, out + err
    assert (tmp_path / 'seen-setup').read_text() == 'none'
    assert (tmp_path / 'seen-check').read_text() == 'none'


GATE_OUTSIDE = """name: outside_gate
scope: task
roles: [implementer]
output: "{{task_dir}}/outside_gate.json"
action:
  shell: "echo gate > {target}"
{sandbox}"""


@pytest.mark.parametrize('unsandboxed', [True, False])
def test_only_a_sandbox_none_gate_writes_outside_and_doctor_lists_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any, unsandboxed: bool) -> None:
    target = tmp_path / 'gate-wrote.txt'
    host = make(tmp_path, monkeypatch, capsys, {'a.txt': 'a\n'}, [])
    add_rule(host, GATE_OUTSIDE.format(target=target, sandbox='  sandbox: none\n' if unsandboxed else ''))
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == (0 if unsandboxed else 1), out + err
    assert target.exists() == unsandboxed
    rc, out, err = host.cli('doctor')
    line = next(x for x in out.splitlines() if 'sandbox:' in x and x.split()[1] == 'sandbox:')
    assert line.startswith('ok') and ('rule outside_gate' in line) == unsandboxed


def test_a_sandbox_that_does_not_work_refuses_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: Any) -> None:
    broken = tmp_path / 'codex-no-sandbox'
    broken.write_text('#!/bin/sh\nif [ "$1" = sandbox ]; then echo "bwrap: No permissions" >&2; exit 1; fi\n'
                      f'exec {tmp_path / "bin" / "codex"} "$@"\n')
    broken.chmod(0o755)
    host = make(tmp_path, monkeypatch, capsys, {'a.txt': 'a\n'}, ['true'], config=f'codex:\n  binary: {broken}\n')
    rc, out, err = host.cli('run', '--plan-file', 'plan.json')
    assert rc == 2, out + err
    assert 'Codex sandbox, which does not work here' in err and 'bwrap: No permissions' in err
    assert host.launches() == []
    assert not (host.repo / '.orchestrator' / 'runs').exists()
    assert git(host.repo, 'status', '--porcelain') == ''
