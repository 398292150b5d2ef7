"""The layout holds: no two packages import each other (directly or round a loop), shared names import nothing.

Imports are read from the source (every ``import``, at module level or inside a function), so a cycle hidden
behind a late import counts too.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import lgm_pipeline

PACKAGE_ROOT = Path(lgm_pipeline.__file__).parent
#: Imported by every package, so they import nothing of the project themselves.
LEAVES = {"naming", "settings"}


def _unit(module: str) -> str | None:
    """``lgm_pipeline.storage.tables`` -> ``storage``: the package (or top-level module) a module belongs to."""
    parts = module.split(".")
    return parts[1] if parts[0] == "lgm_pipeline" and len(parts) > 1 else None


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE_ROOT.rglob("*.py"):
        source = _unit("lgm_pipeline." + ".".join(path.relative_to(PACKAGE_ROOT).with_suffix("").parts))
        if source in (None, "__init__"):
            continue
        graph.setdefault(source, set())
        for target in filter(None, map(_unit, _imports(path))):
            if target != source:
                graph[source].add(target)
    return dict(graph)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    visiting: list[str] = []
    done: set[str] = set()

    def visit(node: str) -> list[str] | None:
        if node in visiting:
            return [*visiting[visiting.index(node) :], node]
        if node in done:
            return None
        visiting.append(node)
        for target in sorted(graph.get(node, ())):
            if cycle := visit(target):
                return cycle
        visiting.pop()
        done.add(node)
        return None

    for node in sorted(graph):
        if cycle := visit(node):
            return cycle
    return None


def test_no_package_imports_a_package_that_imports_it_back() -> None:
    graph = package_graph()
    assert {"storage", "transform", "assets", "smartmoving", "tenants", "naming"} <= set(graph)
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_shared_names_import_nothing_from_the_project() -> None:
    graph = package_graph()
    assert {leaf: graph[leaf] for leaf in LEAVES} == {leaf: set() for leaf in LEAVES}


def test_the_cycle_finder_finds_a_cycle() -> None:
    # The check above is only worth something if a loop would be caught.
    assert find_cycle({"storage": {"assets"}, "assets": {"transform"}, "transform": {"storage"}}) == [
        "assets",
        "transform",
        "storage",
        "assets",
    ]


#: The modules that read the process environment: the settings, and the CLI's start-up (which also writes it
#: for the processes it starts: the embedded server's URL, the simulator's key).
ENVIRONMENT_READERS = {"settings.py", "cli/runtime.py"}


def test_only_the_settings_and_the_cli_start_up_read_the_environment() -> None:
    readers = {
        str(path.relative_to(PACKAGE_ROOT))
        for path in PACKAGE_ROOT.rglob("*.py")
        if "os.environ" in (text := path.read_text()) or "getenv(" in text
    }
    assert readers == ENVIRONMENT_READERS
