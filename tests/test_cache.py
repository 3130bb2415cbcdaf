"""Issue 20: a cache of verified task results, carried by git refs through any remote. A hit replays the cached
work and verifies it here (its checks run again); only what decides the work decides the key."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from orch.adapters.cache_store import GitRefStore
from orch.core.cache_key import cache_key, differing, normalise, start_digest, work_digest, work_inputs
from tests.support.gitrepo import bare_origin, commit_all, git
from tests.support.orchtest import Host, make_host

CHECK = 'grep -q hello src/a.py && echo checked-here > /dev/null'
SCRIPT = {'default': {'answer': 'auto'}, 'tasks': {
    'T1': {'edits': {'src/a.py': "print('hello')\n"}},
    'T2': {'edits': {'src/b.py': 'from a import x\n'}},
}}


def plan(t2_description: str = 'Write src/b.py.') -> dict[str, Any]:
    return {'version': 1, 'title': 'Cached', 'tasks': [
        {'id': 'T1', 'role': 'implementer', 'title': 'Write a', 'description': 'Write src/a.py.',
         'paths': ['src/a.py'], 'checks': [CHECK]},
        {'id': 'T2', 'role': 'implementer', 'title': 'Write b', 'description': t2_description,
         'depends_on': ['T1'], 'paths': ['src/b.py']},
    ]}


def enable_cache(repo: Path, extra: str = '') -> None:
    config = repo / '.orchestrator' / 'orchestrator.yaml'
    config.write_text(config.read_text() + f'cache: {{{extra}}}\n')


def host_a(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any, extra: str = '') -> tuple[Host, Path]:
    host = make_host(tmp_path, monkeypatch, capsys, SCRIPT)
    monkeypatch.setenv('CODEX_API_KEY', 'sk-test')   # the provider key: a miss may launch a worker
    enable_cache(host.repo, extra)
    host.write_plan(plan())
    commit_all(host.repo, 'plan')
    return host, bare_origin(host.repo, tmp_path)


def signed_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> Host:
    """Host A with a signing key, after a run (`ra`) that wrote signed entries."""
    monkeypatch.setenv('ORCH_CACHE_KEY', 'the-signing-secret')
    a, _ = host_a(tmp_path, monkeypatch, capsys, 'sign_key_env: ORCH_CACHE_KEY')
    rc, out, err = a.cli('run', '--plan-file', 'plan.json', '--run-id', 'ra')
    assert rc == 0, out + err
    return a


def keys_by_task(repo: Path) -> dict[str, str]:
    """The cache keys of the entries in the repository's refs, by the task each came from."""
    store = GitRefStore(repo)
    return {e.data['origin']['task']: k for k, _ in store.entries() if (e := store.get(k))}


def clone(host: Host, remote: Path, where: Path) -> Host:
    subprocess.run(['git', 'clone', '--quiet', '--branch', 'main', str(remote), str(where)], check=True)
    for key, value in (('user.name', 'T'), ('user.email', 't@example.com')):
        git(where, 'config', key, value)
    return Host(repo=where, bin=host.bin, capsys=host.capsys)


def tree(host: Host) -> str:
    return git(host.repo, 'rev-parse', f'{host.shared_branch()}^{{tree}}')


