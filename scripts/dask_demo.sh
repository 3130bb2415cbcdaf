#!/usr/bin/env bash
# The demo plan on a local Dask cluster, offline: a model stand-in, a scheduler and two workers (each with its
# own CODEX_HOME), then `codex-orch run --executor dask`. The commands are those of docs/dask.md.
# Usage: bash scripts/dask_demo.sh [DIR]   (ports: STANDIN_PORT, default 8900; DASK_PORT, default 8786)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
export PATH=$PWD/.venv/bin:$PWD/tools/codex-cli/node_modules/.bin:$PATH
D=${1:-$(mktemp -d)}
SP=${STANDIN_PORT:-8900}
DP=${DASK_PORT:-8786}
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null' EXIT

python -m orch.standin.server --port "$SP" --log "$D/standin.log" & pids+=($!)
for w in w1 w2; do
  python -c "from orch.standin.server import write_codex_home; write_codex_home('$D/$w', 'http://127.0.0.1:$SP/v1')"
done
dask scheduler --host 127.0.0.1 --port "$DP" --no-dashboard >"$D/scheduler.log" 2>&1 & pids+=($!)
sleep 2
for w in w1 w2; do
  CODEX_HOME=$D/$w STANDIN_API_KEY=standin dask worker "tcp://127.0.0.1:$DP" \
    --name $w --resources codex=1 --nthreads 2 --no-dashboard --local-directory "$D/$w-dask" \
    >"$D/$w.log" 2>&1 & pids+=($!)
done

mkdir "$D/greeting" && cd "$D/greeting" && git init -q -b main
python -c "import json; from orch.commands.demo import demo_plan, SPEC; open('plan.json','w').write(json.dumps(demo_plan(), indent=2)); open('spec.md','w').write(SPEC)"
git add -A && git -c user.name=demo -c user.email=demo@example.com commit -qm 'spec and plan'
codex-orch init
printf 'executor:\n  kind: dask\n  address: tcp://127.0.0.1:%s\n' "$DP" >> .orchestrator/orchestrator.yaml
git add -A && git -c user.name=demo -c user.email=demo@example.com commit -qm 'codex-orch on Dask'

codex-orch doctor || true
codex-orch run --plan-file plan.json --spec-file spec.md -j 2
codex-orch status
echo "model requests (all by the workers): $(wc -l < "$D/standin.log")"
echo "demo repository: $D/greeting"
