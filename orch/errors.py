"""The one error hierarchy codex-orch raises, and the exit codes it maps to.

Exit codes (documented here and in the README, nowhere else):
    0   every task done
    1   a task failed
    2   bad usage or bad input; nothing ran and nothing was written. Also: a task missed the result cache
        and no provider key is set, so nothing was launched for it (the tasks that hit are done)
    3   internal error (a bug: the traceback is in the log)
    75  deferred: a worker hit a usage limit / quota; resume later (EX_TEMPFAIL)
    130 interrupted (Ctrl-C or SIGTERM)
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_TASK_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 3
EXIT_DEFERRED = 75
EXIT_INTERRUPTED = 130


class OrchError(Exception):
    """A problem the user can fix; printed as one message, never a traceback."""

    exit_code = EXIT_BAD_INPUT


class InputError(OrchError):
    """Bad plan, config, spec, schema, rule, template or argument."""


class ConfigError(InputError):
    pass


class PlanError(InputError):
    pass


class RuleError(InputError):
    pass


class SchemaError(InputError):
    pass


class TemplateError(InputError):
    pass


class RunNotFoundError(InputError):
    pass


class GitError(OrchError):
    """A git operation failed; the message carries the command and its stderr."""


class LockedError(OrchError):
    """Another live process holds the run."""


class LaunchError(OrchError):
    """The codex executable cannot be started."""


def problems_message(path: object, problems: list[str], fix: str = '') -> str:
    """Render several problems of one file as one message: a header line, one line each."""
    head = f'{path}: {len(problems)} problem{"s" if len(problems) != 1 else ""}'
    body = '\n'.join(f'  {p}' for p in problems)
    tail = f'\n  fix: {fix}' if fix else ''
    return f'{head}\n{body}{tail}'
