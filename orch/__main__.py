from __future__ import annotations

from orch.main import cli

raise SystemExit(cli())
