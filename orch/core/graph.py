"""The plan as a diagram with each task's status: Mermaid (GitHub renders it) or Graphviz dot. Pure, no I/O.

Titles are untrusted text (a plan, or a navigator that wrote it). A label never carries one raw character
that either language gives a meaning: every character but letters, digits, spaces and a few plain
punctuation marks is written as an entity (Mermaid `#NN;`) or escaped (dot), after `one_line` has removed
line breaks, ANSI sequences and terminal control characters. Node names are made here (`n0`, `n1`, ... in
Mermaid, the quoted task id in dot), never taken from the title, so no title can add a node or an edge,
close the fenced block around the diagram, or turn into HTML.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from orch.core.text import one_line

TITLE_LIMIT = 40   # a node label is a glance, not the description

# Status -> (fill, stroke, text colour). The statuses of `codex-orch status`; anything else is `other`.
STYLES: dict[str, tuple[str, str, str]] = {
    'done': ('#2da44e', '#1a7f37', '#ffffff'),      # green
    'failed': ('#cf222e', '#a40e26', '#ffffff'),    # red
    'blocked': ('#fb8500', '#bc4c00', '#ffffff'),   # orange
    'deferred': ('#8250df', '#6639ba', '#ffffff'),  # purple: come back later
    'running': ('#0969da', '#0550ae', '#ffffff'),   # blue
    'stale': ('#d0d7de', '#6e7781', '#24292f'),     # grey, dashed in dot: done once, will run again
    'pending': ('#eaeef2', '#8c959f', '#24292f'),   # light grey: not run yet
    'other': ('#ffffff', '#6e7781', '#24292f'),
}
FORMATS = ('mermaid', 'dot')

# GitHub renders with Mermaid's defaults: a diagram over 50,000 characters or 500 edges is an error box.
MERMAID_MAX_TEXT = 50_000
MERMAID_MAX_EDGES = 500

# Plain enough for Mermaid inside a quoted label; everything else is an entity. Not ':': before it renders,
# Mermaid strips the last ';' of any text shaped like `style ...:...#...;` (a colour), an entity's too.
_PLAIN = frozenset(' .,_()/+=?!\'')


@dataclass(frozen=True)
class Node:
    id: str
    title: str
    depends_on: tuple[str, ...] = ()


def nodes(tasks: Iterable[Mapping[str, object]]) -> list[Node]:
    """Nodes from task rows (status rows, summary.json tasks): `id`, `title`, `depends_on`."""
    out = []
    for t in tasks:
        deps = t.get('depends_on') or ()
        out.append(Node(str(t.get('id')), str(t.get('title') or ''),
                        tuple(str(d) for d in deps) if isinstance(deps, (list, tuple)) else ()))
    return out


def short_title(title: str, limit: int = TITLE_LIMIT) -> str:
    line = one_line(title)
    return line if len(line) <= limit else line[: limit - 1].rstrip() + '…'


def style_of(status: str) -> str:
    return status if status in STYLES else 'other'


def edges(graph: Sequence[Node]) -> list[tuple[str, str]]:
    """(dependency, dependent) pairs between known nodes, in plan order; an unknown id adds nothing."""
    known = {n.id for n in graph}
    return [(dep, n.id) for n in graph for dep in dict.fromkeys(n.depends_on) if dep in known and dep != n.id]


def _mermaid_text(text: str) -> str:
    # Mermaid's entity codes (`#60;`) work inside a quoted label and are shown as the character.
    return ''.join(c if c.isalnum() or c in _PLAIN else f'#{ord(c)};' for c in text)


def render_mermaid(graph: Sequence[Node], statuses: Mapping[str, str]) -> str:
    """`flowchart TD` source: one node per task (`id: title` and its status), dependency --> dependent."""
    names = {n.id: f'n{i}' for i, n in enumerate(graph)}
    lines = ['flowchart TD']
    for n in graph:
        status = statuses.get(n.id, 'pending')
        label = (f'{_mermaid_text(one_line(n.id))}: {_mermaid_text(short_title(n.title))}<br/>'
                 f'{_mermaid_text(one_line(status))}')
        lines.append(f'    {names[n.id]}["{label}"]')
    lines += [f'    {names[a]} --> {names[b]}' for a, b in edges(graph)]
    used: dict[str, list[str]] = {}
    for n in graph:
        used.setdefault(style_of(statuses.get(n.id, 'pending')), []).append(names[n.id])
    for style, members in used.items():
        fill, stroke, color = STYLES[style]
        dashed = ',stroke-dasharray:4 3' if style == 'stale' else ''
        lines.append(f'    classDef st_{style} fill:{fill},stroke:{stroke},color:{color}{dashed}')
        lines.append(f'    class {",".join(members)} st_{style}')
    return '\n'.join(lines) + '\n'


def mermaid_for_github(graph: Sequence[Node], statuses: Mapping[str, str]) -> str | None:
    """The Mermaid source if GitHub's Mermaid (default limits) would draw it rather than an error box, else None.

    A node takes over 25 characters, so a plan too big is told without rendering it (a 10,000-task report).
    """
    if len(graph) > MERMAID_MAX_TEXT // 25 or len(edges(graph)) > MERMAID_MAX_EDGES:
        return None
    text = render_mermaid(graph, statuses)
    return text if len(text) <= MERMAID_MAX_TEXT else None


def _dot_string(text: str) -> str:
    # A double-quoted dot string: `"` and `\` escaped (a backslash would start \n, \N, \G, ...); the rest as
    # one_line left it (no line breaks, no control characters), so nothing can end the string or the line.
    return '"' + text.replace('\\', '\\\\').replace('"', '\\"') + '"'


def render_dot(graph: Sequence[Node], statuses: Mapping[str, str]) -> str:
    """Graphviz source (`dot -Tsvg`): the same nodes, labels and colours as the Mermaid diagram."""
    lines = ['digraph plan {', '    rankdir=TB;', '    node [shape=box, style="rounded,filled", fontname="Helvetica"];']
    for n in graph:
        status = statuses.get(n.id, 'pending')
        fill, stroke, color = STYLES[style_of(status)]
        style = ' style="rounded,filled,dashed",' if style_of(status) == 'stale' else ''
        label = _dot_string(f'{one_line(n.id)}: {short_title(n.title)}\n{one_line(status)}').replace('\n', '\\n')
        lines.append(f'    {_dot_string(one_line(n.id))} [label={label},{style} fillcolor="{fill}", '
                     f'color="{stroke}", fontcolor="{color}"];')
    lines += [f'    {_dot_string(one_line(a))} -> {_dot_string(one_line(b))};' for a, b in edges(graph)]
    lines.append('}')
    return '\n'.join(lines) + '\n'


def render(graph: Sequence[Node], statuses: Mapping[str, str], fmt: str = 'mermaid') -> str:
    if fmt == 'dot':
        return render_dot(graph, statuses)
    return render_mermaid(graph, statuses)
