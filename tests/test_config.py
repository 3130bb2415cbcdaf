"""orch.core.config: defaults, role resolution, and the exact messages for bad orchestrator.yaml files."""
from __future__ import annotations

from pathlib import Path

import pytest

from orch.core.config import Config, load_config
from orch.errors import ConfigError

pytestmark = pytest.mark.unit   # the pure core: no processes, no git

FIX = '  fix: see the commented defaults written by `codex-orch init`'
SHIPPED = Path(__file__).resolve().parents[1] / '.orchestrator' / 'orchestrator.yaml'


def load(tmp_path: Path, text: str | bytes) -> Config:
    path = tmp_path / 'orchestrator.yaml'
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return load_config(path)


def test_missing_and_empty_files_mean_the_defaults(tmp_path: Path) -> None:
    assert load_config(tmp_path / 'nope.yaml') == Config()
    assert load(tmp_path, '') == Config()
    assert load(tmp_path, '# only a comment\n') == Config()


def test_the_shipped_config_is_the_defaults() -> None:
    assert load_config(SHIPPED) == Config()


def test_role_resolution_falls_back_to_defaults() -> None:
    config = Config.model_validate({'defaults': {'model': 'm1', 'timeout_idle': 30},
                                    'roles': {'tester': {'model': 'm2'}, 'wizard': None}})
    assert set(config.roles) == {'navigator', 'implementer', 'tester', 'reviewer', 'wizard'}
    tester, reviewer, wizard = config.role('tester'), config.role('reviewer'), config.role('wizard')
    assert (tester.model, tester.timeout_idle, tester.sandbox) == ('m2', 30, 'workspace-write')
    assert (reviewer.model, reviewer.sandbox) == ('m1', 'read-only')
    assert wizard.template == '.orchestrator/prompts/wizard.md'
    assert wizard.schema_file == '.orchestrator/schemas/wizard.json'
    assert (wizard.schema_retries, wizard.failure_retries, wizard.retry_backoff) == (1, 1, 5)


@pytest.mark.parametrize('text, problems', [
    ('jobs: many\n', ["jobs: Input should be a valid integer, unable to parse string as an integer (got 'many')"]),
    ('jobs: 0\n', ['jobs: Input should be greater than or equal to 1 (got 0)']),
    ('jobs: 2\nconcurency: {}\n', ['concurency: unknown key (remove it or check its spelling)']),
    ('defaults:\n  timeout_idle: soon\n', ["defaults.timeout_idle: Input should be a valid number, unable to parse "
                                           "string as a number (got 'soon')"]),
    ('roles:\n  tester:\n    sandbox: yolo\n', ["roles.tester.sandbox: Input should be 'read-only', 'workspace-write' "
                                               "or 'danger-full-access' (got 'yolo')"]),
    ('roles:\n  tester:\n    modle: x\n', ['roles.tester.modle: unknown key (remove it or check its spelling)']),
    ('roles: 5\n', ['roles: Input should be a valid dictionary (got 5)']),
    ('roles:\n  ../../etc: {}\n', ['roles: role name \'../../etc\' must start with a letter or digit and use only '
                                   'letters, digits, ".", "_" and "-" (got {"../../etc": {}})']),
    ('codex:\n  env:\n    X: 1\n', ['codex.env.X: Input should be a valid string (got 1)']),
    ('decisions_file: ../../outside.md\n', ['decisions_file: must be a relative path inside the repository '
                                            "(no leading \"/\", no \"..\") (got '../../outside.md')"]),
    ('decisions_file: /tmp/d.md\n', ['decisions_file: must be a relative path inside the repository '
                                     "(no leading \"/\", no \"..\") (got '/tmp/d.md')"]),
    ('branches:\n  shared: "orch/{nope}"\n', ["branches.shared: unknown placeholder {nope} (use date, run_id) "
                                              "(got 'orch/{nope}')"]),
    ('branches:\n  task: "orch/{run_id}"\n', ['branches.task: must contain {task_id}, or every task would share '
                                              "one branch (got 'orch/{run_id}')"]),
    ('branches:\n  shared: "orch/{date} x"\n', ["branches.shared: not a valid git branch name (got 'orch/{date} x')"]),
    ('git:\n  author: bob\n', ["git.author: String should match pattern '^[^<>]+ <[^<>]+>$' (got 'bob')"]),
    ('token_budget: 0\n', ['token_budget: Input should be greater than 0 (got 0)']),
    ('worktree:\n  setup_timeout: 0\n', ['worktree.setup_timeout: Input should be greater than 0 (got 0)']),
    ('worktree:\n  setup: make\n', ["worktree.setup: Input should be a valid list (got 'make')"]),
    ('worktree:\n  setup: [make, 3]\n', ['worktree.setup[1]: Input should be a valid string (got 3)']),
    ('worktree:\n  setpu: [make]\n', ['worktree.setpu: unknown key (remove it or check its spelling)']),
])
def test_bad_config_messages(tmp_path: Path, text: str, problems: list[str]) -> None:
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, text)
    count = f'{len(problems)} problem{"s" if len(problems) > 1 else ""}'
    assert str(exc.value) == '\n'.join([f'{tmp_path / "orchestrator.yaml"}: {count}', *(f'  {p}' for p in problems),
                                        FIX])


