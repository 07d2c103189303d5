"""The module-level import graph of aggregator/, chains/ and oracles/: no cycles, and the
lower layers (chains/, oracles/) import nothing of aggregator/.

Built with ast from the source files on the import path (PYTHONPATH decides which
checkout), counting every import statement wherever it is: at the top, inside a
function, under `if TYPE_CHECKING:`. A lazy import is still a dependency; it only hides
a cycle from the interpreter until the day someone moves it to the top.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

PACKAGES = ("aggregator", "chains", "oracles")
LOWER = ("chains", "oracles")


def _root() -> Path:
    spec = importlib.util.find_spec("aggregator")
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).parent.parent


def _modules(root: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in (root / pkg).rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _targets(node: ast.AST, module: str, is_pkg: bool, known: set[str]) -> set[str]:
    """The project modules an import statement loads (named submodules, else the package)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
        return {_known_prefix(n, known) for n in names} - {None}  # type: ignore[misc]
    assert isinstance(node, ast.ImportFrom)
    if node.level:
        base = module.split(".")
        if not is_pkg:
            base = base[:-1]
        base = base[: len(base) - (node.level - 1)]
        origin = ".".join([*base, node.module] if node.module else base)
    else:
        origin = node.module or ""
    out: set[str] = set()
    for alias in node.names:
        sub = f"{origin}.{alias.name}"
        hit = sub if sub in known else _known_prefix(origin, known)
        if hit is not None:
            out.add(hit)
    return out


def _known_prefix(name: str, known: set[str]) -> str | None:
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in known:
            return candidate
        parts.pop()
    return None


def import_graph(root: Path) -> dict[str, set[str]]:
    modules = _modules(root)
    known = set(modules)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        is_pkg = path.name == "__init__.py"
        deps: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                deps |= _targets(node, name, is_pkg, known)
        deps.discard(name)
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path (first == last), or None: iterative depth-first search."""
    state: dict[str, int] = {}  # 1 on the current path, 2 finished
    for start in sorted(graph):
        if state.get(start):
            continue
        path = [start]
        stack = [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
                continue
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_the_graph_sees_lazy_and_relative_imports() -> None:
    """The checker itself: a cycle closed only by an import inside a function is found."""
    src = {"a": "import p.b\n", "b": "def f():\n    from . import a\n"}
    graph = {}
    for name, text in src.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import | ast.ImportFrom):
                deps |= _targets(node, f"p.{name}", False, {"p.a", "p.b"})
        graph[f"p.{name}"] = deps
    assert find_cycle(graph) == ["p.a", "p.b", "p.a"]
    assert find_cycle({"x": {"y"}, "y": set()}) is None


def test_no_import_cycles() -> None:
    graph = import_graph(_root())
    assert len(graph) > 50, "the project's modules were not found"
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_chains_and_oracles_import_nothing_of_aggregator() -> None:
    graph = import_graph(_root())
    leaks = sorted(
        f"{m} -> {d}"
        for m, deps in graph.items()
        if m.split(".")[0] in LOWER
        for d in deps
        if d.split(".")[0] == "aggregator"
    )
    assert leaks == []
