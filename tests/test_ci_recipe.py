"""Issue 20: the CI recipe (docs/ci.md, docs/examples/github-actions.yml) is a workflow actionlint accepts, and every
codex-orch command it and the doc give is one codex-orch's own argument parser accepts: the recipe cannot drift
from the CLI. actionlint and shellcheck come with the dev extras (they check the workflow's shell steps too);
without them these tests fail rather than skip."""
from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from orch.main import build_parser

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / 'docs' / 'examples' / 'github-actions.yml'
DOC = ROOT / 'docs' / 'ci.md'


def tool(name: str) -> str:
    """The dev extras install the tool into the environment of the running Python (or it is on PATH)."""
    found = Path(sys.executable).parent / name
    path = str(found) if found.is_file() else shutil.which(name)
    assert path, f"{name} is missing: install the dev extras (pip install -e '.[dev]')"
    return path


def actionlint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool('actionlint'), '-no-color', f'-shellcheck={tool("shellcheck")}', str(path)],
                          capture_output=True, text=True, timeout=120, check=False)


def test_the_workflow_passes_actionlint() -> None:
    done = actionlint(WORKFLOW)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(('old', 'new', 'finding'), [
    ('contents: write', 'contents: writ', 'permission'),                        # a bad permission
    ('needs.plan.outputs.new-entries', 'needs.plan.outputs.new-entrie', 'new-entrie'),   # a missing output
    ('--run-id "$RUN_ID"', '--run-id $RUN_ID', 'SC2086'),                      # shellcheck runs on the steps
])
def test_actionlint_catches_a_broken_copy_of_the_workflow(tmp_path: Path, old: str, new: str, finding: str) -> None:
    text = WORKFLOW.read_text()
    assert old in text
    broken = tmp_path / 'github-actions.yml'
    broken.write_text(text.replace(old, new, 1))
    done = actionlint(broken)
    assert done.returncode != 0 and finding in done.stdout, done.stdout + done.stderr


def run_scripts(workflow: dict[str, Any]) -> list[str]:
    return [step['run'] for job in workflow['jobs'].values() for step in job['steps'] if 'run' in step]


def doc_snippets(markdown: str) -> list[str]:
    """The doc's fenced code blocks, and its inline code that starts with `codex-orch `."""
    fence = r'^[ \t]*```[^\n]*\n(.*?)^[ \t]*```'
    blocks = re.findall(fence, markdown, flags=re.MULTILINE | re.DOTALL)
    prose = re.sub(fence, '', markdown, flags=re.MULTILINE | re.DOTALL)
    inline = re.findall(r'(?<!`)`(codex-orch [^`\n]+)`(?!`)', prose)
    return blocks + inline


def codex_orch_commands(script: str) -> list[list[str]]:
    """Every `codex-orch ...` command line of a shell script: the words after `codex-orch` up to the end of the
    command (an operator or a redirection), comments left out and continuation lines joined."""
    found = []
    for line in script.replace('\\\n', ' ').splitlines():
        if 'codex-orch' not in line:
            continue
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.commenters = '#'
        try:
            words = list(lexer)
        except ValueError as exc:
            raise AssertionError(f'cannot read the shell line {line!r}: {exc}') from exc
        for i, word in enumerate(words):
            if word == 'codex-orch':
                argv = []
                for arg in words[i + 1:]:
                    if set(arg) <= set('<>&|;()'):   # an operator or a redirection ends the command
                        break
                    argv.append(arg)
                found.append(argv)
    return found


def accepted(argv: list[str]) -> str | None:
    """None when codex-orch's parser accepts argv (nothing runs), else why not."""
    try:
        build_parser().parse_args(argv)
    except SystemExit as exc:
        if exc.code == 0 and argv == ['--version']:
            return None
        return f'exit {exc.code}'
    return None


def check_commands(scripts: list[str], where: str) -> list[list[str]]:
    commands = [argv for script in scripts for argv in codex_orch_commands(script)]
    refused = {shlex.join(argv): why for argv in commands if (why := accepted(argv))}
    assert not refused, f'{where}: codex-orch refuses {refused}'
    return commands


def test_every_codex_orch_command_of_the_workflow_is_one_the_cli_accepts(capsys: Any) -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    commands = check_commands(run_scripts(workflow), str(WORKFLOW))
    assert {' '.join(argv) for argv in commands} >= {
        'cache pull origin', 'run --plan-file $PLAN_FILE --run-id $RUN_ID', 'report --run-id $RUN_ID',
        'cache push origin'}


def test_every_codex_orch_command_of_the_doc_is_one_the_cli_accepts(capsys: Any) -> None:
    commands = check_commands(doc_snippets(DOC.read_text()), str(DOC))
    assert {argv[0] for argv in commands if argv} >= {'run', 'report', 'cache'}
    assert {tuple(argv[:2]) for argv in commands} >= {('cache', 'pull'), ('cache', 'push'), ('cache', 'ls'),
                                                       ('cache', 'gc')}


@pytest.mark.parametrize('line', [
    'codex-orch run --plan-file plan.json --run-id "$RUN_ID" --no-such-option',
    'codex-orch cache pull origin extra',
    'codex-orch cache gc --older-than thirty',
    'rc=0; codex-orch report --run  || rc=$?',
    'codex-orch run --run-id x  # no plan file',
])
def test_a_command_the_cli_refuses_is_caught(line: str, capsys: Any) -> None:
    with pytest.raises(AssertionError, match='codex-orch refuses'):
        check_commands([line], 'here')


def test_the_workflow_keeps_its_promises() -> None:
    """Read only everywhere but the push job; that job only on a push to the default branch; full history; the key
    from a secret; the cache restored before the run and pushed only after it."""
    workflow = yaml.safe_load(WORKFLOW.read_text())
    assert workflow['permissions'] == {'contents': 'read'}
    jobs = workflow['jobs']
    writers = {name for name, job in jobs.items() if 'write' in (job.get('permissions') or {}).values()}
    assert writers == {'push-cache'}
    condition = jobs['push-cache']['if']
    assert "github.event_name == 'push'" in condition and 'github.event.repository.default_branch' in condition
    for job in jobs.values():
        checkout = next(s for s in job['steps'] if str(s.get('uses', '')).startswith('actions/checkout@'))
        assert checkout['with']['fetch-depth'] == 0
    steps = jobs['plan']['steps']
    scripts = [s.get('run', '') for s in steps]
    pull = next(i for i, s in enumerate(scripts) if 'codex-orch cache pull origin' in s)
    run = next(i for i, s in enumerate(scripts) if 'codex-orch run ' in s)
    assert pull < run and 'codex-orch cache push' not in '\n'.join(scripts)
    assert steps[run]['env']['CODEX_API_KEY'] == '${{ secrets.CODEX_API_KEY }}'
    read_only = next(s for s in steps if "'write': False" in s.get('run', ''))
    assert read_only['if'] == "github.event_name == 'pull_request'"
