"""The house rules of digestd's layout, checked on the code itself: each package imports
only the packages before it in the pipeline (see README, "How the code is laid out"), and
no module imports one that imports it back."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "digestd"
# Stage order: a module may import the plain top level (config, db, models, ...) and what
# comes before its own stage. ``service`` builds every part from the settings; the web app,
# the daemon and the command line (``cli`` parses, ``commands`` acts) use it.
STAGES = [
    "content",
    "mail",
    "planning",
    "readers",
    "delivery",
    "ops",
    "service",
    "web",
    "inbound",
    "daemon",
    "commands",
    "cli",
    "__main__",
]


def _modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path


def _imports(path: Path) -> set[str]:
    """digestd modules imported by this file (at any depth: lazy imports count too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("digestd"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("digestd"))
    modules = {name for name, _ in _modules()}
    return {name for name in found if name in modules}


def _stage(module: str) -> int:
    """Where ``digestd.X`` or ``digestd.X.y`` stands: -1 for the plain top level."""
    parts = module.split(".")
    return STAGES.index(parts[1]) if len(parts) > 1 and parts[1] in STAGES else -1


def test_each_package_imports_only_the_stages_before_it() -> None:
    wrong = []
    for name, path in _modules():
        for imported in _imports(path):
            if _stage(imported) > _stage(name):
                wrong.append(f"{name} imports {imported}")
    assert wrong == []


def test_no_module_imports_one_that_imports_it_back() -> None:
    graph = {name: _imports(path) - {name} for name, path in _modules()}
    circles = []
    for start in graph:
        stack, seen = [(start, [start])], set()
        while stack:
            node, trail = stack.pop()
            for nxt in graph.get(node, ()):
                if nxt == start:
                    circles.append(" -> ".join([*trail, start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*trail, nxt]))
    assert circles == []


# A function a reader can follow in one screen (STYLE: ~60 lines; ``digestd`` only).
LONGEST_FUNCTION = 60


def test_no_function_is_longer_than_a_screen() -> None:
    long = []
    for name, path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > LONGEST_FUNCTION:
                    long.append(f"{name}.{node.name}: {lines} lines")
    assert long == []
