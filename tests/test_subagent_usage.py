"""Sub-agents' tokens from their rollouts (orch.adapters.subagent_usage): every thread of the root's tree at any
depth, nobody else's, nothing from a rollout made before the root, a symlink or a malformed line."""
from __future__ import annotations

import json
import uuid
from pathlib import Path

from orch.adapters.subagent_usage import descendants_usage


def thread_id(ms: int) -> str:
    """A UUIDv7 made at `ms` (ms since the epoch)."""
    raw = f'{ms:012x}' + '7' + uuid.uuid4().hex[13:]
    return str(uuid.UUID(raw))


def rollout(home: Path, thread: str, session: str, totals: list[int], day: str = '2026/12/06') -> Path:
    path = home / 'sessions' / day / f'rollout-2026-12-06T10-00-00-{thread}.jsonl'
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [{'type': 'session_meta', 'payload': {'id': thread, 'session_id': session}}, 'not json']
    lines += [{'type': 'event_msg', 'payload': {'type': 'token_count', 'info': {'total_token_usage': {
        'input_tokens': n, 'cached_input_tokens': 1, 'output_tokens': n // 10, 'reasoning_output_tokens': 0}}}}
        for n in totals]
    path.write_text('\n'.join(x if isinstance(x, str) else json.dumps(x) for x in lines) + '\n')
    return path


def test_the_tree_s_running_totals_are_summed(tmp_path: Path) -> None:
    born = 1_796_594_000_000
    root = thread_id(born)
    rollout(tmp_path, root, root, [999])                       # the root itself: its own turn.completed says it
    child, grandchild = thread_id(born + 10), thread_id(born + 20)
    rollout(tmp_path, child, root, [100, 300])                 # the last running total counts
    rollout(tmp_path, grandchild, root, [50])                  # depth 2: its session is still the root
    rollout(tmp_path, thread_id(born + 30), thread_id(born + 5), [7000])   # another worker's tree
    rollout(tmp_path, thread_id(born - 86_400_000 * 3), root, [8000], day='2026/12/03')   # before the root
    link = tmp_path / 'sessions' / '2026/12/06' / f'rollout-x-{thread_id(born + 40)}.jsonl'
    link.symlink_to(rollout(tmp_path / 'elsewhere', thread_id(born + 40), root, [9000]))
    usage = descendants_usage(tmp_path, root)
    assert usage == {'input_tokens': 350, 'cached_input_tokens': 2, 'output_tokens': 35, 'reasoning_output_tokens': 0}


def test_no_sessions_no_tokens(tmp_path: Path) -> None:
    assert descendants_usage(tmp_path, thread_id(1_796_594_000_000))['input_tokens'] == 0
    assert descendants_usage(tmp_path, 'not-a-uuid')['input_tokens'] == 0
