"""The package's shape as docs/code.md draws it: no import circle, every module of one concept and at most 400 lines."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "nst_exp"
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Module -> the nst_exp modules it imports, anywhere in it (a function's, TYPE_CHECKING's); ``from nst_exp import x``
    counts the module x."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                submodules = {f"{node.module}.{alias.name}" for alias in node.names} & modules.keys()
                found.update(submodules or {node.module})  # from a package its modules, not the package
        graph[name] = {target for target in found if target in modules and target != name}
    return graph


def test_no_module_imports_itself_through_others():
    graph, done, path = imports(), set(), []

    def visit(module: str) -> None:
        if module in path:
            raise AssertionError("import circle: " + " -> ".join(path[path.index(module):] + [module]))
        if module in done:
            return
        path.append(module)
        for target in sorted(graph[module]):
            visit(target)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


def test_every_module_is_at_most_400_lines():
    long = {str(path.relative_to(PACKAGE.parent)): n for path in PACKAGE.rglob("*.py")
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these along their seams (docs/code.md): {long}"


def test_the_graph_sees_the_imports_it_checks():
    graph = imports()  # a check of nothing would pass: the runner imports what the tour says it does
    assert {"nst_exp.results", "nst_exp.stages", "nst_exp.problem", "nst_exp.picture_scores"} <= graph["nst_exp.runner"]
    assert "nst_exp.images" in graph["nst_exp.results"]  # a function-level import counts too


def test_docs_code_lists_every_module_above_the_ones_it_imports():
    """docs/code.md reads top to bottom: a module imports only modules listed below it (report/ counts as one)."""
    doc = (PACKAGE.parent / "docs" / "code.md").read_text()

    def unit(module: str) -> str:
        return "nst_exp.report" if module.startswith("nst_exp.report") else module

    order = list(dict.fromkeys(unit("nst_exp." + name.removesuffix(".py").removesuffix("/").replace("/", "."))
                               for name in re.findall(r"`([\w/]+\.py|report/)`", doc)))
    graph = imports()
    assert not {unit(m) for m in graph} - set(order) - {"nst_exp"}, "docs/code.md lacks a module"
    upward = [f"{module} -> {target}" for module, targets in graph.items() for target in targets
              if unit(module) in order and unit(target) in order and order.index(unit(target)) < order.index(unit(module))]
    assert not upward, f"imports of a module listed above: {upward}"
