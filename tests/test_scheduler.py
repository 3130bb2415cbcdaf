"""orch.engine.scheduler's pure functions: glob matching and overlap, and which files a commit takes."""
from __future__ import annotations

import pytest

from orch.engine.scheduler import commit_paths, glob_match, globs_overlap

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


def test_commit_paths_takes_its_own_files_and_strays_but_not_a_running_task_s() -> None:
    changed = ['a/one.txt', 'b/two.txt', 'notes.txt']
    others = [(('b/*',), ('b/*',))]
    scope = commit_paths(changed, ('a/*',), set(), others, shared=())
    assert scope.paths == ['a/one.txt']   # notes.txt: the running task may claim it
    alone = commit_paths(['a/one.txt', 'notes.txt'], ('a/*',), set(), [], shared=())
    assert alone.paths == ['a/one.txt', 'notes.txt']   # nobody else could have: never silently dropped
    assert alone.strays == ['notes.txt'] and alone.collisions == []


def test_commit_paths_claimed_files_inside_a_running_task_s_paths_collide() -> None:
    changed = ['a/one.txt', 'b/two.txt', 'notes.txt']
    others = [(('b/*',), ('b/*',))]
    scope = commit_paths(changed, ('a/*',), {'notes.txt', 'b/two.txt'}, others, shared=())
    assert scope.paths == ['a/one.txt', 'notes.txt'] and scope.strays == ['notes.txt']   # outside its paths
    assert scope.collisions == ['b/two.txt']


def test_commit_paths_leaves_a_shared_file_to_the_other_task_that_declares_it() -> None:
    changed = ['a/x', 'deps.lock']
    others = [(('b/*',), ('b/*', 'deps.lock'))]   # deps.lock is allowed to overlap, so not in its checked globs
    assert commit_paths(changed, ('a/*', 'deps.lock'), set(), others, shared=('deps.lock',)).paths == ['a/x']
    # ... unless this task's answer claims it
    assert commit_paths(changed, ('a/*', 'deps.lock'), {'deps.lock'}, others, shared=('deps.lock',)).paths == [
        'a/x', 'deps.lock']
    # alone, it takes it
    assert commit_paths(changed, ('a/*', 'deps.lock'), set(), [], shared=('deps.lock',)).paths == ['a/x',
                                                                                                 'deps.lock']
