"""Mutation testing: which small bugs injected on purpose survive the tests (docs/testing.md).

Two kinds of run, both in a throw-away copy of the repository (mutmut edits files in place, and
the numba cache of a mutated kernel must not reach the real tree):

* ``python experiments/mutation.py counter`` (or ``limits``, ``targets``, ``trainer``): mutmut 2
  on that module (the trainer: only its result fields), with a targeted test subset, one pytest
  process per mutant. Prints the score and writes the surviving mutants' diffs to
  ``<workdir>/survivors.txt``. Slow: run it alone, in the background.
* ``python experiments/mutation.py --constants``: the counter's tolerance constants moved by orders
  of magnitude (the mutants issue 18 names), each against tests/analysis/test_tolerances.py and
  test_regions.py; prints which test catches each.

Needs ``pip install 'mutmut==2.5.1' whatthepatch`` (not a dependency of the package; mutmut 3
wraps functions in trampolines, which numba's ``@njit`` kernels cannot take). The counter's runs
set NUMBA_DISABLE_JIT=1: the kernels then run as plain Python, so no mutant waits ~5 s for a
compile, and the subset leaves out the one test too slow without numba (2^20 pieces).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTEST = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
          "-W", "ignore::DeprecationWarning"]

# module -> file, what to mutate (function/class names, or None for the whole file), tests.
TARGETS = {
    "counter": dict(
        path="relu_regions/analysis/regions.py", names=None,
        tests=["tests/analysis/test_tolerances.py", "tests/analysis/test_regions.py",
               "-k", "not 2_to_the_d"],
        env={"NUMBA_DISABLE_JIT": "1"}),
    "limits": dict(
        path="relu_regions/analysis/limits.py", names=None,
        tests=["tests/analysis/test_limits.py"], env={}),
    "targets": dict(
        path="relu_regions/targets.py",
        names=["_short", "_snippet", "_refuse", "_check", "_fold", "_evaluate", "_uses", "Target",
               "parse_target"],
        tests=["tests/test_targets.py", "-k", "parser or expression or malicious or rejections "
               "or non_string or not_finite or domain or call_preserves"], env={}),
    "trainer": dict(
        path="relu_regions/training/trainer.py",
        names=["FitResult", "_json_floats", "_pieces", ("models = [_to_module", "max_pieces=")],
        tests=["tests/training/test_fit_results.py"], env={}),
}

# The counter's tolerances, moved far enough that a real piece vanishes or noise splits one.
CONSTANTS = [
    ("ZERO_TOL x 1e6", "ZERO_TOL = 2.0**-40", "ZERO_TOL = 2.0**-40 * 1e6"),
    ("ZERO_TOL / 1e6", "ZERO_TOL = 2.0**-40", "ZERO_TOL = 2.0**-40 / 1e6"),
    ("INTERP_ULPS x 2^16", "INTERP_ULPS = 64", "INTERP_ULPS = 64 * 2**16"),
    ("INTERP_ULPS = 0", "INTERP_ULPS = 64", "INTERP_ULPS = 0"),
    ("MERGE_ULPS x 2^16", "MERGE_ULPS = 16", "MERGE_ULPS = 16 * 2**16"),
    ("MERGE_ULPS = 0", "MERGE_ULPS = 16", "MERGE_ULPS = 0"),
    ("SLOPE_TOL x 1e3", "SLOPE_TOL = 1e-11", "SLOPE_TOL = 1e-8"),
    ("SLOPE_TOL = 0", "SLOPE_TOL = 1e-11", "SLOPE_TOL = 0.0"),
    ("RESOLUTION_ULPS x 2^16", "RESOLUTION_ULPS = 64", "RESOLUTION_ULPS = 64 * 2**16"),
    ("resolved forced True", "resolved=bool(min_region > RESOLUTION_ULPS * np.spacing(scale))",
     "resolved=True"),
    ("segment direction doubled", "slopes = (x1 - x0)[None, :]", "slopes = 2 * (x1 - x0)[None, :]"),
    ("min_region_width from pieces", "min_region_width=float(min_region)",
     "min_region_width=float(min_piece)"),
]


def copy_repo(workdir: Path) -> Path:
    """The repository's tracked files as they are now (uncommitted edits included)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    if workdir.exists():
        shutil.rmtree(workdir)
    for f in files:
        src = ROOT / f
        if src.is_file():
            (workdir / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, workdir / f)
    return workdir


