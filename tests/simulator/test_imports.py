"""The simulator's modules import one another without circles, and check nothing with the product's code
(docs/simulator.md section "The simulated firmware and installer")."""

import ast
from pathlib import Path

import provisioner.simulator

PACKAGE = Path(provisioner.simulator.__file__).parent


def _imports(path: Path) -> set[str]:
    """Every import of the module, TYPE_CHECKING and function-level ones included, as dotted names."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = ("provisioner.simulator." if node.level == 1 else "") + (node.module or "")
            base = base.rstrip(".")
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    graph = {}
    for path in PACKAGE.glob("*.py"):
        names = _imports(path)
        graph[path.stem] = {m for m in modules if f"provisioner.simulator.{m}" in names} - {path.stem}
    return graph


def test_no_import_circles():
    graph, done, path = _graph(), set(), []

    def visit(module):
        assert module not in path, "import circle: " + " -> ".join(path[path.index(module):] + [module])
        if module in done:
            return
        path.append(module)
        for dep in sorted(graph[module]):
            visit(dep)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


def test_the_simulated_machine_does_not_check_with_the_products_code():
    for path in PACKAGE.glob("*.py"):
        product = {n for n in _imports(path) if n.startswith(("provisioner.boot", "provisioner.model"))}
        assert not product, f"{path.name} imports {sorted(product)}"
