"""Module and function sizes of a tree of Python files (the closing notes' before/after figures).

    python3 benchmarks/code_sizes.py orch
    git archive <rev> orch | tar x -C /tmp/old && python3 benchmarks/code_sizes.py /tmp/old/orch
"""
from __future__ import annotations

import ast
import statistics
import sys
from pathlib import Path


def main(root: Path) -> None:
    modules: list[tuple[int, str]] = []
    functions: list[tuple[int, str]] = []
    for path in sorted(root.rglob('*.py')):
        text = path.read_text(encoding='utf-8')
        modules.append((len(text.splitlines()), str(path.relative_to(root))))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno is not None:
                functions.append((node.end_lineno - node.lineno + 1, f'{path.relative_to(root)}:{node.name}'))
    modules.sort(reverse=True)
    functions.sort(reverse=True)
    print(f'modules {len(modules)}, lines {sum(n for n, _ in modules)}, median module '
          f'{statistics.median(n for n, _ in modules):.0f}, over 500 lines: {sum(n > 500 for n, _ in modules)}, '
          f'largest {modules[:4]}')
    print(f'functions {len(functions)}, median {statistics.median(n for n, _ in functions):.0f}, over 50 lines: '
          f'{sum(n > 50 for n, _ in functions)}, largest {functions[:3]}')


if __name__ == '__main__':
    main(Path(sys.argv[1] if len(sys.argv) > 1 else 'orch'))
