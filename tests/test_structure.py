"""The package's structure: no import circle among the ``skim`` modules.

The graph is read from the source (AST), not from a running interpreter: an edge A -> B for every
``import skim.b`` / ``from skim.b import x`` / relative import in module A. Module-level imports are the ones outside
any function body, ``if TYPE_CHECKING:`` blocks included (a circle hidden from the interpreter is still a circle in
the design). Imports inside functions are listed separately (``python tests/test_structure.py`` prints both); a
circle through them only runs lazily and is reported, not failed. ``from skim.pkg import name`` counts as an edge to
``skim.pkg.name`` when that is a module, else to ``skim.pkg``; a package's ``__init__`` is not an implicit edge of its
submodules, and dynamic imports (``importlib.import_module``) are not followed.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "skim"


def module_names(package: Path = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> source file, for every module of the package (``__init__`` is the package itself)."""
    names = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _imports(tree: ast.Module):
    """(dotted target, imported names, relative level, inside a function) for every import statement."""
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend((alias.name, [], 0, in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                found.append((child.module or "", [a.name for a in child.names], child.level, in_function))
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, False)
    return found


def import_graph(package: Path = PACKAGE) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(module-level edges, function-level edges) between the package's modules."""
    modules = module_names(package)
    top, lazy = defaultdict(set), defaultdict(set)
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for target, names, level, in_function in _imports(ast.parse(path.read_text(), str(path))):
            if level:  # relative: resolved against the importing module's package
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (level - 1)]
                target = ".".join([*base, target] if target else base)
            if target not in modules:
                continue
            # ``from skim.pkg import sub`` imports the submodule ``skim.pkg.sub`` when there is one
            targets = {f"{target}.{n}" if f"{target}.{n}" in modules else target for n in names} or {target}
            (lazy if in_function else top)[name].update(t for t in targets if t != name)
    return dict(top), dict(lazy)


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module (the import circles), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
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

    for v in sorted(set(graph) | {w for ws in graph.values() for w in ws}):
        if v not in index:
            connect(v)
    return sorted(found)


def test_no_import_circle_among_module_level_imports():
    top, _ = import_graph()
    assert strongly_connected(top) == []


def test_the_checker_finds_circles(tmp_path):
    """The check itself: a module-level circle (through a TYPE_CHECKING block and a relative import) is found, a
    function-level one is kept apart."""
    pkg = tmp_path / "skim"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from skim.sub import b\n")
    (pkg / "sub" / "b.py").write_text("from ..c import x\n")
    (pkg / "c.py").write_text("import skim.a\n\ndef f():\n    from skim import d\n")
    (pkg / "d.py").write_text("from skim.c import x\n")
    top, lazy = import_graph(pkg)
    assert strongly_connected(top) == [["skim.a", "skim.c", "skim.sub.b"]]
    assert lazy == {"skim.c": {"skim.d"}}
    both = {m: top.get(m, set()) | lazy.get(m, set()) for m in set(top) | set(lazy)}
    assert strongly_connected(both) == [["skim.a", "skim.c", "skim.d", "skim.sub.b"]]


if __name__ == "__main__":  # report: python tests/test_structure.py
    top, lazy = import_graph()
    both = {m: top.get(m, set()) | lazy.get(m, set()) for m in set(top) | set(lazy)}
    print("module-level circles:", strongly_connected(top) or "none")
    print("circles with imports inside functions:", strongly_connected(both) or "none")
    for name in sorted(lazy):
        print(f"  {name} imports inside functions: {', '.join(sorted(lazy[name]))}")
