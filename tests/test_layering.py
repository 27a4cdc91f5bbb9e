"""Imports point down: audit <- inventory <- accounts <- requests_app, and nothing imports in a circle.

Read from the source (every ``import`` statement, at any depth), so an import
tucked into a function to dodge a cycle counts like any other.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Lowest first. jitportal holds the shared ground (errors, durations, ...) under them all, and
# wires them by name only (INSTALLED_APPS, include("app.urls"), task names).
APPS = ["audit", "inventory", "accounts", "requests_app"]
PACKAGES = [*APPS, "jitportal"]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" not in path.parts:
                found[module_name(path)] = path
    return found


MODULES = source_modules()


def imports_of(path: Path) -> list[tuple[str, ast.AST, bool]]:
    """(imported module, the statement, whether it sits inside a function)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                found.extend((alias.name, child, in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                for alias in child.names:
                    # ``from pkg import module`` imports the module itself.
                    name = f"{child.module}.{alias.name}"
                    found.append((name if name in MODULES else child.module, child, in_function))
            visit(child, inner)

    visit(tree, False)
    return found


def project_imports() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        graph[name] = {target for target, _, _ in imports_of(path) if target in MODULES}
    return graph


def app_of(module: str) -> str:
    return module.split(".")[0]


def test_no_app_imports_an_app_above_it():
    upward = []
    for name, targets in project_imports().items():
        if app_of(name) not in APPS:
            continue
        for target in targets:
            if app_of(target) in APPS and APPS.index(app_of(target)) > APPS.index(app_of(name)):
                upward.append(f"{name} -> {target}")
    assert upward == []


def test_jitportal_imports_no_app():
    upward = [
        f"{name} -> {target}"
        for name, targets in project_imports().items()
        if app_of(name) == "jitportal"
        for target in targets
        if app_of(target) in APPS
    ]
    assert upward == []


def test_no_import_cycle():
    graph = project_imports()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                connect(target)
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
            # A package that imports its own submodules (``admin/__init__``) is no cycle of its own.
            if len(component) > 1 and not all(m.startswith(min(component, key=len)) for m in component):
                cycles.append(sorted(component))

    for node in graph:
        if node not in index:
            connect(node)
    assert cycles == []


def test_no_project_import_hides_inside_a_function():
    # Connecting signal receivers and registering system checks when the app registry is ready
    # is the one place Django asks for it.
    allowed = {
        ("accounts.apps", "accounts.signin"),
        ("accounts.apps", "accounts.scope"),
        ("accounts.apps", "accounts.checks"),
    }
    hidden = [
        f"{name}:{statement.lineno} imports {target}"
        for name, path in MODULES.items()
        for target, statement, in_function in imports_of(path)
        if in_function and app_of(target) in PACKAGES and (name, target) not in allowed
    ]
    assert hidden == []
