"""`codex-orch task --role R "prompt"`: one prompt for one role, run as a one-task run.

The prompt becomes a one-task plan (`runs/<id>/plan.json`, task id `task`) and goes through the
same pipeline as any plan: worktree, rendered prompt, validated answer, commit, reports. The
validated answer is printed on stdout as JSON; progress and the summary go to stderr, so
`codex-orch task ... | jq .summary` works.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orch import output
from orch.commands.common import ensure_orchestrator, find_repo
from orch.commands.run import request_from
from orch.core.config import CONFIG_FILE, load_config
from orch.engine.start import RunRequest, existing_run, prepare_run
from orch.errors import InputError
from orch.runstate import atomic, state
from orch.runstate.lock import RunLock
from orch.runstate.runs import ORCH_DIR, check_run_id, new_run_id, run_dir

TASK_ID = 'task'
TITLE_LIMIT = 72


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser('task', help='run one prompt with one role (prints the validated answer as JSON)')
    p.add_argument('--role', required=True, help='the role to run (navigator, implementer, tester, reviewer, '
                   'or one from the config)')
    p.add_argument('prompt', help='what the worker should do ("-" reads it from stdin)')
    p.add_argument('--spec-file', help='specification given to the worker (UTF-8 text in the repository)')
    p.add_argument('--run-id', help='name of a new run, or of an earlier task run to continue')
    add_output_options(p)


def add_output_options(p: argparse.ArgumentParser) -> None:
    """-q/-v, and the run options a one-task run does not offer (one task: no jobs, nothing to continue)."""
    p.add_argument('-q', '--quiet', action='count', default=0, help='less output')
    p.add_argument('-v', '--verbose', action='count', default=0, help='more output (worker activity)')
    p.set_defaults(jobs=None, keep_going=False)


@dataclass
class TaskOutcome:
    exit_code: int
    run_id: str
    result: dict[str, Any] | None    # result.json when the task is done, else None


def one_task_plan(role: str, prompt: str) -> dict[str, Any]:
    return {'version': 1, 'title': title_of(prompt), 'tasks': [
        {'id': TASK_ID, 'role': role, 'title': title_of(prompt), 'description': prompt,
         'depends_on': [], 'paths': [], 'acceptance': []}]}


def title_of(prompt: str) -> str:
    first = next(line.strip() for line in prompt.splitlines() if line.strip())
    return first if len(first) <= TITLE_LIMIT else first[: TITLE_LIMIT - 1] + '…'


def run_task(repo: Path, role: str, prompt: str, *, spec_file: str | None, run_id: str | None,
             request: RunRequest) -> TaskOutcome:
    """Write the one-task plan into the run, run it to its end and return its result.

    Output of the run goes to stderr: stdout belongs to what the command prints as its result.
    """
    if not prompt.strip():
        raise InputError('the prompt is empty; pass the task as one quoted argument, e.g. '
                         'codex-orch task --role implementer "Fix the failing test"')
    check_role(repo, role)
    if run_id:
        check_run_id(run_id)
    run_id = run_id or new_run_id()
    existing_run(repo, run_id, 'task')   # refuse a plan run's id before writing into its directory
    plan_path = run_dir(repo, run_id) / 'plan.json'
    plan_rel = plan_path.relative_to(repo).as_posix()
    with _rollback_on_error(run_dir(repo, run_id)):
        with RunLock(run_dir(repo, run_id)):
            pass   # a run in progress is refused before its plan is touched
        atomic.write_if_changed(plan_path, json.dumps(one_task_plan(role, prompt), indent=2,
                                                      ensure_ascii=False) + '\n')
        prepared = prepare_run(repo, plan_rel, spec_file=spec_file, run_id=run_id, request=request, kind='task')
    with contextlib.redirect_stdout(sys.stderr):
        rc = prepared.execute()
    result = state.read_result(prepared.inputs.task_dir(TASK_ID))
    return TaskOutcome(rc, run_id, result if result and result.get('status') == 'done' else None)


def check_role(repo: Path, role: str) -> None:
    config_path = repo / ORCH_DIR / CONFIG_FILE
    roles = load_config(config_path).roles
    if role not in roles:
        raise InputError(f'--role {role}: unknown role (known: {", ".join(sorted(roles))}; '
                         f'add it under roles: in {ORCH_DIR}/{CONFIG_FILE})')


@contextlib.contextmanager
def _rollback_on_error(directory: Path) -> Iterator[None]:
    """Bad input must leave nothing behind: undo the plan file (and a new run's directory)."""
    plan_path = directory / 'plan.json'
    created = not directory.exists()
    before = plan_path.read_bytes() if plan_path.exists() else None
    try:
        yield
    except BaseException:
        if created:
            shutil.rmtree(directory, ignore_errors=True)
        elif before is not None and plan_path.read_bytes() != before:
            atomic.write_bytes(plan_path, before)
        raise


def read_prompt(text: str) -> str:
    return sys.stdin.read() if text == '-' else text


def task(args: argparse.Namespace) -> int:
    repo = find_repo()
    ensure_orchestrator(repo)
    outcome = run_task(repo, args.role, read_prompt(args.prompt), spec_file=args.spec_file,
                       run_id=args.run_id, request=request_from(args))
    if outcome.result is not None:
        output.write_line(json.dumps(outcome.result.get('answer'), indent=2, ensure_ascii=False))
    return outcome.exit_code
