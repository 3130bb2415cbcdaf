"""The result cache never says more than it did: a task's row shows its latest lookup, a bad or hostile entry is
refused (a miss, its worker runs) rather than failing its task or crashing a report, and a keyless miss is a
failure wherever CI looks."""
from __future__ import annotations

import json
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orch.adapters import cache_store
from orch.adapters.cache_store import GitRefStore
from tests.support.gitrepo import commit_all, git
from tests.support.orchtest import Host, edit_config
from tests.test_cache import clone, host_a, keys_by_task, plan, signed_run


def test_a_keyless_miss_after_an_earlier_hit_is_a_miss_everywhere(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    a, remote = host_a(tmp_path, monkeypatch, capsys)
    rc, out, err = a.cli('run', '--plan-file', 'plan.json', '--run-id', 'ra')
    assert rc == 0, out + err
    rc, out, err = a.cli('cache', 'push', 'origin')
    assert rc == 0, out + err
    b = clone(a, remote, tmp_path / 'b')
    rc, out, err = b.cli('cache', 'pull')
    assert rc == 0, out + err
    rc, out, err = b.cli('run', '--plan-file', 'plan.json', '--run-id', 'rb')
    assert rc == 0 and b.statuses('rb') == {'T1': 'done', 'T2': 'done'}, out + err
    assert b.result('T2')['cache']['hit']
    # T2 edited, no provider key: its new lookup misses, and nothing earlier may say otherwise
    b.write_plan(plan('Write src/b.py, carefully.'))
    commit_all(b.repo, 'edit T2')
    monkeypatch.delenv('CODEX_API_KEY')
    a.clear_log()
    rc, out, err = b.cli('resume', '--run-id', 'rb')
    assert rc == 2, out + err
    assert b.launches() == []
    rows = {r['id']: r for r in b.status('rb')['tasks']}
    assert rows['T2']['status'] == 'deferred'
    assert rows['T2']['cache']['hit'] is False and 'miss' in rows['T2']['cache']
    assert rows['T1']['cache']['hit'] is True
    summary = json.loads((b.run_dir('rb') / 'summary.json').read_text())
    assert summary['cache']['hits'] == 1 and summary['cache']['misses'] == 1
    report = (b.run_dir('rb') / 'report.md').read_text()
    assert '- **T2** miss: its inputs differ' in report and '- **T2** hit' not in report
    junit = ET.fromstring((b.run_dir('rb') / 'junit.xml').read_text())
    case = next(c for c in junit.iter('testcase') if c.get('name') == 'T2')
    failure = case.find('failure')
    assert failure is not None and failure.get('type') == 'cache-miss', ET.tostring(case)
    assert case.find('skipped') is None
    assert junit.find('testsuite').get('failures') == '1'


def rewrite_entry(repo: Path, key: str, change: Callable[[dict[str, Any]], Any],
                  files: dict[str, bytes] | None = None, parent: str | None = None) -> None:
    """Entry `key` rewritten in place (a forger's entry, as a remote or the machine's store could hand it over):
    its entry.json through `change`, `files` added or replaced, its parent (the cached commit) `parent`."""
    ref = f'refs/codex-orch/cache/{key}'
    data = change(json.loads(git(repo, 'cat-file', 'blob', f'{ref}:entry.json')))
    written = {'entry.json': json.dumps(data).encode() if not isinstance(data, bytes) else data, **(files or {})}
    lines = [line for line in git(repo, 'ls-tree', ref).splitlines() if line.split('\t', 1)[1] not in written]
    for name, body in written.items():
        blob = subprocess.run(['git', '-C', str(repo), 'hash-object', '-w', '--stdin'], input=body,
                              capture_output=True, check=True).stdout.decode().strip()
        lines.append(f'100644 blob {blob}\t{name}')
    tree = subprocess.run(['git', '-C', str(repo), 'mktree'], input=('\n'.join(lines) + '\n').encode(),
                          capture_output=True, check=True).stdout.decode().strip()
    commit = git(repo, 'commit-tree', tree, '-p', parent or git(repo, 'rev-parse', f'{ref}^'), '-m', 'forged')
    git(repo, 'update-ref', ref, commit)


def test_an_entry_whose_base_is_missing_and_signature_junk_is_a_miss_and_the_task_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    a = signed_run(tmp_path, monkeypatch, capsys)
    key = keys_by_task(a.repo)['T1']
    rewrite_entry(a.repo, key, lambda d: {**d, 'base': '1' * 40}, {'signature': b'junk'})
    a.clear_log()
    rc, out, err = a.cli('run', '--plan-file', 'plan.json', '--run-id', 'rb')
    assert rc == 0, out + err
    assert a.launched_tasks() == ['T1']          # a miss: its worker ran; T2 still hits
    assert a.statuses('rb') == {'T1': 'done', 'T2': 'done'} and 'cache' not in a.result('T1')


@pytest.mark.parametrize('malformed', [
    {'execution': 'fast'},
    {'execution': {'usage': {'input_tokens': 'abc'}}},
    {'origin': ['T1', 'ra']},
    {'origin': {'task': '![x](https://example.invalid/t.png)', 'run': 'ra'}},
    {'inputs': {'prompt': 1}},
])
def test_a_malformed_entry_is_a_miss_and_crashes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: Any, malformed: dict[str, Any]) -> None:
    a, _ = host_a(tmp_path, monkeypatch, capsys)
    rc, out, err = a.cli('run', '--plan-file', 'plan.json', '--run-id', 'ra')
    assert rc == 0, out + err
    rewrite_entry(a.repo, keys_by_task(a.repo)['T1'], lambda d: {**d, **malformed})
    a.clear_log()
    rc, out, err = a.cli('run', '--plan-file', 'plan.json', '--run-id', 'rb')
    assert rc == 0, out + err
    assert a.launched_tasks() == ['T1']          # a miss: its worker ran
    assert 'cache' not in a.result('T1')
    report = (a.run_dir('rb') / 'report.md').read_text()
    assert '## Result cache' in report and '](' not in report.split('## Result cache')[1]
    rc, out, err = a.cli('cache', 'ls')
    assert rc == 0 and 'unreadable' in out, out + err
    rc, out, err = a.cli('explain', 'T1', '--run-id', 'rb')
    assert rc == 0, out + err
    rc, out, err = a.cli('resume', '--run-id', 'rb', '--dry-run')
    assert rc in (0, 1) and 'Traceback' not in out + err, out + err


