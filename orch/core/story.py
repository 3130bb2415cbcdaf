"""Each task's story and the run's timeline, for report.md and junit.xml. Pure rendering, from summary rows.

A row's `rounds` (orch.steps.rounds.Rounds.history) are the rounds of its latest execution in order: a repair
round holds the failing check run it fixed (`failed_check`), a review round the reviewer's findings as they were
when it asked for changes (its later answer approves and has none), its fix commit and the checks and gates run
on that fix (`runs`), a conflict round the files or the check that failed on the new tip. Gate runs after the
task's commit are its `gates`; a cache hit its `cache`.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from orch.core import graph

# What a worker launch was (launch.json's kind), as the report explains `attempts`.
ATTEMPT_KINDS = {'initial': 'execution start', 'resume': 'round turn', 'schema-retry': 'schema retry',
                 'failure-retry': 'retry after a failure', 'resume-retry': 'round turn retried',
                 'fresh-thread': 'round in a fresh thread'}
ROUND_WORDS = {'repair': 'repair round', 'review': 'review round', 'conflict': 'conflict round'}
GANTT_BAR = 20   # characters a bar takes at least: the limit on plans as big as the graph's


def attempts_text(task: Mapping[str, Any]) -> str:
    """`attempts` explained: worker launches of every execution of the task in this run, by kind."""
    attempts = int(task.get('attempts') or 0)
    kinds = task.get('attempt_kinds') or ({'initial': attempts} if attempts == 1 else {})
    parts = [f'{n} {ATTEMPT_KINDS.get(k, k)}{"s" if n != 1 and k in ATTEMPT_KINDS else ""}'
             for k, n in kinds.items() if n]
    return f'{attempts} worker launch{"es" if attempts != 1 else ""}' + (f' ({", ".join(parts)})' if parts else '')


def has_story(task: Mapping[str, Any]) -> bool:
    """More happened than its row says: rounds, gates, a cache hit, a fix by a reviewer, retries."""
    return bool(task.get('rounds') or task.get('gates') or task.get('fixed_by') or int(task.get('attempts') or 0) > 1
                or (task.get('cache') or {}).get('hit'))


def story_lines(task: Mapping[str, Any], cell: Any) -> list[str]:
    """Markdown lines: the task's executions and rounds in order, then the commit it ended with. `cell(text,
    limit)` makes one line of table-safe text."""
    out = [f'### {task["id"]} ({task["status"]})', '', f'- attempts: {attempts_text(task)}']
    cache = task.get('cache') or {}
    if cache.get('hit'):
        origin = cache.get('origin') or {}
        out.append(f'- cache hit: the result of task {origin.get("task", "?")} of run {origin.get("run", "?")}, '
                   'replayed and verified here')
    for entry in task.get('rounds') or []:
        out += _round_lines(entry, cell)
    for gate in task.get('gates') or []:
        out.append(f'- gate `{cell(gate.get("name"), 60)}` after its commit: {_run_word(gate)}')
        if not gate.get('passed'):
            out += _tail_block(gate)
    for fix in task.get('fixed_by') or []:
        out.append(f'- fixed in review round {fix.get("round")} of {fix.get("task")}: '
                   f'commit `{str(fix.get("commit") or "")[:10]}`')
    commit = str(task.get('commit') or '')[:10]
    out.append(f'- ended with commit `{commit}`' if commit else '- ended with no commit of its own')
    return [*out, '']


def _round_lines(entry: Mapping[str, Any], cell: Any) -> list[str]:
    kind, number = str(entry.get('kind')), entry.get('round')
    head = f'- {ROUND_WORDS.get(kind, kind)} {number}'
    if kind == 'repair':
        failed = entry.get('failed_check') or {}
        return [f'{head}: check `{cell(failed.get("command"), 120)}` failed ({_ending(failed)})',
                *_tail_block(failed)]
    if kind == 'review':
        out = [f'{head}: {entry.get("by")} asked for changes ({cell(entry.get("verdict"), 120)}), sent to '
               f'{entry.get("target")}' + (':' if entry.get('findings') else '')]
        out += [f'  - {cell(line, 300)}' for line in entry.get('findings') or []]
        fix = entry.get('fix') or {}
        if fix:
            files = ', '.join(fix.get('files') or []) or 'no files'
            commit = str(fix.get('commit') or '')[:10]
            out.append(f'  - fix by {fix.get("task")}: ' + (f'commit `{commit}` ({cell(files, 200)})' if commit
                                                            else 'no commit (it changed nothing)'))
        for run in entry.get('runs') or []:
            what = run.get('name') if run.get('kind') == 'gate' else run.get('command')
            out.append(f'  - {run.get("kind")} `{cell(what, 120)}` in this round: {_run_word(run)}')
        if entry.get('passed') is not None:
            out.append(f'  - then {entry.get("by")} answered: ' + ('passes' if entry['passed'] else 'still fails'))
        return out
    if kind == 'conflict':
        failed = entry.get('failed_check')
        what = (f'check `{cell(failed.get("command"), 120)}` failed on the new tip ({_ending(failed)})'
                if isinstance(failed, dict) else f'conflicts in {cell(", ".join(entry.get("files") or []), 200)}')
        return [f'{head}: {what}', *(_tail_block(failed) if isinstance(failed, dict) else [])]
    return [head]


def _tail_block(run: Mapping[str, Any]) -> list[str]:
    tail = str(run.get('tail') or '').strip('\n') or '(no output)'
    return ['', '  ```', *(f'  {line}'.replace('```', "'''") for line in tail.splitlines()), '  ```', '']


