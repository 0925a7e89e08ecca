"""No import cycles among fourws_pay's modules.

A cycle means two modules can only be understood (and loaded) together, and it is how
"lower" layers end up depending on "higher" ones: the payments layer on the stores that
implement its port, the plugin manager on the provider it builds. The graph is read from
the source, not from ``sys.modules``, so that every import counts: module level,
inside functions (lazy imports only postpone a cycle) and under ``TYPE_CHECKING`` (a
type-only arrow is still an arrow the reader must follow).

Edges are the imports a module writes. Loading ``a.b.c`` also runs ``a/__init__`` and
``a/b/__init__``; those implicit parent-package edges are not counted, or every package
``__init__`` that re-exports its submodules would be a cycle by construction.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import fourws_pay

PACKAGE_DIR = Path(fourws_pay.__file__).parent
ROOT = "fourws_pay"

# Strongly connected components (of more than one module) that are known and not yet
# untangled. The test asserts this exact set, so the list can only shrink: a new cycle, or
# a new module drawn into one of these, fails it (and so does removing one, so that the
# list is kept honest).
KNOWN_CYCLES: set[frozenset[str]] = {
    # The Sandbox facade builds its app, transports and callback sender, which call back
    # into the app / the Sandbox.
    frozenset(
        {
            "fourws_pay.sandbox.app",
            "fourws_pay.sandbox.callbacks",
            "fourws_pay.sandbox.sandbox",
            "fourws_pay.sandbox.seed",
            "fourws_pay.sandbox.transport",
        }
    ),
}

# The payments layer owns its store port (``payments.ports``); of its modules only the
# composition root of the defaults may name the stores that implement it.
LEDGER_IMPORTERS_IN_PAYMENTS = {"fourws_pay.payments.defaults"}


def module_names() -> dict[str, Path]:
    names: dict[str, Path] = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE_DIR).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join([ROOT, *parts])] = path
    return names


def imported(module: str, path: Path, modules: set[str]) -> Iterator[str]:
    """The fourws_pay modules that ``module`` names in any import statement."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                name = alias.name
                while name and name not in modules:  # ``import a.b.c`` when c is a name
                    name = name.rpartition(".")[0]
                if name:
                    yield name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module if is_package else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{node.module}" if node.module else package
            else:
                base = node.module or ""
            for alias in node.names:
                if f"{base}.{alias.name}" in modules:  # ``from pkg import submodule``
                    yield f"{base}.{alias.name}"
                elif base in modules:
                    yield base


def import_graph() -> dict[str, set[str]]:
    paths = module_names()
    modules = set(paths)
    return {name: set(imported(name, path, modules)) - {name} for name, path in paths.items()}


def cycles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[frozenset[str]] = set()
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = len(index)
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph[succ]))))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.add(frozenset(component))
    return found


def test_the_graph_sees_every_kind_of_import() -> None:
    """The detector itself: module-level, function-level and type-only imports are edges."""
    graph = import_graph()
    assert "fourws_pay.payments.models" in graph["fourws_pay.payments.service"]  # module level
    assert "fourws_pay.ledger" in graph["fourws_pay.cli.config"]  # inside a function
    assert "fourws_pay.payments.ports" in graph["fourws_pay.payments.checkout"]  # TYPE_CHECKING
    assert "fourws_pay.payments" in graph["fourws_pay"]  # TYPE_CHECKING, package __init__
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == {frozenset({"a", "b", "c"})}
    assert cycles({"a": {"b"}, "b": set()}) == set()


def test_no_import_cycles_beyond_the_known_ones() -> None:
    found = cycles(import_graph())
    assert {tuple(sorted(c)) for c in found} == {tuple(sorted(c)) for c in KNOWN_CYCLES}


def test_payments_reaches_the_stores_only_through_its_composition_root() -> None:
    graph = import_graph()
    importers = {
        module
        for module, targets in graph.items()
        if (module == "fourws_pay.payments" or module.startswith("fourws_pay.payments."))
        and any(t == "fourws_pay.ledger" or t.startswith("fourws_pay.ledger.") for t in targets)
    }
    assert importers == LEDGER_IMPORTERS_IN_PAYMENTS
