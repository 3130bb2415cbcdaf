"""orch.core.tables draws what tabulate draws, byte for byte, whatever the cells hold."""
from __future__ import annotations

import random

import pytest
from tabulate import tabulate

from orch.core.tables import table

CELLS = ['', 'T1', 'T00999', 'implementer', 'done', 'stale', '3', '007', '1e3', '-1', 'a | b', 'x' * 120,
         ' lead', 'trail ', 'two\nlines', 'tab\there', 'é中', '\x1b[31mred\x1b[0m', 'None', 'True', '  ', '-', '---']


@pytest.mark.parametrize('fmt', ['simple', 'github'])
def test_random_tables_match_tabulate(fmt: str) -> None:
    rnd = random.Random(7)
    for _ in range(400):
        width = rnd.randint(1, 6)
        headers = [rnd.choice(['task', 'role', 'status', 'attempts', 'why', 'r', 'tokens in/out', '']) for _ in
                   range(width)]
        rows = [[rnd.choice([*CELLS, None, 0, 12, 3.5]) for _ in range(width)] for _ in range(rnd.randint(0, 6))]
        assert table(rows, headers, fmt) == tabulate(rows, headers=headers, tablefmt=fmt, disable_numparse=True), \
            (rows, headers)


@pytest.mark.parametrize('fmt', ['simple', 'github'])
def test_random_plain_tables_match_tabulate(fmt: str) -> None:
    """Only cells the fast path draws itself (most random tables above go to tabulate)."""
    rnd = random.Random(8)
    plain = [c for c in CELLS if c.isascii() and c.isprintable() and c == c.strip()]
    for _ in range(300):
        width = rnd.randint(1, 6)
        headers = [rnd.choice(['task', 'role', 'status', 'attempts', 'r', '']) for _ in range(width)]
        rows = [[rnd.choice([*plain, None, 0, 12]) for _ in range(width)] for _ in range(rnd.randint(1, 6))]
        assert table(rows, headers, fmt) == tabulate(rows, headers=headers, tablefmt=fmt, disable_numparse=True), \
            (rows, headers)


@pytest.mark.parametrize('fmt', ['simple', 'github'])
def test_plain_rows_are_drawn_without_tabulate(fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [['T1', 'implementer', 'done', 1, ''], ['T22', 'tester', 'failed', 12, 'check exit 1']]
    expected = tabulate(rows, headers=['task', 'role', 'status', 'attempts', 'reason'], tablefmt=fmt,
                        disable_numparse=True)
    import tabulate as module
    monkeypatch.setattr(module, 'tabulate', None)   # the fast path must not need it
    assert table(rows, ['task', 'role', 'status', 'attempts', 'reason'], fmt) == expected


def test_unknown_format() -> None:
    with pytest.raises(ValueError):
        table([], ['a'], 'grid')
