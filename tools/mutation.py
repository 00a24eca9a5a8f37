"""Mutation testing: which small bugs injected on purpose survive the tests (docs/testing.md).

Two kinds of run, both in a throw-away copy of the repository (mutmut edits files in place, and
the numba cache of a mutated kernel must not reach the real tree):

* ``python tools/mutation.py counter`` (or ``limits``, ``targets``, ``trainer``, ``result``):
  mutmut 2 on that module (the trainer: what fit reports), with a targeted test subset, one pytest
  process per mutant. Prints the score and writes the surviving mutants' diffs to
  ``<workdir>/survivors.txt``. Slow: run it alone, in the background.
* ``python tools/mutation.py counter --named`` (or ``trainer --named``): the named mutants
  (the counter's tolerances moved by orders of magnitude, a forced ``resolved``, a doubled
  segment direction; pieces that count regions, a test MSE on the training targets, a release
  that shifts the output), each against the module's test subset; prints which test catches
  each. ``tests/test_mutation_tool.py`` checks that their text and the target names still
  exist, so a move of the code they name fails there.

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
    "counter": dict(  # the counting itself; model reading and the sampler are other concerns
        path="relu_regions/analysis/regions.py",
        names=[("ZERO_TOL = ", "CHUNK = "), "RegionCount", "convexity", "count_regions",
               "count_regions_segment", "_count", "_propagate", "_relu_layer", "_Workspace",
               "_preactivations", "_refine", "_emit", "_Pieces", "_region_count", "_Buffer",
               "_new_state", "_chunk_pieces", "_count_small"],
        tests=["tests/analysis/test_tolerances.py", "tests/analysis/test_regions.py",
               "-k", "not 2_to_the_d"],
        env={"NUMBA_DISABLE_JIT": "1"}),
    "limits": dict(
        path="relu_regions/analysis/limits.py", names=None,
        tests=["tests/analysis/test_limits.py", "tests/analysis/test_limits_continuous.py"],
        env={}),
    "targets": dict(
        path="relu_regions/targets.py",
        names=["_short", "_snippet", "_refuse", "_check", "_fold", "_evaluate", "_uses", "Target",
               "parse_target"],
        # the parser's messages are pinned by the CLI's bad-input cases (one `error:` line each)
        tests=["tests/test_targets.py", "tests/test_bad_input.py"], env={}),
    "trainer": dict(  # what fit reports: the pieces, the errors, the result it assembles
        path="relu_regions/training/fitting.py",
        names=["count_pieces", ("    def _result(self", "            config=c, data=data,"),
               ("    def release(self", "        return flatten_layers")],
        tests=["tests/training/test_fit_results.py"], env={}),
    "result": dict(  # the result object: summary, best seed, predictions, from_dict
        path="relu_regions/training/result.py",
        names=["FitResult", "load_run", "_counted_mean", "_finite_mean"],
        tests=["tests/training/test_fit_results.py", "tests/training/test_report.py"], env={}),
}

# Named mutants: module -> [(label, text, replacement)], each run against that module's test
# subset (docs/testing.md). The counter's tolerances are moved far enough that a real piece
# vanishes or rounding noise splits one.
NAMED = {
    "counter": [
        ("ZERO_TOL x 1e6", "ZERO_TOL = 2.0**-40", "ZERO_TOL = 2.0**-40 * 1e6"),
        ("ZERO_TOL / 1e6", "ZERO_TOL = 2.0**-40", "ZERO_TOL = 2.0**-40 / 1e6"),
        ("INTERP_ULPS x 2^16", "INTERP_ULPS = 64", "INTERP_ULPS = 64 * 2**16"),
        ("INTERP_ULPS = 0", "INTERP_ULPS = 64", "INTERP_ULPS = 0"),
        ("MERGE_ULPS x 2^16", "MERGE_ULPS = 16", "MERGE_ULPS = 16 * 2**16"),
        ("MERGE_ULPS = 0", "MERGE_ULPS = 16", "MERGE_ULPS = 0"),
        ("SLOPE_TOL x 1e3", "SLOPE_TOL = 1e-11", "SLOPE_TOL = 1e-8"),
        ("SLOPE_TOL = 0", "SLOPE_TOL = 1e-11", "SLOPE_TOL = 0.0"),
        ("RESOLUTION_ULPS x 2^16", "RESOLUTION_ULPS = 64", "RESOLUTION_ULPS = 64 * 2**16"),
        ("resolved forced True",
         "resolved=min_region > RESOLUTION_ULPS * math.ulp(scale),", "resolved=True,"),
        ("segment direction doubled", "slopes = (x1 - x0)[None, :]",
         "slopes = 2 * (x1 - x0)[None, :]"),
        ("min_region_width from pieces", "min_region_width=min_region,",
         "min_region_width=min_piece,"),
    ],
    "trainer": [
        ("pieces = activation regions", "return count_regions(model, *box[0]).linear_pieces",
         "return count_regions(model, *box[0]).activation_regions"),
        ("sparse test MSE = training MSE",
         "            mse = (r_test * r_test).mean(dim=1).cpu().numpy()",
         "            mse = train_mse.copy()"),
        ("release adds 1e-5 to the output bias",
         "        return flatten_layers(self.layout.raw(theta1))",
         "        raw = flatten_layers(self.layout.raw(theta1)).clone()\n"
         "        raw[:, -1] += 1e-5\n        return raw"),
    ],
}


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


def _isolated(workdir: Path) -> dict:
    """The copy's code first on the path, and its own numba cache: a mutated kernel's compiled
    form must not reach the user's cache, where the real tree's kernels are kept."""
    return {"PYTHONPATH": str(workdir), "NUMBA_CACHE_DIR": str(workdir / ".numba-cache")}


def line_ranges(path: Path, names) -> list[tuple[int, int]]:
    """Lines of the named top-level functions/classes, or of (start text, end text) spans."""
    source = path.read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    spans = []
    for name in names:
        if isinstance(name, tuple):
            start = next(i for i, line in enumerate(lines, 1) if name[0] in line)
            end = next(i for i, line in enumerate(lines, 1) if i > start and name[1] in line)
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
    env = {**os.environ, **spec["env"], **_isolated(workdir), "OPENBLAS_NUM_THREADS": "1",
           "OMP_NUM_THREADS": "1"}
    runner = " ".join(PYTEST + [f"'{t}'" if " " in t else t for t in spec["tests"]])
    cmd = [str(Path(sys.executable).parent / "mutmut"), "run", "--paths-to-mutate", spec["path"],
           "--runner", runner, "--tests-dir", "tests", "--simple-output", "--no-progress",
           "--disable-mutation-types", "string,fstring,decorator"]
    if spec["names"]:
        spans = line_ranges(workdir / spec["path"], spec["names"])
        cmd += ["--use-patch-file", str(patch_file(spec["path"], spans, workdir / "lines.patch"))]
    start = time.perf_counter()
    subprocess.run(cmd, cwd=workdir, env=env)
    results = subprocess.run([cmd[0], "results"], cwd=workdir, env=env, capture_output=True,
                             text=True).stdout
    kinds = ("killed", "survived", "timeout", "suspicious", "untested", "skipped")
    ids = {kind: _ids(workdir, env, cmd[0], kind) for kind in kinds}
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


# ---------------------------------------------------------------------------------------------
# In-process runs: mutmut's mutants, one pytest.main per mutant in one long-lived process

def run_inprocess(name: str, workdir: Path, results: Path, timeout: float = 60.0,
                  only: set | None = None, shuffle: int | None = None,
                  same_as: dict | None = None) -> dict:
    """mutmut's mutants of ``name``, tested by ``pytest.main`` in this one process.

    A fresh pytest process per mutant (what ``mutmut run`` does) spends most of its time
    importing torch and numba; here they stay loaded, and only the package and the test modules
    are imported again for each mutant (their entries are dropped from ``sys.modules``). A
    mutant running longer than ``timeout`` seconds is interrupted by SIGALRM and counts as caught
    (as mutmut's timeouts do: e.g. an insertion sort that never ends). Results are appended to
    ``results`` (JSON lines) as they come, so a run stopped early still reports the mutants it
    tried. ``only``: the mutants' numbers to try (e.g. a previous run's survivors, after tests
    were added). ``shuffle``: try them in a random order (this seed), so a run stopped early is
    a fair sample of the whole module.
    """
    import signal
    import types

    import mutmut
    import pytest

    spec = TARGETS[name]
    copy_repo(workdir)
    os.environ.update({**spec["env"], **_isolated(workdir)})
    os.chdir(workdir)
    sys.path.insert(0, str(workdir))
    path = workdir / spec["path"]
    original = path.read_text()
    lines = {n for a, b in line_ranges(path, spec["names"]) for n in range(a, b + 1)} \
        if spec["names"] else set(range(1, original.count("\n") + 2))
    config = types.SimpleNamespace(
        mutation_types_to_apply=set(mutmut.mutations_by_type) - {"string", "fstring", "decorator"},
        covered_lines_by_filename={str(path): lines}, coverage_data=None)
    ctx = mutmut.Context(source=original, filename=str(path), config=config)
    ids = mutmut.list_mutations(ctx)
    for n, line in (same_as or {}).items():  # an earlier run's numbers must mean the same mutants
        assert ids[n].line.strip() == line, f"mutant {n} is no longer on {line!r}: run afresh"
    args = PYTEST[3:] + spec["tests"]

    def fresh_imports():
        for mod in [m for m, v in sys.modules.items()
                    if m.startswith("relu_regions") or m == "conftest"
                    or str(getattr(v, "__file__", "") or "").startswith(str(workdir))]:
            del sys.modules[mod]

    timed_out = []

    def alarm(*_):  # an interrupt, which pytest and hypothesis pass on (an error they'd retry)
        timed_out.append(True)
        raise KeyboardInterrupt

    signal.signal(signal.SIGALRM, alarm)
    counts = {"killed": 0, "survived": 0, "timeout": 0}
    start = time.perf_counter()
    with open(results, "a") as out:
        fresh_imports()
        base = _quiet_pytest(pytest, args)
        assert base == 0, f"the tests fail without any mutation (exit {base})"
        order = list(range(len(ids)))
        if shuffle is not None:
            import random

            random.Random(shuffle).shuffle(order)
        for i in order:
            mid = ids[i]
            if only is not None and i not in only:
                continue
            mctx = mutmut.Context(source=original, filename=str(path), mutation_id=mid,
                                  config=config)
            mutated, n = mutmut.mutate(mctx)
            if n == 0:
                continue
            path.write_text(mutated)
            fresh_imports()
            t0 = time.perf_counter()
            timed_out.clear()
            signal.alarm(int(timeout))
            try:
                code = _quiet_pytest(pytest, args)
            except KeyboardInterrupt:
                code = "timeout"
            finally:
                signal.alarm(0)
                path.write_text(original)
            if timed_out:
                code = "timeout"
            status = ("timeout" if code == "timeout" else "survived" if code == 0 else "killed")
            counts[status] += 1
            new_line = mutated.split("\n")[mid.line_number]
            out.write(json.dumps({"n": i, "line_number": mid.line_number + 1,
                                  "line": mid.line.strip(), "mutant": new_line.strip(),
                                  "status": status, "exit": code,
                                  "seconds": round(time.perf_counter() - t0, 2)}) + "\n")
            out.flush()
    fresh_imports()
    tested = sum(counts.values())
    return {"module": spec["path"], "mutants": len(ids), "counts": counts,
            "score": round((tested - counts["survived"]) / tested, 4) if tested else None,
            "seconds": round(time.perf_counter() - start), "results": str(results)}


def summarize(files) -> dict:
    """Merge --inprocess result files (a later file's verdict on a mutant wins)."""
    latest = {}
    for f in files:
        for line in Path(f).read_text().splitlines():
            r = json.loads(line)
            latest[r["n"]] = r
    counts = {k: sum(r["status"] == k for r in latest.values())
              for k in ("killed", "survived", "timeout")}
    tried = sum(counts.values())
    return {"tried": tried, "counts": counts,
            "score": round((tried - counts["survived"]) / tried, 4) if tried else None,
            "survivors": [f"{r['n']} line {r['line_number']}: {r['line']} -> {r['mutant']}"
                          for r in sorted(latest.values(), key=lambda r: r["line_number"])
                          if r["status"] == "survived"]}


def _quiet_pytest(pytest, args):
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return int(pytest.main(list(args)))


def run_named(name: str, workdir: Path) -> list[dict]:
    copy_repo(workdir)
    spec = TARGETS[name]
    env = {**os.environ, **spec["env"], **_isolated(workdir)}
    path = workdir / spec["path"]
    original = path.read_text()
    rows = []
    for label, old, new in NAMED[name]:
        assert original.count(old) == 1, f"{label}: {old!r} not found once in {spec['path']}"
        path.write_text(original.replace(old, new))
        try:
            r = subprocess.run(PYTEST + spec["tests"], cwd=workdir, env=env,
                               capture_output=True, text=True)
        finally:
            path.write_text(original)
        failed = re.findall(r"^FAILED (\S+)", r.stdout, flags=re.M)
        rows.append({"mutant": label, "killed": r.returncode != 0, "by": failed[:1]})
        print(f"{label:40s} {'killed by ' + failed[0] if failed else 'SURVIVED'}", flush=True)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("module", nargs="?", choices=sorted(TARGETS))
    p.add_argument("--named", action="store_true",
                   help="only the named mutants (counter, trainer), one run each")
    p.add_argument("--inprocess", action="store_true",
                   help="mutmut's mutants, tested in this one process (much faster)")
    p.add_argument("--results", type=Path, help="JSON lines of --inprocess results "
                   "(default <workdir>.jsonl)")
    p.add_argument("--retest", type=Path, nargs="+", metavar="RESULTS.jsonl",
                   help="--inprocess: skip the mutants these earlier runs caught (try their "
                        "survivors again, and those they did not reach)")
    p.add_argument("--survivors-only", action="store_true",
                   help="with --retest: only the earlier survivors (after adding tests)")
    p.add_argument("--shuffle", type=int, metavar="SEED",
                   help="--inprocess: try the mutants in a random order")
    p.add_argument("--summarize", type=Path, nargs="+", metavar="RESULTS.jsonl",
                   help="merge --inprocess result files and print the score and survivors")
    p.add_argument("--workdir", type=Path, help="where the copy goes (default /tmp/...)")
    args = p.parse_args(argv)
    if args.summarize:
        print(json.dumps(summarize(args.summarize), indent=2))
        return 0
    if args.inprocess:
        workdir = args.workdir or Path(f"/tmp/relu-regions-mutation-{args.module}")
        only = None
        if args.retest:
            latest = {}
            for f in args.retest:
                for line in f.read_text().splitlines():
                    r = json.loads(line)
                    latest[r["n"]] = r
            caught = {n for n, r in latest.items() if r["status"] != "survived"}
            only = (set(latest) - caught if args.survivors_only
                    else set(range(100_000)) - caught)
            only_lines = {n: r["line"] for n, r in latest.items()}
        out = run_inprocess(args.module, workdir,
                            (args.results or Path(f"{workdir}.jsonl")).resolve(), only=only,
                            shuffle=args.shuffle,
                            same_as=only_lines if args.retest else None)
        print(json.dumps(out, indent=2))
        return 0
    if args.named:
        if args.module not in NAMED:
            p.error(f"--named takes one of {', '.join(NAMED)}")
        rows = run_named(args.module, args.workdir
                         or Path(f"/tmp/relu-regions-mutation-named-{args.module}"))
        print(json.dumps(rows, indent=2))
        return 0 if all(r["killed"] for r in rows) else 1
    if not args.module:
        p.error("name a module")
    out = run_mutmut(args.module, args.workdir or Path(f"/tmp/relu-regions-mutation-{args.module}"))
    print(json.dumps({k: v for k, v in out.items() if k != "results"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
