"""The edges: git, process groups, the Codex worker and its events, doit, services."""
