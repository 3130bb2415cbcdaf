"""codex-orch: implementation plans executed by Codex workers, as a build graph."""
from __future__ import annotations

__version__ = '0.1.0'
