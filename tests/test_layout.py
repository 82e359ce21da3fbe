"""The package layout: no import cycles, and the request path never reaches ``offline``.

Every module under ``router/`` is parsed with :mod:`ast` (nothing is imported), and every
import counts: top level, inside functions, under ``if TYPE_CHECKING:``, in a lazy module
``__getattr__``, and the names a package hands to :func:`router.lazy.lazy_exports`. A
``TYPE_CHECKING`` or function-level import that closes a loop still means two modules
each need the other, so it is a cycle here too.

Importing ``a.b.c`` also runs ``a/b/__init__.py``: a module outside package ``a.b`` that
imports one of its modules depends on the package too (a module inside the package does
not, since the package is already being imported when it runs).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "router"

# The request path: what the server imports to serve one request.
REQUEST_PATH = (
    "router.api",
    "router.serving",
    "router.upstream",
    "router.scoring",
    "router.ledger",
    "router.policy",
    "router.observability",
    "router.chat",
)
OFFLINE = "router.offline"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _imported_names(name: str, path: Path, modules: dict[str, Path]) -> Iterator[str]:
    """Every ``router`` module ``name`` names in an import, anywhere in its source."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            submodules = [f"{source}.{a.name}" for a in node.names]
            submodules = [m for m in submodules if m in modules]
            yield from submodules
            # ``from package import module`` from inside the package needs only the module.
            if len(submodules) < len(node.names) or not _within(name, source):
                yield source
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("lazy_exports", "import_module")
        ):
            # lazy_exports(package, {"name": "module"}) / import_module("module"): the
            # strings are imports made later; a dict given by name is found in the module.
            for arg in node.args:
                yield from _strings(arg, tree)


def _strings(arg: ast.expr, tree: ast.Module) -> Iterator[str]:
    if isinstance(arg, ast.Name):
        for stmt in tree.body:
            targets = (
                stmt.targets
                if isinstance(stmt, ast.Assign)
                else [stmt.target]
                if isinstance(stmt, ast.AnnAssign) and stmt.value is not None
                else []
            )
            if any(isinstance(t, ast.Name) and t.id == arg.id for t in targets):
                yield from _strings(stmt.value, tree)  # type: ignore[union-attr,arg-type]
    elif isinstance(arg, ast.Dict):
        for value in arg.values:
            yield from _strings(value, tree)
    elif isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        yield arg.value


def import_graph() -> dict[str, set[str]]:
    """Module -> the ``router`` modules it imports (and the packages those run)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges: set[str] = set()
        for target in _imported_names(name, path, modules):
            if target not in modules:
                continue
            edges.add(target)
            parts = target.split(".")
            for i in range(2, len(parts)):
                package = ".".join(parts[:i])
                if package in modules and not _within(name, package):
                    edges.add(package)
        edges.discard(name)
        graph[name] = edges
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component (Tarjan), each as a closed path; its
    other members (if any) are cycles through the same modules, shown once this one is
    broken."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return [_a_cycle(graph, set(c), c[0]) for c in components]


def _a_cycle(graph: dict[str, set[str]], component: set[str], start: str) -> list[str]:
    """A shortest path from ``start`` back to itself inside its component."""
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w == start:
                    path = [start]
                    while v != start:
                        path.append(v)
                        v = parents[v]
                    return [start, *reversed(path[1:]), start]
                if w not in parents:
                    parents[w] = v
                    following.append(w)
        frontier = following
    raise AssertionError(f"{start} is in no cycle")


def reachable(graph: dict[str, set[str]], start: str) -> dict[str, str]:
    """Every module ``start`` imports, directly or not, with the module that imports it."""
    seen = {start: ""}
    todo = [start]
    while todo:
        v = todo.pop()
        for w in sorted(graph[v]):
            if w not in seen:
                seen[w] = v
                todo.append(w)
    return seen


def _chain(seen: dict[str, str], end: str) -> str:
    chain = [end]
    while seen[chain[-1]]:
        chain.append(seen[chain[-1]])
    return " -> ".join(reversed(chain))


def test_the_graph_sees_every_kind_of_import():
    graph = import_graph()
    # TYPE_CHECKING and lazy_exports in router/__init__.py; a function-level import.
    assert "router.api.app" in graph["router"]
    assert "router.scoring.engine" in graph["router.scoring"]
    assert "router.ledger.redis" in graph["router.ledger"]
    # A module outside a package runs its __init__ (router.chat.model -> router.chat) ...
    assert "router.chat" in graph["router.protocol"]
    # ... one inside does not (the package is being imported when it runs).
    assert "router.policy" not in graph["router.policy.strategies"]


def test_no_import_cycles():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("package", REQUEST_PATH)
def test_the_request_path_never_imports_offline(package):
    graph = import_graph()
    for module in sorted(m for m in graph if _within(m, package)):
        seen = reachable(graph, module)
        offline = sorted(m for m in seen if _within(m, OFFLINE))
        assert not offline, f"{package} reaches {OFFLINE}: {_chain(seen, offline[0])}"
