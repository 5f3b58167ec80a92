"""The layout stays as the README draws it: tools/ (the patch workflow) needs
nothing else of ours; lab/ (what the proof, the bench and the audit share)
needs only tools/; proof/, bench/ and audit/ need the lab, not each other.
Every import counts, at module level or inside a function, and none may
close a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

from tools.common import ROOT

PACKAGES = ("tools", "lab", "proof", "bench", "audit")
# Which of our packages each may import (besides itself).
ALLOWED = {"tools": set(), "lab": {"tools"}, "proof": {"lab", "tools"},
           "bench": {"lab", "tools"}, "audit": {"lab", "tools"}}


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports_of(path: Path, known: dict[str, Path]) -> set[str]:
    """Our modules that the file imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from lab import checkpoints` imports the module lab.checkpoints.
            names = [f"{node.module}.{alias.name}" for alias in node.names]
            names = [n if n in known else node.module for n in names]
        else:
            continue
        found.update(n for n in names if n.split(".")[0] in PACKAGES)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(path, known) - {name} for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan)."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return groups


def test_no_import_closes_a_cycle():
    assert cycles(graph()) == []


def test_each_package_imports_only_what_the_layout_allows():
    wrong = sorted(f"{module} imports {target}"
                   for module, targets in graph().items() for target in targets
                   if target.split(".")[0] not in ALLOWED[module.split(".")[0]]
                   | {module.split(".")[0]})
    assert wrong == []


def test_the_checks_see_imports_inside_functions_and_find_cycles():
    edges = graph()
    # A function-level import (tools.env imports tools.tree inside functions).
    assert "tools.tree" in edges["tools.env"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