@pytest.mark.parametrize('text, message', [
    ('- jobs\n', 'the top level must be a mapping of keys, got list'),
    ('jobs: [1\n', "line 2 column 1: invalid YAML: expected ',' or ']', but got '<stream end>' "
                   '(only plain YAML is accepted: no tags that construct objects)'),
    (b'jobs: 1\n\xff\n', 'not UTF-8 text: byte 8 is invalid (save it as UTF-8)'),
    ('jobs: !!python/object/apply:os.system ["true"]\n',
     "line 1 column 7: invalid YAML: could not determine a constructor for the tag "
     "'tag:yaml.org,2002:python/object/apply:os.system' (only plain YAML is accepted: no tags that construct objects)"),
])
def test_unreadable_config_messages(tmp_path: Path, text: str | bytes, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, text)
    assert str(exc.value) == f'{tmp_path / "orchestrator.yaml"}: {message}'


def test_a_yaml_tag_never_runs_anything(tmp_path: Path) -> None:
    marker = tmp_path / 'pwned'
    for text in (f'!!python/object/apply:os.system ["touch {marker}"]\n',
                 f'jobs: !!python/object/apply:subprocess.call [["touch", "{marker}"]]\n',
                 f'x: !!python/object/new:os.system ["touch {marker}"]\n'):
        with pytest.raises(ConfigError):
            load(tmp_path, text)
    assert not marker.exists()


def test_every_problem_is_listed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, 'jobs: x\nfoo: 1\ndefaults:\n  bar: 2\n')
    assert str(exc.value).splitlines()[0].endswith('orchestrator.yaml: 3 problems')


@pytest.mark.unit
def test_executor_settings(tmp_path: Path) -> None:
    assert Config().executor.kind == 'local'
    config = load(tmp_path, 'executor:\n  kind: dask\n  address: tcp://h:8786\n  resources: {codex: 2}\n')
    assert (config.executor.address, config.executor.resources) == ('tcp://h:8786', {'codex': 2.0})
    for text, expected in (('executor:\n  kind: dask\n', 'executor.address is required'),
                           ('executor:\n  kind: ray\n', 'executor.kind'),
                           ('executor:\n  address: h:8786\n', 'not a Dask scheduler address'),
                           ('executor:\n  adress: tcp://h:1\n', 'executor.adress: unknown key')):
        with pytest.raises(ConfigError) as exc:
            load(tmp_path, text)
        assert expected in str(exc.value), str(exc.value)


def test_worktree_setup_settings(tmp_path: Path) -> None:
    assert (Config().worktree.setup, Config().worktree.setup_timeout) == ([], 1800)
    config = load(tmp_path, 'worktree:\n  setup: ["make translations", "npm ci"]\n  setup_timeout: 60\n')
    assert (config.worktree.setup, config.worktree.setup_timeout) == (['make translations', 'npm ci'], 60)
