"""orch.remote.run_unit without a cluster: a unit run in-process with a scripted codex (tests/support/fake_codex.py),
which, unlike the real CLI, is not sandboxed: what it does stands for an agent that got past the sandbox, or a
sandbox configured open. A worker is untrusted code."""
from __future__ import annotations

import dataclasses
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from orch.adapters import git as orch_git
from orch.core.config import CodexSettings
from orch.remote import run_unit as ru
from orch.remote.unit import WorkOutcome, WorkUnit
from tests.support.dask_cluster import outside_tmp
from tests.support.fake_codex import install_fake_codex, read_log
from tests.support.gitrepo import commit_all, git, write_files

SCHEMA = {'type': 'object', 'additionalProperties': False, 'required': ['status', 'summary'],
          'properties': {'status': {'type': 'string', 'enum': ['done', 'blocked']}, 'summary': {'type': 'string'}}}
LIMITS = {'timeout_total': 60, 'timeout_idle': 60, 'timeout_first_event': 60, 'schema_retries': 0,
          'failure_retries': 0, 'retry_backoff': 0.1}


@pytest.fixture
def worker_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """This process as a worker machine: its own HOME (the unit directory's default; outside /tmp, where pytest's
    directories are), TMPDIR and git config."""
    with outside_tmp('worker-home') as home:
        yield _machine(tmp_path, monkeypatch, home)


def _machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, home: Path) -> Path:
    (tmp_path / 'worker-tmp').mkdir()
    (home / '.gitconfig').write_text('')
    monkeypatch.setenv('HOME', str(home))
    monkeypatch.delenv('XDG_CACHE_HOME', raising=False)
    monkeypatch.delenv('CODEX_ORCH_UNIT_DIR', raising=False)
    monkeypatch.setenv('TMPDIR', str(tmp_path / 'worker-tmp'))
    monkeypatch.setenv('GIT_CONFIG_GLOBAL', str(home / '.gitconfig'))
    monkeypatch.setenv('GIT_CONFIG_NOSYSTEM', '1')
    return home


def make_unit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, behaviour: dict,
              files: dict[str, str] | None = None) -> tuple[WorkUnit, Path]:
    src = tmp_path / 'src'
    src.mkdir()
    git(src, 'init', '-q', '-b', 'main')
    write_files(src, files or {'README.md': 'hello\n'})
    commit_all(src, 'base')
    snapshot = orch_git.snapshot_commit(src, 'HEAD')
    ref = 'refs/orch-remote/r/T1/start'
    bundle = orch_git.create_bundle(src, snapshot, ref)
    fake = install_fake_codex(tmp_path / 'fake-codex', {'default': behaviour})
    monkeypatch.setenv('CODEX_BIN', str(fake / 'codex'))
    unit = WorkUnit(key='codex-orch-r-T1-abc-1', run_id='r', task_id='T1', role='implementer',
                    prompt='Task id: T1\nDo it.\n', schema=SCHEMA, codex=CodexSettings().model_dump(),
                    extra_args=[], sandbox='workspace-write', model=None, limits=LIMITS, checks=[],
                    repair_rounds=0, check_timeout=10.0, bundle=bundle, bundle_ref=ref, snapshot=snapshot)
    return unit, src


def test_a_unit_commits_on_the_snapshot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, worker_machine: Path) -> None:
    probe = tmp_path / 'where.txt'
    unit, src = make_unit(tmp_path, monkeypatch, {'edits': {'a.py': 'A = 1\n'},
                                                   'commands': [f'pwd > {probe}; ls .. >> {probe}']})
    out = ru.run_unit(unit)
    assert out.status == 'done', out.reason
    assert out.bundle is not None and out.commit
    commit = orch_git.fetch_bundle(src, out.bundle, out.bundle_ref or '', 'refs/check/result')
    assert orch_git.parents_of(src, commit) == [unit.snapshot]
    assert git(src, 'show', f'{commit}:a.py') == 'A = 1'
    # the agent's working directory is a plain repository (its .git the top-level one Codex keeps read-only),
    # in a unit directory under the worker's cache, not under /tmp or $TMPDIR
    cwd, *beside = probe.read_text().split()
    assert Path(cwd).name == 'work' and Path(cwd).is_relative_to(worker_machine / '.cache' / 'codex-orch' / 'units')
    assert sorted(beside) == ['schema.json', 'task', 'work']
    assert not Path(cwd).exists()   # removed when the unit ended


def test_a_filter_driver_written_into_git_config_never_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             worker_machine: Path) -> None:
    """The escape: a clean filter in the repository's config and `*.py filter=x` in .gitattributes would run the
    payload at `git add --all`, with the worker's environment (its provider key)."""
    marker = tmp_path / 'payload-ran'
    unit, _ = make_unit(tmp_path, monkeypatch, {
        'edits': {'a.py': 'A = 1\n', '.gitattributes': '*.py filter=x\n'},
        'commands': [f"git config filter.x.clean 'touch {marker}; cat'"]})
    out = ru.run_unit(unit)
    assert not marker.exists()
    assert out.status == 'failed' and out.outcome == 'git-config-changed', (out.status, out.reason)
    assert '.git/config' in (out.reason or '') and out.bundle is None


SETUP_FILES = {'README.md': 'hello\n', '.gitignore': '*.mo\n', 'app.po': 'msgstr "salut"\n'}


