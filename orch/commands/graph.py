"""`codex-orch graph [--run-id ID] [--format mermaid|dot]`: the plan as a diagram, each task in its status.

The statuses are those of `codex-orch status` (stale included), and like it this command writes nothing.
"""
from __future__ import annotations

import argparse

from orch import output
from orch.commands.common import find_repo
from orch.core import graph as render
from orch.core.redact import redact_obj
from orch.engine.doit_runner import stale_task_ids
from orch.engine.inputs import open_run
from orch.runstate.runs import latest_run_id
from orch.runstate.status import task_rows


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser('graph', help="print the plan's dependency graph with each task's status "
                                     '(Mermaid, or Graphviz dot)')
    p.add_argument('--run-id', help='the run (default: the latest)')
    p.add_argument('--format', choices=render.FORMATS, default='mermaid',
                   help='mermaid (default; GitHub renders it in a ```mermaid block) or dot (Graphviz: dot -Tsvg)')


def graph(args: argparse.Namespace) -> int:
    repo = find_repo()
    rt = open_run(repo, args.run_id or latest_run_id(repo))
    rows = task_rows(rt, stale_task_ids(rt))
    # Redacted before rendering: escaped for the diagram, a token in a title would no longer look like one.
    nodes = render.nodes(redact_obj([{k: row[k] for k in ('id', 'title', 'depends_on')} for row in rows]))
    text = render.render(nodes, {row['id']: row['status'] for row in rows}, args.format)
    output.write(text)
    return 0
