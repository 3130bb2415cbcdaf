#!/usr/bin/env bash
# Set up a development checkout from nothing: .venv with codex-orch (editable, with the dask and otel extras) and
# pytest, the pinned Codex CLI under tools/codex-cli/ (from the npm registry, per package-lock.json), and the SARIF
# schema under tools/sarif-schema/ (for the tests).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev,dask,otel]'
if [ ! -x tools/codex-cli/node_modules/.bin/codex ]; then
  (cd tools/codex-cli && npm ci --no-audit --no-fund --loglevel=error)
fi
# The SARIF 2.1.0 schema the tests validate findings.sarif against (a JSON file in a pinned npm package)
if [ ! -f tools/sarif-schema/node_modules/@microsoft/jest-sarif/lib/schemas/sarif-2.1.0-rtm.5.json ]; then
  (cd tools/sarif-schema && npm ci --ignore-scripts --omit=dev --no-audit --no-fund --loglevel=error)
fi
echo "set up: $(.venv/bin/codex-orch --version), $(tools/codex-cli/node_modules/.bin/codex --version)"
