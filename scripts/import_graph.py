"""The project's import graph, read with `ast`: fails on an import circle, and on a project import
inside a function that does not say why it is there.

    python scripts/import_graph.py            # check (exit 1 on a circle or an unexplained import)
    python scripts/import_graph.py --floors   # also print each module's floor (longest import chain)

Every import counts, at module level or inside a function: an import moved into a function hides a
circle from Python, not from this check. A project import inside a function is allowed only with a
comment on its line saying why (for example that it keeps TensorFlow from loading in a process
that never trains).
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("experiments", "report_builder")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(path): path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))}


def imported_modules(node: ast.AST, modules: dict[str, Path]) -> list[str]:
    """The project modules one import statement loads (a package's module, for `from pkg import mod`)."""
    found = []
    if isinstance(node, ast.Import):
        found = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
        found = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                 for alias in node.names]
    return [name for name in found if name in modules]


def graph(modules: dict[str, Path]) -> tuple[dict[str, set[str]], list[str]]:
    """Each module's imports, and the function-level project imports that give no reason."""
    edges: dict[str, set[str]] = {name: set() for name in modules}
    unexplained = []
    for name, path in modules.items():
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        tree = ast.parse(text)
        top_level = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            targets = imported_modules(node, modules)
            if not targets:
                continue
            edges[name].update(target for target in targets if target != name)
            if id(node) not in top_level and not _inside_type_checking(tree, node):
                statement = lines[node.lineno - 1: node.end_lineno]
                if not any("#" in line for line in statement):
                    unexplained.append(f"{path.relative_to(ROOT)}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    return edges, unexplained


def _inside_type_checking(tree: ast.Module, target: ast.AST) -> bool:
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            if any(child is target for child in ast.walk(node)):
                return True
    return False


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(edges[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
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

    sys.setrecursionlimit(10_000)
    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def floors(edges: dict[str, set[str]]) -> dict[str, int]:
    """A module's floor: 0 when it imports nothing of the project, else one above its highest import."""
    floor: dict[str, int] = {}

    def height(node: str) -> int:
        if node not in floor:
            floor[node] = 0  # a circle (reported separately) must not recurse forever
            floor[node] = 1 + max((height(other) for other in edges[node]), default=-1)
        return floor[node]

    for node in edges:
        height(node)
    return floor


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--floors", action="store_true", help="print each module's floor")
    arguments = parser.parse_args(argv)
    modules = project_modules()
    edges, unexplained = graph(modules)
    found = circles(edges)
    if arguments.floors:
        for name, floor in sorted(floors(edges).items(), key=lambda item: (item[1], item[0])):
            print(f"{floor:3d}  {name}")
    for component in found:
        print("import circle: " + " <-> ".join(component), file=sys.stderr)
    for line in unexplained:
        print(f"project import inside a function without a reason: {line}", file=sys.stderr)
    if not found and not unexplained:
        print(f"{len(modules)} modules, {sum(map(len, edges.values()))} imports: no circle, every import in a function says why")
    return 1 if found or unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
