"""Adversarial review of "done means verified" and "a worker is untrusted code": reviewer rounds, gates, kills.

Each test is a real run (fake codex, real git) of a bug found by an adversarial review, each now fixed; the
docstrings say what went wrong before.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.support.gitrepo import commit_all, git
from tests.support.orchtest import Host, crashed_run, edit_config, make_host

RUN = 'adv'


def review(verdict: str, *findings: Any) -> dict[str, Any]:
    return {'answer': {'status': 'done', 'summary': f'review: {verdict}', 'verdict': verdict,
                       'findings': [f if not isinstance(f, str) else {'severity': 'major', 'file': 'src/x.py',
                                                                        'line': None, 'message': f}
                                    for f in findings],
                       'files_changed': [], 'decisions': [], 'follow_ups': []}}


def x(content: str, **more: Any) -> dict[str, Any]:
    return {'edits': {'src/x.py': content}, **more}


def review_plan(t1_checks: list[str] | None = None, **reviewer: Any) -> dict[str, Any]:
    return {'version': 1, 'title': 'Review', 'tasks': [
        {'id': 'T1', 'role': 'implementer', 'title': 'Write x', 'description': 'Write src/x.py.',
         'paths': ['src/*'], 'checks': t1_checks if t1_checks is not None else ['test -s src/x.py']},
        {'id': 'T3', 'role': 'reviewer', 'title': 'Review x', 'description': 'Review it.', 'depends_on': ['T1'],
         **reviewer}]}


def make(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any, script: dict[str, Any],
         plan: dict[str, Any], config: dict[str, str] | None = None,
         files: dict[str, str] | None = None) -> Host:
    monkeypatch.delenv('ORCH_TEST_CRASH_AT', raising=False)
    host = make_host(tmp_path, monkeypatch, capsys, script)
    edit_config(host.repo, config)
    for rel, content in (files or {}).items():
        path = host.repo / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    host.write_plan(plan)
    commit_all(host.repo, 'plan')
    return host


def end_group(mark: Path) -> None:
    """The check or gate this test made sleep was orphaned by the kill: end its process group (by its id)."""
    with contextlib.suppress(ValueError, OSError):
        os.killpg(int(mark.read_text().strip()), signal.SIGKILL)


def fixes_launched(host: Host) -> list[dict[str, Any]]:
    """The reviewed task's resumed turns (its review fixes)."""
    return [e for e in host.launches() if e['task_id'] == 'T1' and e['resume']]


# ---------------------------------------------------------------------------------------------
# 2. Paid twice

def test_kill_while_a_review_fix_is_checked_pays_the_fix_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: Any) -> None:
    """Bug: _fix (orch/steps/review.py) recomputes the fix whenever no commit with its Orch-Exec trailer exists.
    The fix's worker attempt ended normally (attempt.json written), so run_worker's recovery does not apply,
    and rounds.json holds nothing of the paid answer: a kill during the fix's checks (or anywhere before
    _commit_fix) makes the resume resume T1's thread and pay the model for the same fix again."""
    mark = tmp_path / 'fix-being-checked'
    monkeypatch.setenv('ADV_MARK', str(mark))
    check = ('if grep -q v2 src/x.py && ! test -e "$ADV_MARK"; then echo $$ > "$ADV_MARK"; sleep 30; fi; '
             'test -s src/x.py')
    host = make(tmp_path, monkeypatch, capsys,
                {'tasks': {'T1': [x('v1\n'), x('v2\n')],
                           'T3': [review('request_changes', 'x must handle empty input'), review('approve')]}},
                review_plan([check]),
                # unsandboxed: the check tells this test it runs through a file outside its checkout
                config={'  check_sandbox: role ': '  check_sandbox: none '})
    crashed_run(host, RUN, kill_when=mark.exists, settle=0.3)
    end_group(mark)
    assert len(fixes_launched(host)) == 1   # the fix was answered and paid before the kill
    rc, out, err = host.cli('resume', '--run-id', RUN)
    assert rc == 0, out + err
    assert host.statuses() == {'T1': 'done', 'T3': 'done'}
    assert len(fixes_launched(host)) == 1, 'the finished review fix was paid for again'


