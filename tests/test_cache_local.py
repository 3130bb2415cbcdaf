"""Issue 20: the machine's result cache, a bare git repository shared by every repository on the machine. A
result paid for in one repository is a hit in another that shares no cache remote with it; the hit is replayed
and verified there exactly as one from the repository's own refs."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from orch.adapters.cache_local import LocalStore
from tests.support.gitrepo import commit_all, git
from tests.support.orchtest import Host
from tests.test_cache import clone, host_a, plan, tree

CACHE_REFS = 'refs/codex-orch/cache/'


def refs(repo: Path) -> list[str]:
    return git(repo, 'for-each-ref', '--format=%(refname)', CACHE_REFS).splitlines()


def two_repos(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any, local: str) -> tuple[Host, Host, Path]:
    """Two clones of one origin, neither with a cache remote: only the machine's store can join their caches."""
    a, remote = host_a(tmp_path, monkeypatch, capsys, f'local: {local}')
    return a, clone(a, remote, tmp_path / 'b'), remote


def test_a_result_paid_in_one_repository_is_a_verified_hit_in_another_on_the_machine(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    machine = tmp_path / 'machine' / 'results.git'
    a, b, remote = two_repos(tmp_path, monkeypatch, capsys, str(machine))
    assert not machine.exists()
    rc, out, err = a.cli('run', '--plan-file', 'plan.json', '--run-id', 'ra')
    assert rc == 0, out + err
    assert a.launched_tasks() == ['T1', 'T2']
    assert len(refs(a.repo)) == 2 and len(refs(machine)) == 2   # the repository's refs, and the machine's store
    assert refs(remote) == []                                    # nothing went through the git remote
    assert not list(machine.parent.glob('.results.git.*'))       # the store was created in place, nothing left over

    rc, out, err = b.cli('cache', 'ls')
    assert rc == 0 and out.count(' local') == 2 and ' repo' not in out, out
    a.clear_log()
    rc, out, err = b.cli('run', '--plan-file', 'plan.json', '--run-id', 'rb')
    assert rc == 0, out + err
    assert b.launches() == []                                    # nothing paid in B
    assert tree(b) == tree(a)
    first = b.result('T1')
    assert first['cache']['hit'] and first['cache']['origin']['run'] == 'ra'
    assert [c['passed'] for c in first['checks']] == [True]     # its check ran here, in B
    assert (b.run_dir('rb') / 'tasks' / 'T1' / 'checks' / 'round-0' / 'check-1.log').is_file()
    assert b.statuses('rb') == {'T1': 'done', 'T2': 'done'}
    assert sorted(refs(b.repo)) == sorted(refs(a.repo))         # the entries were brought into B's refs
    rc, out, err = b.cli('cache', 'ls')
    assert rc == 0 and out.count(' both') == 2, out

    # B pays for an edited task: its entry goes into B's refs and the machine's store, and A hits it
    b.write_plan(plan('Write src/b.py, carefully.'))
    commit_all(b.repo, 'edit T2')
    rc, out, err = b.cli('run', '--plan-file', 'plan.json', '--run-id', 'rb2')
    assert rc == 0, out + err
    assert b.launched_tasks() == ['T2'] and len(refs(machine)) == 3
    a.write_plan(plan('Write src/b.py, carefully.'))
    rc, out, err = a.cli('resume', '--run-id', 'ra', '--dry-run')   # said before anything is spent
    assert rc == 1 and 'hit (task T2 of run rb2' in out, out + err
    assert len(refs(a.repo)) == 2                                    # the dry run fetched nothing
    commit_all(a.repo, 'the same edit')
    a.clear_log()
    rc, out, err = a.cli('run', '--plan-file', 'plan.json', '--run-id', 'ra2')
    assert rc == 0, out + err
    assert a.launches() == [] and a.result('T2')['cache']['origin']['run'] == 'rb2'

    # `gc` prunes the repository's refs; the machine's store only with --local
    rc, out, err = b.cli('cache', 'gc')
    assert rc == 0 and refs(b.repo) == [] and len(refs(machine)) == 3, out + err
    rc, out, err = b.cli('cache', 'gc', '--local')
    assert rc == 0 and 'local store' in out and refs(machine) == [], out + err


def test_with_local_false_nothing_is_shared_and_the_other_repository_pays(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    a, b, _ = two_repos(tmp_path, monkeypatch, capsys, 'false')
    rc, out, err = a.cli('run', '--plan-file', 'plan.json', '--run-id', 'ra')
    assert rc == 0, out + err
    assert len(refs(a.repo)) == 2
    assert not (Path(os.environ['XDG_CACHE_HOME']) / 'codex-orch').exists()   # no store written anywhere
    a.clear_log()
    rc, out, err = b.cli('run', '--plan-file', 'plan.json', '--run-id', 'rb')
    assert rc == 0, out + err
    assert b.launched_tasks() == ['T1', 'T2']


def test_by_default_the_store_is_in_the_user_cache_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    a, remote = host_a(tmp_path, monkeypatch, capsys)   # `cache: {}`
    rc, out, err = a.cli('run', '--plan-file', 'plan.json', '--run-id', 'ra')
    assert rc == 0, out + err
    store = Path(os.environ['XDG_CACHE_HOME']) / 'codex-orch' / 'results.git'
    assert len(refs(store)) == 2 and git(store, 'rev-parse', '--is-bare-repository') == 'true'
    monkeypatch.delenv('XDG_CACHE_HOME')   # then ~/.cache
    b = clone(a, remote, tmp_path / 'b')
    rc, out, err = b.cli('run', '--plan-file', 'plan.json', '--run-id', 'rb')
    assert rc == 0, out + err
    assert len(refs(Path.home() / '.cache' / 'codex-orch' / 'results.git')) == 2


def test_a_store_that_cannot_be_created_warns_and_the_run_still_caches_in_the_repository(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    blocked = tmp_path / 'not-a-store'
    blocked.mkdir()
    (blocked / 'somebody-elses-file').write_text('keep me\n')
    a, _ = host_a(tmp_path, monkeypatch, capsys, f'local: {blocked}')
    rc, out, err = a.cli('run', '--plan-file', 'plan.json', '--run-id', 'ra')
    assert rc == 0, out + err
    assert 'not in the local result cache' in err and len(refs(a.repo)) == 2
    assert sorted(p.name for p in blocked.iterdir()) == ['somebody-elses-file']


@pytest.mark.parametrize('value', ["''", '[a]', '5'])
def test_a_bad_local_setting_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any,
                                               value: str) -> None:
    a, _ = host_a(tmp_path, monkeypatch, capsys, f'local: {value}')
    rc, out, err = a.cli('run', '--plan-file', 'plan.json', '--run-id', 'ra')
    assert rc == 2 and 'cache.local: must be a directory path, true' in out + err, out + err
    assert a.launches() == []


class _RacedStore(LocalStore):
    """A store another run creates between this one's look and its rename."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.looked = False

    def exists(self) -> bool:
        if not self.looked:
            self.looked = True
            return False
        return super().exists()


def test_a_store_created_by_another_run_meanwhile_is_kept_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / 'cache' / 'results.git'
    theirs = LocalStore(path)
    assert theirs.put('a' * 64, {'origin': {'run': 'theirs'}}, None, {})
    raced = _RacedStore(path)
    raced.create()   # its rename loses: the store already there is used, nothing of this attempt is left
    assert raced.looked and sorted(p.name for p in path.parent.iterdir()) == ['results.git']
    entry = raced.get('a' * 64)
    assert entry is not None and entry.data['origin']['run'] == 'theirs'
    assert not raced.put('a' * 64, {'origin': {'run': 'mine'}}, None, {})   # written once, never replaced


def test_a_run_pushes_and_hands_on_only_the_entries_it_wrote_never_the_machine_stores(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    machine = tmp_path / 'machine' / 'results.git'
    a, b, remote = two_repos(tmp_path, monkeypatch, capsys, str(machine))
    rc, out, err = a.cli('run', '--plan-file', 'plan.json', '--run-id', 'ra')
    assert rc == 0, out + err
    config = b.repo / '.orchestrator' / 'orchestrator.yaml'
    config.write_text(config.read_text().replace(f'cache: {{local: {machine}}}',
                                                 f'cache: {{local: {machine}, remote: origin}}'))
    b.write_plan(plan('Write src/b.py, carefully.'))
    commit_all(b.repo, 'push to origin; T2 edited')
    a.clear_log()
    rc, out, err = b.cli('run', '--plan-file', 'plan.json', '--run-id', 'rb')
    assert rc == 0, out + err
    assert b.launched_tasks() == ['T2'] and b.result('T1')['cache']['hit']   # T1 from the machine's store
    t2 = json.loads((b.run_dir('rb') / 'tasks' / 'T2' / 'state.json').read_text())['cache']['key']
    assert json.loads((b.run_dir('rb') / 'cache-written.json').read_text()) == [t2]
    assert refs(remote) == [CACHE_REFS + t2]   # T1's entry came from the machine's store: not B's to push
