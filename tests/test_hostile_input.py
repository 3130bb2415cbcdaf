"""Hostile and broken input: exit 2, one message naming the file, the place and the fix, and nothing changed.

Every case snapshots the whole repository (paths, sizes and content hashes of every file and
directory, .orchestrator/ included, .git/ excepted), the refs and the worktree list before and
after the command, and checks that no worker was launched.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.gitrepo import git
from tests.support.orchtest import Host, make_host, three_task_plan

ORCH = '.orchestrator'
# Caches that loading an existing run may (re)write: derived from the inputs only, written atomically.
CACHES = {'plan-schema-checked'}


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Host:
    h = make_host(tmp_path, monkeypatch, capsys, {'default': {'answer': 'auto'}})
    h.write_plan(three_task_plan())
    return h


def disk_snapshot(repo: Path) -> dict[str, object]:
    files: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(repo):
        dirnames[:] = sorted(d for d in dirnames if not (dirpath == str(repo) and d == '.git'))
        rel_dir = os.path.relpath(dirpath, repo)
        files[rel_dir + '/'] = ('dir',)
        for name in filenames:
            if name in CACHES:
                continue
            path = Path(dirpath) / name
            st = path.lstat()
            if path.is_symlink():
                files[f'{rel_dir}/{name}'] = ('link', os.readlink(path))
            else:
                files[f'{rel_dir}/{name}'] = (st.st_size, hashlib.sha256(path.read_bytes()).hexdigest())
    return {'files': files,
            'refs': git(repo, 'for-each-ref', '--format=%(refname) %(objectname)'),
            'worktrees': git(repo, 'worktree', 'list', '--porcelain')}


def _task(tid: str = 'T1', **extra: object) -> dict:
    return {'id': tid, 'role': 'implementer', 'title': 't', 'description': 'd', **extra}


def _plan(*tasks: dict) -> str:
    return json.dumps({'version': 1, 'tasks': list(tasks)})


def plan_text(text: str) -> Callable[[Host], None]:
    return lambda h: (h.repo / 'plan.json').write_text(text)


def write(rel: str, content: str | bytes) -> Callable[[Host], None]:
    def setup(h: Host) -> None:
        path = h.repo / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return setup


def edit_json(rel: str, change: Callable[[dict], None]) -> Callable[[Host], None]:
    def setup(h: Host) -> None:
        path = h.repo / rel
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data, indent=2))
    return setup


def symlink_outside(h: Host) -> None:
    (h.repo.parent / 'outside.md').write_text('# secret\n')
    (h.repo / 'spec-link.md').symlink_to(h.repo.parent / 'outside.md')


def _unrequire(name: str) -> Callable[[dict], None]:
    return lambda schema: schema['required'].remove(name)


RUN = ('run', '--plan-file', 'plan.json')
RUN_SPEC = ('run', '--plan-file', 'plan.json', '--spec-file')
CFG = f'{ORCH}/orchestrator.yaml'
IMPL_SCHEMA = f'{ORCH}/schemas/implementer.json'
IMPL_PROMPT = f'{ORCH}/prompts/implementer.md'
RULE = f'{ORCH}/rules/x.yaml'

# id, setup, argv, fragments the one message must contain (file, place, fix)
CASES: list[tuple[str, Callable[[Host], None] | None, tuple[str, ...], list[str]]] = [
    # -- the plan
    ('plan-invalid-json', plan_text('{"tasks": ['), RUN,
     ['plan.json', 'line 1 column 12', 'not valid JSON', 'fix the JSON syntax']),
    ('plan-array', plan_text('[]'), RUN, ['plan.json', "(top level): [] is not of type 'object'", 'plan format']),
    ('plan-tasks-not-list', plan_text('{"tasks": "T1"}'), RUN,
     ['plan.json', "tasks: 'T1' is not of type 'array'", 'plan format']),
    ('plan-missing-title', plan_text('{"tasks": [{"id": "T1", "role": "implementer", "description": "d"}]}'), RUN,
     ['plan.json', "tasks[0]: 'title' is a required property", 'plan format']),
    ('plan-duplicate-id', plan_text(_plan(_task('T1'), _task('T1'))), RUN,
     ['plan.json', "tasks[1].id: duplicate id 'T1'", 'tasks[0]', 'give each task its own id']),
    *[(f'plan-id-{name}', plan_text(_plan(_task(tid))), RUN, ['plan.json', f'tasks[0].id: {tid!r}', hint])
      for name, tid, hint in [
          ('dotdot-slash', '../x', 'use only letters, digits'), ('slash', 'a/b', 'use only letters, digits'),
          ('space', 'a b', 'use only letters, digits'), ('leading-dash', '-a', 'must start with a letter'),
          ('double-dot', 'a..b', 'must not contain ".."'), ('dot-lock', 'x.lock', '".lock"'),
          ('tilde', 'a~b', 'use only letters'), ('caret', 'a^b', 'use only letters'),
          ('colon', 'a:b', 'use only letters')]],
    ('plan-cycle', plan_text(_plan(_task('A', depends_on=['B']), _task('B', depends_on=['C']),
                                   _task('C', depends_on=['A']))), RUN,
     ['plan.json', 'dependency cycle A -> B -> C -> A', 'remove one of these dependencies']),
    ('plan-self-dependency', plan_text(_plan(_task('A', depends_on=['A']))), RUN,
     ['plan.json', 'tasks[0].depends_on[0]', 'depends on itself', 'remove']),
    ('plan-unknown-dependency', plan_text(_plan(_task('A', depends_on=['T9']))), RUN,
     ['plan.json', "tasks[0].depends_on[0]: unknown task 'T9'", 'add a task with that id or remove']),
    ('plan-unknown-role', plan_text(_plan(_task('A', role='wizard'))), RUN,
     ['plan.json', "tasks[0].role: unknown role 'wizard'", 'add it under roles:']),
    *[(f'plan-path-{name}', plan_text(_plan(_task('A', paths=['ok.txt', path]))), RUN,
       ['plan.json', 'tasks[0].paths[1]', hint])
      for name, path, hint in [
          ('dotdot', '../outside.txt', 'stay inside'), ('nested-dotdot', 'a/../../outside', 'stay inside'),
          ('absolute', '/etc/passwd', 'relative to the repository'),
          ('pathspec-magic', ':/', 'git pathspec magic'), ('pathspec-exclude', ':!src', 'git pathspec magic'),
          ('nul', 'a\u0000b', 'control character'), ('newline', 'a\nb', 'control character')]],
    ('plan-missing', None, ('run', '--plan-file', 'nope.json'), ['nope.json', 'not found', 'check --plan-file']),
    ('plan-directory', write('plandir/x', 'x'), ('run', '--plan-file', 'plandir'),
     ['plandir', 'is a directory', 'check --plan-file']),
    ('plan-not-utf8', write('plan.json', b'{"tasks": "\xff"}'), RUN, ['plan.json', 'not UTF-8', 'byte 11',
                                                                      'save it as UTF-8']),
    # -- the spec
    ('spec-binary', write('spec.bin', b'# Spec\x00\x01\x02'), (*RUN_SPEC, 'spec.bin'),
     ['--spec-file spec.bin', 'binary', 'byte 6', 'UTF-8 text']),
    ('spec-not-utf8', write('spec.md', b'# Spec\n\xff\xfe'), (*RUN_SPEC, 'spec.md'),
     ['--spec-file spec.md', 'not UTF-8', 'byte 7', 're-save the file as UTF-8']),
    ('spec-symlink-outside', lambda h: symlink_outside(h), (*RUN_SPEC, 'spec-link.md'),
     ['--spec-file spec-link.md', 'outside the repository', 'copy the spec into the repository']),
    ('spec-directory', write('specdir/a.md', 'x'), (*RUN_SPEC, 'specdir'),
     ['--spec-file specdir', 'is a directory', 'pass a text file']),
    ('spec-missing', None, (*RUN_SPEC, 'nope.md'), ['--spec-file nope.md', 'not found', 'check the path']),
    # -- the config
    ('config-wrong-type', write(CFG, 'jobs: many\n'), RUN,
     ['orchestrator.yaml', 'jobs: Input should be a valid integer', 'commented defaults']),
    ('config-wrong-nested-type', write(CFG, 'defaults:\n  timeout_idle: soon\n'), RUN,
     ['orchestrator.yaml', 'defaults.timeout_idle', 'commented defaults']),
    ('config-unknown-key', write(CFG, 'jobs: 2\nconcurency: {}\n'), RUN,
     ['orchestrator.yaml', 'concurency: unknown key', 'check its spelling']),
    ('config-not-a-mapping', write(CFG, '- jobs\n'), RUN,
     ['orchestrator.yaml', 'top level must be a mapping', 'got list']),
    ('config-bad-yaml', write(CFG, 'jobs: [1\n'), RUN, ['orchestrator.yaml', 'line 2 column 1', 'invalid YAML']),
    ('config-branch-placeholder', write(CFG, 'branches:\n  shared: "orch/{nope}"\n'), RUN,
     ['orchestrator.yaml', 'branches.shared', 'unknown placeholder {nope}', 'use date, run_id']),
    ('config-role-name', write(CFG, 'roles:\n  ../../etc: {}\n'), RUN,
     ['orchestrator.yaml', 'roles', "role name '../../etc'", 'use only letters']),
    ('config-decisions-outside', write(CFG, 'decisions_file: ../../outside.md\n'), RUN,
     ['orchestrator.yaml', 'decisions_file', 'inside the repository']),
    ('config-decisions-absolute', write(CFG, 'decisions_file: /tmp/decisions.md\n'), RUN,
     ['orchestrator.yaml', 'decisions_file', 'relative path inside the repository']),
    # -- role schemas and prompt templates
    ('schema-invalid-json', write(IMPL_SCHEMA, '{"type": "object",'), RUN,
     ['implementer.json', 'line 1 column 19', 'not valid JSON', 'codex-orch init --force']),
    ('schema-not-json-schema', edit_json(IMPL_SCHEMA, lambda s: s.update(type='objekt')), RUN,
     ['implementer.json', 'type: not a valid JSON Schema', 'codex-orch init --force']),
    ('schema-not-strict-required', edit_json(IMPL_SCHEMA, _unrequire('summary')), RUN,
     ['implementer.json', 'properties.summary: property must be listed in "required"', 'strict structured output']),
    ('schema-not-strict-additional', edit_json(IMPL_SCHEMA, lambda s: s.pop('additionalProperties')), RUN,
     ['implementer.json', '(top level): objects must set "additionalProperties": false', 'strict structured output']),
    ('schema-not-strict-nested', edit_json(IMPL_SCHEMA, lambda s: s['properties']['decisions']['items'].update(
        additionalProperties=True)), RUN,
     ['implementer.json', 'properties.decisions.items: objects must set "additionalProperties": false']),
    ('schema-dialect-not-a-string', edit_json(IMPL_SCHEMA, lambda s: s.update({'$schema': 5})), RUN,
     ['implementer.json', '$schema: must be a string', 'codex-orch init --force']),
    ('schema-remote-ref', edit_json(IMPL_SCHEMA, lambda s: s['properties'].update(
        summary={'$ref': 'https://example.com/summary.json'})), RUN,
     ['implementer.json', 'properties.summary', 'must point inside this schema', 'strict structured output']),
    ('schema-dangling-ref', edit_json(IMPL_SCHEMA, lambda s: s['properties'].update(summary={'$ref': '#/$defs/nope'})),
     RUN, ['implementer.json', 'properties.summary', "'#/$defs/nope' points to nothing"]),
    ('template-unknown-placeholder', write(IMPL_PROMPT, 'Task id: {task_id}\nDo {nope}.\n'), RUN,
     ['implementer.md', 'line 2', 'unknown placeholder {nope}', 'write literal braces as {{ and }}']),
    ('template-attribute', write(IMPL_PROMPT, 'Task id: {task_id}\n{title.__class__}\n'), RUN,
     ['implementer.md', 'line 2', '{title.__class__}', 'plain {name}']),
    ('template-format-spec', write(IMPL_PROMPT, 'Task id: {task_id}\n{title:>99999999999}\n'), RUN,
     ['implementer.md', 'line 2', '{title:>99999999999}', 'plain {name}']),
    ('template-unbalanced', write(IMPL_PROMPT, 'Task id: {task_id}\n{oops\n'), RUN,
     ['implementer.md', "expected '}'", 'write literal braces']),
    # -- host rules
    ('rule-unknown-action', write(RULE, 'name: x\nscope: task\noutput: "{task_dir}/x.json"\naction: frobnicate\n'),
     RUN, ['x.yaml', "rule 'x'", "unknown action 'frobnicate'", 'shell: <command>']),
    ('rule-unknown-placeholder', write(RULE, 'name: x\nscope: task\noutput: "{task_dir}/{nope}.json"\n'
                                            'action: {shell: "true"}\n'),
     RUN, ['x.yaml', "rule 'x'", 'unknown placeholder {nope}', 'known for scope task']),
    ('rule-duplicate-output', write(RULE, 'name: x\nscope: task\noutput: "{task_dir}/result.json"\n'
                                         'action: {shell: "true"}\n'),
     RUN, ['x.yaml', "rule 'x'", "output '{task_dir}/result.json' is also the output of rule 'work'",
           'each file has one producer']),
    ('rule-free-text-in-shell', write(RULE, 'name: x\nscope: task\noutput: "{task_dir}/x.json"\n'
                                           'action: {shell: "echo {title}"}\n'),
     RUN, ['x.yaml', "rule 'x'", 'placeholder {title} cannot be used in a shell command', 'allowed:']),
    ('rule-doc-placeholder', write(RULE, 'name: x\nscope: task\noutput: "{task_dir}/x.json"\ndoc: "Gate {nope}"\n'
                                        'action: {shell: "true"}\n'),
     RUN, ['x.yaml', "rule 'x'", 'unknown placeholder {nope}']),
    ('rule-shell-format-spec', write(RULE, 'name: x\nscope: task\noutput: "{task_dir}/x.json"\n'
                                          'action: {shell: "echo {task_id:.1}"}\n'),
     RUN, ['x.yaml', "rule 'x'", '{task_id:.1}', 'only plain {name} placeholders']),
    ('rule-output-outside-run', write(RULE, 'name: x\nscope: task\noutput: "/tmp/{task_id}.json"\n'
                                           'action: {shell: "true"}\n'),
     RUN, ['x.yaml', "rule 'x'", 'must start with {run_dir} or {task_dir}']),
    ('rule-output-dotdot', write(RULE, 'name: x\nscope: task\noutput: "{task_dir}/../../../../x.json"\n'
                                      'action: {shell: "true"}\n'),
     RUN, ['x.yaml', "rule 'x'", 'must not contain ".."']),
    ('rule-log-outside', write(RULE, 'name: x\nscope: task\noutput: "{task_dir}/x.json"\nlog: /tmp/x.log\n'
                                    'action: {shell: "true"}\n'),
     RUN, ['x.yaml', "rule 'x'", "log '/tmp/x.log' must start with {run_dir} or {task_dir}"]),
    ('rule-python-tag', write(RULE, 'name: !!python/object/apply:os.getcwd []\n'), RUN,
     ['x.yaml', 'line 1', 'not a valid YAML rule file']),
    ('rule-unknown-key', write(RULE, 'name: x\nscope: task\noutput: "{task_dir}/x.json"\naction: {shell: "true"}\n'
                                     'inputs: []\n'), RUN, ['x.yaml', "rule 'x'", 'inputs: unknown key']),
    # -- arguments
    ('resume-unknown-run', None, ('resume', '--run-id', 'does-not-exist'),
     ["run 'does-not-exist' does not exist", 'runs/does-not-exist/run.json', 'codex-orch run --plan-file']),
    ('resume-corrupt-run-record', write(f'{ORCH}/runs/r1/run.json', '{"run_id": '), ('resume', '--run-id', 'r1'),
     ['runs/r1/run.json', 'unreadable run record', 'start a new run']),
    ('resume-foreign-run-record', write(f'{ORCH}/runs/r1/run.json', '{"run_id": "r1", "evil": 1}'),
     ('resume', '--run-id', 'r1'), ['runs/r1/run.json', 'not a run record of this codex-orch version']),
    ('status-unknown-run', None, ('status', '--run-id', 'does-not-exist'), ["run 'does-not-exist' does not exist"]),
    ('resume-no-runs', None, ('resume',), ['no runs in', 'codex-orch run --plan-file']),
    ('run-id-escape', None, (*RUN, '--run-id', '../x'), ["--run-id '../x'", 'must start with a letter or digit']),
    ('resume-run-id-escape', None, ('resume', '--run-id', '../../etc'), ["--run-id '../../etc'", 'must start with']),
    ('run-id-git-illegal', None, (*RUN, '--run-id', 'a..b'), ["--run-id 'a..b'", 'must not contain ".."']),
    ('jobs-zero', None, (*RUN, '-j', '0'), ['-j 0', 'must be at least 1']),
    ('jobs-negative', None, (*RUN, '-j', '-3'), ['-j -3', 'must be at least 1']),
    ('jobs-huge', None, (*RUN, '-j', '100000'), ['-j 100000', 'at most 64']),
    ('jobs-not-a-number', None, (*RUN, '-j', 'many'), ["argument -j/--jobs: invalid int value: 'many'"]),
]


def cli(host: Host, *argv: str) -> tuple[int, str, str]:
    """host.cli, also for argparse's own usage errors (SystemExit(2), as `python -m orch` exits)."""
    try:
        return host.cli(*argv)
    except SystemExit as exc:
        captured = host.capsys.readouterr()
        return int(exc.code), captured.out, captured.err


