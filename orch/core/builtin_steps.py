"""The one table of built-in steps: what each built-in action reads, writes and means to the rest of codex-orch.

A rule in `rules/` names an action; this table says what that action needs from its rule (named inputs,
params), which outputs the rest of codex-orch reads back (so their paths are fixed), which placeholder its
output feeds (`{workspace}`, `{upstream_results}`), and how progress, status and the run loop treat it.
Rules are checked against it when they load, so a rule that an action could not honour is refused then,
naming the file and the key, instead of failing every task at run time.

Nothing else in codex-orch knows a rule by its name: code asks a step for its `Builtin` entry.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

Scope = Literal['run', 'task']
WorkspaceMode = Literal['shared', 'per-task', 'any']


@dataclass(frozen=True)
class Builtin:
    action: str
    scope: Scope
    workspace: WorkspaceMode
    summary: str
    implementation: str                         # 'module:function', imported when the step runs
    inputs: Mapping[str, str] = field(default_factory=dict)   # named input the action reads -> what for
    optional_inputs: Mapping[str, str] = field(default_factory=dict)   # read when the rule names them
    params: Mapping[str, str] = field(default_factory=dict)   # param the action uses -> what for
    # Output name -> the path other parts of codex-orch read it from (status, reports, the crash protocol),
    # so a rule may not move it. Every output of a built-in rule is one of these.
    outputs: Mapping[str, str] = field(default_factory=dict)
    log: str | None = None                      # where the action keeps its log (fixed), or None: no log
    provides: str | None = None                 # the placeholder its `outputs` feed, see PROVIDED
    uptodate: str | None = None                 # 'module:function' (inputs, step) -> bool, beside file deps
    task_outcome: bool = False                  # its result is the task's result (progress, status, staleness)
    task_input: bool = False                    # it prepares the task's work step (its staleness is the task's)
    task_setup: bool = False                    # it sets up the task's workspace (a failure there is recorded)
    shown: bool = True                          # a line in live progress
    last: bool = False                          # runs after every other step: it reads every task's state


BUILTINS: dict[str, Builtin] = {b.action: b for b in (
    Builtin(
        action='worktree', scope='run', workspace='shared',
        summary="create (or re-attach) the run's shared git worktree",
        implementation='orch.steps.worktree:shared_worktree',
        params={'branch': 'the branch the worktree is on', 'base_commit': 'the commit it starts from'},
        outputs={'workspace': '{run_dir}/worktree.json'}, provides='workspace',
        uptodate='orch.steps.worktree:worktree_ready'),
    Builtin(
        action='task_worktree', scope='task', workspace='per-task',
        summary="create the task's own worktree from its dependencies' branches",
        implementation='orch.steps.worktree:task_worktree',
        params={'branch': "the task's branch", 'base_commit': 'the commit a task without dependencies starts from'},
        outputs={'workspace': '{task_dir}/worktree.json'}, provides='workspace',
        uptodate='orch.steps.worktree:worktree_ready', task_setup=True),
    Builtin(
        action='render_prompt', scope='task', workspace='any',
        summary="render the role's prompt template for the task",
        implementation='orch.steps.prompt:render_prompt',
        inputs={'template': "the role's prompt template", 'schema': "the role's answer schema (shown to the worker)",
                'task': "the task's plan entry (task.json)"},
        optional_inputs={'spec': "the run's spec file", 'upstream': 'the results of the tasks it depends on'},
        outputs={'prompt': ''}, task_input=True, shown=False),
    Builtin(
        action='codex_worker', scope='task', workspace='any',
        summary='run the Codex worker on the prompt, validate its answer, commit its changes',
        implementation='orch.steps.work:codex_worker',
        inputs={'prompt': 'the rendered prompt sent to Codex', 'schema': 'the JSON Schema the answer must match',
                'workspace': 'the worktree record (where the worker runs)'},
        params={'model': 'the model (empty: codex picks)', 'sandbox': "Codex's sandbox mode",
                'codex_args': 'the codex executable and extra arguments (JSON list)'},
        outputs={'result': '{task_dir}/result.json'}, log='{task_dir}/attempt-*', provides='result',
        uptodate='orch.steps.work:recorded_done', task_outcome=True, task_input=True),
    Builtin(
        action='report', scope='run', workspace='any',
        summary="write the run's report.md, summary.json and junit.xml",
        implementation='orch.steps.report:write_report',
        outputs={'markdown': '{run_dir}/report.md', 'summary': '{run_dir}/summary.json',
                 'junit': '{run_dir}/junit.xml'},
        uptodate='orch.steps.report:report_uptodate', last=True),
)}

# Placeholders whose values are outputs of rules, not fixed paths: name -> (the provided output, per task?).
PROVIDED = {
    'workspace': 'workspace',            # this task's (or the run's) worktree record
    'upstream_results': 'result',        # the result of every task this one depends on
    'all_results': 'result',             # the result of every task
}

# Every run needs one rule for each of these, per workspace mode.
REQUIRED = {
    'shared': ('worktree', 'render_prompt', 'codex_worker', 'report'),
    'per-task': ('task_worktree', 'render_prompt', 'codex_worker', 'report'),
}


def builtin(action: object) -> Builtin | None:
    return BUILTINS.get(action) if isinstance(action, str) else None
