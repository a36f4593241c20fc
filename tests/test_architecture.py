"""No import cycles, between modules or between packages: data flows one way (STYLE.md, "The shape").

Every import statement under src/deepfake_detector is read with `ast`, none is executed: those at module
level, those inside functions (a lazy import only moves a cycle from import time to call time) and those
under ``if TYPE_CHECKING:`` (the package root declares its lazy re-exports there).

How an import becomes an edge:

- ``import a.b.c`` imports the module ``a.b.c``; relative imports are resolved against the importer.
- ``from a.b import c`` imports the module ``a.b.c`` when ``c`` is a submodule, otherwise ``a.b``.
- Importing ``deepfake_detector.x.y`` also runs ``deepfake_detector/x/__init__.py`` the first time. That
  counts as an edge to the package ``deepfake_detector.x`` only when its ``__init__`` imports one of our
  modules as it runs (at module level, outside ``if TYPE_CHECKING:``). An ``__init__`` that only defines
  things (a docstring, a lazy ``__getattr__``) runs nothing of ours, so it can't close a cycle. Nor do
  the packages that hold the importer, the root among them: their ``__init__`` ran before the importer.

The module graph has one node per module (a package is its ``__init__``). The package graph has one node
per subpackage (``deepfake_detector.inference``), per top-level module (``deepfake_detector.errors``) and
one for the root ``__init__`` (``deepfake_detector``); each module edge between two nodes is an edge.
"""

from __future__ import annotations

import ast
import functools
import itertools
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = "deepfake_detector"
SOURCE_ROOT = Path(__file__).resolve().parents[1] / "src"

# Past this many cycles the listing stops: a tangle that big needs untangling, not a longer message.
MAX_CYCLES = 200

Edges = dict[str, dict[str, list[str]]]  # importer -> imported -> ["file:line", ...]


