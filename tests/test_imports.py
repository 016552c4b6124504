"""The package's import graph: modules depend downwards only, and the rank programs are part of it."""

import ast
import importlib.util
from pathlib import Path

import simtune

PACKAGE = Path(simtune.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_imports(path: Path) -> set[str]:
    """simtune modules imported at module level (TYPE_CHECKING blocks left out), with the parent
    packages each import runs."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    found = set()
    for name in names:
        if not name.startswith("simtune"):
            continue
        parts = name.split(".")
        found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in module_imports(path) if m in modules and m != name} for name, path in modules.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected set of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_itself_through_others():
    edges = graph()
    assert len(edges) > 100  # the whole package was read
    # a package's own __init__ importing its submodules is how packages work, not a cycle
    edges = {name: {m for m in deps if not name.startswith(m + ".") and not m.startswith(name + ".")}
             for name, deps in edges.items()}
    assert cycles(edges) == []


def test_the_lower_floors_import_nothing_above_them():
    edges = graph()
    above = {"simtune.prediction": ("simtune.search", "simtune.calibration", "simtune.commands", "simtune.report"),
             "simtune.model": ("simtune.prediction", "simtune.search", "simtune.calibration", "simtune.commands"),
             "simtune.search": ("simtune.commands",)}
    for floor, forbidden in above.items():
        for name, deps in edges.items():
            if name == floor or name.startswith(floor + "."):
                bad = sorted(d for d in deps if d.startswith(forbidden))
                assert not bad, f"{name} imports {bad}"


def test_the_rank_programs_are_simtunes_not_a_top_level_calib():
    assert importlib.util.find_spec("simtune.calib.run_all") is not None
    assert importlib.util.find_spec("calib") is None
