"""The package's imports form no cycle: neither between two modules nor between two sub-packages.
Also: output/ imports nothing that reads files or the index, and a long module says why it is one.

Every import statement counts (module level and inside functions, since a lazy import still ties
two modules together), except those under `if TYPE_CHECKING:`. A sub-package is a folder of
deepvision/ (models, pipeline, store, ...); a top-level module (cli, types, ...) is a unit of
its own. Dependencies point down (ARCHITECTURE.md): a cycle means a record or a function sits
on the wrong side of a boundary.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "deepvision"
# Lazy imports (inside a function) that close a cycle, each with the way out. Only the lazy form
# is let through: the test still fails if one of these becomes a module-level import. None now.
KNOWN_LAZY: dict[tuple[str, str], str] = {}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imported(name: str, path: Path, known: set[str]) -> dict[str, bool]:
    """The deepvision modules `name` imports anywhere but under `if TYPE_CHECKING:`, each with
    whether it is only imported lazily (inside functions)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: dict[str, bool] = {}

    def add(module: str, lazy: bool) -> None:
        found[module] = found.get(module, True) and lazy

    def visit(node: ast.AST, lazy: bool) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child, lazy)
            return
        lazy = lazy or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, lazy)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            add(base, lazy)
            for alias in node.names:
                add(f"{base}.{alias.name}", lazy)  # a submodule
        for child in ast.iter_child_nodes(node):
            visit(child, lazy)

    visit(ast.parse(path.read_text(encoding="utf-8")), False)
    return {n: lazy for n, lazy in found.items() if n in known and n != name}


def _graph() -> dict[str, set[str]]:
    """Module -> the modules it imports, less the KNOWN_LAZY edges while they stay lazy."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        edges = _imported(name, path, set(modules))
        graph[name] = {d for d, lazy in edges.items() if not (lazy and (name, d) in KNOWN_LAZY)}
    return graph


def _unit(module: str) -> str:
    return ".".join(module.split(".")[:2])  # deepvision.pipeline.decode -> deepvision.pipeline


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            step = next(edges, None)
            if step is not None:
                if step not in index:
                    index[step] = low[step] = len(index)
                    stack.append(step)
                    on_stack.add(step)
                    work.append((step, iter(sorted(graph.get(step, ())))))
                elif step in on_stack:
                    low[node] = min(low[node], index[step])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _into(graph: dict[str, set[str]], unit: str, forbidden: tuple[str, ...]) -> list[str]:
    """The imports from a module of `unit` into a `forbidden` unit, as 'module -> module'."""
    return sorted(f"{a} -> {b}" for a, deps in graph.items() if _unit(a) == unit
                  for b in deps if _unit(b) in forbidden)


def _edges_between(graph: dict[str, set[str]], units: list[str]) -> list[str]:
    return sorted(f"{a} -> {b}" for a, deps in graph.items() for b in deps
                  if _unit(a) in units and _unit(b) in units and _unit(a) != _unit(b))


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_walk_sees_lazy_and_relative_imports():
    graph = _graph()
    assert "deepvision.pipeline.decode" in graph["deepvision.pipeline.loader"]
    assert len(graph) > 40 and sum(map(len, graph.values())) > 100


def test_no_module_imports_itself_back():
    cycles = _cycles(_graph())
    assert not cycles, f"modules that import each other: {cycles}"


def test_no_sub_package_imports_itself_back():
    graph = _graph()
    units: dict[str, set[str]] = {}
    for module, deps in graph.items():
        units.setdefault(_unit(module), set()).update(
            _unit(d) for d in deps if _unit(d) != _unit(module))
    cycles = _cycles(units)
    assert not cycles, (f"sub-packages that import each other: {cycles}; the imports: "
                        f"{[_edges_between(graph, c) for c in cycles]}")


# output/ renders what the services hand it: it reads no file and no index, so it imports
# nothing that does (the pictures of a gallery come from services.thumbnails, passed in).
BELOW_OUTPUT = ("deepvision.pipeline", "deepvision.store", "deepvision.models")


def test_output_imports_no_pipeline_store_or_models():
    found = _into(_graph(), "deepvision.output", BELOW_OUTPUT)
    assert not found, f"output/ modules that import what reads files or the index: {found}"


def test_the_output_check_finds_a_planted_import(tmp_path):
    planted = tmp_path / "gallery.py"
    planted.write_text("def thumb(path):\n    from ..pipeline.decode import load_rgb\n\n"
                       "    return load_rgb(path)\n", encoding="utf-8")
    known = set(_modules())
    graph = {"deepvision.output.gallery": set(_imported("deepvision.output.gallery", planted,
                                                        known))}
    assert _into(graph, "deepvision.output", BELOW_OUTPUT) == [
        "deepvision.output.gallery -> deepvision.pipeline.decode"]


# A module longer than this says near its top why it stays one module (a line starting with
# LONG_NOTE before its first def or class), or is split along a seam.
LONG_LINES = 450
LONG_NOTE = "# Long module:"


def _long_without_reason(texts: dict[str, str]) -> list[str]:
    found = []
    for name, text in sorted(texts.items()):
        lines = text.splitlines()
        first = next((i for i, line in enumerate(lines)
                      if re.match(r"(async def|def|class|@)\b", line)), len(lines))
        noted = any(line.startswith(LONG_NOTE) and line[len(LONG_NOTE):].strip()
                    for line in lines[:first])
        if len(lines) > LONG_LINES and not noted:
            found.append(f"{name} ({len(lines)} lines)")
    return found


def test_a_long_module_says_why_it_is_one_module():
    texts = {name: path.read_text(encoding="utf-8") for name, path in _modules().items()}
    found = _long_without_reason(texts)
    assert not found, (f"modules over {LONG_LINES} lines without a {LONG_NOTE!r} comment before "
                       f"their first def or class (split them, or say why not): {found}")


def test_the_length_check_finds_a_planted_long_module():
    body = "x = 1\n" * LONG_LINES + "def f():\n    pass\n"
    noted = f'"""A module."""\n\n{LONG_NOTE} one table, one schema\n' + body
    late = body + f"{LONG_NOTE} too late: after the code starts\n"
    assert _long_without_reason({"long": body, "noted": noted, "late": late,
                                 "short": "x = 1\n"}) == [
        f"late ({LONG_LINES + 3} lines)", f"long ({LONG_LINES + 2} lines)"]
