"""What a task costs in git processes (shared mode, each task in a checkout of its own): a task's own work is a
few dozen milliseconds of git, so a process more or less per task is measurable (docs/benchmarks.md). Counted, not
timed: the same run starts the same processes on any machine."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orch.adapters.git import run as git_run
from tests.support.gitrepo import commit_all
from tests.support.orchtest import make_host

# Per task today (10.75): 4 to check and make its commit, 1 to land it (the fast-forward: the run branch's tip and
# the checkout that has it are read from git's files), 2 status reads of the control-file check, 4 to take a checkout
# from the pool, reset it and put it back.
BUDGET_PER_TASK = 11


def git_commands(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Every git command started from now on, but the config listings: how many of those run depends on the clock
    (a listing read from a file written in the last second is not kept, orch.adapters.git.run)."""
    seen: list[list[str]] = []
    execute = git_run._execute

    def counting(argv: list[str], *args: Any, **kwargs: Any) -> Any:
        if not ('config' in argv and '--list' in argv):
            seen.append(argv)
        return execute(argv, *args, **kwargs)
    monkeypatch.setattr(git_run, '_execute', counting)
    return seen


def plan(n: int) -> dict[str, Any]:
    return {'version': 1, 'title': f'{n} tasks', 'tasks': [
        {'id': f'T{i}', 'role': 'implementer', 'title': f'Task {i}', 'description': f'Write t{i}.',
         'paths': [f'src/t{i}.py']} for i in range(n)]}


def test_a_task_costs_a_bounded_number_of_git_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: Any) -> None:
    script = {'default': {'answer': 'auto'},
              'tasks': {f'T{i}': {'edits': {f'src/t{i}.py': f't = {i}\n'}} for i in range(5)}}
    counts = {}
    for n in (1, 5):
        host = make_host(tmp_path / f'n{n}', monkeypatch, capsys, script)
        host.write_plan(plan(n))
        commit_all(host.repo, 'plan')
        seen = git_commands(monkeypatch)
        rc, out, err = host.cli('run', '--plan-file', 'plan.json', '-q')
        assert rc == 0 and f'{n} done' in out, out + err
        counts[n] = len(seen)
        monkeypatch.undo()   # the PATH of the next host, and the plain _execute
    per_task = (counts[5] - counts[1]) / 4
    assert 8 < per_task <= BUDGET_PER_TASK, counts
