"""Plain-text tables: the status table (tabulate's `simple` format) and the report's (its `github` format).

They have a row per task, so they are drawn on every status and every run's report. tabulate looks at every cell
(its type, invisible codes, line breaks, wide characters): about 50 us a row, a second for 10,000 tasks. Rows whose
cells are plain printable ASCII without surrounding blanks, what these tables almost always hold, need none of
that: they are drawn here, byte for byte as tabulate draws them (tests/test_tables.py compares the two). Any other
row (a reason with a line break, a title in another script) and the whole table goes to tabulate.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

FORMATS = ('simple', 'github')
_PADDING = 2   # tabulate's MIN_PADDING: a column is at least its header and two more wide


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str], fmt: str) -> str:
    """rows drawn under headers in tabulate's `fmt` ('simple' or 'github'), cells as text (no number parsing;
    None is empty)."""
    if fmt not in FORMATS:
        raise ValueError(f'no table format {fmt!r}')
    cells = [['' if c is None else str(c) for c in row] for row in rows]
    if not cells or not all(len(row) == len(headers) and all(_plain(c) for c in row) for row in cells) \
            or not all(_plain(h) for h in headers):
        from tabulate import tabulate
        return tabulate(rows, headers=list(headers), tablefmt=fmt, disable_numparse=True)
    widths = [len(h) + _PADDING for h in headers]
    for row in cells:
        for i, c in enumerate(row):
            if len(c) > widths[i]:
                widths[i] = len(c)
    if fmt == 'simple':
        def line(row: Sequence[str]) -> str:
            return '  '.join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        return '\n'.join([line(headers), line(['-' * w for w in widths]), *map(line, cells)])

    def piped(row: Sequence[str]) -> str:
        return '| ' + ' | '.join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + ' |'
    rule = '|' + '|'.join('-' * (w + 2) for w in widths) + '|'
    return '\n'.join([piped(headers), rule, *map(piped, cells)])


def _plain(cell: str) -> bool:
    """Printable ASCII with no blank at either end (tabulate strips those): its width is its length."""
    return cell.isascii() and cell.isprintable() and (not cell or (cell[0] != ' ' and cell[-1] != ' '))