def find_modules(source_root: Path) -> dict[str, Path]:
    """Every module of the package by dotted name; a package is named by its ``__init__.py``."""
    modules = {}
    for path in sorted((source_root / PACKAGE).rglob("*.py")):
        parts = path.relative_to(source_root).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def is_type_checking_block(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def walk_imports(tree: ast.AST, *, runtime_only: bool = False) -> list[ast.Import | ast.ImportFrom]:
    """The import statements in ``tree``; ``runtime_only`` keeps those that run when the module does."""
    found, pending = [], [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif runtime_only and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        elif runtime_only and is_type_checking_block(node):
            pending.extend(node.orelse)
            continue
        pending.extend(ast.iter_child_nodes(node))
    return sorted(found, key=lambda node: node.lineno)


def in_package(name: str) -> bool:
    return name == PACKAGE or name.startswith(PACKAGE + ".")


def owning_module(name: str, modules: dict[str, Path]) -> str:
    """``name`` when it is a module, else the nearest package above it."""
    while name not in modules:
        name = name.rpartition(".")[0]
    return name


def resolve(importer: str, node: ast.Import | ast.ImportFrom, modules: dict[str, Path]) -> list[str]:
    """The modules of ours that one import statement imports (see the module docstring)."""
    if isinstance(node, ast.Import):
        return [owning_module(alias.name, modules) for alias in node.names if in_package(alias.name)]
    source = node.module or ""
    if node.level:  # relative to the importer's package, then level - 1 packages up
        package = importer.split(".")
        if modules[importer].name != "__init__.py":
            package = package[:-1]
        package = package[: len(package) - (node.level - 1)]
        source = ".".join([*package, node.module] if node.module else package)
    if not in_package(source):
        return []
    return [
        f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else owning_module(source, modules)
        for alias in node.names
    ]


def package_of(module: str, modules: dict[str, Path]) -> str:
    """The package graph's node of a module: the subpackage it lives in, or itself at the top level."""
    if modules[module].name == "__init__.py":
        return module
    parent = module.rpartition(".")[0]
    return module if parent == PACKAGE else parent


def add_edge(edges: Edges, source: str, target: str, where: str) -> None:
    if source != target and where not in edges[source][target]:  # one statement may import many names
        edges[source][target].append(where)


@functools.cache
def build_graphs(source_root: Path = SOURCE_ROOT) -> dict[str, Edges]:
    """The module graph and the package graph of the package under ``source_root``."""
    modules = find_modules(source_root)
    trees = {name: ast.parse(path.read_text(encoding="utf-8"), str(path)) for name, path in modules.items()}
    runs_our_imports = {
        name
        for name, path in modules.items()
        if path.name == "__init__.py"
        and any(resolve(name, node, modules) for node in walk_imports(trees[name], runtime_only=True))
    }
    module_edges: Edges = defaultdict(lambda: defaultdict(list))
    for importer, tree in trees.items():
        location = modules[importer].relative_to(source_root.parent).as_posix()
        already_run = {".".join(importer.split(".")[:i]) for i in range(1, importer.count(".") + 2)}
        for node in walk_imports(tree):
            for target in resolve(importer, node, modules):
                add_edge(module_edges, importer, target, f"{location}:{node.lineno}")
                parts = target.split(".")
                for package in (".".join(parts[:i]) for i in range(1, len(parts))):
                    if package in runs_our_imports and package not in already_run:
                        add_edge(module_edges, importer, package, f"{location}:{node.lineno} (its __init__)")
    package_edges: Edges = defaultdict(lambda: defaultdict(list))
    for importer, targets in module_edges.items():
        for target, where in targets.items():
            for line in where:
                add_edge(package_edges, package_of(importer, modules), package_of(target, modules), line)
    return {"module": module_edges, "package": package_edges}


def find_cycles(edges: Edges) -> list[tuple[str, ...]]:
    """The graph's elementary cycles, each from its smallest node, sorted; at most `MAX_CYCLES` + 1.

    From each start node a depth-first search over larger nodes finds every path back to it, so each
    cycle is found once.
    """
    cycles = []
    for start in sorted(edges):
        path, stack = [start], [iter(sorted(edges[start]))]
        while stack and len(cycles) <= MAX_CYCLES:
            child = next(stack[-1], None)
            if child is None:
                stack.pop()
                path.pop()
            elif child == start:
                cycles.append(tuple(path))
            elif child > start and child not in path:
                path.append(child)
                stack.append(iter(sorted(edges.get(child, ()))))
    return sorted(cycles)


def describe(cycle: tuple[str, ...], edges: Edges) -> str:
    """``a -> b -> a``, then where each edge's imports are."""
    closed = [*cycle, cycle[0]]
    lines = [" -> ".join(closed)]
    for source, target in itertools.pairwise(closed):
        where = edges[source][target]
        more = f" and {len(where) - 3} more" if len(where) > 3 else ""
        lines.append(f"    {source} -> {target}: {', '.join(where[:3])}{more}")
    return "\n".join(lines)


@pytest.mark.parametrize("kind", ["module", "package"])
def test_imports_have_no_cycles(kind):
    edges = build_graphs()[kind]
    cycles = find_cycles(edges)
    more = " (and more)" if len(cycles) > MAX_CYCLES else ""
    assert not cycles, "\n".join(
        [f"{len(cycles)} {kind} import cycle(s){more}; move the code that closes each one:"]
        + [describe(cycle, edges) for cycle in cycles]
    )


def test_every_kind_of_import_is_an_edge(tmp_path):
    """Lazy, TYPE_CHECKING and relative imports count; a package's ``__init__`` counts when it imports."""
    sources = {
        "__init__.py": "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from .a.one import One\n",
        "a/__init__.py": '"""Only a docstring."""\n',
        "a/one.py": "def load():\n    from ..b import two\n",
        "b/__init__.py": "from deepfake_detector.b.two import Two\n",
        "b/two.py": "import deepfake_detector.b.three\n",
        "b/three.py": "from deepfake_detector import a\nfrom deepfake_detector.errors import Error, Other\n",
        "errors.py": "from deepfake_detector import __version__\n",
    }
    for name, text in sources.items():
        path = tmp_path / "src" / PACKAGE / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    graphs = build_graphs(tmp_path / "src")

    names = {key: sorted(targets) for key, targets in graphs["module"].items()}
    assert names == {
        "deepfake_detector": ["deepfake_detector.a.one"],
        "deepfake_detector.a.one": ["deepfake_detector.b", "deepfake_detector.b.two"],
        "deepfake_detector.b": ["deepfake_detector.b.two"],
        "deepfake_detector.b.two": ["deepfake_detector.b.three"],
        "deepfake_detector.b.three": ["deepfake_detector.a", "deepfake_detector.errors"],
        "deepfake_detector.errors": ["deepfake_detector"],
    }
    assert graphs["module"]["deepfake_detector.b.three"]["deepfake_detector.errors"] == [
        "src/deepfake_detector/b/three.py:2"
    ]
    assert graphs["module"]["deepfake_detector.a.one"]["deepfake_detector.b"] == [
        "src/deepfake_detector/a/one.py:2 (its __init__)"
    ]
    root, a, b, errors = PACKAGE, f"{PACKAGE}.a", f"{PACKAGE}.b", f"{PACKAGE}.errors"
    assert find_cycles(graphs["module"]) == [
        (root, f"{a}.one", b, f"{b}.two", f"{b}.three", errors),
        (root, f"{a}.one", f"{b}.two", f"{b}.three", errors),
    ]
    assert find_cycles(graphs["package"]) == [(root, a, b, errors), (a, b)]
    assert describe((a, b), graphs["package"]) == (
        f"{a} -> {b} -> {a}\n"
        f"    {a} -> {b}: src/deepfake_detector/a/one.py:2, src/deepfake_detector/a/one.py:2 (its __init__)\n"
        f"    {b} -> {a}: src/deepfake_detector/b/three.py:1"
    )
