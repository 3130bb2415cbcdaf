"""Random kills with the real Codex CLI: does a resume ever re-pay finished work, commit twice, or leave a
process behind?

Each trial starts `codex-orch run` (the real Codex CLI 0.169.0 against the local stand-in, every model
request slowed a little so that kills land inside workers, commits and writes alike) on a four-task chain
with edits and a check, SIGKILLs the whole codex-orch process group at a random moment, then resumes to
the end and counts:

- re-paid: a task that had its result.json at the kill, or whose turn had completed in its event stream
  (final answer and turn.completed), that got another model attempt after the resume;
- duplicate commits: a task with more than one commit on the run's branch;
- orphans: any process still running from the trial's directory or its codex home;
- unfinished: a trial whose resume did not end with every task done.

    .venv/bin/python benchmarks/kill_loop.py [--trials 25] [--seed 1]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orch.adapters.codex_bin import find_codex  # noqa: E402
from orch.standin.server import Standin, write_codex_home  # noqa: E402

TASKS = 4


def plan() -> dict[str, Any]:
    tasks = []
    for i in range(1, TASKS + 1):
        tasks.append({'id': f'T{i}', 'role': 'implementer', 'title': f'Step {i}', 'paths': [f'f{i}.txt'],
                      'depends_on': [f'T{i - 1}'] if i > 1 else [], 'checks': [f'test -s f{i}.txt'],
                      'description': (f'Write f{i}.txt.\n[[standin: slow 0.3]]\n[[standin: write f{i}.txt]]\n'
                                      f'```\ncontent {i}\n```\n')})
    return {'version': 1, 'title': 'kill loop', 'tasks': tasks}


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, 'GIT_AUTHOR_NAME': 'k', 'GIT_AUTHOR_EMAIL': 'k@x', 'GIT_COMMITTER_NAME': 'k',
           'GIT_COMMITTER_EMAIL': 'k@x'}
    return subprocess.run(['git', '-C', str(repo), *args], check=True, capture_output=True, text=True,
                          env=env).stdout


def attempts(task_dir: Path) -> dict[str, bool]:
    """attempt dir -> whether its turn completed (the final answer is in its event stream)."""
    out = {}
    for adir in sorted(task_dir.glob('attempt-*')):
        try:
            events = (adir / 'events.jsonl').read_text(errors='replace')
        except OSError:
            events = ''
        out[adir.name] = '"turn.completed"' in events
    return out


def orphans(marker: str) -> list[str]:
    found = []
    for proc in Path('/proc').glob('[0-9]*'):
        try:
            cmd = (proc / 'cmdline').read_bytes().replace(b'\0', b' ').decode(errors='replace')
            environ = (proc / 'environ').read_bytes().decode(errors='replace')
        except OSError:
            continue
        if marker in cmd or marker in environ:
            if int(proc.name) != os.getpid():
                found.append(f'{proc.name}: {cmd[:120]}')
    return found


def trial(codex: str, rng: random.Random) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix='kill-loop-') as tmp:
        where = Path(tmp)
        repo = where / 'repo'
        repo.mkdir()
        git(repo, 'init', '-q', '-b', 'main')
        (repo / 'README.md').write_text('kill loop\n')
        with Standin() as server:
            env = {**os.environ, **write_codex_home(where / 'codex-home', server.base_url)}
            cli = [sys.executable, '-m', 'orch']
            subprocess.run([*cli, 'init'], cwd=repo, env=env, check=True, capture_output=True)
            (repo / '.orchestrator' / 'orchestrator.yaml').write_text(f'codex:\n  binary: {codex}\n')
            (repo / 'plan.json').write_text(json.dumps(plan()))
            git(repo, 'add', '-A')
            git(repo, 'commit', '-q', '-m', 'plan')
            proc = subprocess.Popen([*cli, 'run', '--plan-file', 'plan.json', '--run-id', 'k', '-q'], cwd=repo,
                                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    start_new_session=True)
            delay = rng.uniform(0.3, 4.5)
            time.sleep(delay)
            finished_early = proc.poll() is not None
            with contextlib.suppress(ProcessLookupError):   # the run may have ended already
                os.killpg(proc.pid, signal.SIGKILL)   # the whole group, as a CI runner's timeout would
            proc.wait()
            tasks = repo / '.orchestrator' / 'runs' / 'k' / 'tasks'
            before = {f'T{i}': attempts(tasks / f'T{i}') for i in range(1, TASKS + 1)}
            had_result = {t for t in before if (tasks / t / 'result.json').exists()}
            time.sleep(0.5)   # the watchdog's grace for what it stops
            # Killed before the run existed: the same command again is how a user goes on.
            again = ['resume', '--run-id', 'k'] if (tasks.parent / 'run.json').exists() else \
                ['run', '--plan-file', 'plan.json', '--run-id', 'k']
            resumed = subprocess.run([*cli, *again, '-q'], cwd=repo, env=env, capture_output=True, text=True)
            after = {f'T{i}': attempts(tasks / f'T{i}') for i in range(1, TASKS + 1)}
            status = json.loads(subprocess.run([*cli, 'status', '--json'], cwd=repo, env=env, capture_output=True,
                                               text=True).stdout or '{}')
            branch = json.loads((repo / '.orchestrator' / 'runs' / 'k' / 'run.json').read_text())['shared_branch']
            subjects = git(repo, 'log', '--format=%s', branch).splitlines()
        time.sleep(0.5)
        left = orphans(tmp)
    repaid = []
    for task, was in before.items():
        new = [a for a in after[task] if a not in was]
        last_turn_completed = bool(was) and list(was.values())[-1]
        if new and (task in had_result or last_turn_completed):
            repaid.append(task)
    dupes = [f'T{i}' for i in range(1, TASKS + 1) if subjects.count(f'T{i}: Step {i}') > 1]
    done = [t.get('status') for t in status.get('tasks', [])] == ['done'] * TASKS
    return {'delay': round(delay, 2), 'finished_before_kill': finished_early, 'repaid': repaid,
            'duplicates': dupes, 'orphans': left, 'resume_rc': resumed.returncode, 'all_done': done}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--trials', type=int, default=25)
    parser.add_argument('--seed', type=int, default=1)
    args = parser.parse_args()
    codex = find_codex()
    if codex is None:
        print('the Codex CLI is not installed: bash scripts/setup.sh', file=sys.stderr)
        return 2
    rng = random.Random(args.seed)
    results = []
    for n in range(args.trials):
        result = trial(codex, rng)
        results.append(result)
        print(f'trial {n + 1:2}: kill at {result["delay"]:.2f} s: re-paid {result["repaid"]}, duplicate commits '
              f'{result["duplicates"]}, orphans {len(result["orphans"])}, resume rc {result["resume_rc"]}, '
              f'all done {result["all_done"]}', flush=True)
    print(f'{len(results)} trials: re-paid tasks {sum(len(r["repaid"]) for r in results)}, duplicate commits '
          f'{sum(len(r["duplicates"]) for r in results)}, orphans {sum(len(r["orphans"]) for r in results)}, '
          f'unfinished {sum(not r["all_done"] for r in results)}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
