"""The house has no import cycle: no module of zibrato, zibrato_django or zibrato_flask
imports, however indirectly, a module that imports it back.

Every ``import`` statement counts, those under ``if TYPE_CHECKING:`` and inside functions
too: a cycle a type checker needs is still two modules that cannot be read apart.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("zibrato", "zibrato_django", "zibrato_flask")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The modules of the house that ``path`` imports (a package's ``__init__`` included)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *filter(None, [base])])
            # ``from pkg import name``: the submodule pkg.name if there is one, else pkg.
            targets = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            # A module's own packages are always imported first: not an edge of the design.
            if target and target != name and not name.startswith(target + "."):
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = [path for package in PACKAGES for path in (ROOT / package).rglob("*.py")]
    modules = {module_name(path) for path in paths}
    return {module_name(path): imports_of(path, modules) for path in paths}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Return one cycle per strongly connected group of more than one module."""
    found, seen, on_path = [], set(), []

    def visit(node: str) -> None:
        if node in on_path:
            cycle = [*on_path[on_path.index(node) :], node]
            if not any(set(cycle) <= set(known) for known in found):
                found.append(cycle)
            return
        if node in seen:
            return
        seen.add(node)
        on_path.append(node)
        for target in sorted(graph[node]):
            visit(target)
        on_path.pop()

    for node in sorted(graph):
        visit(node)
    return found


def test_the_import_graph_has_no_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 60 and "zibrato_flask.extension" in graph  # not vacuous
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
