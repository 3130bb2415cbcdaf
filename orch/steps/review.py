"""Verdict rounds: a failing verdict goes back to the work it judges (a reviewer's `request_changes`, a tester's
`tests_passed: false`: whatever the role's schema declares, see orch.core.verdict).

The Codex thread of the judged task is resumed with the findings, in the judging task's worktree (which
holds that work); its fix must validate against its own role's schema and pass its own checks, and is
committed as a commit of the judged task (trailers name the judging task and the round). Then the judging
task's thread looks again. At most `review_rounds` rounds; a verdict still failing after them leaves its
task failed (`changes requested`), with the findings in the report. Which task gets the findings: the
first task the judging task depends on whose role is `implementer`, else its first dependency that is not a
reviewer (documented in the README).
"""
from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from typing import Any

from orch.adapters import git, tracing
from orch.adapters.worker_types import WorkerResult
from orch.core.plan import Plan, Task
from orch.core.redact import redact, redact_obj
from orch.core.report import findings_lines
from orch.core.text import one_line
from orch.core.verdict import Verdict, verdict_of
from orch.failpoints import crash_point
from orch.runstate import state
from orch.steps import checkout, gate, git_seal
from orch.steps.commands import CommandRun, check_attrs, command_env, ran, run_command
from orch.steps.failure import Failed
from orch.steps.guard import protected_reason, touched_control_files, touched_protected_in
from orch.steps.rounds import Rounds, changed_files
from orch.steps.sandboxing import role_sandbox
from orch.steps.task_work import TaskWork, author_of, call_turn, worker_spec


def requests_changes(answer: Any, schema: Any) -> bool:
    """The answer is a failing verdict by its role's schema: its findings go back to the work it judges."""
    return verdict_of(schema).fails(answer)


def reviewed_task(plan: Plan, reviewer: Task) -> Task | None:
    deps = [plan.by_id[d] for d in reviewer.depends_on]
    return next((t for t in deps if t.role == 'implementer'), None) or \
        next((t for t in deps if t.role != 'reviewer'), None)


def run_review_rounds(work: TaskWork, rounds: Rounds, accept: Any, call: Any) -> None:
    """Until the verdict passes, or the rounds are spent. `accept(result)` checks a judging answer (as for the
    first one), `call(prompt, resume)` runs the judging task's worker."""
    rt, task = work.rt, work.task
    limit = rt.role(task.role).review_rounds
    target = reviewed_task(rt.plan, task)
    verdict = verdict_of(work.ex.schema)
    while verdict.fails(rounds.answer):
        if rounds.review_phase is None:
            if target is None or rounds.reviews >= limit:
                raise _changes_requested(work, rounds, target, verdict)
            rounds.reviews += 1
            rounds.review_phase = 'fixing'
            # What the judging task itself wrote (a tester's tests): its evidence, which the fix may not change
            rounds.judge_files = changed_files(work.workdir, None)
            # what the reviewer found, kept for the reports after it approves (its answer then has no findings)
            rounds.round_record('review', rounds.reviews, by=task.id, target=target.id,
                                verdict=verdict.given(rounds.answer), findings=_findings(rounds.answer),
                                summary=rounds.answer.get('summary') if isinstance(rounds.answer, dict) else None)
            rounds.save(work.task_dir)
        assert target is not None
        if rounds.review_phase in ('fixing', 'fix-checking'):
            _fix(work, rounds, target, limit, verdict)
            rounds.review_phase = 'reviewing'
            rounds.save(work.task_dir)
        state.update_state(work.task_dir, round=f'review {rounds.reviews} of {limit}')
        rounds.begin_turn(work.task_dir)
        result = call(_review_again_prompt(rounds, limit, verdict), rounds)
        crash_point('after-review-answer', task.id)
        rounds.end_turn(result.usage)   # recorded with the new verdict below, or at once when it is refused
        if not result.ok:
            rounds.save(work.task_dir)
        rounds.answer = accept(result)
        rounds.thread_id = result.thread_id or rounds.thread_id
        rounds.cumulative = result.usage_cumulative or rounds.cumulative
        rounds.review_phase = None
        rounds.round_record('review', rounds.reviews).update(
            ended_at=time.time(), passed=not verdict.fails(rounds.answer))
        rounds.save(work.task_dir)