def replace_commit(host: Host, tmp_path: Path, task: str, change: Callable[[Path], None]) -> None:
    """Task `task`'s entry written again with its commit replaced by one `change` makes on the entry's base (its
    answer kept): an entry as a writer of the cache could hand it over, unsigned."""
    store = GitRefStore(host.repo)
    key = keys_by_task(host.repo)[task]
    entry = store.get(key)
    assert entry is not None and entry.base is not None
    work = tmp_path / f'forge-{task}'
    git(host.repo, 'worktree', 'add', '--quiet', '--detach', str(work), entry.base)
    change(work)
    git(work, 'add', '-A')
    git(work, 'commit', '--quiet', '-m', 'forged')
    store.delete(key)
    assert store.put(key, entry.data, git(work, 'rev-parse', 'HEAD'), {})


def good_a(work: Path) -> None:
    (work / 'src').mkdir(exist_ok=True)
    (work / 'src' / 'a.py').write_text("print('hello')\n")


@pytest.mark.parametrize('forged', ['symlink', 'control-file', 'protected-file'])
def test_an_entry_whose_change_a_worker_could_not_land_is_refused_and_the_worker_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any, forged: str) -> None:
    a, _ = host_a(tmp_path, monkeypatch, capsys)
    rc, out, err = a.cli('run', '--plan-file', 'plan.json', '--run-id', 'ra')
    assert rc == 0, out + err

    def change(work: Path) -> None:
        good_a(work)
        if forged == 'symlink':
            (work / 'link').symlink_to('/etc/passwd')
        elif forged == 'control-file':
            config = work / '.orchestrator' / 'orchestrator.yaml'
            config.write_text(config.read_text() + '# changed\n')
        else:
            (work / 'conftest.py').write_text('collect_ignore_glob = ["*"]\n')
    replace_commit(a, tmp_path, 'T1', change)
    a.clear_log()
    rc, out, err = a.cli('run', '--plan-file', 'plan.json', '--run-id', 'rb')
    assert rc == 0, out + err
    assert 'T1: the cached result' in err, err
    assert a.launched_tasks() == ['T1']          # refused: its worker ran, and the task is done from it
    assert a.statuses('rb') == {'T1': 'done', 'T2': 'done'} and 'cache' not in a.result('T1')
    tree = git(a.repo, 'ls-tree', '-r', '--name-only', a.shared_branch()).splitlines()
    assert 'link' not in tree and 'conftest.py' not in tree


