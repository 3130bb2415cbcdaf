"""Pay once, anywhere: a 4-task plan (a check, a reviewer round) paid for in repository A, then built from the
result cache in a fresh clone B with no provider key and no reachable model, then again in B after one task's
description was edited (the model back). Prints, for each of the three runs, the wall time, the model requests,
the tokens paid and the tasks launched, and the size of the cache refs the remote received.

The real Codex CLI (tools/codex-cli, `bash scripts/setup.sh`) against the local stand-in; nothing is asserted.

    .venv/bin/python benchmarks/cache_pay_once.py
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orch.adapters.codex_bin import find_codex  # noqa: E402
from orch.standin.server import API_KEY_ENV, Standin, write_codex_home  # noqa: E402

CLI = [sys.executable, '-m', 'orch']
IDENTITY = {'GIT_AUTHOR_NAME': 'b', 'GIT_AUTHOR_EMAIL': 'b@x', 'GIT_COMMITTER_NAME': 'b', 'GIT_COMMITTER_EMAIL': 'b@x'}


def plan(docs: str = 'Write the docs.') -> dict[str, Any]:
    def write(path: str, body: str) -> str:
        return f'[[standin: write {path}]]\n```\n{body}```\n'
    return {'version': 1, 'title': 'Greeting', 'tasks': [
        {'id': 'T1', 'role': 'implementer', 'title': 'Add greet()', 'paths': ['src/greet.py'],
         'checks': ['grep -q "def greet" src/greet.py'],
         'description': 'Create src/greet.py.\n' + write('src/greet.py', "def greet(n):\n    return f'Hi {n}'\n")},
        {'id': 'T2', 'role': 'tester', 'title': 'Test greet()', 'depends_on': ['T1'], 'paths': ['tests/t.py'],
         'description': 'Add a test.\n' + write('tests/t.py', 'import src.greet\n')},
        {'id': 'T3', 'role': 'implementer', 'title': 'Docs', 'paths': ['docs/greet.md'],
         'description': docs + '\n' + write('docs/greet.md', '# greet\n')},
        {'id': 'T4', 'role': 'reviewer', 'title': 'Review', 'depends_on': ['T2', 'T3'],
         'description': 'Review.\n[[standin: review-once name the parameter better]]\n'}]}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(['git', '-C', str(repo), *args], check=True, capture_output=True, text=True,
                          env={**os.environ, **IDENTITY}).stdout.strip()


def tree(repo: Path, run_id: str) -> str:
    branch = json.loads((repo / '.orchestrator' / 'runs' / run_id / 'run.json').read_text())['shared_branch']
    return git(repo, 'rev-parse', f'{branch}^{{tree}}')


def timed_run(repo: Path, env: dict[str, str], run_id: str, server: Standin | None) -> dict[str, Any]:
    before = len(server.requests) if server else 0
    started = time.perf_counter()
    proc = subprocess.run([*CLI, 'run', '--plan-file', 'plan.json', '--run-id', run_id, '-q'], cwd=repo, env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - started
    summary = json.loads((repo / '.orchestrator' / 'runs' / run_id / 'summary.json').read_text())
    usage = summary['usage_total']
    return {'rc': proc.returncode, 'wall_s': round(wall, 2),
            'model_requests': (len(server.requests) - before) if server else 0,
            'tokens': usage['input_tokens'] + usage['output_tokens'], 'cache': summary.get('cache'),
            'hits': [t['id'] for t in summary['tasks'] if (t.get('cache') or {}).get('hit')]}


def main() -> int:
    codex = find_codex()
    if codex is None:
        print('the Codex CLI is not installed: bash scripts/setup.sh', file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix='cache-pay-once-') as tmp:
        where = Path(tmp)
        remote, a, b = where / 'remote.git', where / 'a', where / 'b'
        subprocess.run(['git', 'init', '-q', '--bare', str(remote)], check=True)
        a.mkdir()
        git(a, 'init', '-q', '-b', 'main')
        (a / 'README.md').write_text('greeting\n')
        results: dict[str, Any] = {}
        with Standin() as server:
            env = {**os.environ, **write_codex_home(where / 'codex-home', server.base_url)}
            subprocess.run([*CLI, 'init'], cwd=a, env=env, check=True, capture_output=True)
            (a / '.orchestrator' / 'orchestrator.yaml').write_text(
                f'codex:\n  binary: {codex}\ncache: {{remote: origin, local: false}}\n')   # through the remote only
            (a / 'plan.json').write_text(json.dumps(plan()))
            git(a, 'add', '-A')
            git(a, 'commit', '-q', '-m', 'plan')
            git(a, 'remote', 'add', 'origin', str(remote))
            git(a, 'push', '-q', 'origin', 'main')
            results['A (pays)'] = timed_run(a, env, 'ra', server)
        bundle = where / 'cache.bundle'
        refs = git(remote, 'for-each-ref', '--format=%(refname)', 'refs/codex-orch/cache/').split()
        git(remote, 'bundle', 'create', str(bundle), *refs, '--not', 'main')
        subprocess.run(['git', 'clone', '-q', '--branch', 'main', str(remote), str(b)], check=True)
        keyless = {k: v for k, v in env.items() if k != API_KEY_ENV}   # and the stand-in is closed
        results['B (no key, no model)'] = timed_run(b, keyless, 'rb', None)
        results['B trees equal'] = tree(a, 'ra') == tree(b, 'rb')
        (b / 'plan.json').write_text(json.dumps(plan('Write the docs, briefly.')))
        git(b, 'commit', '-q', '-am', 'edit T3')
        with Standin() as server:
            env = {**os.environ, **write_codex_home(where / 'codex-home', server.base_url)}
            results['B after one edit (model back)'] = timed_run(b, env, 'rb2', server)
        results['cache refs'] = {'entries': len(refs), 'bundle_bytes': bundle.stat().st_size}
    print(json.dumps(results, indent=2))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