# ---------------------------------------------------------------------------------------------
# 1. False green

def test_a_review_fix_that_breaks_the_reviewed_task_s_gate_ships(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: Any) -> None:
    """Bug: a gate (host rule, roles [implementer]) runs once after T1's work step, on T1's first commit. The
    review fix (orch/steps/review.py _fix/_check_fix) is committed as a T1 commit, but only T1's checks run on
    it; T1's result.json does not change, so the gate never runs again. The run exits 0, every task is done
    and merge fast-forwards the base branch to a tree that fails the gate."""
    gate = ('name: no_todo\nscope: task\nroles: [implementer]\noutput: "{task_dir}/no_todo.json"\n'
            'action:\n  shell: "! grep -q TODO src/x.py"\n')
    host = make(tmp_path, monkeypatch, capsys,
                {'tasks': {'T1': [x('v1\n'), x('v2 TODO\n')],
                           'T3': [review('request_changes', 'handle empty input'), review('approve')]}},
                review_plan(), files={'.orchestrator/rules/gate.yaml': gate})
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--run-id', RUN)
    assert 'TODO' not in git(host.repo, 'show', f'{host.shared_branch()}:src/x.py')   # the fix is not committed
    rc2, out2, err2 = host.cli('merge', '--run-id', RUN, '--allow-automerge')
    head = git(host.repo, 'show', 'HEAD:src/x.py') if rc2 == 0 else ''
    assert rc != 0 and rc2 != 0 and 'TODO' not in head, (
        f'run rc {rc}, merge rc {rc2}: the base branch now holds a tree its gate rejects\n{out}{out2}')


def test_a_review_fix_is_not_checked_by_the_reviewer_s_own_checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: Any) -> None:
    """Bug: orch/steps/work.py _run_and_commit runs _verify (the reviewer's checks) before run_review_rounds,
    and _commit_verified after them without verifying again; _check_fix runs only the reviewed task's checks.
    A reviewer task with `checks` thus ends `done`, exit 0, although its checks fail on what it commits."""
    host = make(tmp_path, monkeypatch, capsys,
                {'tasks': {'T1': [x('v1\n'), x('v2 TODO\n')],
                           'T3': [review('request_changes', 'handle empty input'), review('approve')]}},
                review_plan(checks=['! grep -q TODO src/x.py']))
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--run-id', RUN)
    final = git(host.repo, 'show', f'{host.shared_branch()}:src/x.py')
    assert 'TODO' not in final   # the unverified fix never landed on the run's branch
    assert rc != 0 and host.statuses()['T3'] != 'done', \
        f'T3 is done although its check `! grep -q TODO src/x.py` fails on its commit ({final!r})'


def test_a_review_fix_answering_blocked_is_committed_as_done(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: Any) -> None:
    """Bug: orch/steps/review.py _fixed_answer returns result.answer without looking at its status (the work
    step's _accept turns `blocked` into the task's own outcome). The reviewed worker saying it cannot make
    the fix is committed as `T1: ... (review round 1 by T3)` and, once the reviewer approves, all is done."""
    blocked = {'status': 'blocked', 'summary': 'cannot fix it: the spec contradicts the finding',
               'files_changed': ['src/x.py'], 'decisions': [], 'follow_ups': []}
    host = make(tmp_path, monkeypatch, capsys,
                {'tasks': {'T1': [x('v1\n'), x('half a fix\n', answer=blocked)],
                           'T3': [review('request_changes', 'handle empty input'), review('approve')]}},
                review_plan())
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--run-id', RUN)
    assert rc != 0 and host.statuses() != {'T1': 'done', 'T3': 'done'}, \
        'a fix the worker declared blocked was committed and the run is green'


