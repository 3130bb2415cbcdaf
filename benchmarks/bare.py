"""The baseline of the per-task overhead: `codex exec` launched once per prompt, nothing else.

Usage: python benchmarks/bare.py CODEX OUT_DIR WORKDIR [--schema SCHEMA] PROMPT...

Each prompt goes on stdin of `CODEX exec --json --skip-git-repo-check -C WORKDIR --sandbox
workspace-write [--output-schema SCHEMA] -o OUT_DIR/last-<i>.txt -`, its events to
OUT_DIR/events-<i>.jsonl, one after the other: the same launches codex-orch makes, without the
orchestration (no prompt rendering, no validation, no git, no doit).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    codex, out_dir, workdir, *rest = argv
    schema = None
    if rest[:1] == ['--schema']:
        schema, rest = rest[1], rest[2:]
    out = Path(out_dir)
    Path(workdir).mkdir(parents=True, exist_ok=True)
    for i, prompt in enumerate(rest):
        cmd = [codex, 'exec', '--json', '--skip-git-repo-check', '-C', workdir, '--sandbox', 'workspace-write']
        if schema:
            cmd += ['--output-schema', schema]
        cmd += ['-o', str(out / f'last-{i}.txt'), '-']
        with open(prompt, 'rb') as stdin, open(out / f'events-{i}.jsonl', 'wb') as events:
            rc = subprocess.run(cmd, stdin=stdin, stdout=events, stderr=subprocess.DEVNULL).returncode
        if rc != 0:
            print(f'{codex} exited {rc} on {prompt}', file=sys.stderr)
            return 1
    return 0


if __name__ == '__main__':
    raise SystemExit(main(sys.argv[1:]))
