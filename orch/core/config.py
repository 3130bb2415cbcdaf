"""`.orchestrator/orchestrator.yaml` as pydantic models, with defaults that work out of the box."""
from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from orch.core.files import read_yaml_input
from orch.core.plan import path_problem
from orch.core.validate import pydantic_errors
from orch.errors import ConfigError, problems_message

CONFIG_FILE = 'orchestrator.yaml'
_REF_OK = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._/-]*$')
_NAME_OK = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._-]*$')
_ENV_NAME_OK = re.compile(r'^[A-Za-z0-9_.*?-]+$')


class _Model(BaseModel):
    model_config = ConfigDict(extra='forbid', frozen=True)


class RoleSettings(_Model):
    """Per-role worker settings; every key is optional and falls back to `defaults`."""

    model: str | None = None
    sandbox: Literal['read-only', 'workspace-write', 'danger-full-access'] | None = None
    timeout_total: float | None = Field(default=None, gt=0)
    timeout_idle: float | None = Field(default=None, gt=0)
    timeout_first_event: float | None = Field(default=None, gt=0)
    schema_retries: int | None = Field(default=None, ge=0, le=10)
    failure_retries: int | None = Field(default=None, ge=0, le=10)
    retry_backoff: float | None = Field(default=None, ge=0)
    template: str | None = None   # prompt template path; default .orchestrator/prompts/<role>.md
    schema_file: str | None = Field(default=None, alias='schema')
    # Verification: shell commands run in the task's worktree before its commit (defaults' and the
    # role's both run, then the task's own), and the bounded rounds that try to make them pass.
    checks: list[Annotated[str, Field(min_length=1)]] | None = None
    repair_rounds: int | None = Field(default=None, ge=0, le=10)
    review_rounds: int | None = Field(default=None, ge=0, le=10)
    # Landing: rounds in which the worker resolves its work against what other tasks landed meanwhile.
    conflict_rounds: int | None = Field(default=None, ge=0, le=10)
    check_timeout: float | None = Field(default=None, gt=0)
    # Where its checks and worktree.setup commands run (orch.adapters.sandbox): `role`, Codex's sandbox in the
    # role's mode (as you when that is danger-full-access); `none`, unsandboxed, as you.
    check_sandbox: Literal['role', 'none'] | None = None


class ResolvedRole(_Model):
    """A role's settings after defaults were applied: what the compiler and worker use."""

    name: str
    model: str | None
    sandbox: str
    timeout_total: float | None
    timeout_idle: float | None
    timeout_first_event: float | None
    schema_retries: int
    failure_retries: int
    retry_backoff: float
    template: str
    schema_file: str
    checks: list[str]
    repair_rounds: int
    review_rounds: int
    conflict_rounds: int
    check_timeout: float
    check_sandbox: str

    @property
    def command_sandbox(self) -> str:
        """The sandbox mode its checks and setup commands run in ('none': unsandboxed)."""
        return 'none' if self.check_sandbox == 'none' or self.sandbox == 'danger-full-access' else self.sandbox


class CodexSettings(_Model):
    binary: str = 'codex'
    extra_args: list[str] = []
    env: dict[str, str] = {}
    # Variables (names or globs) that workers' shells get although they look secret (orch/adapters/worker_env.py)
    pass_env: list[str] = []
    # Pass the CLI's switches against sub-agents (multi_agent features) unless true; their tokens are counted
    # either way (orch/adapters/worker_env.py, orch/adapters/subagent_usage.py)
    sub_agents: bool = False

    @field_validator('pass_env')
    @classmethod
    def _variable_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _ENV_NAME_OK.match(name):
                raise ValueError(f'{name!r} is not an environment variable name (letters, digits, "_"; globs "*", "?")')
        return value


class BudgetSettings(_Model):
    # What a task's launch reserves of the token budget when it never ran before (orch.engine.session.Budget);
    # with a cost_budget, these tokens priced as input
    reserve_per_task: int = Field(default=50_000, ge=0)


class Price(_Model):
    """One model's prices in money units per 1M tokens (orch.core.prices); reasoning tokens are output."""

    input: float = Field(ge=0)
    cached_input: float | None = Field(default=None, ge=0)   # None: the input price
    output: float = Field(ge=0)


class Branches(_Model):
    shared: str = 'orch/{date}/run-{run_id}/workspace-shared'
    task: str = 'orch/{date}/run-{run_id}/{task_id}'

    @field_validator('shared', 'task')
    @classmethod
    def _template(cls, value: str, info: ValidationInfo) -> str:
        allowed = {'date', 'run_id'} | ({'task_id'} if info.field_name == 'task' else set())
        try:
            names = {f for _, f, _, _ in string.Formatter().parse(value) if f is not None}
        except ValueError as exc:
            raise ValueError(f'bad template: {exc}') from exc
        unknown = names - allowed
        if unknown:
            raise ValueError(f'unknown placeholder {{{sorted(unknown)[0]}}} (use {", ".join(sorted(allowed))})')
        if info.field_name == 'task' and 'task_id' not in names:
            raise ValueError('must contain {task_id}, or every task would share one branch')
        sample = value.format(date='20260101', run_id='r', task_id='t')
        if not _REF_OK.match(sample) or '..' in sample or sample.endswith(('/', '.lock', '.')):
            raise ValueError('not a valid git branch name')
        return value


