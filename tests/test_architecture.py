"""The import graph of the installed package: acyclic, and layered.

Every module of ``tokentrail`` and of the folders installed as ``tokentrail.*`` is parsed with
``ast``; every import counts, including the ones inside functions (a cycle held together by a
late import is still a cycle).
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

#: The packages whose source is installed from their own folder (pyproject package-dir).
ROOTS = ("tokentrail", "tokentrail.instrumentation", "tokentrail.processor", "tokentrail.semconv",
         "tokentrail.dashboards")


def _modules() -> dict[str, tuple[Path, bool]]:
    """{module name: (source file, is a package)} for every module of the installed package."""
    found: dict[str, tuple[Path, bool]] = {}
    for root in ROOTS:
        [folder] = importlib.util.find_spec(root).submodule_search_locations
        folder = Path(folder)
        for init in folder.rglob("__init__.py"):
            if "__pycache__" in init.parts:
                continue
            parts = init.parent.relative_to(folder).parts
            package = ".".join((root, *parts)) if parts else root
            found[package] = (init, True)
            for source in init.parent.glob("*.py"):
                if source.name != "__init__.py":
                    found[f"{package}.{source.stem}"] = (source, False)
    # a folder without __init__.py is not a package: drop modules whose parent was not found
    return {name: info for name, info in found.items()
            if name in ROOTS or name.rpartition(".")[0] in found}


def _imports(name: str, source: Path, is_package: bool, known: set[str]) -> set[str]:
    """The tokentrail modules ``name`` imports, anywhere in its body."""
    package = name if is_package else name.rpartition(".")[0]
    edges: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"), str(source))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = alias.name
                while target and target not in known:
                    target = target.rpartition(".")[0]
                if target:
                    edges.add(target)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[:len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                if candidate in known:
                    edges.add(candidate)
                elif base in known:
                    edges.add(base)
    # importing one's own package (or an ancestor's) __init__ is how a package works, not a cycle
    return {e for e in edges if e != name and not name.startswith(e + ".")}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, source, is_package, known) for name, (source, is_package) in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
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
                        out.append(sorted(component))
    return out


def _path(graph: dict[str, set[str]], start: str, goal) -> list[str] | None:
    """A shortest import chain from ``start`` to a module for which ``goal(name)`` holds."""
    seen = {start: None}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for child in sorted(graph.get(node, ())):
            if child in seen:
                continue
            seen[child] = node
            if goal(child):
                chain = [child]
                while seen[chain[-1]] is not None:
                    chain.append(seen[chain[-1]])
                return chain[::-1]
            queue.append(child)
    return None


def _under(prefix: str):
    return lambda name: name == prefix or name.startswith(prefix + ".")


def test_the_graph_covers_every_installed_folder(graph):
    for root in ROOTS:
        assert root in graph
    assert "tokentrail.processor.pricing.quote" in graph
    assert "tokentrail.instrumentation.openai.patch" in graph
    # an import inside a function is an edge too
    assert "tokentrail.processor.pricing" in graph["tokentrail.cli.price"]


def test_no_import_cycle(graph):
    cycles = _cycles(graph)
    assert not cycles, "import cycles (each line: the modules of one cycle):\n" + "\n".join(
        " <-> ".join(c) for c in cycles)


@pytest.mark.parametrize("layer, forbidden", [
    ("tokentrail.processor", "tokentrail.instrumentation"),
    ("tokentrail.processor", "tokentrail.demo"),
    ("tokentrail.processor", "tokentrail.cli"),
    ("tokentrail.instrumentation", "tokentrail.demo"),
    ("tokentrail.instrumentation", "tokentrail.cli"),
])
def test_layers(graph, layer, forbidden):
    offenders = []
    for name in sorted(graph):
        if _under(layer)(name):
            chain = _path(graph, name, _under(forbidden))
            if chain:
                offenders.append(" -> ".join(chain))
    assert not offenders, f"{layer} must not import {forbidden}:\n" + "\n".join(offenders)


#: The acyclic core: each module may import only the ones before it (and the pure lower layers).
CORE = ("tokentrail.state", "tokentrail.errors", "tokentrail.identity", "tokentrail.config", "tokentrail.scope",
        "tokentrail.telemetry", "tokentrail.trust", "tokentrail.attribution", "tokentrail.propagation",
        "tokentrail.preflight", "tokentrail.tasks", "tokentrail.plans", "tokentrail.notify", "tokentrail.budgets",
        "tokentrail.breakers")
CORE_MAY_IMPORT = ("tokentrail.semconv", "tokentrail.processor.usage", "tokentrail.processor.pricing",
                   "tokentrail.ledger.writer")  # budgets' LedgerStore: where the ledger is


def test_the_core_imports_only_downward(graph):
    offenders = []
    for i, name in enumerate(CORE):
        allowed = set(CORE[:i])
        for target in sorted(graph[name]):
            if target in allowed or any(_under(lower)(target) for lower in CORE_MAY_IMPORT):
                continue
            offenders.append(f"{name} -> {target}")
    assert not offenders, "\n".join(offenders)


def test_the_core_has_no_import_inside_a_function():
    """Among tokentrail's own modules the core imports at module level only: the graph is what it says."""
    offenders = []
    modules = _modules()
    for name in CORE:
        source, _ = modules[name]
        tree = ast.parse(source.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and (inner.level or (inner.module or "").startswith("tokentrail")):
                    offenders.append(f"{name}:{inner.lineno}")
                elif isinstance(inner, ast.Import) and any(a.name.startswith("tokentrail") for a in inner.names):
                    offenders.append(f"{name}:{inner.lineno}")
    assert not offenders, offenders
