"""Gates, checks and `worktree.setup` commands run inside Codex's own sandbox: `codex sandbox -- CMD`.

A check runs the worker's code (its tests, its `Makefile`, a `pytest/__main__.py` it planted), so it gets
no more than the worker had: Codex's sandbox in the role's mode. In `workspace-write` the command may write
only its working directory (the task's checkout) and the `writable` roots given here, never /tmp or
$TMPDIR (`exclude_slash_tmp`, `exclude_tmpdir_env_var`); network only when the workers' Codex config allows
it (`sandbox_workspace_write.network_access`); and the workers' environment, without the variables
`orch.adapters.worker_env.withheld_variables` keeps from their shells (GITHUB_TOKEN, the provider's key...,
minus `codex.pass_env`). codex's own `shell_environment_policy` is reset to pass what it is given: the
filtering is ours. The command stays the leader's child: killing the process group (timeout, cancel) kills
the sandbox and everything in it (its PID namespace dies with it).

Checked with codex 0.169.0 on Linux: `codex sandbox [-c k=v ...] -- CMD` runs CMD in the current directory
(`-C` needs a permission profile, so none is passed) and exits with CMD's exit code (128+N for a signal).

Where the sandbox cannot work (no codex, or `codex sandbox -- true` fails here) `require_sandbox` raises a
LaunchError (exit 2): nothing runs unsandboxed silently. It is probed once per process and binary.
"""
from __future__ import annotations

import json
import subprocess
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from orch.adapters.codex_bin import INSTALL_HINT, find_codex, native_codex
from orch.adapters.worker_env import codex_settings, withheld_variables
from orch.core.config import Config
from orch.core.plan import Plan
from orch.core.rules import RuleSet, ShellAction
from orch.errors import LaunchError

NONE = 'none'                 # `sandbox: none` (a shell rule) / `check_sandbox: none` (a role): run as you
PROBE_TIMEOUT = 60.0

_probed: dict[str, str | None] = {}
_probe_lock = threading.Lock()


@dataclass(frozen=True)
class Sandbox:
    """How one command is sandboxed: plain data (it travels to a Dask worker inside a work unit's fields)."""

    binary: str                          # the codex executable ('' with mode `none`)
    mode: str                            # 'read-only', 'workspace-write', or `none`: no sandbox, only `withheld`
    network: bool = False
    writable: tuple[str, ...] = ()       # writable roots besides the working directory
    withheld: tuple[str, ...] = ()       # variables the command does not get

    def shell(self, command: str) -> list[str]:
        """`/bin/sh -c command` in the sandbox, its stderr into its stdout: codex's own stderr can then go
        elsewhere (`codex_stderr`), so that its notices do not end up in the command's output."""
        return self.argv(['/bin/sh', '-c', f'exec 2>&1\n{command}'])

    def argv(self, command: Sequence[str]) -> list[str]:
        if self.mode == NONE:
            return list(command)
        sets = {
            'sandbox_mode': json.dumps(self.mode),
            'sandbox_workspace_write.network_access': 'true' if self.network else 'false',
            'sandbox_workspace_write.exclude_slash_tmp': 'true',
            'sandbox_workspace_write.exclude_tmpdir_env_var': 'true',
            'sandbox_workspace_write.writable_roots': json.dumps(list(self.writable)),
            'shell_environment_policy.inherit': '"all"',
            'shell_environment_policy.ignore_default_excludes': 'true',
            'shell_environment_policy.exclude': '[]',
            'shell_environment_policy.include_only': '[]',
            'shell_environment_policy.set': '{}',
        }
        args = [self.binary, 'sandbox']
        for key, value in sets.items():
            args += ['-c', f'{key}={value}']
        return [*args, '--', *command]

    def env(self, env: Mapping[str, str]) -> dict[str, str]:
        return {k: v for k, v in env.items() if k not in self.withheld}

    def with_writable(self, *roots: Path | str) -> Sandbox:
        extra = tuple(dict.fromkeys([*self.writable, *(str(Path(r).absolute()) for r in roots)]))
        return Sandbox(self.binary, self.mode, self.network, extra, self.withheld)


def codex_stderr(text: str) -> str:
    """What codex itself said around the command, minus its notice that it made no helper aliases (a CODEX_HOME
    under /tmp: tests) — the rest (a sandbox that failed to start) belongs in the command's log."""
    return ''.join(line for line in text.splitlines(keepends=True) if not line.startswith(_NOTICE))


_NOTICE = 'WARNING: proceeding, even though we could not create PATH aliases'