def test_worktree_setup_runs_in_the_scratch_checkout_before_the_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                       worker_machine: Path) -> None:
    seen = tmp_path / 'seen-by-worker.txt'
    unit, src = make_unit(tmp_path, monkeypatch, {'edits': {'a.py': 'A = 1\n'}, 'commands': [f'cat app.mo > {seen}']},
                          SETUP_FILES)
    unit = dataclasses.replace(unit, setup=['sed -n "s/^msgstr //p" app.po > app.mo'], checks=['grep -q salut app.mo'])
    out = ru.run_unit(unit)
    assert out.status == 'done', out.reason
    assert seen.read_text() == '"salut"\n'
    assert [(s['exit_code'], s['log']) for s in out.setup] == [(0, 'setup/1.log')] and 'setup/1.log' in out.files
    assert [c['passed'] for c in out.checks] == [True]
    commit = orch_git.fetch_bundle(src, out.bundle or b'', out.bundle_ref or '', 'refs/check/result')
    assert git(src, 'show', '--name-only', '--format=', commit) == 'a.py'   # the ignored build output stays out


def test_a_failing_setup_fails_the_unit_before_its_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          worker_machine: Path) -> None:
    unit, _ = make_unit(tmp_path, monkeypatch, {'edits': {'a.py': 'A = 1\n'}}, SETUP_FILES)
    unit = dataclasses.replace(unit, setup=['echo "msgfmt: not found"; exit 3'])
    out = ru.run_unit(unit)
    assert (out.status, out.outcome) == ('failed', 'setup-failed')
    assert out.reason == ('setup failed: echo "msgfmt: not found"; exit 3 (exit 3): msgfmt: not found; the worker '
                          'was not started')
    assert [(s['exit_code'], s['tail']) for s in out.setup] == [(3, 'msgfmt: not found')]
    assert read_log(tmp_path / 'fake-codex') == [] and out.bundle is None


def test_a_unit_directory_under_tmpdir_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  worker_machine: Path) -> None:
    monkeypatch.setenv('CODEX_ORCH_UNIT_DIR', str(tmp_path / 'worker-tmp' / 'units'))
    unit, _ = make_unit(tmp_path, monkeypatch, {})
    out = ru.run_unit(unit)
    assert out.status == 'error' and 'CODEX_ORCH_UNIT_DIR' in (out.reason or ''), out.reason
    assert str(tmp_path / 'worker-tmp') in (out.reason or '')


def test_an_outcome_over_the_size_limit_is_not_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ru, 'MAX_OUTCOME_BYTES', 1000)
    out = WorkOutcome(key='k', status='done', files={'attempt-1/events.jsonl': b'x' * 800}, bundle=b'y' * 300,
                      commit='c' * 40, bundle_ref='refs/orch/result')
    out = ru.capped(out)
    assert out.status == 'failed' and out.outcome == 'outcome-too-large' and out.files == {} and out.bundle is None
    assert 'more than the limit of' in (out.reason or '')


def test_a_bundle_with_a_dot_git_path_is_refused(tmp_path: Path) -> None:
    """A commit whose tree holds `.git/config` (git itself never writes one): refused by the coordinator's check,
    with a message that says so (orch.steps.remote_work.dot_git_paths)."""
    from orch.steps.remote_work import dot_git_paths
    repo = tmp_path / 'r'
    repo.mkdir()
    git(repo, 'init', '-q')
    (repo / 'f').write_text('x\n')
    commit_all(repo, 'base')
    env = {**os.environ, 'GIT_AUTHOR_NAME': 'a', 'GIT_AUTHOR_EMAIL': 'a@b', 'GIT_COMMITTER_NAME': 'a',
           'GIT_COMMITTER_EMAIL': 'a@b'}

    def run(*args: str, stdin: str | None = None) -> str:
        return subprocess.run(['git', '-C', str(repo), *args], input=stdin, capture_output=True, text=True,
                              check=True, env=env).stdout.strip()
    blob = run('hash-object', '-w', '--stdin', stdin='[filter "x"]\n\tclean = sh payload.sh\n')
    sub = run('mktree', stdin=f'100644 blob {blob}\tconfig\n')
    tree = run('mktree', stdin=f'040000 tree {sub}\t.GIT\n100644 blob {run("rev-parse", "HEAD:f")}\tf\n')
    commit = run('commit-tree', tree, '-p', 'HEAD', '-m', 'evil')
    changes = orch_git.tree_changes(repo, 'HEAD', commit)
    assert dot_git_paths([c.path for c in changes]) == ['.GIT/config']
    assert dot_git_paths(['src/.gitignore', 'a/.github/x', 'b/.git']) == ['b/.git']


def test_the_coordinator_refuses_an_outcome_over_the_size_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    from orch.steps import remote_work
    monkeypatch.setattr(ru, 'MAX_OUTCOME_BYTES', 1000)   # one limit, one check: the worker's and the coordinator's
    big = WorkOutcome(key='k', status='done', answer={'x': 1}, usage={'input_tokens': 5},
                      files={'attempt-1/events.jsonl': b'x' * 2000})
    out = remote_work.capped(big)
    assert out.status == 'failed' and out.outcome == 'outcome-too-large' and out.files == {}
    assert out.usage == {'input_tokens': 5} and 'more than the limit of' in (out.reason or '')
    small = WorkOutcome(key='k', status='done', files={'a': b'x'})
    assert remote_work.capped(small) is small


def test_a_unit_directory_in_a_writable_root_of_the_codex_config_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, worker_machine: Path) -> None:
    units = worker_machine / 'units'
    home = tmp_path / 'codex-home'
    home.mkdir()
    (home / 'config.toml').write_text(f'[sandbox_workspace_write]\nwritable_roots = ["{worker_machine}"]\n')
    monkeypatch.setenv('CODEX_HOME', str(home))
    monkeypatch.setenv('CODEX_ORCH_UNIT_DIR', str(units))
    unit, _ = make_unit(tmp_path, monkeypatch, {})
    out = ru.run_unit(unit)
    assert out.status == 'error' and 'writable_roots' in (out.reason or ''), out.reason
    assert f'is under {worker_machine}' in (out.reason or ''), out.reason
