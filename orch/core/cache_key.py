"""The key of a cached task result: a digest of everything that decides a task's work, and nothing that does not.

Pure: it hashes what it is given. Two parts, so the tree can be added when it is known:
`work_digest` covers the rendered prompt (run-specific ids and paths normalised), the role's schema, the worker's
params, the Codex version and the task's checks; `cache_key` adds the tree the task starts from (see
orch.adapters.cache_store.start_tree) and the cache format's version.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

FORMAT = 1   # bump when what an entry holds, or what the key covers, changes: every older entry misses


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


def work_digest(*, prompt: str, schema: bytes, params: Mapping[str, Any], codex_version: str,
                checks: Sequence[str]) -> str:
    h = hashlib.sha256()
    for label, value in (('prompt', prompt.encode('utf-8')), ('schema', schema),
                         ('params', json.dumps(dict(params), sort_keys=True).encode()),
                         ('codex', codex_version.encode('utf-8')),
                         ('checks', json.dumps(list(checks)).encode())):
        h.update(label.encode() + b'\0' + str(len(value)).encode() + b'\0' + value)
    return h.hexdigest()


def cache_key(work: str, start_tree: str) -> str:
    return hashlib.sha256(f'codex-orch-cache/{FORMAT}\0{work}\0{start_tree}'.encode()).hexdigest()