class Concurrency(_Model):
    allow: list[str] = []
    ignore: list[str] = []


class GitSettings(_Model):
    author: str | None = Field(default=None, pattern=r'^[^<>]+ <[^<>]+>$')


class Service(_Model):
    name: str = Field(pattern=r'^[A-Za-z0-9][A-Za-z0-9._-]*$')
    command: list[str] = Field(min_length=1)
    ready_seconds: float = Field(default=0.5, ge=0)


class ExecutorSettings(_Model):
    """Where work steps run: here (`local`), or on a Dask cluster (`dask`, needs the `dask` extra)."""

    kind: Literal['local', 'dask'] = 'local'
    address: str | None = None             # the Dask scheduler, e.g. tcp://scheduler:8786
    resources: dict[str, float] = Field(default_factory=lambda: {'codex': 1.0})   # what each work step asks for
    connect_timeout: float = Field(default=10, gt=0)   # seconds to reach the scheduler
    resubmits: int = Field(default=2, ge=0, le=10)     # a lost worker: submissions again, then the task fails
    # What a Dask worker's commit may write once unpacked (its bundle is compressed): bytes of files, files.
    result_max_bytes: int = Field(default=100 * 10**6, gt=0)
    result_max_files: int = Field(default=10_000, gt=0)

    @field_validator('address')
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r'^(tcp|tls|ws|wss|inproc|ucx)://[^\s/]+', value):
            raise ValueError(f'{value!r} is not a Dask scheduler address (e.g. tcp://scheduler:8786)')
        return value

    @model_validator(mode='after')
    def _address_for_dask(self) -> ExecutorSettings:
        if self.kind == 'dask' and not self.address:
            raise ValueError('executor.address is required when executor.kind is dask '
                             '(the scheduler, e.g. address: tcp://scheduler:8786)')
        return self


class WorktreeSettings(_Model):
    """What every new checkout of a task gets before its worker starts (orch.steps.setup): shell commands run in
    it, in order, e.g. to build the git-ignored files its checks and gates need."""

    setup: list[Annotated[str, Field(min_length=1)]] = []
    setup_timeout: float = Field(default=1800, gt=0)   # seconds for one setup command


class CacheSettings(_Model):
    """The cache of verified task results (orch.steps.cache_hit), kept in the repository's refs; off unless the
    config has `cache:`. `remote`: pulled before a run and pushed after. `write: false`: read only.
    `sign_key_env`: the environment variable holding the signing key; where it is set, entries are signed when
    written and unsigned or badly signed ones are refused (orch.adapters.cache_store). `local`: the machine's
    store behind the repository's refs, shared by every repository on it (orch.adapters.cache_local): true (the
    user's cache directory), a directory path, or false (off)."""

    remote: str | None = Field(default=None, min_length=1, pattern=r'^[^-]')
    write: bool = True
    sign_key_env: str | None = Field(default=None, pattern=r'^[A-Za-z_][A-Za-z0-9_]*$')
    local: bool | str = True

    @field_validator('local', mode='before')
    @classmethod
    def _local_path(cls, value: object) -> object:
        if not isinstance(value, bool) and not (isinstance(value, str) and value.strip() and '\0' not in value):
            raise ValueError('must be a directory path, true (the user\'s cache directory) or false (off)')
        return value


_DEFAULT_ROLE = RoleSettings(model=None, sandbox='workspace-write', timeout_total=3600, timeout_idle=900,
                             timeout_first_event=120, schema_retries=1, failure_retries=1, retry_backoff=5,
                             checks=[], repair_rounds=2, review_rounds=2, conflict_rounds=2,
                             check_timeout=1800, check_sandbox='role')