def test_worktree_setup_runs_on_the_clean_checkout_before_the_replay(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    a, _ = host_a(tmp_path, monkeypatch, capsys)
    # a setup that passes on the task's clean start, as a fresh execution runs it, and not over the cached change
    edit_config(a.repo, {'  setup: []': '  setup: ["test ! -e src/extra-$ORCH_TASK_ID.txt"]'})
    commit_all(a.repo, 'setup')
    rc, out, err = a.cli('run', '--plan-file', 'plan.json', '--run-id', 'ra')
    assert rc == 0, out + err

    def change(work: Path) -> None:
        good_a(work)
        (work / "src" / "extra-T1.txt").write_text('more\n')
    replace_commit(a, tmp_path, 'T1', change)
    a.clear_log()
    rc, out, err = a.cli('run', '--plan-file', 'plan.json', '--run-id', 'rb')
    assert rc == 0, out + err
    assert 'T1' not in a.launched_tasks() and a.result('T1')['cache']['hit']   # T2 starts elsewhere: it runs


def test_a_hit_is_sealed_a_check_that_plants_a_git_filter_fails_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    a, _ = host_a(tmp_path, monkeypatch, capsys)
    # checks unsandboxed (as you): the seal is what stands between a planted filter and codex-orch's own git
    edit_config(a.repo, {'  implementer: {}': '  implementer: {check_sandbox: none}'})
    the_plan = plan()
    the_plan['tasks'][0]['checks'] = ['if [ -f hook.sh ]; then sh hook.sh; fi; grep -q hello src/a.py']
    a.write_plan(the_plan)
    commit_all(a.repo, 'a check that runs what the task wrote')
    rc, out, err = a.cli('run', '--plan-file', 'plan.json', '--run-id', 'ra')
    assert rc == 0, out + err

    def change(work: Path) -> None:
        good_a(work)
        (work / 'hook.sh').write_text('git config --file "$(git rev-parse --git-common-dir)/config" '
                                      'filter.planted.clean cat\n')
    replace_commit(a, tmp_path, 'T1', change)
    a.clear_log()
    rc, out, err = a.cli('run', '--plan-file', 'plan.json', '--run-id', 'rb')
    assert 'filter.planted' in git(a.repo, 'config', '--list'), out + err   # the check did plant it
    assert rc == 1 and 'git-config-changed' in out + err, out + err
    assert a.statuses('rb')['T1'] == 'failed'


def test_the_base_tree_and_the_entries_are_read_once_while_they_do_not_change(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    a, _ = host_a(tmp_path, monkeypatch, capsys)
    rc, out, err = a.cli('run', '--plan-file', 'plan.json', '--run-id', 'ra')
    assert rc == 0, out + err
    calls: list[str] = []
    real = cache_store.run

    def counted(repo: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(str(args[0]))
        return real(repo, *args, **kwargs)
    monkeypatch.setattr(cache_store, 'run', counted)
    base = git(a.repo, 'rev-parse', 'HEAD')
    assert len({cache_store.start_tree(a.repo, base, ('x',)) for _ in range(3)}) == 1
    assert calls.count('ls-tree') == 1
    store = GitRefStore(a.repo)
    first = store.all_data()
    assert store.all_data() == first and len(first) == 2
    assert calls.count('cat-file') == 2   # sizes, then the entries: once
    store.delete(keys_by_task(a.repo)['T1'])
    assert [k for k, _ in store.all_data()] == [keys_by_task(a.repo)['T2']]   # changed: read again
