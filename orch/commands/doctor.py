"""`codex-orch doctor`: check codex, git, config, schemas, templates and rules; say what to fix.

It also checks, without a model call, that the model provider's key reaches codex, and names the variables
workers' shells will not get (orch/adapters/worker_env.py).
"""
from __future__ import annotations

import argparse
import fnmatch
import subprocess
from collections.abc import Callable
from pathlib import Path

from orch import output
from orch.adapters import git
from orch.adapters.codex_bin import INSTALL_HINT, PINNED_VERSION, find_codex
from orch.adapters.sandbox import require_sandbox, unsandboxed
from orch.adapters.worker_env import codex_environment, codex_home, provider_key, withheld_variables
from orch.core.config import CONFIG_FILE, Config, load_config
from orch.engine.inputs import check_roles, load_host_rules
from orch.errors import EXIT_BAD_INPUT, EXIT_OK, EXIT_TASK_FAILED, InputError, OrchError
from orch.runstate.runs import ORCH_DIR
from orch.steps.guard import control_files


def add_parser(sub: argparse._SubParsersAction) -> None:
    sub.add_parser('doctor', help='check the codex binary, git, config, schemas and prompts')


def _check_codex(config: Config, repo: Path) -> str:
    binary = find_codex(config.codex.binary, repo)
    if binary is None:
        raise OrchError(f'codex executable {config.codex.binary!r} not found: {INSTALL_HINT}')
    try:
        proc = subprocess.run([binary, '--version'], capture_output=True, text=True, timeout=30,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise OrchError(f'{binary} --version failed: {exc}') from exc
    version = proc.stdout.strip().split()[-1] if proc.stdout.strip() else '?'
    note = '' if version == PINNED_VERSION else f' (codex-orch is tested with {PINNED_VERSION})'
    return f'{binary}: codex-cli {version}{note}'


def _check_git(repo: Path) -> str:
    version = '.'.join(map(str, git.git_version()))
    if git.git_version() < (2, 25):
        raise OrchError(f'git {version} is too old; worktrees need git >= 2.25')
    return f'git {version}; repository {repo}'


def _check_provider_key(config: Config) -> str:
    env = codex_environment(config)
    home = env.get('CODEX_HOME')
    if home and not Path(home).is_dir():
        raise OrchError(f'CODEX_HOME is {home}, which does not exist: codex refuses to start (create it, or unset '
                        'CODEX_HOME to use ~/.codex)')
    key = provider_key(config, env)
    if key.problem:
        raise OrchError(key.problem)
    if key.found is None:
        return f'model provider {key.provider!r} needs no key'
    where = f'from {key.found}' if key.found.startswith(('/', 'the ')) else f'{key.found} is set'
    return f'model provider {key.provider!r}: key {where}' + (f' (note: {key.note})' if key.note else '')


def _check_worker_env(config: Config) -> str:
    env = codex_environment(config)
    withheld = withheld_variables(config, env)
    passed = sorted(n for n in env if n not in withheld and any(
        fnmatch.fnmatchcase(n, p) for p in config.codex.pass_env))
    text = (f"{len(withheld)} variable(s) withheld from workers' shells: {', '.join(withheld)}" if withheld
            else "no secret-looking variable to withhold from workers' shells")
    text += f' (codex itself gets them; codex home {codex_home(env)})'
    if passed:
        text += f'; passed through by codex.pass_env: {", ".join(passed)}'
    return text


def _check_sandbox(config: Config, repo: Path, local: bool) -> str:
    """Checks, gates and setup commands run in Codex's sandbox (it works here), and what runs outside it."""
    if local:
        require_sandbox(config, repo)
    outside = unsandboxed(config, load_host_rules(repo, config))
    where = 'works here' if local else 'runs on the Dask workers'
    return (f'checks, gates and setup commands run in the Codex sandbox ({where}); '
            + (f'unsandboxed, as you: {"; ".join(outside)}' if outside else 'none runs unsandboxed'))


def _check_dask(config: Config) -> str:
    """The scheduler answers, some worker has the resources a work step asks for, and each such worker has git,
    the pinned Codex CLI and the provider's key (asked on the worker, without a model call)."""
    settings = config.executor
    if not settings.address:
        raise InputError('executor.address is not set (executor: {kind: dask, address: tcp://HOST:8786})')
    from functools import partial

    from orch.adapters import dask_executor
    from orch.remote.run_unit import probe
    try:
        known = dask_executor.workers(settings.address, settings.connect_timeout)
        fitting = [a for a, w in known.items()
                   if all(float(w['resources'].get(k, 0)) >= v for k, v in settings.resources.items())]
        if not fitting:
            raise OrchError(f'the scheduler at {settings.address} has {len(known)} worker(s), none with the resources '
                            f'{settings.resources}: start workers with `dask worker {settings.address} --resources '
                            f'{",".join(f"{k}={v:g}" for k, v in settings.resources.items())}`')
        reports = dask_executor.run_on_workers(settings.address, settings.connect_timeout,
                                               partial(probe, config.codex.model_dump()))
    finally:
        dask_executor.close_all()
    lines: list[str] = []
    bad: list[str] = []
    for address in fitting:
        r = reports.get(address) or {}
        problems = [r[k] for k in ('git_problem', 'codex_problem', 'key_problem') if r.get(k)]
        if r.get('codex') and r['codex'] != PINNED_VERSION:
            problems.append(f'codex-cli {r["codex"]}, not the pinned {PINNED_VERSION} '
                            f'(npm install -g @openai/codex@{PINNED_VERSION})')
        text = (f'{address} ({r.get("host")}): git {r.get("git", "?")}, codex-cli {r.get("codex", "?")}, '
                f'key {r.get("key", "?")}')
        (bad if problems else lines).append(f'{address} ({r.get("host")}): ' + '; '.join(problems) if problems
                                            else text)
    if bad:
        raise OrchError(f'{len(bad)} of {len(fitting)} Dask worker(s) cannot run work steps: ' + ' | '.join(bad))
    return f'scheduler {settings.address}, {len(fitting)} worker(s) with {settings.resources}: ' + ' | '.join(lines)


def doctor(args: argparse.Namespace) -> int:
    problems = 0
    bad_input = False   # a problem in a file the user wrote: exit 2, as `run` would

    def check(name: str, fn: Callable[[], str]) -> None:
        nonlocal problems, bad_input
        try:
            detail = fn()
            output.write_line(f'ok    {name}: {detail}')
        except OrchError as exc:
            problems += 1
            bad_input = bad_input or isinstance(exc, InputError)
            output.write_line(f'FAIL  {name}: {exc}')

    try:
        repo = git.repo_root(Path.cwd())
    except OrchError as exc:
        output.write_line(f'FAIL  git repository: {exc}')
        return 1
    config_path = repo / ORCH_DIR / CONFIG_FILE
    config = Config()

    def load() -> str:
        nonlocal config
        config = load_config(config_path)
        return str(config_path) if config_path.exists() else 'no config file; using the defaults (run init)'

    check('config', load)
    if config.executor.kind == 'dask':   # this machine runs no codex: the workers' are checked below
        output.write_line('skip  codex, model provider key: executor dask runs codex on the Dask workers '
                          '(see "dask executor")')
    else:
        check('codex', lambda: _check_codex(config, repo))
        check('model provider key', lambda: _check_provider_key(config))
    check('worker environment', lambda: _check_worker_env(config))
    check('git', lambda: _check_git(repo))
    check('schemas and prompts', lambda: (check_roles(repo, config, sorted(config.roles)),
                                          f'{len(config.roles)} roles: {", ".join(sorted(config.roles))}')[1])
    check('rules', lambda: f'{len(load_host_rules(repo, config).rules)} rules')
    check('sandbox', lambda: _check_sandbox(config, repo, config.executor.kind != 'dask'))
    if config.executor.kind == 'dask':
        check('dask executor', lambda: _check_dask(config))
    check('control files', lambda: 'a worker changing these fails its task (unless the plan task says '
                                   f'"control_files": true): {", ".join(control_files(config))}')
    output.write_line('all checks passed' if not problems else f'{problems} problem(s) to fix (see FAIL above)')
    if not problems:
        return EXIT_OK
    return EXIT_BAD_INPUT if bad_input else EXIT_TASK_FAILED
