"""What workers' shells inherit: the environment codex gets, minus its secrets.

codex itself must get the whole environment: it reads its model provider's key from it. The commands
a worker runs get what Codex's `shell_environment_policy` leaves of it; by default (0.169.0) that is
everything, so a worker's `env > env.txt` would commit GITHUB_TOKEN. `worker_codex_args` returns the
`-c` overrides, for every `codex exec` call (first turn and resume alike: a resumed thread restores
no settings), that withhold from the shell, by exact name, every variable of that environment which
looks secret (`orch.core.redact.is_secret_variable`: KEY/TOKEN/SECRET/PASSW… names, GITHUB_*/AWS_*/…
families, values shaped like a token or a URL with a password) and the provider's key variable,
except those the config's `codex.pass_env` names. Exact names rather than patterns, so that a
variable `pass_env` names is simply left out of the list; patterns the user's own config.toml
excludes are kept.

The same reading of codex's configuration (CODEX_HOME/config.toml, a profile, the `-c` arguments in
`codex.extra_args`) tells `provider_key` which variable or login file the provider needs, for
`codex-orch doctor`. Checked with codex 0.169.0: the built-in `openai` provider reads CODEX_API_KEY
or `CODEX_HOME/auth.json` (`codex login`), not OPENAI_API_KEY.
"""
from __future__ import annotations

import fnmatch
import json
import os
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orch.core.config import Config
from orch.core.redact import is_secret_variable

POLICY = 'shell_environment_policy'
OPENAI_KEY_ENV = 'CODEX_API_KEY'       # what `codex exec` reads for the built-in openai provider
SUB_AGENT_FEATURES = ('multi_agent', 'multi_agent_v2')   # `codex features list`, 0.169.0
_KEYLESS_PROVIDERS = frozenset({'ollama', 'lmstudio', 'oss'})


def codex_environment(config: Config, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment codex is started with: ours plus the config's `codex.env`."""
    return {**(os.environ if environ is None else environ), **config.codex.env}


def worker_codex_args(config: Config, environ: Mapping[str, str] | None = None) -> list[str]:
    """The `-c` (and `--disable`) arguments to add to every `codex exec` call, after the config's own extra args.

    `environ` is the environment codex is started with (default: `codex_environment(config)`).
    """
    env = codex_environment(config) if environ is None else environ
    settings = codex_settings(config, env)
    policy = settings.get(POLICY)
    own = policy.get('exclude') if isinstance(policy, dict) else None
    kept = [p for p in own if isinstance(p, str)] if isinstance(own, list) else []
    exclude = list(dict.fromkeys([*kept, *withheld_variables(config, env, settings)]))
    # /tmp and $TMPDIR are writable roots of Codex's workspace-write sandbox by default: a repository there (its
    # .git/config, .orchestrator/) would be the worker's to change, outside its own checkout. Never.
    args: list[str] = ['-c', 'sandbox_workspace_write.exclude_slash_tmp=true',
                       '-c', 'sandbox_workspace_write.exclude_tmpdir_env_var=true']
    if exclude:
        args += ['-c', f'{POLICY}.exclude={json.dumps(exclude)}']
    if not config.codex.sub_agents:
        # A worker is one agent with one budget: Codex's sub-agents (0.169.0: multi_agent, on by default, and
        # multi_agent_v2) spend tokens in threads of their own. These flags are what the CLI offers to turn them
        # off, yet 0.169.0 still offers and runs `collaboration.spawn_agent`: whatever a worker spawns is
        # counted from its rollouts all the same (orch.adapters.subagent_usage).
        args += [f'--disable={feature}' for feature in SUB_AGENT_FEATURES]
    if config.codex.pass_env:
        # codex's own *KEY*/*SECRET*/*TOKEN* filter (off by default) must not undo a pass_env
        args += ['-c', f'{POLICY}.ignore_default_excludes=true']
    return args


def withheld_variables(config: Config, environ: Mapping[str, str],
                       settings: Mapping[str, Any] | None = None) -> list[str]:
    """Names of the variables of `environ` that workers' shells will not get, sorted."""
    settings = codex_settings(config, environ) if settings is None else settings
    provider_vars = set(_provider(settings).variables)
    return sorted(name for name, value in environ.items()
                  if (name in provider_vars or is_secret_variable(name, value))
                  and not any(fnmatch.fnmatchcase(name, p) for p in config.codex.pass_env))


# ---------------------------------------------------------------------------------------------
# codex's own configuration, as far as the provider and the shell policy go


def codex_home(environ: Mapping[str, str]) -> Path:
    home = environ.get('CODEX_HOME')
    return Path(home) if home else Path(environ.get('HOME') or Path.home()) / '.codex'


def codex_settings(config: Config, environ: Mapping[str, str]) -> dict[str, Any]:
    """CODEX_HOME/config.toml, with the profile and the `-c` overrides of `codex.extra_args` on top."""
    home = codex_home(environ)
    settings = _read_toml(home / 'config.toml')
    overrides, profile = _parse_extra_args(config.codex.extra_args)
    profile = profile or _str(settings.get('profile'))
    if profile:
        profile_file = home / f'{profile}.config.toml'
        profiles = settings.get('profiles')
        table = profiles.get(profile) if isinstance(profiles, dict) else None
        layer = _read_toml(profile_file) if profile_file.is_file() else table if isinstance(table, dict) else {}
        _merge(settings, layer)
    for key, value in overrides:
        _set_dotted(settings, key, value)
    return settings


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding='utf-8'))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}


