"""doit entry point: `doit list`, `doit info TASK`, `doit run` on this repository's latest codex-orch run.

The same file (two lines) is what `codex-orch init` writes into a host repository.
"""
from orch.engine.doit_runner import dodo_namespace

globals().update(dodo_namespace())
