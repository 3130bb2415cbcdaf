"""What travels between the coordinator and a remote worker: plain data, JSON-able (bytes as base64).

A WorkUnit carries everything one work step needs and nothing of the coordinator's environment: no
`os.environ`, no credentials, no paths of the coordinator's filesystem. The worker uses its own codex,
`CODEX_HOME` and provider key. A WorkOutcome carries back the answer, the usage, the attempt files
(events, stderr, last message), the check logs and the new commit as a git bundle.
"""
from __future__ import annotations

import base64
import dataclasses
from dataclasses import dataclass, field
from typing import Any

UNIT_VERSION = 1


@dataclass(frozen=True)
class WorkUnit:
    key: str                          # the submission's Dask key (names the execution, see work.py)
    run_id: str
    task_id: str
    role: str
    prompt: str
    schema: dict[str, Any]
    codex: dict[str, Any]             # the config's `codex` section (binary, extra_args, env, pass_env)
    extra_args: list[str]             # from the work rule's codex_args parameter (after the binary)
    sandbox: str
    model: str | None
    limits: dict[str, Any]            # timeout_total, timeout_idle, timeout_first_event, *_retries, retry_backoff
    checks: list[str]
    repair_rounds: int
    check_timeout: float
    bundle: bytes                     # a bundle of one parentless snapshot commit (the start tree)
    bundle_ref: str
    snapshot: str                     # that commit
    # A turn (a review round): resume this Codex thread, which lives in the CODEX_HOME of the worker `pin`, and
    # return the worker's raw result (no acceptance, no checks: the coordinator's review code does them).
    resume_thread: str | None = None
    prev_cumulative: dict[str, int] | None = None
    pin: str | None = None
    # worktree.setup: run in the scratch checkout before its worker starts (orch.steps.setup)
    setup: list[str] = field(default_factory=list)
    setup_timeout: float = 1800.0
    # The role's sandbox mode for its checks and setup (orch.adapters.sandbox); 'none': unsandboxed
    command_sandbox: str = 'workspace-write'
    version: int = UNIT_VERSION


@dataclass
class WorkOutcome:
    key: str
    status: str                       # 'done', 'failed', 'blocked', 'deferred', 'interrupted', 'error'
    reason: str | None = None
    outcome: str | None = None        # the worker's outcome ('ok', 'timeout', 'checks-failed', ...)
    answer: Any = None
    usage: dict[str, int] = field(default_factory=dict)
    thread_id: str | None = None
    error: str | None = None          # a turn: the worker's error text
    usage_cumulative: dict[str, int] | None = None   # a turn: the thread's usage as last reported
    checks: list[dict[str, Any]] = field(default_factory=list)
    repair_rounds: int = 0
    setup: list[dict[str, Any]] = field(default_factory=list)   # the setup commands run, as `checks`
    files: dict[str, bytes] = field(default_factory=dict)   # task-dir-relative: attempt-*/..., checks/..., setup/...
    commit: str | None = None         # the worker's commit on top of the snapshot (None: nothing changed)
    bundle: bytes | None = None       # that commit, the snapshot as prerequisite
    bundle_ref: str | None = None
    worker: dict[str, Any] = field(default_factory=dict)    # host, address, pid of the worker that ran it
    started_at: float = 0.0
    ended_at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data['files'] = {k: _b64(v) for k, v in self.files.items()}
        data['bundle'] = _b64(self.bundle) if self.bundle is not None else None
        return data

    @staticmethod
    def from_json(data: dict[str, Any]) -> WorkOutcome:
        data = dict(data)
        data['files'] = {k: base64.b64decode(v) for k, v in (data.get('files') or {}).items()}
        data['bundle'] = base64.b64decode(data['bundle']) if data.get('bundle') else None
        names = {f.name for f in dataclasses.fields(WorkOutcome)}
        return WorkOutcome(**{k: v for k, v in data.items() if k in names})


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode('ascii')