def line_ranges(path: Path, names) -> list[tuple[int, int]]:
    """Lines of the named top-level functions/classes, or of (start text, end text) spans."""
    source = path.read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    spans = []
    for name in names:
        if isinstance(name, tuple):
            start = next(i for i, l in enumerate(lines, 1) if name[0] in l)
            end = next(i for i, l in enumerate(lines, 1) if i > start and name[1] in l)
            spans.append((start, end))
            continue
        node = next(n for n in tree.body if getattr(n, "name", None) == name)
        spans.append((node.lineno, node.end_lineno))
    return spans


def patch_file(rel: str, spans, out: Path) -> Path:
    """A unified diff that marks exactly these lines as added: mutmut's --use-patch-file then
    mutates only them."""
    body = [f"--- a/{rel}", f"+++ b/{rel}"]
    source = (out.parent / rel).read_text().splitlines() if (out.parent / rel).exists() else None
    for start, end in spans:
        body.append(f"@@ -{start - 1},0 +{start},{end - start + 1} @@")
        body += ["+" + source[i - 1] for i in range(start, end + 1)]
    out.write_text("\n".join(body) + "\n")
    return out


def run_mutmut(name: str, workdir: Path) -> dict:
    spec = TARGETS[name]
    copy_repo(workdir)
    env = {**os.environ, **spec["env"], "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(workdir)}
    runner = " ".join(PYTEST + [f"'{t}'" if " " in t else t for t in spec["tests"]])
    cmd = [str(Path(sys.executable).parent / "mutmut"), "run", "--paths-to-mutate", spec["path"],
           "--runner", runner, "--tests-dir", "tests", "--simple-output", "--no-progress",
           "--disable-mutation-types", "string,fstring"]
    if spec["names"]:
        spans = line_ranges(workdir / spec["path"], spec["names"])
        cmd += ["--use-patch-file", str(patch_file(spec["path"], spans, workdir / "lines.patch"))]
    start = time.perf_counter()
    subprocess.run(cmd, cwd=workdir, env=env)
    results = subprocess.run([cmd[0], "results"], cwd=workdir, env=env, capture_output=True,
                             text=True).stdout
    ids = {kind: _ids(workdir, env, cmd[0], kind) for kind in ("killed", "survived", "timeout",
                                                                "suspicious", "untested", "skipped")}
    with open(workdir / "survivors.txt", "w") as f:
        for i in ids["survived"]:
            f.write(subprocess.run([cmd[0], "show", str(i)], cwd=workdir, env=env,
                                   capture_output=True, text=True).stdout + "\n")
    counts = {k: len(v) for k, v in ids.items()}
    tested = counts["killed"] + counts["survived"] + counts["timeout"] + counts["suspicious"]
    caught = tested - counts["survived"]
    return {"module": spec["path"], "counts": counts, "survived": ids["survived"],
            "score": round(caught / tested, 4) if tested else None,
            "seconds": round(time.perf_counter() - start), "results": results,
            "survivors_file": str(workdir / "survivors.txt")}


def _ids(workdir, env, mutmut, kind):
    out = subprocess.run([mutmut, "result-ids", kind], cwd=workdir, env=env, capture_output=True,
                         text=True).stdout
    return [int(t) for t in re.findall(r"\d+", out)]


def run_constants(workdir: Path) -> list[dict]:
    copy_repo(workdir)
    spec = TARGETS["counter"]
    env = {**os.environ, **spec["env"], "PYTHONPATH": str(workdir)}
    path = workdir / spec["path"]
    original = path.read_text()
    rows = []
    for label, old, new in CONSTANTS:
        assert original.count(old) == 1, f"{label}: {old!r} not found once in {spec['path']}"
        path.write_text(original.replace(old, new))
        try:
            r = subprocess.run(PYTEST + spec["tests"], cwd=workdir, env=env,
                               capture_output=True, text=True)
        finally:
            path.write_text(original)
        failed = re.findall(r"^FAILED (\S+)", r.stdout, flags=re.M)
        rows.append({"mutant": label, "killed": r.returncode != 0, "by": failed[:1]})
        print(f"{label:32s} {'killed by ' + failed[0] if failed else 'SURVIVED'}", flush=True)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("module", nargs="?", choices=sorted(TARGETS))
    p.add_argument("--constants", action="store_true", help="the counter's tolerance mutants")
    p.add_argument("--workdir", type=Path, help="where the copy goes (default /tmp/...)")
    args = p.parse_args(argv)
    if args.constants:
        rows = run_constants(args.workdir or Path("/tmp/relu-regions-mutation-constants"))
        print(json.dumps(rows, indent=2))
        return 0 if all(r["killed"] for r in rows) else 1
    if not args.module:
        p.error("name a module or pass --constants")
    out = run_mutmut(args.module, args.workdir or Path(f"/tmp/relu-regions-mutation-{args.module}"))
    print(json.dumps({k: v for k, v in out.items() if k != "results"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