def test_merge_after_a_kill_during_a_gate_ships_unverified_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: Any) -> None:
    """Bug: orch/runstate/status.py task_rows says `done` when the work step is done and no *failed* gate is
    recorded; a gate that has not finished (killed) is neither. merge (orch/commands/merge.py) asks
    stale_task_ids, which looks only at builtin steps (prompt, work), not at shell gates. So `kill -9` while
    the gate runs, then `merge --allow-automerge`, fast-forwards the base branch to work the gate rejects."""
    mark = tmp_path / 'gate-started'
    monkeypatch.setenv('ADV_MARK', str(mark))
    gate = ('name: slow_gate\nscope: task\nroles: [implementer]\noutput: "{task_dir}/slow_gate.json"\n'
            'action:\n  shell: \'echo $$ > "$ADV_MARK"; sleep 30; exit 1\'\n  sandbox: none\n')
    plan = {'version': 1, 'title': 'Gate', 'tasks': [
        {'id': 'T1', 'role': 'implementer', 'title': 'Write x', 'description': 'Write src/x.py.',
         'paths': ['src/*']}]}
    host = make(tmp_path, monkeypatch, capsys, {'tasks': {'T1': [x('bad\n')]}}, plan,
                files={'.orchestrator/rules/gate.yaml': gate})
    crashed_run(host, RUN, kill_when=mark.exists, settle=0.3)
    end_group(mark)
    base = git(host.repo, 'rev-parse', 'HEAD')
    statuses = host.statuses()
    rc, out, err = host.cli('merge', '--run-id', RUN, '--allow-automerge')
    assert rc != 0 and git(host.repo, 'rev-parse', 'HEAD') == base, \
        f'status {statuses}; merge shipped T1 although its gate never passed:\n{out}{err}'


# ---------------------------------------------------------------------------------------------
# A worker is untrusted code / a commit holds only verified work

def test_a_review_fix_may_change_control_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    """Bug: _commit_fix (orch/steps/review.py) commits every change in the worktree; only the work step's
    _commit_verified calls _refuse_control_changes, and by then the fix is already committed (the guard looks
    at uncommitted paths only). A reviewed worker resumed with findings can rewrite dodo.py or
    .orchestrator/ and it lands on the branch; the run is green and merge ships it."""
    host = make(tmp_path, monkeypatch, capsys,
                {'tasks': {'T1': [x('v1\n'), {'edits': {'src/x.py': 'v2\n', 'dodo.py': 'import os  # changed\n'}}],
                           'T3': [review('request_changes', 'handle empty input'), review('approve')]}},
                review_plan())
    original = (host.repo / 'dodo.py').read_text()
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--run-id', RUN)
    on_branch = git(host.repo, 'show', f'{host.shared_branch()}:dodo.py')
    assert on_branch == original.rstrip('\n') and rc != 0, \
        f'the review fix committed a change to dodo.py (run rc {rc}): {on_branch!r}'


def test_a_parallel_review_fix_commits_another_task_s_unverified_files(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch,
                                                                       capsys: Any) -> None:
    """Bug: _commit_fix (orch/steps/review.py) calls git.commit without paths; the work step scopes its commits
    with scheduler.commit_scope in a shared parallel worktree, the fix does not. A reviewer with `paths` runs
    beside T4; T4's half-done file (T4 then answers blocked, so it must never be committed) is swept into
    `T1: Write x (review round 1 by T3)`."""
    blocked = {'status': 'blocked', 'summary': 'cannot finish', 'files_changed': [], 'decisions': [],
               'follow_ups': []}
    plan = review_plan(paths=['src/*'])
    plan['tasks'].append({'id': 'T4', 'role': 'implementer', 'title': 'Other', 'description': 'Write other/.',
                          'paths': ['other/*']})
    host = make(tmp_path, monkeypatch, capsys,
                {'tasks': {'T1': [x('v1\n'), x('v2\n')],
                           'T3': [review('request_changes', 'handle empty input'), review('approve')],
                           'T4': [{'edits': {'other/y.txt': 'half-done\n'}, 'sleep': 10, 'answer': blocked}]}},
                plan)
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--run-id', RUN, '-j', '2')
    assert host.statuses()['T4'] == 'blocked', out + err
    log = git(host.repo, 'log', '--name-only', '--format=%s', host.shared_branch())
    assert 'other/y.txt' not in log, f'a blocked task\'s file was committed by another task:\n{log}'


# ---------------------------------------------------------------------------------------------
# Review rounds of a re-run reviewer

