"""orch.core.graph: the plan as Mermaid / dot, with hostile titles that must not break or inject into it."""
from __future__ import annotations

import re

import pytest

from orch.core import graph
from orch.core.report import build_summary, render_markdown

pytestmark = pytest.mark.unit

HOSTILE = [
    'say "hi"',
    'x"] --> n9["pwned',
    'a --> b',
    'end',
    '```\n# heading\n```',
    '<img src=x onerror=alert(1)>',
    '<b>bold</b> &amp; <br/>',
    'back`tick`s',
    'brackets [ ] { } ( ) | ;',
    'line one\nline two\r\nthree',
    '\x1b[31mred\x1b[0m and \x07bell',
    'right\u202eto left',
    '%% a mermaid comment',
    'click n0 "javascript:alert(1)"',
    'classDef st_done fill:#f00',
    '#quot; an entity',
    'back\\slash \\n not a break',
    '',
]


def three(title: str = 'Review') -> list[graph.Node]:
    return [graph.Node('T1', 'Add greet()'), graph.Node('T2', 'Test greet()', ('T1',)),
            graph.Node('T3', title, ('T1', 'T2'))]


STATUSES = {'T1': 'done', 'T2': 'failed', 'T3': 'stale'}


def mermaid_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()]


def test_mermaid_has_a_node_per_task_edges_dependency_to_dependent_and_status_classes() -> None:
    text = graph.render_mermaid(three(), STATUSES)
    lines = mermaid_lines(text)
    assert lines[0] == 'flowchart TD'
    assert 'n0["T1: Add greet()<br/>done"]' in lines
    assert 'n2["T3: Review<br/>stale"]' in lines
    assert [line for line in lines if '-->' in line] == ['n0 --> n1', 'n0 --> n2', 'n1 --> n2']
    assert 'class n0 st_done' in lines and 'class n1 st_failed' in lines and 'class n2 st_stale' in lines
    done = next(line for line in lines if line.startswith('classDef st_done'))
    failed = next(line for line in lines if line.startswith('classDef st_failed'))
    assert '#2da44e' in done and '#cf222e' in failed   # green, red


def test_every_status_has_its_own_style_and_an_unknown_one_is_other() -> None:
    fills = {graph.STYLES[s][0] for s in ('done', 'failed', 'blocked', 'deferred', 'running', 'pending')}
    assert len(fills) == 6
    nodes = [graph.Node('A', 'a'), graph.Node('B', 'b')]
    text = graph.render_mermaid(nodes, {'A': 'weird"]-->x'})
    assert 'class n0 st_other' in mermaid_lines(text)
    assert 'class n1 st_pending' in mermaid_lines(text)   # no status known: pending
    assert '-->' not in text                               # the status text is escaped too


@pytest.mark.parametrize('title', HOSTILE)
def test_a_hostile_title_stays_inside_its_mermaid_label(title: str) -> None:
    text = graph.render_mermaid(three(title), STATUSES)
    lines = text.splitlines()
    # the structure is exactly the one of a harmless title: same lines, same edges, same classes
    plain = graph.render_mermaid(three('plain'), STATUSES).splitlines()
    assert len(lines) == len(plain)
    assert [line for line in lines if 'n2[' not in line] == [line for line in plain if 'n2[' not in line]
    node = next(line for line in lines if line.startswith('    n2['))
    match = re.fullmatch(r'    n2\["([^"]*)"\]', node)
    assert match, node
    label = match.group(1)
    # nothing inside the label that Mermaid, Markdown or HTML would act on (entities aside), only our <br/>
    bare = re.sub(r'#[0-9]+;', '', label.replace('<br/>', ''))
    assert not re.search(r'[<>"`\[\]{}|;%&#\\\x00-\x1f\x7f-\x9f\u202e]', bare), label
    assert '-->' not in label and '```' not in text
    assert ':' not in bare.split(': ', 1)[1]   # Mermaid would take `style ...:#...;` in a title for a colour
    # and the entities say what the title said, on one line
    shown = re.sub(r'#([0-9]+);', lambda m: chr(int(m.group(1))), label)
    assert shown == f'T3: {graph.short_title(title)}<br/>stale'


