"""The import graph of hwprune's own modules has no cycle, and the device side stays torch-free.

A cycle hidden by an import inside a function still ties two modules together: neither can be
read, tested or moved alone, and the first caller that hoists the import to the top of the file
gets a half-initialised module. So imports are collected from the source with :mod:`ast` --
inside functions and classes too -- not by importing the modules.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: import name -> folder (pyproject's package-dir: the device side lives in deploy/)
PACKAGES = {"hwprune": ROOT / "hwprune", "hwprune_deploy": ROOT / "deploy"}


def _modules() -> dict[str, tuple[Path, bool]]:
    """Every module of the packages: dotted name -> (file, is a package ``__init__``)."""
    mods: dict[str, tuple[Path, bool]] = {}
    for top, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            is_pkg = parts[-1] == "__init__"
            if is_pkg:
                parts.pop()
            mods[".".join([top, *parts])] = (path, is_pkg)
        mods.setdefault(top, (folder, True))  # hwprune itself is a namespace package (no __init__)
    return mods


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or \
        (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST):
    """(node, runs at import time) for every import statement; ``if TYPE_CHECKING:`` blocks never run."""
    def walk(nodes, top):
        for child in nodes:
            if isinstance(child, ast.If) and _is_type_checking(child):
                yield from walk(child.orelse, top)
            elif isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, top
            else:
                yield from walk(ast.iter_child_nodes(child),
                                top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))
    yield from walk(ast.iter_child_nodes(tree), True)


def _targets(name: str, node: ast.AST, is_pkg: bool) -> list[str]:
    """Absolute dotted names an import statement in module ``name`` brings in (any package)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level:
        base = name.split(".") if is_pkg else name.split(".")[:-1]
        base = base[:len(base) - (node.level - 1)]
        mod = ".".join(base + ([node.module] if node.module else []))
    else:
        mod = node.module
    # ``from pkg import sub`` imports the submodule ``pkg.sub`` where one exists
    return [mod] + [f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in MODULES]


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph() -> dict[str, set[str]]:
    """module -> the hwprune/hwprune_deploy modules it imports (importing ``a.b.c`` also runs the
    packages ``a`` and ``a.b``; a module's own enclosing packages are already running, so they
    count only where it names them, as in ``from . import REGISTRY``)."""
    graph: dict[str, set[str]] = {}
    for name, (path, is_pkg) in MODULES.items():
        edges = graph.setdefault(name, set())
        if path.is_dir():
            continue
        own = set(_ancestors(name)) | ({name} if is_pkg else set())
        for node, _ in _import_nodes(ast.parse(path.read_text(), str(path))):
            for target in _targets(name, node, is_pkg):
                if target in MODULES:
                    edges.add(target)
                edges.update(a for a in _ancestors(target) if a in MODULES and a not in own)
        edges.discard(name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path ``[a, b, ..., a]``, or None (iterative DFS, white/grey/black)."""
    state: dict[str, int] = {}
    for start in sorted(graph):
        if state.get(start):
            continue
        stack, path = [(start, iter(sorted(graph[start])))], [start]
        state[start] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                stack.append((nxt, iter(sorted(graph.get(nxt, ())))))
                path.append(nxt)
    return None


def test_walker_sees_imports_inside_functions_and_relative_ones():
    graph = import_graph()
    assert "hwprune.latency" in graph and "hwprune.strategies" in graph  # package __init__s are modules
    assert "hwprune.graph" in graph["hwprune.latency.profile"]  # ``from ..graph import`` at the top
    assert "hwprune_deploy.runner" in graph["hwprune.latency.profile"]
    assert "hwprune.plan" in graph["hwprune.checkpoint"]  # imported inside load_checkpoint
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_among_hwprune_modules():
    graph = import_graph()
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle (imports inside functions included): " + " -> ".join(cycle)


def test_device_side_imports_no_hwprune_and_no_torch_at_module_level():
    bad = []
    for name, (path, _) in MODULES.items():
        if not name.startswith("hwprune_deploy") or path.is_dir():
            continue
        for node, top in _import_nodes(ast.parse(path.read_text(), str(path))):
            for target in _targets(name, node, path.name == "__init__.py"):
                root = target.split(".")[0]
                if root == "hwprune" or (top and root == "torch"):
                    bad.append(f"{name} line {node.lineno}: {target}")
    assert not bad, "hwprune_deploy must stay torch-free and independent of hwprune: " + "; ".join(bad)
