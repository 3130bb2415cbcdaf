"""Reports of a run: report.md (people), summary.json (machines), junit.xml (CI). Pure rendering."""
from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

from orch.core import graph, story
from orch.core.prices import money
from orch.core.tables import table
from orch.core.text import plain

SUMMARY_VERSION = 1
# Characters XML 1.0 cannot carry at all (ElementTree writes them anyway, and parsers then reject the
# whole file); worker errors quote codex's stderr, which often has ANSI colour escapes.
_XML_ILLEGAL = re.compile('[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]')
# Statuses that are a failure wherever a person or CI looks (deferred: come back later, not a test failure).
FAILED_STATUSES = frozenset({'failed', 'blocked', 'deferred'})
TOKEN_KEYS = ('input_tokens', 'billed_input_tokens', 'cached_input_tokens', 'output_tokens', 'reasoning_output_tokens')


def build_summary(run: dict[str, Any], tasks: list[dict[str, Any]]) -> dict[str, Any]:
    """`usage`: what the latest execution of each task used; `usage_total`: everything the run paid, every
    execution, attempt and round (the keys are the same; billed input is input less cached input); `cost`: what
    `usage_total` cost by the config's price table (None without one), as each task's `cost`; `decisions`: every
    task's (its row's), in plan order."""
    counts: dict[str, int] = {}
    usage = dict.fromkeys(TOKEN_KEYS, 0)
    total = dict.fromkeys(TOKEN_KEYS, 0)
    for task in tasks:
        counts[task['status']] = counts.get(task['status'], 0) + 1
        for key in TOKEN_KEYS:
            usage[key] += int((task.get('usage') or {}).get(key, 0))
            total[key] += int((task.get('usage_total') or task.get('usage') or {}).get(key, 0))
    costs = [t['cost'] for t in tasks if t.get('cost') is not None]
    summary = {'version': SUMMARY_VERSION, 'run': run, 'counts': counts, 'usage': usage, 'usage_total': total,
               'cost': round(sum(costs), 10) if costs else None, 'tasks': tasks,
               'decisions': [{'task_id': t['id'], 'role': t['role'], **d}
                             for t in tasks for d in t.get('decisions') or []]}
    looked_up = [t['cache'] for t in tasks if isinstance(t.get('cache'), dict)]
    if looked_up:   # the result cache is on (orch.steps.cache_hit): its latest lookup of each task
        hits = [c for c in looked_up if c.get('hit')]
        summary['cache'] = {'hits': len(hits), 'misses': len(looked_up) - len(hits),
                            'tokens_saved': sum(int(c.get('tokens_saved') or 0) for c in hits)}
    return summary


def keyless_miss(task: dict[str, Any]) -> bool:
    """A task deferred by a cache miss with no provider key (orch.steps.cache_hit): the run exits 2 for it."""
    record = task.get('cache')
    return task['status'] == 'deferred' and isinstance(record, dict) and bool(record.get('miss'))


def cache_word(task: dict[str, Any]) -> str:
    """'hit', 'miss' or '' (the cache is off, or the task was never looked up)."""
    record = task.get('cache')
    return '' if not isinstance(record, dict) else 'hit' if record.get('hit') else 'miss'


def _token_line(summary: dict[str, Any]) -> str:
    u = summary.get('usage_total') or summary['usage']
    line = (f'Tokens: {u.get("billed_input_tokens", 0)} billed input, {u["cached_input_tokens"]} cached input, '
            f'{u["output_tokens"]} output ({u["reasoning_output_tokens"]} of it reasoning), every execution counted'
            + (f'; cost {money(summary["cost"])}.' if summary.get('cost') is not None else '.'))
    latest = summary['usage']
    if latest != u:
        line += (f' The latest execution of each task: {latest["input_tokens"]} input, '
                 f'{latest["output_tokens"]} output.')
    return line


def _task_tokens(task: dict[str, Any]) -> str:
    total, latest = task.get('usage_total') or task.get('usage'), task.get('usage')
    shown = _tokens(total)
    if latest and _tokens(latest) != shown:
        shown += f' (latest {_tokens(latest)})'
    return shown