def _parse_extra_args(args: list[str]) -> tuple[list[tuple[str, Any]], str | None]:
    overrides: list[tuple[str, Any]] = []
    profile: str | None = None
    for flag, value in _options(args):
        if flag in ('-c', '--config') and '=' in value:
            key, _, raw = value.partition('=')
            overrides.append((key.strip(), _toml_value(raw.strip())))
        elif flag in ('-p', '--profile'):
            profile = value
    return overrides, profile


def _options(args: list[str]) -> Iterator[tuple[str, str]]:
    """(flag, value) for `-c V`, `--config V`, `--config=V`, `-cV` and the same for -p/--profile."""
    it = iter(args)
    for arg in it:
        for short, long in (('-c', '--config'), ('-p', '--profile')):
            if arg in (short, long):
                yield short, next(it, '')
            elif arg.startswith(long + '='):
                yield short, arg[len(long) + 1:]
            elif arg.startswith(short) and not arg.startswith('--') and len(arg) > 2:
                yield short, arg[2:]


def _toml_value(raw: str) -> Any:
    """As codex reads a `-c` value: TOML, else the text itself."""
    try:
        return tomllib.loads(f'v = {raw}')['v']
    except tomllib.TOMLDecodeError:
        return raw


def _set_dotted(settings: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = [part.strip().strip('"') for part in key.split('.')]
    node = settings
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[last] = value


def _merge(base: dict[str, Any], layer: Mapping[str, Any]) -> None:
    for key, value in layer.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


# ---------------------------------------------------------------------------------------------
# The model provider's credentials


@dataclass(frozen=True)
class ProviderKey:
    """Where the configured model provider's credentials come from, and whether they are there."""

    provider: str
    variables: tuple[str, ...]   # the variables codex reads the key from (any one will do)
    found: str | None            # what supplies it: a variable's name, or the login file
    problem: str | None          # what to fix, when nothing supplies it
    note: str = ''


def provider_key(config: Config, environ: Mapping[str, str] | None = None) -> ProviderKey:
    """The provider's key as codex will look for it in `environ` (default: what codex gets); no model call."""
    env = codex_environment(config) if environ is None else environ
    settings = codex_settings(config, env)
    info = _provider(settings)
    if info.problem or (not info.variables and not info.login):
        return ProviderKey(info.name, info.variables, None, info.problem)
    for name in info.variables:
        if env.get(name, '').strip():
            return ProviderKey(info.name, info.variables, name, None)
    wanted = ' or '.join(info.variables)
    if info.login:
        home = codex_home(env)
        auth = home / 'auth.json'
        if auth.is_file():
            return ProviderKey(info.name, info.variables, str(auth), None,
                               note=f'workers can read {auth} (the sandbox allows reading files); '
                                    f'{OPENAI_KEY_ENV} in the environment stays out of their reach')
        store = _str(settings.get('cli_auth_credentials_store')) or 'file'
        if store in ('keyring', 'auto'):
            return ProviderKey(info.name, info.variables, f'the system keyring ({store}; not checked)', None)
        hint = ''
        if env.get('OPENAI_API_KEY', '').strip():
            hint = (f' (OPENAI_API_KEY is set, but codex exec does not read it: export it as {OPENAI_KEY_ENV}, '
                    'or store it with `printenv OPENAI_API_KEY | codex login --with-api-key`)')
        return ProviderKey(info.name, info.variables, None,
                           f'model provider {info.name!r} needs {wanted} in the environment or a login '
                           f'({auth} from `codex login`); neither is there{hint}')
    return ProviderKey(info.name, info.variables, None,
                       f'model provider {info.name!r} reads its key from {wanted}, which is not set '
                       'in the environment codex gets')


@dataclass(frozen=True)
class _ProviderInfo:
    name: str
    variables: tuple[str, ...]
    login: bool          # codex's login (auth.json) also supplies the key
    problem: str | None = None


def _provider(settings: Mapping[str, Any]) -> _ProviderInfo:
    name = _str(settings.get('model_provider')) or 'openai'
    if name == 'openai':   # built in; a table of the same name in config.toml does not replace it
        return _ProviderInfo(name, (OPENAI_KEY_ENV,), login=True)
    providers = settings.get('model_providers')
    table = providers.get(name) if isinstance(providers, dict) else None
    if not isinstance(table, dict):
        if name in _KEYLESS_PROVIDERS:
            return _ProviderInfo(name, (), login=False)
        return _ProviderInfo(name, (), login=False,
                             problem=f'model provider {name!r} is not defined (no [model_providers.{name}] '
                                     'in CODEX_HOME/config.toml, nor in codex.extra_args)')
    env_key = _str(table.get('env_key'))
    if env_key:
        return _ProviderInfo(name, (env_key,), login=False)
    if table.get('requires_openai_auth'):
        return _ProviderInfo(name, (OPENAI_KEY_ENV,), login=True)
    return _ProviderInfo(name, (), login=False)
