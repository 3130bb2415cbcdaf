#!/usr/bin/env bash
# Quick start: set up, then run the offline demo (real Codex CLI, local model stand-in).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/codex-orch demo "$@"