def _tokens(usage: dict[str, Any] | None) -> str:
    if not usage:
        return ''
    return f'{usage.get("input_tokens", 0)}/{usage.get("output_tokens", 0)}'


def _cell(text: object, limit: int = 80) -> str:
    line = ' '.join(str(text or '').split())
    return line if len(line) <= limit else line[: limit - 1] + '…'


def _md(text: object, limit: int = 80) -> str:
    """A table cell: one line, and a `|` in a worker's summary must not split the row."""
    return _cell(text, limit).replace('|', '\\|')


def _xml(text: object) -> str:
    return _XML_ILLEGAL.sub('\ufffd', plain(str(text or '')))   # colours removed, not shown as U+FFFD


def render_markdown(summary: dict[str, Any]) -> str:
    run = summary['run']
    rows = [[t['id'], t['role'], t['status'], t['attempts'], f'{t["duration"]:.1f}s' if t.get('duration') else '',
             _task_tokens(t), (t.get('commit') or '')[:10],
             len(t.get('files_changed') or []),
             _md(t.get('summary'))] for t in summary['tasks']]
    headers = ['task', 'role', 'status', 'attempts', 'duration', 'tokens in/out', 'commit', 'files', 'summary']
    counts = ', '.join(f'{v} {k}' for k, v in sorted(summary['counts'].items()))
    out = [f'# codex-orch run {run["run_id"]}', '',
           f'Base: `{run.get("base_branch") or "(detached)"}` at `{run["base_commit"][:10]}`. '
           f'Plan: `{run["plan_file"]}`. Tasks: {counts}.', '',
           _token_line(summary), '',
           table(rows, headers, 'github'), '',   # no number parsing: a commit prefix of digits is no number
           '`attempts`: worker launches of the task in this run (every execution, round turn and retry).', '',
           *_graph_section(summary), *_timeline_section(summary), *_cache_section(summary), *_story_section(summary)]
    failures = [t for t in summary['tasks'] if t['status'] in FAILED_STATUSES]
    if failures:
        out += ['## Failures', '']
        for task in failures:
            out.append(f'- **{task["id"]}** ({task["status"]}): {_cell(task.get("reason"), 500)}')
            evidence = failure_evidence(task)
            if evidence:
                out += ['', '  ```', *(f'  {line}' for line in evidence.splitlines()), '  ```']
        out.append('')
    warned = [t for t in summary['tasks'] if t.get('warnings')]
    if warned:
        out += ['## Warnings', '']
        out += [f'- **{t["id"]}**: {_cell(w, 500)}' for t in warned for w in t['warnings']]
        out.append('')
    verified = [t for t in summary['tasks'] if t.get('setup') or t.get('checks') or t.get('gates')]
    if verified:
        out += ['## Checks and gates', '']
        for task in verified:
            for kind, run in [*(('setup', s) for s in task.get('setup') or []),
                              *(('check', c) for c in task.get('checks') or []),
                              *(('gate', g) for g in task.get('gates') or [])]:
                verdict = 'passed' if run.get('passed') else 'FAILED'
                out.append(f'- **{task["id"]}** {kind} `{_md(run.get("command"), 120)}`: {verdict} '
                           f'({_ending(run)}, {float(run.get("duration") or 0):.1f}s)')
        out.append('')
    if summary['decisions']:
        out += ['## Decisions', '']
        for d in summary['decisions']:
            out.append(f'- **{d["task_id"]}**: {_cell(d.get("decision"), 300)} — {_cell(d.get("rationale"), 500)}')
        out.append('')
    return '\n'.join(out)


def _cache_section(summary: dict[str, Any]) -> list[str]:
    """Which tasks came from the result cache (verified here all the same) and why the others missed."""
    cache = summary.get('cache')
    if not cache:
        return []
    out = ['## Result cache', '', f'{cache["hits"]} hit(s), {cache["misses"]} miss(es); '
           f'{cache["tokens_saved"]:,} tokens saved. A hit\'s checks and gates ran in this run.', '']
    for task in summary['tasks']:
        record, word = task.get('cache') or {}, cache_word(task)
        if word == 'hit':
            origin = record.get('origin')
            origin = origin if isinstance(origin, dict) else {}
            out.append(f'- **{task["id"]}** hit: from task {_md(origin.get("task", "?"))} of run '
                       f'{_md(origin.get("run", "?"))} '
                       f'on {_md(origin.get("host", "?"), 60)}, {int(record.get("tokens_saved") or 0):,} tokens saved')
        elif word == 'miss':
            why = record.get('miss') or record.get('refused') or 'no entry for its inputs'
            out.append(f"- **{task['id']}** miss: {_md(why, 300)}")
    return [*out, '']


