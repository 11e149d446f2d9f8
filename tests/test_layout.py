"""The layout's import rules, read from the source with ast so that a new import cannot quietly break them."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# (importing package, forbidden package): the rules of docs/architecture.md
FORBIDDEN = (
    ("profiling", "service"),
    ("service.store", "service.registry"),
    ("service.store", "service.routing"),
    ("service.store", "service.api"),
    ("service.store", "service.jobs"),
    ("service.routing", "service.registry"),
    ("service.routing", "service.api"),
    ("service.registry", "service.api"),
    ("service.store", "service.gateway"),
    ("service.routing", "service.gateway"),
    ("service.registry", "service.gateway"),
    ("service.gateway", "service.registry"),
    ("service.gateway", "service.api"),
    # the console sits on top, beside api/: nothing below it may reach up into it
    *(
        (package, "service.console")
        for package in (
            "profiling",
            "service.store",
            "service.registry",
            "service.routing",
            "service.gateway",
            "service.api",
            "service.jobs",
        )
    ),
)


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(root: Path, path: Path) -> Iterator[str]:
    """Every module a file imports, at any depth of the file (function-level imports count too)."""
    package = module_name(root, path).rsplit(".", 1)[0] if path.name != "__init__.py" else module_name(root, path)
    for node in ast.walk(ast.parse(path.read_text("utf-8"), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def import_graph(root: Path, packages: tuple[str, ...] = ("profiling", "service")) -> dict[str, set[str]]:
    """module -> the project modules it imports (names that are not modules, like functions, are dropped)."""
    files = {module_name(root, p): p for pkg in packages for p in (root / pkg).rglob("*.py")}
    return {
        module: {name for name in imports_of(root, path) if name in files and name != module}
        for module, path in files.items()
    }


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def rule_violations(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{module} imports {target} ({package} must not import {forbidden})"
        for module, targets in graph.items()
        for target in targets
        for package, forbidden in FORBIDDEN
        if within(module, package) and within(target, forbidden)
    )


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each a cycle of imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_project_keeps_its_import_rules() -> None:
    graph = import_graph(ROOT)
    assert "service.routing.engine" in graph and "service.store.readers" in graph["service.routing.state"]
    assert rule_violations(graph) == []


def test_service_modules_import_no_cycle() -> None:
    assert cycles(import_graph(ROOT)) == []


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    ("importer", "statement", "broken"),
    [
        ("profiling/scoring.py", "from service.store import orm", "profiling must not import service"),
        ("service/store/orm.py", "from service.routing.engine import Engine", "service.store must not import"),
        ("service/routing/engine.py", "import service.registry.catalog", "service.routing must not import"),
        ("service/routing/engine.py", "    from ..registry import catalog", "service.routing must not import"),
        ("service/registry/catalog.py", "from service.api.schemas import X", "service.registry must not import"),
    ],
)
def test_a_broken_rule_is_reported(tmp_path: Path, importer: str, statement: str, broken: str) -> None:
    files = {
        name: ""
        for name in (
            "profiling/__init__.py",
            "profiling/scoring.py",
            "service/__init__.py",
            "service/store/__init__.py",
            "service/store/orm.py",
            "service/routing/__init__.py",
            "service/routing/engine.py",
            "service/registry/__init__.py",
            "service/registry/catalog.py",
            "service/api/__init__.py",
            "service/api/schemas.py",
        )
    }
    body = f"def late():\n{statement}\n" if statement.startswith(" ") else statement + "\n"
    files[importer] = body
    violations = rule_violations(import_graph(_tree(tmp_path, files)))
    assert violations and all(broken in v and v.startswith(importer[:-3].replace("/", ".")) for v in violations)


def test_a_cycle_is_reported(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "profiling/__init__.py": "",
            "service/__init__.py": "",
            "service/a.py": "from service.b import x\n",
            "service/b.py": "def f():\n    from service import c\n",
            "service/c.py": "import service.a\n",
            "service/d.py": "import service.a\n",
        },
    )
    assert cycles(import_graph(root)) == [["service.a", "service.b", "service.c"]]