def test_a_fresh_clone_replays_every_task_and_verifies_it_there(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: Any) -> None:
    a, remote = host_a(tmp_path, monkeypatch, capsys)
    rc, out, err = a.cli('run', '--plan-file', 'plan.json', '--run-id', 'ra')
    assert rc == 0, out + err
    assert a.launched_tasks() == ['T1', 'T2']
    rc, out, err = a.cli('cache', 'push', 'origin')
    assert rc == 0, out + err
    assert len(git(remote, 'for-each-ref', 'refs/codex-orch/cache/').splitlines()) == 2

    b = clone(a, remote, tmp_path / 'b')
    a.clear_log()
    rc, out, err = b.cli('cache', 'pull')
    assert rc == 0 and '2 new' in out, out + err
    rc, out, err = b.cli('run', '--plan-file', 'plan.json', '--run-id', 'rb')
    assert rc == 0, out + err
    assert b.launches() == []                          # no model launched at all
    assert tree(b) == tree(a)                          # the same work, landed on B's run branch
    first = b.result('T1')
    assert first['cache']['hit'] and first['cache']['origin']['run'] == 'ra'
    assert first['cache']['tokens_saved'] > 0 and not first['usage']
    assert [c['passed'] for c in first['checks']] == [True]   # its check ran here, in B
    assert (b.run_dir('rb') / 'tasks' / 'T1' / 'checks' / 'round-0' / 'check-1.log').is_file()
    assert b.statuses('rb') == {'T1': 'done', 'T2': 'done'}
    rows = b.status('rb')['tasks']
    assert [r['cache']['hit'] for r in rows] == [True, True]   # status --json and summary.json say so
    summary = json.loads((b.run_dir('rb') / 'summary.json').read_text())
    assert [t['cache']['origin']['run'] for t in summary['tasks']] == ['ra', 'ra']

    # one task's description edited, and no provider key: nothing is launched, the miss is named, exit 2
    b.write_plan(plan('Write src/b.py, carefully.'))
    commit_all(b.repo, 'edit T2')
    rc, out, err = b.cli('resume', '--run-id', 'rb', '--dry-run')   # said before anything is spent
    assert rc == 1, out + err
    line = next(x for x in out.splitlines() if x.startswith('T2 '))
    assert 'miss:' in line and 'result cache: 0 of 1 task(s) would hit' in out, out
    assert 'T1 ' not in out.split('task ')[-1]   # T1 would not run at all
    monkeypatch.delenv('CODEX_API_KEY')
    rc, out, err = b.cli('run', '--plan-file', 'plan.json', '--run-id', 'rb2')
    assert rc == 2, out + err
    assert b.launches() == []
    assert 'T2 deferred: cache miss and no provider key' in out + err and 'the rendered prompt' in out + err
    assert b.statuses('rb2') == {'T1': 'done', 'T2': 'deferred'}
    rc, out, err = b.cli('explain', 'T2', '--run-id', 'rb2')
    assert rc == 0, out + err
    assert 'cache miss in run rb2' in out and 'task T2 of run ra' in out and '- prompt:' in out
    assert '-Write src/b.py.' in out and '+Write src/b.py, carefully.' in out   # how the prompt differs
    rc, out, err = b.cli('explain', 'T1', '--run-id', 'rb2')
    assert rc == 0 and 'cache hit in run rb2' in out, out + err
    # the model back: exactly that task misses, and pays
    monkeypatch.setenv('CODEX_API_KEY', 'sk-test')
    rc, out, err = b.cli('resume', '--run-id', 'rb2')
    assert rc == 0, out + err
    assert b.launched_tasks() == ['T2']
    assert b.result('T1')['cache']['hit'] and 'cache' not in b.result('T2')


def test_a_tampered_entry_whose_check_fails_here_is_never_done_from_the_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    a, remote = host_a(tmp_path, monkeypatch, capsys)
    rc, out, err = a.cli('run', '--plan-file', 'plan.json', '--run-id', 'ra')
    assert rc == 0, out + err
    store = GitRefStore(a.repo)
    key, entry = next((k, e) for k, _ in store.entries() if (e := store.get(k)) and e.data['origin']['task'] == 'T1')
    assert entry.base is not None
    # the entry's commit replaced by one whose work fails the task's check (its answer kept)
    work = tmp_path / 'tamper'
    git(a.repo, 'worktree', 'add', '--quiet', '--detach', str(work), entry.base)
    (work / 'src').mkdir(exist_ok=True)
    (work / 'src' / 'a.py').write_text("print('bye')\n")
    git(work, 'add', '-A')
    git(work, 'commit', '--quiet', '-m', 'tampered')
    store.delete(key)
    assert store.put(key, entry.data, git(work, 'rev-parse', 'HEAD'), {})
    a.clear_log()
    rc, out, err = a.cli('run', '--plan-file', 'plan.json', '--run-id', 'ra2')
    assert rc == 0, out + err
    assert 'T1: the cached result' in err and 'its check failed here' in err
    assert a.launched_tasks() == ['T1']            # refused after its check failed here; T2 still hits
    assert 'cache' not in a.result('T1') and git(a.repo, 'show', f'{a.shared_branch()}:src/a.py') == "print('hello')"