def _graph_section(summary: dict[str, Any]) -> list[str]:
    """The plan as a Mermaid diagram (GitHub draws it, in a step summary too), each task in its status's colour."""
    tasks = summary['tasks']
    if not tasks:
        return []
    nodes = graph.nodes(tasks)
    diagram = graph.mermaid_for_github(nodes, {t['id']: t['status'] for t in tasks})
    out = ['## Graph', '']
    if diagram is not None:
        out += ['```mermaid', diagram.rstrip('\n'), '```']
    else:   # an error box instead of a diagram helps nobody: say where the whole graph is
        out.append(f'{len(tasks)} tasks and {len(graph.edges(nodes))} dependencies: more than GitHub draws as a '
                   f'diagram; `codex-orch graph --run-id {summary["run"]["run_id"]} --format dot` prints it '
                   'for Graphviz.')
    return [*out, '']


def _timeline_section(summary: dict[str, Any]) -> list[str]:
    """The run on wall-clock time: each task's execution, its rounds and its gates (a Mermaid gantt)."""
    tasks = summary['tasks']
    gantt = story.gantt_for_github(tasks)
    if gantt is not None:
        return ['## Timeline', '', '```mermaid', gantt.rstrip('\n'), '```', '']
    if any(t.get('started_at') for t in tasks):
        return ['## Timeline', '', f'{len(tasks)} tasks: more than GitHub draws as a diagram; each task\'s times '
                '(`started_at`, `ended_at`, `rounds[]`, `gates[]`) are in summary.json.', '']
    return []


def _story_section(summary: dict[str, Any]) -> list[str]:
    """Per task with more than its row says: its attempts, rounds (with their evidence), gates, the commit it
    ended with."""
    told = [t for t in summary['tasks'] if story.has_story(t)]
    if not told:
        return []
    return ['## Stories', '', *(line for t in told for line in story.story_lines(t, _md))]


def render_junit(summary: dict[str, Any]) -> str:
    """One test case per task (failed, blocked and changes-requested tasks are failures, with their
    evidence), and one per gate run, so a CI system reading JUnit sees every failure."""
    tasks = summary['tasks']
    gates = [(t, g) for t in tasks for g in t.get('gates') or []]
    failed = [t['status'] in FAILED_STATUSES - {'deferred'} or keyless_miss(t) for t in tasks]
    failures = sum(failed) + sum(not g.get('passed') for _, g in gates)
    suite = ET.Element('testsuite', name=f'codex-orch {summary["run"]["run_id"]}', tests=str(len(tasks) + len(gates)),
                       failures=str(failures), errors='0',
                       skipped=str(sum(not f and t['status'] != 'done' for t, f in zip(tasks, failed, strict=True))),
                       time=f'{sum(t.get("duration") or 0 for t in tasks):.3f}')
    for task in tasks:
        case = ET.SubElement(suite, 'testcase', classname=f'codex-orch.{task["role"]}', name=task['id'],
                             time=f'{task.get("duration") or 0:.3f}')
        if cache_word(task):   # the result cache: a hit's checks ran here all the same
            props = ET.SubElement(case, 'properties')
            ET.SubElement(props, 'property', name='codex-orch.cache', value=cache_word(task))
        if task['status'] in FAILED_STATUSES - {'deferred'}:
            text = '\n\n'.join(filter(None, [str(task.get('reason') or ''), failure_evidence(task)]))
            ET.SubElement(case, 'failure', type=task['status'],
                          message=_xml(_cell(task.get('reason'), 500))).text = _xml(text)
        elif keyless_miss(task):   # nothing was launched and the run exits 2: a CI must see it, not skip it
            ET.SubElement(case, 'failure', type='cache-miss',
                          message=_xml(_cell(task.get('reason'), 500))).text = _xml(task.get('reason'))
        elif task['status'] != 'done':
            ET.SubElement(case, 'skipped', message=_xml(f'{task["status"]}: {_cell(task.get("reason"), 300)}'))
        for message, evidence in story.failing_rounds(task):   # a round that began with a failure, then went on
            kind = 'rerunFailure' if task['status'] in FAILED_STATUSES else 'flakyFailure'
            ET.SubElement(ET.SubElement(case, kind, type='round', message=_xml(_cell(message, 500))),
                          'stackTrace').text = _xml(evidence)
        if task.get('summary'):
            ET.SubElement(case, 'system-out').text = _xml(task['summary'])
    for task, gate in gates:
        case = ET.SubElement(suite, 'testcase', classname=f'codex-orch.gate.{gate.get("name")}',
                             name=f'{task["id"]} {gate.get("name")}', time=f'{float(gate.get("duration") or 0):.3f}')
        if not gate.get('passed'):
            ET.SubElement(case, 'failure', type='gate', message=_xml(f'{gate.get("command")} ({_ending(gate)})')
                          ).text = _xml(gate.get('tail'))
    root = ET.Element('testsuites')
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding='unicode') + '\n'


