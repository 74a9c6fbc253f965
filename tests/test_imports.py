"""The package's import graph: no module imports itself through others."""
import ast
from pathlib import Path
from typing import Dict, List, Set

PROJECTS = Path(__file__).resolve().parents[1] / 'projects'


def import_graph(root: Path) -> Dict[str, Set[str]]:
    """Module name -> the modules under ``root`` it imports, anywhere in the
    file (function-level imports included: they close a circle too)."""
    files = {}
    for path in root.rglob('*.py'):
        parts = list(path.relative_to(root).with_suffix('').parts)
        is_package = parts[-1] == '__init__'
        name = '.'.join(parts[:-1] if is_package else parts)
        files[name] = (path, is_package)
    graph = {}
    for name, (path, is_package) in files.items():
        package = name.split('.') if is_package else name.split('.')[:-1]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name in files}
            elif isinstance(node, ast.ImportFrom):
                base = package[:len(package) - node.level + 1] \
                    if node.level else []
                target = '.'.join(base + (node.module or '').split('.')
                                  ).strip('.')
                for alias in node.names:
                    module = f'{target}.{alias.name}'
                    if module in files:  # `from package import module`
                        edges.add(module)
                    elif target in files:
                        edges.add(target)
        graph[name] = edges - {name}
    return graph


def import_cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    cycles = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in sorted(graph[module]):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            group = stack[stack.index(module):]
            del stack[stack.index(module):]
            if len(group) > 1:
                cycles.append(sorted(group))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return cycles


def test_graph_sees_the_package():
    graph = import_graph(PROJECTS)
    assert 'cgrseg.models.backbones.efficientformer_v2_arch' in graph[
        'cgrseg.models.backbones.efficientformer_v2_weights']
    assert import_cycles({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}) \
        == [['a', 'b', 'c']]


def test_no_import_cycles():
    assert import_cycles(import_graph(PROJECTS)) == []