def _fix(work: TaskWork, rounds: Rounds, target: Task, limit: int, verdict: Verdict) -> None:
    """The reviewed task's thread, resumed with the findings; its fix checked and committed on its own."""
    rt, task, task_dir, workdir = work.rt, work.task, work.task_dir, work.workdir
    round_no = rounds.reviews
    # Names this execution (started_at survives a kill in rounds.json; a new execution has its own), so an
    # earlier execution's fix commit is never mistaken for this round's.
    exec_id = f'{rt.run.run_id}/{task.id}/{work.digest[:16]}/{int(rounds.started_at * 1000)}/review-{round_no}'
    sha = git.find_commit_by_trailer(workdir, 'Orch-Exec', exec_id, since=rt.run.base_commit)
    if sha is not None and git.rev_parse(workdir, 'HEAD') == sha:
        checkout.moved(task_dir, sha)   # this round's fix, committed just before a kill
    answer = rounds.fix_answer
    if sha is None:
        if rounds.review_phase != 'fix-checking':   # the fix itself is paid for once, then recorded
            state.update_state(task_dir, round=f'review {round_no} of {limit}: {target.id} fixes')
            answer = _fixed_answer(work, rounds, target, round_no, limit, verdict)
            rounds.fix_answer, rounds.review_phase = answer, 'fix-checking'
            rounds.save(task_dir)
        paths = _check_fix(work, rounds, target, round_no)
        sha = _commit_fix(work, rounds, target, exec_id, round_no, answer, paths)
    fix = {'round': round_no, 'task': target.id, 'commit': sha, 'files': git.commit_files(workdir, sha) if sha else [],
           'summary': answer.get('summary') if isinstance(answer, dict) else None}
    rounds.fixes.append(fix)
    rounds.round_record('review', round_no)['fix'] = {**fix, 'exec_id': exec_id}
    rounds.fix_answer = rounds.judge_files = None


def _fixed_answer(work: TaskWork, rounds: Rounds, target: Task, round_no: int, limit: int, verdict: Verdict) -> Any:
    rt = work.rt
    target_result = state.read_result(rt.task_dir(target.id)) or {}
    thread = target_result.get('thread_id')
    if not thread:
        raise _fail(work, rounds, f'changes requested, but {target.id} has no Codex thread to resume')
    role = rt.role(target.role)
    schema = rt.schema(role.schema_file)
    # the work step's spec (review is one of its phases), for the reviewed task's role
    spec = dataclasses.replace(worker_spec(work), sandbox=role.sandbox, model=role.model or None,
                               schema_path=rt.path(role.schema_file).resolve())
    rounds.begin_turn(work.task_dir)
    result: WorkerResult = call_turn(   # here, or on the Dask worker that holds the thread
        work, spec, schema, _findings_prompt(rounds.answer, work.task, round_no, limit, verdict), thread,
        rounds.fix_cumulative or target_result.get('usage'), target, reuse_since=rounds.turn_since)
    crash_point('after-fix-answer', work.task.id)
    # Paid for: recorded with the fix's answer by the caller (a kill before it takes the ended turn again, unpaid),
    # or at once when the answer is refused.
    rounds.end_turn(result.usage)
    rounds.fix_cumulative = result.usage_cumulative or rounds.fix_cumulative
    if not result.ok:
        rounds.save(work.task_dir)
    if result.outcome == 'interrupted':
        state.update_state(work.task_dir, status='pending', reason='interrupted; resume to run it again')
        raise Failed('interrupted')
    if not result.ok:
        raise _fail(work, rounds, f'review round {round_no}: the fix by {target.id} failed: '
                                  f'{result.outcome}: {result.error}')
    answer = redact_obj(result.answer)
    if isinstance(answer, dict) and answer.get('status') == 'blocked':
        raise _fail(work, rounds, f'review round {round_no}: {target.id} reported blocked: '
                                  f'{answer.get("summary") or "(no reason given)"}', outcome='blocked')
    return answer


