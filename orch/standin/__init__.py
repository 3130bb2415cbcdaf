"""A local stand-in of the model API for the real Codex CLI: the offline demo and the end-to-end tests."""