class Config(_Model):
    codex: CodexSettings = CodexSettings()
    use_single_workspace: bool = True
    branches: Branches = Branches()
    jobs: int = Field(default=1, ge=1, le=64)
    concurrency: Concurrency = Concurrency()
    decisions_file: str = 'docs/ai/decisions.md'
    token_budget: int | None = Field(default=None, gt=0)
    budget: BudgetSettings = BudgetSettings()
    git: GitSettings = GitSettings()
    defaults: RoleSettings = _DEFAULT_ROLE
    roles: dict[str, RoleSettings] = Field(default_factory=lambda: {
        'navigator': RoleSettings(), 'implementer': RoleSettings(), 'tester': RoleSettings(),
        'reviewer': RoleSettings(sandbox='read-only')})
    services: list[Service] = []
    executor: ExecutorSettings = ExecutorSettings()
    worktree: WorktreeSettings = WorktreeSettings()
    # Globs of files no worker may change unless its task names them in its `paths`, added to the built-in ones
    # (test configuration such as conftest.py and pyproject.toml, AGENTS.md, .codex/, .github/:
    # orch.steps.guard.PROTECTED).
    protect: list[str] = []
    cache: CacheSettings | None = None   # `cache: {}` turns the result cache on
    # Money per 1M tokens by model (`default`: any other), and a budget in money instead of tokens (both last:
    # cost_budget's check reads the roles and prices validated before it).
    prices: dict[str, Price] = {}
    cost_budget: float | None = Field(default=None, gt=0)

    @field_validator('cost_budget')
    @classmethod
    def _priced(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is None:
            return value
        if info.data.get('token_budget') is not None:
            raise ValueError('give token_budget or cost_budget, not both (set the other to null)')
        prices, defaults = info.data.get('prices') or {}, info.data.get('defaults') or _DEFAULT_ROLE
        for name, role in sorted((info.data.get('roles') or {}).items()):
            model = role.model or defaults.model or 'default'
            if model not in prices and 'default' not in prices:
                raise ValueError(f"role {name}'s model {model} has no price: add prices: {{{model}: {{input: ..., "
                                 'output: ...}} (money per 1M tokens), or a `default` entry')
        return value

    @field_validator('roles', mode='before')
    @classmethod
    def _keep_builtin_roles(cls, value: object) -> object:
        # A config that tunes one role must not make the other built-in roles unknown.
        if not isinstance(value, dict):
            return value
        return {'navigator': {}, 'implementer': {}, 'tester': {}, 'reviewer': {'sandbox': 'read-only'},
                **{k: ({} if v is None else v) for k, v in value.items()}}

    @field_validator('roles')
    @classmethod
    def _role_names(cls, value: dict[str, RoleSettings]) -> dict[str, RoleSettings]:
        # A role name becomes file names (prompts/<role>.md, schemas/<role>.json) and a commit trailer.
        for name in value:
            if not _NAME_OK.match(name):
                raise ValueError(f'role name {name!r} must start with a letter or digit and use only letters, '
                                 'digits, ".", "_" and "-"')
        return value

    @field_validator('protect')
    @classmethod
    def _protect_globs(cls, value: list[str]) -> list[str]:
        for glob in value:
            bad = 'must not be empty' if not glob.strip() else path_problem(glob)
            if bad:
                raise ValueError(f'{glob!r} {bad}')
        return value

    @field_validator('decisions_file')
    @classmethod
    def _inside_repository(cls, value: str) -> str:
        # Written inside the run's worktree and committed: it must stay there.
        parts = Path(value).parts
        if not value.strip() or value.startswith('/') or '..' in parts or value.endswith('/') \
                or any(ord(ch) < 32 for ch in value):
            raise ValueError('must be a relative path inside the repository (no leading "/", no "..")')
        return value

    def role(self, name: str) -> ResolvedRole:
        own = self.roles[name]
        merged: dict[str, Any] = {}
        for key in RoleSettings.model_fields:
            value = getattr(own, key)
            merged[key] = value if value is not None else getattr(self.defaults, key)
            if merged[key] is None and key in ('sandbox',):
                merged[key] = _DEFAULT_ROLE.sandbox
            if merged[key] is None and key in ('schema_retries', 'failure_retries', 'retry_backoff',
                                               'repair_rounds', 'review_rounds', 'conflict_rounds', 'check_timeout',
                                               'check_sandbox'):
                merged[key] = getattr(_DEFAULT_ROLE, key)
        # Checks add up: every task's (defaults), then the role's.
        merged['checks'] = [*(self.defaults.checks or []), *(own.checks or [])]
        merged['template'] = merged['template'] or f'.orchestrator/prompts/{name}.md'
        merged['schema_file'] = merged['schema_file'] or f'.orchestrator/schemas/{name}.json'
        return ResolvedRole(name=name, **merged)


MAX_CONFIG_BYTES = 1024 * 1024


def load_config(path: Path) -> Config:
    """Load and validate the config; a missing file means all defaults."""
    path = Path(path)
    if not path.exists():
        return Config()
    data = read_yaml_input(path, limit=MAX_CONFIG_BYTES, what='config', error=ConfigError, invalid='invalid YAML',
                           fix='replace it with the YAML config, or remove it to use the defaults')
    if data is None:
        return Config()
    if not isinstance(data, dict):
        raise ConfigError(f'{path}: the top level must be a mapping of keys, got {type(data).__name__}')
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(problems_message(path, pydantic_errors(exc),
                                           'see the commented defaults written by `codex-orch init`')) from exc
