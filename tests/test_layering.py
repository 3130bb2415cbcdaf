"""Layering rules for the `orch` package, checked on its source with `ast` (nothing is imported):

- no module in orch/ is over MAX_LINES lines: a module that long does more than one job;
- no module uses another module's private names (a leading underscore, dunders excepted), neither
  by `from orch.x import _name` nor by `x._name` on an imported orch module. A name used by two
  modules is part of an interface and is spelled without the underscore; within a module, private
  names are fine.
- the layers import downwards only (LAYERS): orch.core (the pure core: plans, configs, rules, text)
  uses no adapter, engine, step, run state or command; orch.adapters (git, the worker, processes)
  uses no engine, step or command; orch.engine uses no command. An import counts wherever it is:
  at the top, inside a function, under `if TYPE_CHECKING:`, or as importlib.import_module('...').
"""
from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit   # the pure core: no processes, no git

REPO_ROOT = Path(__file__).resolve().parents[1]
ORCH = REPO_ROOT / 'orch'
MAX_LINES = 500

# Known violations, to be fixed in their own change; each entry is (importing module, the private
# name it uses as `module.name`). Empty this as they are fixed: an entry that no longer occurs
# fails the test too, so the list cannot go stale.
KNOWN_PRIVATE_USES: frozenset[tuple[str, str]] = frozenset()
# Known modules over MAX_LINES lines, likewise to be split and then removed from here.
KNOWN_LONG_MODULES: frozenset[str] = frozenset()

# package -> the orch packages none of its modules may import.
LAYERS: dict[str, tuple[str, ...]] = {
    'orch.core': ('orch.adapters', 'orch.engine', 'orch.steps', 'orch.runstate', 'orch.commands'),
    'orch.adapters': ('orch.engine', 'orch.steps', 'orch.commands'),
    'orch.engine': ('orch.commands',),
}
# Known imports against LAYERS, as (importing module, imported module); likewise emptied as fixed.
KNOWN_LAYER_VIOLATIONS: frozenset[tuple[str, str]] = frozenset()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix('').parts)
    if parts[-1] == '__init__':
        parts.pop()
    return '.'.join(parts)


def orch_modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(ORCH.rglob('*.py')):
        yield module_name(path), path


def is_module(dotted: str) -> bool:
    base = REPO_ROOT.joinpath(*dotted.split('.'))
    return base.with_suffix('.py').is_file() or (base / '__init__.py').is_file()


def is_private(name: str) -> bool:
    return name.startswith('_') and not (name.startswith('__') and name.endswith('__'))


def absolute_module(importer: str, path: Path, node: ast.ImportFrom) -> str:
    """The module an ImportFrom names, with relative imports resolved against the importer."""
    if not node.level:
        return node.module or ''
    package = importer.split('.') if path.name == '__init__.py' else importer.split('.')[:-1]
    base = package[:len(package) - (node.level - 1)]
    return '.'.join([*base, node.module] if node.module else base)


def private_uses(importer: str, path: Path) -> list[str]:
    """`module.name` for every private name of another orch module that `importer` uses."""
    tree = ast.parse(path.read_text(encoding='utf-8'), filename=str(path))
    aliases: dict[str, str] = {}   # local name -> the orch module it is bound to
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == 'orch' or alias.name.startswith('orch.'):
                    if alias.asname:
                        aliases[alias.asname] = alias.name
                    else:
                        aliases['orch'] = 'orch'
        elif isinstance(node, ast.ImportFrom):
            source = absolute_module(importer, path, node)
            if source != 'orch' and not source.startswith('orch.'):
                continue
            for alias in node.names:
                if is_private(alias.name) and source != importer:
                    found.append(f'{source}.{alias.name}')
                elif is_module(f'{source}.{alias.name}'):
                    aliases[alias.asname or alias.name] = f'{source}.{alias.name}'
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and is_private(node.attr):
            owner = resolve_module(node.value, aliases)
            if owner is not None and owner != importer:
                found.append(f'{owner}.{node.attr}')
    return found


def imported_modules(importer: str, path: Path) -> set[str]:
    """Every orch module `importer` imports, anywhere in its source: for `from orch.x import y` both
    orch.x and, if y is a module, orch.x.y."""
    tree = ast.parse(path.read_text(encoding='utf-8'), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = absolute_module(importer, path, node)
            found.add(source)
            found.update(f'{source}.{alias.name}' for alias in node.names if is_module(f'{source}.{alias.name}'))
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str) and (
                  (isinstance(node.func, ast.Attribute) and node.func.attr == 'import_module')
                  or (isinstance(node.func, ast.Name) and node.func.id in ('import_module', '__import__')))):
            found.add(node.args[0].value)
    return {name for name in found if name == 'orch' or name.startswith('orch.')}


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + '.')


def layer_violations(importer: str, path: Path) -> set[tuple[str, str]]:
    forbidden = [f for package, banned in LAYERS.items() if within(importer, package) for f in banned]
    return {(importer, imported) for imported in imported_modules(importer, path)
            if any(within(imported, f) for f in forbidden)}


def resolve_module(node: ast.expr, aliases: dict[str, str]) -> str | None:
    """The orch module an expression like `procgroup` or `orch.adapters.procgroup` names, else None."""
    if isinstance(node, ast.Name):
        return aliases.get(node.id)
    if isinstance(node, ast.Attribute):
        parent = resolve_module(node.value, aliases)
        if parent is not None and is_module(f'{parent}.{node.attr}'):
            return f'{parent}.{node.attr}'
    return None


def test_no_module_is_too_long() -> None:
    too_long = {name: n for name, path in orch_modules()
                if (n := len(path.read_text(encoding='utf-8').splitlines())) > MAX_LINES}
    unexpected = {name: n for name, n in too_long.items() if name not in KNOWN_LONG_MODULES}
    assert not unexpected, f'modules over {MAX_LINES} lines (split them by job): {unexpected}'
    fixed = KNOWN_LONG_MODULES - set(too_long)
    assert not fixed, f'no longer over {MAX_LINES} lines, remove from KNOWN_LONG_MODULES: {sorted(fixed)}'


def test_no_module_uses_another_modules_private_names() -> None:
    uses = {(name, used) for name, path in orch_modules() for used in private_uses(name, path)}
    unexpected = sorted(uses - KNOWN_PRIVATE_USES)
    assert not unexpected, ('private names used across modules (make them public or keep them in '
                            f'their module): {unexpected}')
    fixed = sorted(KNOWN_PRIVATE_USES - uses)
    assert not fixed, f'no longer used, remove from KNOWN_PRIVATE_USES: {fixed}'


def test_layers_import_downwards_only() -> None:
    found = {v for name, path in orch_modules() for v in layer_violations(name, path)}
    unexpected = sorted(found - KNOWN_LAYER_VIOLATIONS)
    assert not unexpected, f'imports against the layering (see LAYERS): {unexpected}'
    fixed = sorted(KNOWN_LAYER_VIOLATIONS - found)
    assert not fixed, f'no longer imported, remove from KNOWN_LAYER_VIOLATIONS: {fixed}'
    assert {name for name, _ in orch_modules() if any(within(name, p) for p in LAYERS)}, 'no module checked'