def sandbox_for(config: Config, mode: str, environ: Mapping[str, str], *, binary: str | None = None,
                repo: Path | None = None) -> Sandbox | None:
    """The sandbox of a command under a role whose worker sandbox is `mode` (None: `danger-full-access` or
    `none`, the command runs as you). `binary`: codex as found here (default: the config's, required)."""
    if mode in (NONE, 'danger-full-access'):
        return None
    found = binary or require_sandbox(config, repo)
    table = codex_settings(config, environ).get('sandbox_workspace_write')
    network = isinstance(table, dict) and table.get('network_access') is True
    return Sandbox(native_codex(found), mode, network=network and mode == 'workspace-write',
                   withheld=tuple(withheld_variables(config, environ)))


def unsandboxed_checks(config: Config, environ: Mapping[str, str]) -> Sandbox:
    """Checks and setup commands of a role that runs them unsandboxed (`check_sandbox: none`, `danger-full-access`):
    no sandbox, but still without the variables workers do not get, since they run the worker's code."""
    return Sandbox('', NONE, withheld=tuple(withheld_variables(config, environ)))


def require_sandbox(config: Config, repo: Path | None) -> str:
    """The codex executable whose `codex sandbox` works here, or a LaunchError (exit 2)."""
    binary = find_codex(config.codex.binary, repo)
    if binary is None:
        raise LaunchError(f'checks, gates and setup commands run in the Codex sandbox, but codex executable '
                          f'{config.codex.binary!r} was not found: {INSTALL_HINT} (or say `sandbox: none` / '
                          '`check_sandbox: none` to run them unsandboxed)')
    problem = probe(native_codex(binary))
    if problem is not None:
        raise LaunchError(f'checks, gates and setup commands run in the Codex sandbox, which does not work here: '
                          f'`{binary} sandbox -- true` {problem}. Nothing ran. Fix the sandbox (on Linux it needs '
                          'user namespaces), or say `sandbox: none` in a shell rule / `check_sandbox: none` for a '
                          'role to run those commands unsandboxed, as you')
    return binary


def probe(binary: str) -> str | None:
    """None when `binary sandbox -- true` works in a fresh directory, else how it failed (cached)."""
    with _probe_lock:
        if binary not in _probed:
            _probed[binary] = _probe(binary)
        return _probed[binary]


def _probe(binary: str) -> str | None:
    sandbox = Sandbox(binary, 'workspace-write')
    with tempfile.TemporaryDirectory(prefix='orch-sandbox-probe-') as tmp:
        try:
            done = subprocess.run(sandbox.argv(['/bin/sh', '-c', 'touch probe']), cwd=tmp, capture_output=True,
                                  timeout=PROBE_TIMEOUT, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.SubprocessError) as exc:
            return f'could not start: {exc}'
        if done.returncode != 0:
            last = [line for line in done.stderr.decode(errors='replace').splitlines() if line.strip()][-1:]
            return f'exited {done.returncode}' + (f': {last[0][:300]}' if last else '')
        if not (Path(tmp) / 'probe').exists():
            return 'ran, but could not write its working directory'
    return None


def unsandboxed(config: Config, rules: RuleSet) -> list[str]:
    """What runs as you, outside the sandbox: shell rules saying `sandbox: none`, roles whose checks and setup
    do (`check_sandbox: none`, or a `danger-full-access` role)."""
    found = [f'rule {r.name} ({r.source or "built in"})' for r in rules.rules
             if isinstance(r.action, ShellAction) and r.action.sandbox == NONE]
    for name in sorted(config.roles):
        role = config.role(name)
        if role.command_sandbox == NONE:
            why = 'check_sandbox: none' if role.check_sandbox == NONE else f'sandbox: {role.sandbox}'
            found.append(f'checks and setup of role {name} ({why})')
    return found


def require_for_run(config: Config, plan: Plan, rules: RuleSet, repo: Path) -> None:
    """Refuse the run (LaunchError, exit 2) before anything ran when a command it would sandbox cannot be."""
    sandboxed_rule = any(isinstance(r.action, ShellAction) and r.action.sandbox != NONE for r in rules.rules)
    roles = {name: config.role(name) for name in {t.role for t in plan.tasks}}   # resolved once, not per task
    sandboxed_task = any(roles[t.role].command_sandbox != NONE
                         and (roles[t.role].checks or t.checks or config.worktree.setup) for t in plan.tasks)
    if sandboxed_rule or sandboxed_task:
        require_sandbox(config, repo)
