"""The package layout stays acyclic, and imports hide inside functions only for a stated reason.

Read from the source (ast), so the checks see every module, imported by a test or not.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Where first-party packages live: the lipdub package and one package per service.
ROOTS = [REPO / "shared", *sorted(p for p in (REPO / "services").glob("*") if p.is_dir())]
FIRST_PARTY = ("lipdub", "lipdub_")


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the first-party module imported
    line: int
    lazy: bool  # inside a function
    reason: str  # the comment on the import's line or the line above it, for lazy ones


def modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for root in ROOTS:
        for path in root.rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            if parts and parts[0].startswith(FIRST_PARTY):
                found[".".join(parts)] = path
    return found


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The module a dotted import name lands in (`from a.b import c` may name a function c of a.b)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def _comment(lines: list[str], line: int) -> str:
    """The comment on the import's line, or above the run of imports it belongs to (one reason may cover
    a few imports in a row)."""
    own = lines[line - 1].partition("#")[2].strip()
    above = line - 2
    while above >= 0 and lines[above].strip().startswith(("from ", "import ")):
        above -= 1
    text = lines[above].strip() if above >= 0 else ""
    return own or (text[1:].strip() if text.startswith("#") else "")


def imports(known: dict[str, Path]) -> Iterator[Import]:
    for module, path in known.items():
        text = path.read_text()
        lines = text.splitlines()
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]

        def walk(node: ast.AST, in_function: bool) -> Iterator[Import]:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                    continue  # never executed: no import at run time
                if isinstance(child, ast.Import | ast.ImportFrom):
                    if isinstance(child, ast.Import):
                        names = [alias.name for alias in child.names]
                    else:
                        base = child.module or ""
                        if child.level:
                            up = package.split(".")[: len(package.split(".")) - child.level + 1]
                            base = ".".join([*up, base] if base else up)
                        names = [f"{base}.{alias.name}" for alias in child.names]
                    for name in names:
                        target = _resolve(name, known)
                        if target and target != module:
                            yield Import(module, target, child.lineno, in_function,
                                         _comment(lines, child.lineno) if in_function else "")
                yield from walk(child, in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef))

        yield from walk(ast.parse(text), False)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

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
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def import_graph(found: list[Import], known: dict[str, Path]) -> dict[str, set[str]]:
    """Module → the first-party modules it imports when it is imported (not lazily). Importing a.b.c runs
    the packages a and a.b first, so those are edges too."""
    edges: dict[str, set[str]] = {m: set() for m in known}
    for imp in found:
        if imp.lazy:
            continue
        parts = imp.target.split(".")
        for k in range(1, len(parts) + 1):
            parent = ".".join(parts[:k])
            if parent in known and parent != imp.module and not imp.module.startswith(parent + "."):
                edges[imp.module].add(parent)
    return edges


@pytest.fixture(scope="module")
def found() -> tuple[list[Import], dict[str, Path]]:
    known = modules()
    return list(imports(known)), known


def test_no_import_cycles(found: tuple[list[Import], dict[str, Path]]) -> None:
    found_imports, known = found
    assert cycles(import_graph(found_imports, known)) == []


def test_imports_inside_functions_say_why(found: tuple[list[Import], dict[str, Path]]) -> None:
    found_imports, known = found
    silent = [f"{known[i.module].relative_to(REPO)}:{i.line} imports {i.target}" for i in found_imports
              if i.lazy and not i.reason]
    assert silent == [], "an import inside a function needs its reason in a comment (on its line or the one above)"


def test_the_checks_can_fail(tmp_path: Path) -> None:
    """A planted cycle and a planted silent lazy import are caught."""
    (tmp_path / "lipdub_x").mkdir()
    (tmp_path / "lipdub_x" / "__init__.py").write_text("")
    (tmp_path / "lipdub_x" / "a.py").write_text("from lipdub_x import b\n")
    (tmp_path / "lipdub_x" / "b.py").write_text("import lipdub_x.a\n\n\ndef f():\n    from lipdub_x import a\n")
    global ROOTS
    saved = ROOTS
    ROOTS = [tmp_path]
    try:
        known = modules()
        planted = list(imports(known))
    finally:
        ROOTS = saved
    assert cycles(import_graph(planted, known)) == [["lipdub_x.a", "lipdub_x.b"]]
    assert [(i.module, i.line) for i in planted if i.lazy and not i.reason] == [("lipdub_x.b", 5)]
