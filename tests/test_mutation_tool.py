"""The mutation tool (tools/mutation.py) names code by its text: each named mutant's text occurs
exactly once in its file, and each target name is defined where the tool looks for it, so a move
or a rewrite of that code fails here instead of breaking the tool silently."""

import ast
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("mutation_tool", ROOT / "tools" / "mutation.py")
tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tool)

NAMED = [(module, label, old, new) for module, mutants in tool.NAMED.items()
         for label, old, new in mutants]
NAMES = [(module, name) for module, spec in tool.TARGETS.items() for name in spec["names"] or []]


@pytest.mark.parametrize("module, label, old, new", NAMED, ids=[m[1] for m in NAMED])
def test_each_named_mutant_changes_text_that_occurs_once(module, label, old, new):
    source = (ROOT / tool.TARGETS[module]["path"]).read_text()
    assert source.count(old) == 1, f"{label}: {old!r} occurs {source.count(old)} times"
    mutated = source.replace(old, new)
    assert mutated != source
    ast.parse(mutated)  # a mutant is a program, not a syntax error


@pytest.mark.parametrize("module, name", NAMES, ids=[f"{m}:{n}" for m, n in NAMES])
def test_each_target_name_is_defined_where_the_tool_looks(module, name):
    path = ROOT / tool.TARGETS[module]["path"]
    if isinstance(name, tuple):  # a span from one text to the next occurrence of another
        source = path.read_text()
        assert source.count(name[0]) == 1, f"{name[0]!r} must occur once"
        assert name[1] in source[source.index(name[0]) + len(name[0]):]
    else:  # a top-level def or class of that name (an import is not a definition)
        defined = {n.name for n in ast.parse(path.read_text()).body
                   if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        assert name in defined
    spans = tool.line_ranges(path, [name])
    assert spans and spans[0][0] <= spans[0][1]


@pytest.mark.parametrize("module", sorted(tool.TARGETS))
def test_each_targets_tests_exist(module):
    for arg in tool.TARGETS[module]["tests"]:
        if arg.startswith("tests/"):
            assert (ROOT / arg.split("::")[0]).is_file(), arg