def test_a_rerun_reviewer_never_sends_its_new_findings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: Any) -> None:
    """Bug: the exec id of a review fix is `<run>/<reviewer>/<digest[:16]>/review-<n>` (orch/steps/review.py
    _fix): it does not name the execution (the work commit's Orch-Exec has the attempt count). A failed
    reviewer resumed with the same inputs starts its rounds at 1 again, finds the old `review-1` commit and
    takes it as its own, committed before a kill: the new findings never reach T1, and the reviewer is told
    that the work was changed in response to them."""
    host = make(tmp_path, monkeypatch, capsys,
                {'tasks': {'T1': [x('v1\n'), x('v2\n'), x('v3\n'), x('v4, second execution\n')],
                           'T3': [review('request_changes', 'first'), review('request_changes', 'first'),
                                  review('request_changes', 'first'),
                                  review('request_changes', 'a new finding'), review('approve')]}},
                review_plan())
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--run-id', RUN)
    assert rc == 1 and host.statuses()['T3'] == 'failed', out + err
    assert len(fixes_launched(host)) == 2
    rc, out, err = host.cli('resume', '--run-id', RUN)
    prompts = [e['prompt'] for e in fixes_launched(host)]
    assert any('a new finding' in p for p in prompts), \
        f'the re-run reviewer\'s findings never reached T1 (resume rc {rc}, {len(prompts)} fixes in all)'


# ---------------------------------------------------------------------------------------------
# 3/4. Findings in another shape: lost, or a crash

def reviewer_schema_with_findings(host: Host, findings: dict[str, Any]) -> None:
    path = host.repo / '.orchestrator' / 'schemas' / 'reviewer.json'
    schema = json.loads(path.read_text())
    schema['properties']['findings'] = findings
    path.write_text(json.dumps(schema, indent=2))
    commit_all(host.repo, 'reviewer schema')


@pytest.mark.parametrize('items, finding', [
    ({'type': 'array', 'items': {'type': 'string'}}, 'x must handle empty input'),
    ({'type': 'array', 'items': {'type': 'object', 'additionalProperties': False, 'required': ['path', 'issue'],
                                 'properties': {'path': {'type': 'string'}, 'issue': {'type': 'string'}}}},
     {'path': 'src/x.py', 'issue': 'x must handle empty input'}),
], ids=['strings', 'other-keys'])
def test_findings_of_another_shape_are_silently_dropped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: Any, items: dict[str, Any], finding: Any) -> None:
    """Bug: orch/steps/review.py _findings_prompt keeps only dict findings and reads only severity/file/message;
    a reviewer schema whose findings are strings (or use other keys) gets `- (the reviewer listed no
    findings)` (or `- [?] : `) sent to the reviewed task: the reviewer's findings are lost. The same filter
    empties the report's failure evidence (orch/core/report.py failure_evidence)."""
    answer = review('request_changes')
    answer['answer']['findings'] = [finding]
    host = make(tmp_path, monkeypatch, capsys,
                {'tasks': {'T1': [x('v1\n'), x('v2\n')], 'T3': [answer, review('approve')]}}, review_plan())
    reviewer_schema_with_findings(host, items)
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--run-id', RUN)
    fixes = fixes_launched(host)
    assert fixes, out + err
    assert 'x must handle empty input' in fixes[0]['prompt'], fixes[0]['prompt']


def test_findings_as_a_count_crash_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    """Bug: `for f in findings or []` in orch/steps/review.py _findings_prompt (and len() in
    _changes_requested, iteration in orch/core/report.py failure_evidence) assumes a list: a valid answer
    `"findings": 2` raises TypeError: internal error, exit 3."""
    answer = review('request_changes')
    answer['answer']['findings'] = 2
    host = make(tmp_path, monkeypatch, capsys,
                {'tasks': {'T1': [x('v1\n'), x('v2\n')], 'T3': [answer, review('approve')]}}, review_plan())
    reviewer_schema_with_findings(host, {'type': 'integer', 'description': 'how many problems were found'})
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--run-id', RUN)
    assert rc != 3 and 'internal error' not in out + err, out + err