@pytest.mark.parametrize('setup, argv, fragments', [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_message_and_changes_nothing(
        host: Host, setup: Callable[[Host], None] | None, argv: tuple[str, ...], fragments: list[str]) -> None:
    if setup is not None:
        setup(host)
    runs_existed = (host.repo / ORCH / 'runs').exists()
    before = disk_snapshot(host.repo)
    rc, out, err = cli(host, *argv)
    assert rc == 2, out + err
    assert 'Traceback' not in err and 'internal error' not in err
    assert len([line for line in err.splitlines() if line.startswith('codex-orch:')]) == 1, err
    for fragment in fragments:
        assert fragment in err, f'{fragment!r} not in:\n{err}'
    assert disk_snapshot(host.repo) == before
    assert (host.repo / ORCH / 'runs').exists() == runs_existed   # no run directory created
    assert host.launches() == []


@pytest.mark.parametrize('rel', [CFG, RULE])
def test_yaml_tag_that_runs_a_command_is_not_executed(host: Host, tmp_path: Path, rel: str) -> None:
    marker = tmp_path / 'pwned'
    write(rel, f'jobs: !!python/object/apply:os.system ["touch {marker}"]\n')(host)
    before = disk_snapshot(host.repo)
    rc, out, err = host.cli(*RUN)
    assert rc == 2 and Path(rel).name in err, err
    assert 'line 1 column 7' in err or 'line 1' in err
    assert not marker.exists()
    assert disk_snapshot(host.repo) == before


def test_bad_input_on_an_existing_run_changes_nothing(host: Host) -> None:
    """A bad plan edit, spec or -j on resume of an existing run: the run's files stay as they were."""
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--run-id', 'r1')
    assert rc == 0, out + err
    host.clear_log()
    for argv, setup in [
        (('resume', '--run-id', 'r1', '-j', '0'), None),
        (('resume', '--run-id', 'r1', '--spec-file', 'nope.md'), None),
        (('run', '--plan-file', 'plan.json', '--run-id', 'r1'), plan_text(_plan(_task('A', depends_on=['A'])))),
        (('resume', '--run-id', 'r1'), plan_text('{"tasks": [')),
    ]:
        if setup:
            setup(host)
        before = disk_snapshot(host.repo)
        rc, out, err = host.cli(*argv)
        assert rc == 2, out + err
        assert disk_snapshot(host.repo) == before
    assert host.launches() == []


def test_non_strict_schema_is_refused_before_any_worker(host: Host) -> None:
    edit_json(f'{ORCH}/schemas/reviewer.json', _unrequire('verdict'))(host)
    rc, out, err = host.cli(*RUN)
    assert rc == 2
    assert 'reviewer.json' in err and 'properties.verdict' in err
    assert host.launches() == []   # T1 and T2 would have been fine: nothing starts at all


def test_ten_megabyte_description_just_works(host: Host) -> None:
    """A 10 MB description is legal JSON: it is rendered whole into the prompt and sent on stdin."""
    description = ('Lorem ipsum dolor sit amet. ' * 40 + '\n') * 9000   # ~10 MB
    assert len(description) > 10 * 10**6
    plan = {'version': 1, 'tasks': [_task('BIG', description=description, paths=['big.txt'])]}
    host.write_plan(plan)
    host.script({'default': {'answer': 'auto'}, 'tasks': {'BIG': {'edits': {'big.txt': 'done\n'}}}})
    rc, out, err = host.cli(*RUN)
    assert rc == 0, out + err
    assert host.statuses() == {'BIG': 'done'}
    prompt = (host.run_dir() / 'tasks' / 'BIG' / 'prompt.md').read_text()
    assert description in prompt
    assert host.launches()[0]['task_id'] == 'BIG'   # the fake read the whole prompt from stdin
    assert len(out) < 10_000 and len(err) < 10_000   # never echoed back
    report = (host.run_dir() / 'report.md').read_text()
    assert len(report) < 10_000


def test_oversized_plan_is_refused(host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    import orch.core.plan
    monkeypatch.setattr(orch.core.plan, 'MAX_PLAN_BYTES', 1000)
    host.write_plan({'version': 1, 'tasks': [_task('A', description='x' * 2000)]})
    before = disk_snapshot(host.repo)
    rc, out, err = host.cli(*RUN)
    assert rc == 2 and 'plan.json' in err and 'larger than' in err
    assert disk_snapshot(host.repo) == before


def test_shell_syntax_in_plan_and_paths_never_reaches_a_shell(host: Host, tmp_path: Path) -> None:
    """Titles, descriptions, acceptance, paths and the spec's file name full of shell syntax, run through
    workers, commits and a host shell gate: no marker file appears, the text arrives literally."""
    m = {i: tmp_path / f'marker{i}' for i in range(1, 8)}
    nasty = (f'$(touch {m[1]}) `touch {m[2]}` ; touch {m[3]} && rm -rf "$HOME" \'quoted\' "double" '
             f'| touch {m[4]} \n newline > {m[5]}')
    spec = host.repo / 'spec $(touch marker6) `touch marker7`.md'
    spec.write_text('# Spec with $(touch marker6) and `touch marker7`\n')
    write(RULE, 'name: gate\nscope: task\ninput: "{task_dir}/result.json"\noutput: "{task_dir}/gate.json"\n'
                'action: {shell: "echo task={task_id} spec={spec_file} wt={worktree} > $ORCH_STEP_DIR/gate-out.txt; '
                'printf %s {spec_file} > $ORCH_STEP_DIR/spec-name.txt"}\n')(host)
    tasks = [
        {'id': 'T1', 'role': 'implementer', 'title': nasty, 'description': nasty, 'acceptance': [nasty],
         'paths': ['src/$(touch marker6).txt', "it's \"quoted\" ;.txt"]},
        {'id': 'T2', 'role': 'implementer', 'title': f'`touch {m[2]}`', 'description': '{task_id} {{x}} %s',
         'depends_on': ['T1'], 'paths': ['other.txt']},
    ]
    host.write_plan({'version': 1, 'title': nasty, 'tasks': tasks})
    host.script({'default': {'answer': 'auto'}, 'tasks': {
        'T1': {'edits': {'src/$(touch marker6).txt': 'x\n', "it's \"quoted\" ;.txt": 'y\n'}},
        'T2': {'edits': {'other.txt': 'z\n'}}}})
    rc, out, err = host.cli('run', '--plan-file', 'plan.json', '--spec-file', spec.name, '-j', '2')
    assert rc == 0, out + err
    assert host.statuses() == {'T1': 'done', 'T2': 'done'}
    wt = host.repo / ORCH / 'worktrees' / host.run_dir().name
    for marker in m.values():
        assert not marker.exists(), marker
    for where in (host.repo, wt, tmp_path):
        assert not (where / 'marker6').exists() and not (where / 'marker7').exists()
    # the text arrived literally: in the prompt, the commit subject (one line), the gate's arguments
    prompt = (host.run_dir() / 'tasks' / 'T1' / 'prompt.md').read_text()
    assert nasty in prompt
    assert '{task_id} {{x}} %s' in (host.run_dir() / 'tasks' / 'T2' / 'prompt.md').read_text()
    subjects = host.branch_log(host.shared_branch())
    assert subjects[:2] == [f'T2: `touch {m[2]}`', 'T1: ' + ' '.join(nasty.split())]
    # paths in a shell command are relative to its working directory (the worktree here)
    scratch = {d.name: d for d in (host.run_dir() / 'scratch').iterdir()}   # each gate's own ORCH_STEP_DIR
    t1, t2 = (next(d for name, d in scratch.items() if task in name) for task in ('T1', 'T2'))
    assert (t1 / 'spec-name.txt').read_text() == f'../../../{spec.name}'
    # (the gate ran in a checkout of T2's landed commit, at the depth of the run's worktree)
    assert (t2 / 'gate-out.txt').read_text() == f'task=T2 spec=../../../{spec.name} wt=.\n'
    files = git(wt, 'show', '--format=', '--name-only', host.result('T1')['commit']).splitlines()
    assert sorted(files) == sorted(['"it\'s \\"quoted\\" ;.txt"', 'src/$(touch marker6).txt']) or \
        sorted(files) == sorted(["it's \"quoted\" ;.txt", 'src/$(touch marker6).txt'])