def _run_word(run: Mapping[str, Any]) -> str:
    verdict = 'passed' if run.get('passed') else 'FAILED'
    return f'{verdict} ({_ending(run)}, {float(run.get("duration") or 0):.1f}s)'


def _ending(run: Mapping[str, Any]) -> str:
    return 'timed out' if run.get('exit_code') is None else f'exit {run.get("exit_code")}'


def failing_rounds(task: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(message, evidence) of each round that began with a failure: its check's tail, the reviewer's findings."""
    out = []
    for entry in task.get('rounds') or []:
        kind, number = entry.get('kind'), entry.get('round')
        failed = entry.get('failed_check')
        if isinstance(failed, dict):
            out.append((f'{ROUND_WORDS.get(str(kind), kind)} {number}: {failed.get("command")} ({_ending(failed)})',
                        f'$ {failed.get("command")}  ({_ending(failed)})\n{failed.get("tail") or "(no output)"}'))
        elif kind == 'review':
            out.append((f'review round {number}: {entry.get("by")} asked for changes',
                        '\n'.join(entry.get('findings') or []) or str(entry.get('verdict') or '')))
        elif kind == 'conflict':
            out.append((f'conflict round {number}', 'conflicts in ' + ', '.join(entry.get('files') or [])))
    return out


def _gantt_text(text: object, limit: int = graph.TITLE_LIMIT) -> str:
    """Plain words for a gantt line: none of the characters its grammar reads (`:`, `#` starts a comment, `;`),
    no entity (a gantt shows it as it is), no line break."""
    line = graph.short_title(str(text or ''), limit)
    return ' '.join(''.join(c if c.isalnum() or c in ' .,_()/+=?!\'-' else ' ' for c in line).split()) or '-'


def _ms(value: Any) -> int | None:
    return int(float(value) * 1000) if isinstance(value, int | float) and value > 0 else None


def _bar(name: str, tag: str, start: Any, end: Any, fallback_end: int | None) -> str | None:
    begin, finish = _ms(start), _ms(end) or fallback_end
    if begin is None or finish is None:
        return None
    tags = f'{tag}, ' if tag else ''
    return f'    {_gantt_text(name)} :{tags}{begin}, {max(finish, begin + 1)}'


def render_gantt(tasks: list[Mapping[str, Any]]) -> str | None:
    """A Mermaid `gantt` of the run on wall-clock time: a section per task that ran, its execution (done, red
    when it failed, active while it runs), its rounds and its gates. None: nothing ran yet."""
    lines = ['gantt', '    dateFormat x', '    axisFormat %H:%M:%S']
    ends = [_ms(t.get('ended_at')) or 0 for t in tasks] + [_ms(g.get('finished_at')) or 0 for t in tasks
                                                           for g in t.get('gates') or []]
    last = max(ends, default=0) or None
    drawn = False
    for task in tasks:
        if _ms(task.get('started_at')) is None:
            continue
        status = str(task.get('status'))
        tag = {'done': 'done', 'running': 'active', 'stale': 'done'}.get(status, 'crit' if status in (
            'failed', 'blocked') else '')
        bars = [_bar(f'{status}', tag, task.get('started_at'), task.get('ended_at'), last)]
        for entry in task.get('rounds') or []:
            word = ROUND_WORDS.get(str(entry.get('kind')), str(entry.get('kind')))
            bars.append(_bar(f'{word} {entry.get("round")}', 'active', entry.get('started_at'),
                             entry.get('ended_at'), _ms(task.get('ended_at')) or last))
        for gate in task.get('gates') or []:
            bars.append(_bar(f'gate {gate.get("name")}', '' if gate.get('passed') else 'crit',
                             gate.get('started_at'), gate.get('finished_at'), last))
        shown = [b for b in bars if b]
        if shown:
            lines += [f'    section {_gantt_text(task.get("id"), 30)} {_gantt_text(task.get("title"))}', *shown]
            drawn = True
    return '\n'.join(lines) + '\n' if drawn else None


def gantt_for_github(tasks: list[Mapping[str, Any]]) -> str | None:
    """The gantt if GitHub would draw it (the graph's limit on its text), else None."""
    if len(tasks) > graph.MERMAID_MAX_TEXT // GANTT_BAR:
        return None
    text = render_gantt(tasks)
    return text if text is not None and len(text) <= graph.MERMAID_MAX_TEXT else None

