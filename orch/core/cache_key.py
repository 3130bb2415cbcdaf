"""The key of a cached task result: a digest of everything that decides a task's work, and nothing that does not.

Pure: it hashes what it is given. Two parts, so that each can be computed where it is known:
`work_inputs` digests, one by one, the rendered prompt (run-specific ids and paths normalised), the role's
schema, the worker's params, the Codex version and the task's checks — kept apart so that a miss can say which
of them differs from the nearest entry (`differing`); `cache_key` adds what the task's checkout starts from —
the run's base tree and the changes of every task it depends on (orch.adapters.cache_store.start_tree,
change_digest) — and the cache format's version.

The start is the task's declared inputs, not the tip its checkout happened to start at: which independent
tasks landed before it depends on the order parallel workers finished, and a key that covered it would miss for
no reason on the next machine. A hit's work is replayed onto the actual tip and verified there, as landing does
for any task whose siblings landed first.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

FORMAT = 2   # bump when what an entry holds, or what the key covers, changes: every older entry misses

# What each input of a key is, for `explain` and for a miss's message.
INPUT_NAMES = {
    'prompt': "the rendered prompt (the task's plan entry, the spec, the role's template, its upstream results)",
    'schema': "the role's answer schema",
    'params': "the worker's params (model, sandbox, codex args)",
    'codex': 'the Codex CLI version',
    'checks': "the task's checks",
    'start': "what the task starts from (the run's base tree and its upstream tasks' changes)",
}


def normalise(text: str, replacements: Mapping[str, str], words: Mapping[str, str] | None = None) -> str:
    """`text` with each run-specific string (a path, a commit) replaced by its stand-in, longest first so that a
    path is replaced before a prefix of it; each of `words` (a run id: it may be as short as "r1") only where it
    stands as a whole word. Empty strings are ignored."""
    for old in sorted((k for k in replacements if k), key=len, reverse=True):
        text = text.replace(old, replacements[old])
    for old, new in (words or {}).items():
        if old:
            text = re.sub(rf'(?<![\w.-]){re.escape(old)}(?![\w.-])', new.replace('\\', r'\\'), text)
    return text


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def work_inputs(*, prompt: str, schema: bytes, params: Mapping[str, Any], codex_version: str,
                checks: Sequence[str]) -> dict[str, str]:
    """Each input that decides the work, digested on its own (the Codex version as it is: it reads well)."""
    return {'prompt': _sha(prompt.encode('utf-8')), 'schema': _sha(schema),
            'params': _sha(json.dumps(dict(params), sort_keys=True).encode()),
            'codex': codex_version, 'checks': _sha(json.dumps(list(checks)).encode())}


def work_digest(inputs: Mapping[str, str]) -> str:
    return _sha(json.dumps(dict(inputs), sort_keys=True).encode())


def start_digest(base_tree: str, upstream: Mapping[str, str]) -> str:
    """What a task starts from: the run's base tree and each upstream task's change (task id -> its digest)."""
    return _sha(json.dumps({'base': base_tree, 'upstream': dict(sorted(upstream.items()))}).encode())


def cache_key(work: str, start: str) -> str:
    return _sha(f'codex-orch-cache/{FORMAT}\0{work}\0{start}'.encode())


def differing(mine: Mapping[str, str], theirs: Mapping[str, Any]) -> list[str]:
    """The inputs (INPUT_NAMES' keys) in which two keys' inputs differ, in that order."""
    return [name for name in INPUT_NAMES if mine.get(name) != theirs.get(name)]


def describe(names: Sequence[str]) -> str:
    return '; '.join(INPUT_NAMES.get(n, n) for n in names) or 'nothing (the same inputs: a different format)'