def _fix_paths(work: TaskWork, rounds: Rounds, target: Task, round_no: int) -> list[str]:
    """What the fix changed: the changed files but the judging task's own (those stay for its own commit). A fix
    that changed one of those (a tester's failing test rewritten to pass) fails the round: the judged work may
    not rewrite the evidence that judges it."""
    judge = rounds.judge_files
    if judge is None:   # rounds.json of an execution from before this was recorded
        judge = rounds.judge_files = changed_files(work.workdir, None)
    now = changed_files(work.workdir, None)
    rewritten = sorted(path for path, digest in judge.items() if now.get(path, '') != digest)
    if rewritten:
        raise _fail(work, rounds, f'review round {round_no}: the fix by {target.id} changed files of '
                                  f'{work.task.id}, the task judging it: {", ".join(rewritten)}; nothing was '
                                  'committed (the judged work may not change the evidence that judges it)',
                    outcome='judge-files')
    return sorted(path for path in now if path not in judge)


def _check_fix(work: TaskWork, rounds: Rounds, target: Task, round_no: int) -> list[str]:
    """The fix changes none of its judge's files, no control file, no protected file, and passes what the
    reviewed task's own work had to: its checks, then its gates (run here, on the fix, as gate.py runs them,
    since the reviewed task's gate steps ran before it). Returns the paths the fix changed."""
    rt = work.rt
    changed = _fix_paths(work, rounds, target, round_no)
    if not target.control_files:
        touched = touched_control_files(changed, rt.config)
        if touched:
            raise _fail(work, rounds, f'review round {round_no}: the fix by {target.id} changed codex-orch '
                                      f'control files: {", ".join(touched)}; nothing was committed',
                        outcome='control-files')
    protected = touched_protected_in(work.workdir, changed, rt.config, target)
    if protected:
        raise _fail(work, rounds, f'review round {round_no}: the fix by {target.id}: {protected_reason(protected)}',
                    outcome='protected-files')
    env = command_env(rt, work.task.id)
    role = rt.role(target.role)
    checks = (*role.checks, *target.checks)
    sandbox = role_sandbox(rt, target.role, env) if checks else None
    logs = work.task_dir / 'checks' / f'review-{round_no}'
    jobs: list[tuple[str, str, str, Callable[[], CommandRun]]] = [
        ('check', f'check-{n}', command, functools.partial(
            run_command, rt, command, cwd=work.workdir, env=env, log_path=logs / f'check-{n}.log',
            timeout=role.check_timeout, sandbox=sandbox, cancel=work.session.cancel))
        for n, command in enumerate(checks, 1)]
    jobs += [('gate', s.rule.name, s.shell or '', functools.partial(
        gate.run_in_checkout, rt, work.session, s, work.workdir, logs / f'gate-{s.rule.name}.log'))
        for s in rt.steps if s.task_id == target.id and s.builtin is None and s.rule.gate]
    history = rounds.round_record('review', round_no)['runs'] = []   # a resume runs them all again
    for what, name, command, start in jobs:   # one at a time, up to the first that fails
        with tracing.span(f'{what} {name} (review {round_no} fix)',
                          {**check_attrs(target.id, command), 'codex_orch.round': f'review {round_no}'}) as traced:
            run = start()
            ran(traced, run)
        history.append({'kind': what, 'name': name, **run.to_dict()})
        if not run.passed:
            rounds.checks = [run.to_dict()]
            raise _fail(work, rounds, f'review round {round_no}: the fix by {target.id} fails its {what}: '
                                      f'{run.command} ({run.why})')
    return changed


