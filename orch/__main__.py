from __future__ import annotations

from orch.main import main

raise SystemExit(main())
