"""Imports run one way: the package's module graph (function-level imports included) has no
cycle, and no module is imported under a one-letter alias."""

import ast
from pathlib import Path

import pytest

import relu_regions

ROOT = Path(relu_regions.__file__).parent
REPO = ROOT.parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in ROOT.rglob("*.py")}


def _imports(name: str, path: Path) -> set[str]:
    """The package modules ``name`` imports anywhere in its file (each ``from pkg import x`` is
    the module ``pkg.x`` when that is a module, else ``pkg``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for a in node.names:
                out.add(f"{source}.{a.name}" if f"{source}.{a.name}" in MODULES else source)
    return {m for m in out if m in MODULES and m != name}


def _cycle(graph: dict) -> list | None:
    """One cycle of ``graph`` as a list of nodes, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_module_import_graph_has_no_cycle():
    graph = {name: _imports(name, path) for name, path in MODULES.items()}
    assert sum(map(len, graph.values())) > 50  # the parser sees the package's imports
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def _python_files():
    for folder in ("relu_regions", "tests", "benchmarks", "experiments", "tools"):
        yield from (REPO / folder).rglob("*.py")


@pytest.mark.parametrize("path", sorted(_python_files()), ids=lambda p: str(p.relative_to(REPO)))
def test_no_one_letter_import_aliases(path):
    bad = [f"line {node.lineno}: as {a.asname}" for node in ast.walk(ast.parse(path.read_text()))
           if isinstance(node, (ast.Import, ast.ImportFrom)) for a in node.names
           if a.asname and len(a.asname) == 1]
    assert not bad, bad
