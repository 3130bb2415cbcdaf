"""A plain wheel carries the defaults (.orchestrator/, rules/) and `init` writes them into a new repo."""
from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.support.gitrepo import make_repo

REPO_ROOT = Path(__file__).resolve().parents[1]


def _copy_source(dest: Path) -> Path:
    ignore = shutil.ignore_patterns('.git', '.venv', 'node_modules', '__pycache__', 'build', '*.egg-info',
                                    'runs', 'worktrees', '.pytest_cache')
    shutil.copytree(REPO_ROOT, dest, ignore=ignore)
    return dest


def test_wheel_ships_defaults_and_init_writes_them(tmp_path: Path) -> None:
    src = _copy_source(tmp_path / 'src')
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps', '-w', str(tmp_path / 'dist'), str(src)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / 'dist').glob('codex_orch-*.whl')
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f'orch/_defaults/{p.relative_to(REPO_ROOT / ".orchestrator").as_posix()}'
                for p in (REPO_ROOT / '.orchestrator').rglob('*')
                if p.is_file() and p.suffix in ('.yaml', '.json', '.md')
                and 'runs' not in p.parts and 'worktrees' not in p.parts}
    expected |= {f'orch/_rules/{p.name}' for p in (REPO_ROOT / 'rules').glob('*.yaml')}
    assert expected <= names, expected - names
    # install it alone into a fresh venv; its dependencies come from this interpreter's site-packages
    venv = tmp_path / 'venv'
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip', str(venv)], check=True, timeout=120)
    subprocess.run([sys.executable, '-m', 'pip', '--python', str(venv / 'bin' / 'python'), 'install', '-q',
                    '--no-deps', str(wheel)], check=True, capture_output=True, timeout=300)
    host = make_repo(tmp_path, {'README.md': 'x\n'}, name='host')
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(site.getsitepackages())}
    proc = subprocess.run([str(venv / 'bin' / 'codex-orch'), 'init'], cwd=host, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for rel in ('orchestrator.yaml', 'schemas/plan.json', 'schemas/implementer.json', 'prompts/tester.md'):
        assert (host / '.orchestrator' / rel).read_bytes() == (REPO_ROOT / '.orchestrator' / rel).read_bytes()
    assert (host / 'dodo.py').exists()
    # the installed package finds its rules too (doctor loads them)
    proc = subprocess.run([str(venv / 'bin' / 'codex-orch'), 'doctor'], cwd=host, env=env, capture_output=True,
                          text=True, timeout=120)
    assert 'ok    rules: 5 rules' in proc.stdout, proc.stdout + proc.stderr
