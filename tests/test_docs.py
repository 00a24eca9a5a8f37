"""Every ```python block of README.md and docs/*.md runs, so an example cannot silently break.

Blocks of one file share a namespace and run in order, in a scratch folder (an example may write
files). A block that is too expensive for the suite is marked in the markdown, visibly, by an
HTML comment on the line before its fence: ``<!-- no-test: why -->``. Such a block is still
compiled (a syntax error fails) and shows as skipped with its reason.
"""

import contextlib
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKER = re.compile(r"<!--\s*no-test:\s*(.*?)\s*-->")


def python_blocks(path: Path, language: str = "python") -> list[tuple[int, str, str | None]]:
    """(line of the fence, code, no-test reason or None) for each ```python (or ```language)
    block."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        if lines[i].strip() == "```" + language:
            start = i
            j = i + 1
            while j < len(lines) and lines[j].strip() != "```":
                j += 1
            before = next((lines[k] for k in range(start - 1, -1, -1) if lines[k].strip()), "")
            m = MARKER.search(before)
            blocks.append((start + 1, "\n".join(lines[start + 1:j]) + "\n", m and m[1]))
            i = j
        i += 1
    return blocks


CASES = [(path, index) for path in FILES for index in range(len(python_blocks(path)))]
_namespaces = {}  # file -> (namespace, number of blocks run so far, scratch folder)


@contextlib.contextmanager
def _inside(folder: Path):
    before = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


def _run_up_to(path: Path, index: int, scratch: Path):
    """Run the file's blocks before ``index`` (once per file; later tests reuse them)."""
    namespace, done, folder = _namespaces.setdefault(path, ({"__name__": "__doc__"}, 0, scratch))
    blocks = python_blocks(path)
    with _inside(folder):
        for line, code, skip in blocks[done:index + 1]:
            if skip is None:
                exec(compile(code, f"{path.name}:{line}", "exec"), namespace)  # our own docs
            done += 1
            _namespaces[path] = (namespace, done, folder)


@pytest.mark.parametrize("path, index", CASES,
                         ids=[f"{p.name}:{python_blocks(p)[i][0]}" for p, i in CASES])
def test_python_block_runs(path, index, tmp_path_factory):
    line, code, skip = python_blocks(path)[index]
    compile(code, f"{path.name}:{line}", "exec")
    if skip is not None:
        pytest.skip(f"marked no-test in {path.name}: {skip}")
    namespace, done, _ = _namespaces.get(path, (None, 0, None))
    if done > index:
        pytest.fail("blocks ran out of order")
    _run_up_to(path, index, tmp_path_factory.mktemp(path.stem))


def test_the_readme_has_python_blocks_and_markers_have_reasons():
    blocks = python_blocks(ROOT / "README.md")
    assert len(blocks) >= 2
    for path in FILES:
        for line, _, skip in python_blocks(path):
            assert skip is None or skip.strip(), f"{path.name}:{line}: no-test needs a reason"


def test_block_extraction_and_markers(tmp_path):
    md = tmp_path / "x.md"
    md.write_text("text\n```python\na = 1\n```\n\n<!-- no-test: slow -->\n```python\nb = a\n```\n"
                  "```bash\nls\n```\n")
    assert python_blocks(md) == [(2, "a = 1\n", None), (7, "b = a\n", "slow")]


TOML_CASES = [(path, line) for path in FILES for line, _, _ in python_blocks(path, "toml")]


@pytest.mark.parametrize("path,line", TOML_CASES, ids=[f"{p.name}:{n}" for p, n in TOML_CASES])
def test_toml_block_is_a_sweep_config_the_tool_accepts(path, line):
    """A sweep file shown in the docs loads as it stands (every cell's settings checked)."""
    from relu_regions.sweep.config import (
        parse_config,
        tomllib,  # tomli before Python 3.11
    )

    code = next(c for n, c, _ in python_blocks(path, "toml") if n == line)
    assert len(parse_config(tomllib.loads(code)).cells()) > 1


def test_the_docs_show_a_sweep_file():
    assert TOML_CASES  # docs/sweeps.md's example: the test above must have something to load
