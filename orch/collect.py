"""Rarer full garbage collections, for a process that builds and walks a big run (a codex-orch command, or plain
doit loading the run's dodo.py).

Such a process allocates a few hundred objects per task (the graph, doit's tasks, the rows, the manifest's
signatures) and frees almost none until it ends, so CPython's default thresholds run ever larger full collections
that find nothing: 10 of them took 1.1 s of a 4.3 s no-op resume of 10,000 tasks, and about a second of a resume
after an edit. Young objects are still collected as usual, and a full collection still comes every few million
allocations.
"""
from __future__ import annotations

import gc
import json
from typing import Any


def rarer_full_collections() -> None:
    threshold = gc.get_threshold()
    gc.set_threshold(threshold[0], threshold[1], max(threshold[2], 1000))


def json_loads_uncollected(text: str | bytes) -> Any:
    """json.loads without the cyclic GC: parsing makes no cycles, but a big document's objects (a 10,000-task plan,
    the no-op manifest) would trigger collections of everything alive for nothing (0.14 s for the plan; a quarter of
    the manifest's parse)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return json.loads(text)
    finally:
        if enabled:
            gc.enable()
