#!/usr/bin/env bash
# One task with the real Codex CLI against the local stand-in: `codex-orch task` vs a bare
# `codex exec` doing the same edit, interleaved, 5 each (wall s and peak RSS of the process tree).
# Run from anywhere: bash benchmarks/one_task.sh
set -euo pipefail
ROOT=$(mktemp -d /tmp/onetask.XXXX)
HERE=$(cd "$(dirname "$0")/.." && pwd)
CODEX=$HERE/tools/codex-cli/node_modules/.bin/codex
PY=$HERE/.venv/bin/python
$PY -m orch.standin.server --port 0 --port-file $ROOT/port >/dev/null 2>&1 &
SPID=$!
while [ ! -s $ROOT/port ]; do sleep 0.1; done
PORT=$(cat $ROOT/port)
$PY -c "from orch.standin.server import write_codex_home; write_codex_home(__import__('pathlib').Path('$ROOT/home'), 'http://127.0.0.1:$PORT/v1')" >/dev/null
export CODEX_HOME=$ROOT/home STANDIN_API_KEY=standin
git init -q -b main $ROOT/repo && cd $ROOT/repo && echo x > README.md && git add . && git -c user.name=a -c user.email=a@b commit -qm init
$PY -m orch init >/dev/null && printf 'codex:\n  binary: %s\n' $CODEX > .orchestrator/orchestrator.yaml
git add -A && git -c user.name=a -c user.email=a@b commit -qm orch
git worktree add -q $ROOT/wt
SCHEMA=$ROOT/repo/.orchestrator/schemas/implementer.json
PROMPT='Write a file.
[[standin: write out.txt]]
```
hello
```'
for i in 1 2 3 4 5; do
  /usr/bin/time -f "orch %e s %M KB" $PY -m orch task --role implementer "$PROMPT
run $i" -q >/dev/null 2>>$ROOT/times || true
  printf '%s\nrun %s\n' "$PROMPT" "$i" > $ROOT/prompt.txt
  /usr/bin/time -f "bare %e s %M KB" $CODEX exec --json --skip-git-repo-check -C $ROOT/wt --sandbox workspace-write \
    --output-schema $SCHEMA -o $ROOT/last.txt - < $ROOT/prompt.txt >/dev/null 2>>$ROOT/times.raw || true
  grep '^bare' $ROOT/times.raw | tail -1 >> $ROOT/times
done
grep -E '^(orch|bare) ' $ROOT/times
kill $SPID
rm -rf $ROOT