def _commit_fix(work: TaskWork, rounds: Rounds, target: Task, exec_id: str, round_no: int, answer: Any,
                paths: list[str]) -> str | None:
    rt = work.rt
    trailers = {'Orch-Run': rt.run.run_id, 'Orch-Task': target.id, 'Orch-Role': target.role, 'Orch-Exec': exec_id,
                'Orch-Review': f'{work.task.id} round {round_no}'}
    message = redact(f'{target.id}: {one_line(target.title)} (review round {round_no} by {work.task.id})')
    with work.session.scheduler.commit_lock:
        git_seal.check(work.session, work.task_dir, work.workdir)   # the fix's worker ran in this repository too
        try:   # what the fix changed; the judging task's own files stay for its own commit
            expect_head = checkout.expected_head(work.task_dir)
            sha = git.commit(work.workdir, message=message, trailers=trailers, paths=paths,
                             author=author_of(rt.config.git.author), expect_branch=work.branch,
                             expect_head=expect_head, detached=work.shared)
            if sha is not None:
                checkout.moved(work.task_dir, sha)
            return sha
        except git.CommitRefused as exc:
            raise _fail(work, rounds, f'review round {round_no}: the fix by {target.id} cannot be committed: '
                                      f'{exc}') from None


def _findings(answer: Any) -> list[str] | None:
    """What the judging answer found: its `findings` (a reviewer) or `failures`, as lines; None: it has neither."""
    if not isinstance(answer, dict):
        return None
    key = next((k for k in ('findings', 'failures') if k in answer), None)
    return None if key is None else findings_lines(answer[key])


def _findings_prompt(answer: Any, judge: Task, round_no: int, limit: int, verdict: Verdict) -> str:
    answer = answer if isinstance(answer, dict) else {}
    findings = _findings(answer)
    lines = [f'- {line}' for line in findings or []] or ['- (it listed no findings)']
    found = '' if findings is None else '\n\nIts findings:\n' + '\n'.join(lines)
    ran = answer.get('test_command')
    ran = f'\n\nThe command it ran: {ran}' if isinstance(ran, str) and ran.strip() else ''
    return (f'Your work was judged by task {judge.id} ({judge.role}), whose verdict does not pass: it answered '
            f'{verdict.given(answer)}, and {verdict.wanted()} passes (review round {round_no} of {limit}). '
            f'Its summary: {answer.get("summary", "")}{found}{ran}\n\n'
            'Your work is in the worktree: change it to resolve what it found (only what that asks for). '
            'Then reply with ONLY a JSON object that matches the output schema, describing what you changed.\n')


def _review_again_prompt(rounds: Rounds, limit: int, verdict: Verdict) -> str:
    fix = rounds.fixes[-1] if rounds.fixes else {}
    files = ', '.join(fix.get('files') or []) or '(no files)'
    commit = (fix.get('commit') or '')[:12] or '(no commit: nothing changed)'
    return (f'The work you judged was changed in response to your answer (review round {rounds.reviews} of '
            f'{limit}): commit {commit}, files: {files}. Judge the worktree as it is now, running again what '
            f'you ran. Answer with {verdict.wanted()} when it passes, or with what still fails (your findings '
            'that remain). Reply with ONLY a JSON object that matches the output schema.\n')


def _changes_requested(work: TaskWork, rounds: Rounds, target: Task | None, verdict: Verdict) -> Failed:
    findings = _findings(rounds.answer)
    why = (f'after {rounds.reviews} review round{"s" if rounds.reviews != 1 else ""}' if target is not None
           else 'no task to send them to')
    if findings is None:
        return _fail(work, rounds, f'changes requested: {verdict.given(rounds.answer)}, not {verdict.wanted()}, '
                                   f'{why}', outcome='changes-requested')
    count = len(findings)
    return _fail(work, rounds, f'changes requested: {count} finding{"s" if count != 1 else ""} {why}',
                 outcome='changes-requested')


def _fail(work: TaskWork, rounds: Rounds, reason: str, outcome: str = 'review-failed') -> Failed:
    state.update_state(work.task_dir, status='failed', reason=reason, ended_at=time.time(), round=None,
                       outcome=outcome, usage=rounds.usage, answer=rounds.answer, checks=rounds.checks,
                       review_rounds=rounds.reviews, fixes=rounds.fixes, rounds=rounds.history,
                       attempts=state.attempt_count(work.task_dir))
    Rounds.clear(work.task_dir)
    return Failed(reason)