def findings_lines(findings: Any) -> list[str]:
    """A reviewer's findings as lines, whatever shape its schema gives them (a list of objects with
    severity/file/message, of other objects, of strings, or a single value)."""
    if findings is None or findings == []:
        return []
    items = findings if isinstance(findings, list) else [findings]
    lines = []
    for item in items:
        if isinstance(item, dict) and {'severity', 'file', 'message'} <= set(item):
            where = f'{item.get("file")}:{item["line"]}' if isinstance(item.get('line'), int) else item.get('file')
            lines.append(f'[{item.get("severity")}] {f"{where}: " if where else ""}{item.get("message")}')
        elif isinstance(item, str):
            lines.append(item)
        else:
            lines.append(json.dumps(item, ensure_ascii=False, sort_keys=True))
    return lines


def failure_evidence(task: dict[str, Any]) -> str:
    """The output tail of what failed the task: its failing setup command, check or gate (redacted when recorded)."""
    if task.get('findings'):
        return _xml('\n'.join(findings_lines(task['findings'])))
    runs = [*(task.get('setup') or []), *(task.get('checks') or []), *(task.get('gates') or [])]
    failed = next((r for r in runs if not r.get('passed')), None)
    if failed is None:
        return ''
    head = f'$ {failed.get("command")}  ({_ending(failed)})'
    return _xml(f'{head}\n{failed.get("tail") or "(no output)"}')


def _ending(run: dict[str, Any]) -> str:
    return 'timed out' if run.get('exit_code') is None else f'exit {run.get("exit_code")}'


# The lists that grow with the plan: an item a line. json's indenting encoder is pure Python, ten times slower than
# its compact one (a second for 10,000 tasks, on every run); a line per task also diffs and greps well.
_ITEM_PER_LINE = ('tasks', 'decisions')


def render_json(summary: dict[str, Any]) -> str:
    """summary.json: indented, except that each task and each decision is one line."""
    return ''.join(render_json_chunks(summary))


def render_json_chunks(summary: dict[str, Any]) -> Iterator[str]:
    """render_json's text in pieces (a line per task), for writing it without holding it whole."""
    def dump(value: Any, indent: int | None = None) -> str:
        return json.dumps(value, indent=indent, sort_keys=True, ensure_ascii=False)
    yield '{\n'
    for n, key in enumerate(sorted(summary)):
        value = summary[key]
        yield (',\n' if n else '') + f'  {dump(key)}: '
        if key in _ITEM_PER_LINE and isinstance(value, list) and value:
            yield '[\n'
            for i, item in enumerate(value):
                yield (',\n' if i else '') + f'    {dump(item)}'
            yield '\n  ]'
        else:
            yield dump(value, 2).replace('\n', '\n  ')
    yield '\n}\n'