def test_with_a_cache_remote_a_run_pushes_its_entries_and_a_read_only_one_writes_none(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    a, remote = host_a(tmp_path, monkeypatch, capsys, 'remote: origin')
    rc, out, err = a.cli('run', '--plan-file', 'plan.json', '--run-id', 'ra')
    assert rc == 0, out + err
    assert len(git(remote, 'for-each-ref', 'refs/codex-orch/cache/').splitlines()) == 2
    b = clone(a, remote, tmp_path / 'b')
    config = b.repo / '.orchestrator' / 'orchestrator.yaml'
    config.write_text(config.read_text().replace('cache: {remote: origin}', 'cache: {remote: origin, write: false}'))
    b.write_plan(plan('Write src/b.py, carefully.'))
    commit_all(b.repo, 'read only, T2 edited')
    a.clear_log()
    rc, out, err = b.cli('run', '--plan-file', 'plan.json', '--run-id', 'rb')   # pulls before it runs
    assert rc == 0, out + err
    assert b.launched_tasks() == ['T2']
    assert len(git(b.repo, 'for-each-ref', 'refs/codex-orch/cache/').splitlines()) == 2   # nothing written
    rc, out, err = b.cli('cache', 'ls')
    assert rc == 0 and out.count(' ra ') == 2, out
    rc, out, err = b.cli('cache', 'gc')
    assert rc == 0 and '2 entries deleted' in out and git(b.repo, 'for-each-ref', 'refs/codex-orch/') == ''


def test_the_key_covers_what_decides_the_work_and_not_run_ids() -> None:
    base = {'prompt': 'do it in /r/.orchestrator/runs/r1', 'schema': b'{}', 'params': {'model': 'm'},
            'codex_version': 'codex-cli 0.169.0', 'checks': ['make test']}
    one = work_inputs(**{**base, 'prompt': normalise(base['prompt'], {'/r/.orchestrator/runs/r1': '<run-dir>'})})
    two = work_inputs(**{**base, 'prompt': normalise('do it in /s/.orchestrator/runs/r2',
                                                     {'/s/.orchestrator/runs/r2': '<run-dir>'})})
    assert one == two and work_digest(one) == work_digest(two)
    for change, name in (({'schema': b'{"x": 1}'}, 'schema'), ({'params': {'model': 'n'}}, 'params'),
                         ({'codex_version': 'codex-cli 0.170.0'}, 'codex'), ({'checks': ['make lint']}, 'checks'),
                         ({'prompt': 'do something else'}, 'prompt')):
        other = work_inputs(**{**base, **change})
        assert work_digest(other) != work_digest(work_inputs(**base)), change
        assert differing(other, work_inputs(**base)) == [name]
    start = start_digest('t1', {'T1': 'c1'})
    assert cache_key(work_digest(one), start) != cache_key(work_digest(one), start_digest('t2', {'T1': 'c1'}))
    assert start != start_digest('t1', {'T1': 'c2'}) and start == start_digest('t1', {'T1': 'c1'})
    assert json.dumps(cache_key(work_digest(one), start))   # a hex digest: a valid ref name


def _retamper(repo: Path, key: str, answer_summary: str) -> None:
    """Entry `key` rewritten in place with another answer summary, its old signature kept (a forger without the
    key can copy a signature, not make one)."""
    ref = f'refs/codex-orch/cache/{key}'
    data = json.loads(git(repo, 'cat-file', 'blob', f'{ref}:entry.json'))
    data['answer']['summary'] = answer_summary
    blob = subprocess.run(['git', '-C', str(repo), 'hash-object', '-w', '--stdin'], input=json.dumps(data).encode(),
                          capture_output=True, check=True).stdout.decode().strip()
    listing = git(repo, 'ls-tree', ref).splitlines()
    lines = [line if not line.endswith('\tentry.json') else f'100644 blob {blob}\tentry.json' for line in listing]
    tree = subprocess.run(['git', '-C', str(repo), 'mktree'], input=('\n'.join(lines) + '\n').encode(),
                          capture_output=True, check=True).stdout.decode().strip()
    parent = git(repo, 'rev-parse', f'{ref}^')
    commit = git(repo, 'commit-tree', tree, '-p', parent, '-m', 'forged')
    git(repo, 'update-ref', ref, commit)
    assert 'signature' in git(repo, 'ls-tree', '--name-only', ref)


def test_with_a_signing_key_a_changed_or_unsigned_entry_is_refused_and_the_task_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    a = signed_run(tmp_path, monkeypatch, capsys)
    store = GitRefStore(a.repo)
    keys = keys_by_task(a.repo)
    # signed entries are used where the key is set
    a.clear_log()
    rc, out, err = a.cli('run', '--plan-file', 'plan.json', '--run-id', 'rb')
    assert rc == 0 and a.launches() == [], out + err
    # T1's answer changed after signing: refused, T1 runs; T2's entry was written again unsigned: refused, it runs
    _retamper(a.repo, keys['T1'], 'forged summary')
    entry = store.get(keys['T2'])
    assert entry is not None
    store.delete(keys['T2'])
    assert store.put(keys['T2'], entry.data, entry.commit, {})   # no signature
    rc, out, err = a.cli('run', '--plan-file', 'plan.json', '--run-id', 'rc')
    assert rc == 0, out + err
    assert 'T1: the cached result' in err and 'signature does not match' in err
    assert 'T2: the cached result' in err and 'is not signed' in err
    assert a.launched_tasks() == ['T1', 'T2']
    assert a.result('T1')['answer']['summary'] != 'forged summary' and 'cache' not in a.result('T1')
    # with the wrong key, nothing signed under the right one is used either
    monkeypatch.setenv('ORCH_CACHE_KEY', 'another-secret')
    a.clear_log()
    _retamper(a.repo, keys['T1'], 'forged again')
    rc, out, err = a.cli('run', '--plan-file', 'plan.json', '--run-id', 'rd')
    assert rc == 0, out + err
    assert 'T1' in a.launched_tasks()


def test_the_report_junit_and_status_say_which_tasks_hit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: Any) -> None:
    a, _ = host_a(tmp_path, monkeypatch, capsys)
    rc, out, err = a.cli('run', '--plan-file', 'plan.json', '--run-id', 'ra')
    assert rc == 0, out + err
    a.write_plan(plan('Write src/b.py, carefully.'))
    commit_all(a.repo, 'edit T2')
    rc, out, err = a.cli('run', '--plan-file', 'plan.json', '--run-id', 'rb')
    assert rc == 0, out + err
    report = (a.run_dir('rb') / 'report.md').read_text()
    assert '## Result cache' in report and '1 hit(s), 1 miss(es)' in report
    assert '- **T1** hit: from task T1 of run ra' in report and '- **T2** miss:' in report
    summary = json.loads((a.run_dir('rb') / 'summary.json').read_text())
    assert summary['cache']['hits'] == 1 and summary['cache']['misses'] == 1 and summary['cache']['tokens_saved'] > 0
    junit = (a.run_dir('rb') / 'junit.xml').read_text()
    assert '<property name="codex-orch.cache" value="hit" />' in junit
    assert '<property name="codex-orch.cache" value="miss" />' in junit
    rc, out, err = a.cli('status', '--run-id', 'rb')
    assert rc == 0 and 'done (cache hit)' in out and out.count('cache hit') == 1, out


