"""The package's shape (README "Architecture"): no import cycle, counting the imports inside
functions too; no module over 450 lines; smcheck's own modules imported inside a function only
in cli.py (to keep start-up light). Read from the source with ast, not by importing it."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "smcheck"
MAX_LINES = 450
#: the modules that may import smcheck's own modules inside functions: the CLI, whose
#: start-up must not pay for the checks' imports (`smcheck --help` imports no mpmath)
LOCAL_IMPORTS_ALLOWED = {"smcheck.cli", "smcheck.__init__"}


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def imports(name: str, path: Path, known: set[str]) -> list[tuple[str, bool]]:
    """(module imported, whether inside a function) for each import of the package's own
    modules; ``from .pkg import sub`` counts as an import of the submodule when it is one."""
    is_pkg = path.name == "__init__.py"
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    out: list[tuple[str, bool]] = []

    def visit(node, local):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue
            inner = local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                ast.Lambda))
            if isinstance(child, ast.Import):
                out.extend((a.name, local) for a in child.names if a.name in known)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    stem = base[:len(base) - child.level + 1]
                    target = ".".join(stem + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                if not target.startswith("smcheck"):
                    continue
                subs = [f"{target}.{a.name}" for a in child.names
                        if f"{target}.{a.name}" in known]
                if subs:
                    out.extend((s, local) for s in subs)
                if target in known and (child.module or not subs):
                    out.append((target, local))
            visit(child, inner)

    visit(ast.parse(path.read_text()), False)
    return [(m, local) for m, local in out if m != name]


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {m: {t for t, _ in imports(m, p, known)} for m, p in mods.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def strong(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            strong(v)
    return out


def test_the_cycle_finder_finds_a_cycle():
    """A control: the finder is not blind (a 3-cycle and a self-free chain)."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_the_import_reader_sees_local_and_relative_imports(tmp_path):
    """A control for :func:`imports`: a relative import inside a function is read, with the
    submodule it names."""
    pkg = tmp_path / "smcheck"
    (pkg / "sub").mkdir(parents=True)
    src = pkg / "sub" / "a.py"
    src.write_text("def f():\n    from ..b import g\n    from . import c\n")
    known = {"smcheck.b", "smcheck.sub.c", "smcheck.sub", "smcheck.sub.a"}
    assert sorted(imports("smcheck.sub.a", src, known)) == [("smcheck.b", True),
                                                             ("smcheck.sub.c", True)]


def test_no_import_cycles():
    found = cycles(graph())
    assert not found, "import cycles (function-local imports included): " + "; ".join(
        " <-> ".join(c) for c in found)


def test_no_module_over_450_lines():
    long = {m: n for m, p in modules().items()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_own_modules_imported_inside_functions_only_in_the_cli():
    mods = modules()
    known = set(mods)
    local = {m: sorted({t for t, inside in imports(m, p, known) if inside})
             for m, p in mods.items() if m not in LOCAL_IMPORTS_ALLOWED}
    local = {m: ts for m, ts in local.items() if ts}
    assert not local, f"function-local imports of smcheck's own modules: {local}"