def test_a_hostile_title_cannot_end_the_report_fence_or_add_html() -> None:
    task = {'id': 'T1', 'role': 'implementer', 'status': 'done', 'attempts': 1, 'depends_on': [],
            'title': '```\n</pre><script>alert(1)</script>\n```mermaid'}
    markdown = render_markdown(build_summary({'run_id': 'r1', 'base_branch': 'main', 'base_commit': 'a' * 40,
                                              'plan_file': 'plan.json'}, [task]))
    block = markdown.split('```mermaid\n', 1)[1].split('\n```', 1)[0]
    assert markdown.count('```') == 2                  # our fence, opened and closed once
    assert '<script>' not in markdown and 'flowchart TD' in block


def test_titles_are_one_short_line() -> None:
    long = 'word ' * 40
    assert graph.short_title(long) == ('word ' * 8).rstrip()[:39].rstrip() + '…'
    assert len(graph.short_title(long)) <= graph.TITLE_LIMIT
    assert graph.short_title('a\nb\tc') == 'a b c'


@pytest.mark.parametrize('title', HOSTILE)
def test_a_hostile_title_stays_inside_its_dot_label(title: str) -> None:
    text = graph.render_dot(three(title), STATUSES)
    plain = graph.render_dot(three('plain'), STATUSES)
    assert len(text.splitlines()) == len(plain.splitlines())
    node = next(line for line in text.splitlines() if line.startswith('    "T3" [label="'))
    label = re.fullmatch(r'    "T3" \[label="((?:[^"\\]|\\.)*)",.*\];', node)
    assert label, node
    assert not re.search(r'[\x00-\x1f\x7f-\x9f]', label.group(1))
    # every backslash is one we escaped or our own \n between title and status
    assert re.fullmatch(r'(?:[^\\]|\\\\|\\"|\\n)*', label.group(1))
    assert [line for line in text.splitlines() if '->' in line and 'label' not in line] == [
        '    "T1" -> "T2";', '    "T1" -> "T3";', '    "T2" -> "T3";']


def test_dot_marks_statuses_by_colour() -> None:
    text = graph.render_dot(three(), STATUSES)
    assert text.startswith('digraph plan {') and text.rstrip().endswith('}')
    assert 'label="T1: Add greet()\\ndone"' in text and 'fillcolor="#2da44e"' in text
    assert 'style="rounded,filled,dashed"' in text   # stale


def test_unknown_and_duplicate_dependencies_add_no_edge() -> None:
    nodes = [graph.Node('A', 'a'), graph.Node('B', 'b', ('A', 'A', 'Z', 'B'))]
    assert graph.edges(nodes) == [('A', 'B')]


def test_a_graph_too_big_for_github_is_not_embedded_in_the_report() -> None:
    tasks = [{'id': f'T{i}', 'role': 'implementer', 'status': 'done', 'attempts': 1, 'title': 't',
              'depends_on': [f'T{j}' for j in range(max(0, i - 3), i)]} for i in range(300)]
    summary = build_summary({'run_id': 'big', 'base_branch': 'main', 'base_commit': 'a' * 40,
                             'plan_file': 'plan.json'}, tasks)
    markdown = render_markdown(summary)
    assert '```mermaid' not in markdown
    assert 'codex-orch graph --run-id big --format dot' in markdown
    small = render_markdown(build_summary(summary['run'], tasks[:5]))
    assert '```mermaid' in small


def test_a_diagram_over_githubs_text_limit_is_not_offered() -> None:
    wide = [graph.Node(f'T{i}', 'w' * 60) for i in range(1000)]   # no edges, but ~100 characters a node
    assert graph.mermaid_for_github(wide, {}) is None
    assert graph.mermaid_for_github(wide[:100], {}) == graph.render_mermaid(wide[:100], {})