def test_pull_and_push_skip_keys_the_other_side_has_without_failing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    a, remote = host_a(tmp_path, monkeypatch, capsys)
    rc, out, err = a.cli('run', '--plan-file', 'plan.json', '--run-id', 'ra')
    assert rc == 0, out + err
    b = clone(a, remote, tmp_path / 'b')
    keys = [k for k, _ in GitRefStore(a.repo).entries()]
    # B paid for the same task itself: its own entry under one of A's keys, and one A has not
    mine = GitRefStore(b.repo)
    assert mine.put(keys[0], {'origin': {'task': 'T1', 'run': 'rb'}}, None, {})
    assert mine.put('f' * 64, {'origin': {'task': 'T9', 'run': 'rb'}}, None, {})
    rc, out, err = a.cli('cache', 'push', 'origin')
    assert rc == 0, out + err
    rc, out, err = b.cli('cache', 'pull', 'origin')
    assert rc == 0 and '1 new' in out, out + err
    assert (mine.get(keys[0]) or mine.get(keys[1])) is not None
    assert git(b.repo, 'cat-file', 'blob', f'refs/codex-orch/cache/{keys[0]}:entry.json').count('"rb"') == 1  # kept
    rc, out, err = b.cli('cache', 'push', 'origin')
    assert rc == 0, out + err
    remote_refs = git(remote, 'for-each-ref', '--format=%(refname)', 'refs/codex-orch/cache/').splitlines()
    assert len(remote_refs) == 3   # B's new entry went up; A's entry under the shared key stayed A's
    assert '"ra"' in git(remote, 'cat-file', 'blob', f'refs/codex-orch/cache/{keys[0]}:entry.json')


def test_the_dry_run_says_which_tasks_will_hit_and_which_cannot_be_known(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    a, _ = host_a(tmp_path, monkeypatch, capsys)
    rc, out, err = a.cli('run', '--plan-file', 'plan.json', '--run-id', 'ra')
    assert rc == 0, out + err
    # T1 edited and run: its new result is an entry too; then the edit undone
    edited = plan()
    edited['tasks'][0]['description'] = 'Write src/a.py, now.'
    a.write_plan(edited)
    rc, out, err = a.cli('resume', '--run-id', 'ra')
    assert rc == 0, out + err
    a.write_plan(plan())
    a.clear_log()
    rc, out, err = a.cli('resume', '--run-id', 'ra', '--dry-run')
    assert rc == 1, out + err
    rows = {x.split()[0]: x for x in out.splitlines() if x[:2] in ('T1', 'T2')}
    assert 'hit (task T1 of run ra' in rows['T1'], out   # its first result's entry, predicted from the plan
    assert 'hit (task T2 of run ra' in rows['T2'], out   # predicted from T1's cached answer and change
    assert 'result cache: 2 of 2 task(s) would hit' in out
    rc, out, err = a.cli('resume', '--run-id', 'ra')   # and so it is
    assert rc == 0 and a.launches() == [], out + err
    # an edit nothing cached matches: a miss, and what depends on it cannot be known yet
    edited['tasks'][0]['description'] = 'Write src/a.py, differently.'
    a.write_plan(edited)
    rc, out, err = a.cli('resume', '--run-id', 'ra', '--dry-run')
    rows = {x.split()[0]: x for x in out.splitlines() if x[:2] in ('T1', 'T2')}
    assert 'miss:' in rows['T1'] and 'unknown until T1 ran' in out, out
    assert a.launches() == []
