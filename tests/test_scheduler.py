"""orch.engine.scheduler's pure functions: glob matching and overlap, and which files a commit takes."""
from __future__ import annotations

import pytest

from orch.engine.scheduler import glob_match, globs_overlap

pytestmark = pytest.mark.unit


@pytest.mark.parametrize('pattern, path, matches', [
    ('src/*.py', 'src/a.py', True),
    ('src/*.py', 'src/sub/a.py', True),        # fnmatch's * crosses '/': conservative, only costs parallelism
    ('src/', 'src/sub/a.py', True),            # a directory takes everything under it
    ('src', 'src/a.py', True),
    ('src', 'srcx/a.py', False),
    ('./docs/a.md', 'docs/a.md', True),
    ('data[1].txt', 'data[1].txt', True),      # a path is its own pattern, even with [ in its name
    ('data[1].txt', 'data1.txt', True),        # and also a character class, as fnmatch reads it
    ('*.lock', 'deps.lock', True),
])
def test_glob_match(pattern: str, path: str, matches: bool) -> None:
    assert glob_match(pattern, path) is matches


@pytest.mark.parametrize('a, b, overlap', [
    ('src/*.py', 'lib/*.py', False),
    ('src/*.py', 'src/a.py', True),
    ('src/', 'src/deep/x', True),
    ('src/a*', 'src/ab*', True),              # some file could match both
    ('a.txt', 'b.txt', False),
    ('docs/**', 'docs/x.md', True),
    ('*', 'anything', True),
])
def test_globs_overlap(a: str, b: str, overlap: bool) -> None:
    assert globs_overlap(a, b) is overlap
    assert globs_overlap(b, a) is overlap   # symmetric
