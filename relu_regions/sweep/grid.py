"""Sweeps: a grid of fits (targets x depths x methods x seeds), run in parallel, in one table.

A sweep is described by a TOML file (docs/sweeps.md)::

    targets = ["x**3", "sin(3*x)"]
    depths = [3, 4]
    methods = ["kaiming", "pretrain-thm31"]
    seeds = 2                      # a count (seeds 0..N-1) or a list [0, 7, 9]
    interval = [0.0, 1.0]
    points = 200                   # or sparse = 10 (random train/test points), not both
    phase1 = "lm:20"               # OPTIMIZER:STEPS[:LR], or a table {optimizer, steps, lr}
    phase2 = "lm:40"
    parameterization = "sp"        # or "gmp"

One *cell* is (target, depth, method, seed): it trains one seed with ``train.fit(seeds=[s])``, so
cells are independent and a cell's numbers do not depend on how the grid is scheduled (a seed
trained alone equals the same seed inside a batch to ~1e-11; train.py keeps every seed's update
its own). Cells run in a local process pool (``concurrent.futures``, spawn, one torch thread per
worker) or on a Dask cluster (``scheduler="tcp://host:8786"``); a cell that raises becomes a row
with ``status="failed"`` and the error, and the rest of the sweep goes on.

Output, written atomically and only under ``out_dir``: ``results.csv`` / ``results.json`` (one
row per cell, in grid order), ``summary.csv`` (per target, depth, method) and ``sweep.png``.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import csv
import io
import json
import math
import multiprocessing
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, from PyPI
    import tomli as tomllib

import numpy as np

from ..checkpoint import atomic_write_text
from ..errors import InputError, read_user_file

KEYS = ("targets", "depths", "methods", "seeds", "interval", "points", "sparse", "phase1",
        "phase2", "parameterization")
PHASE_KEYS = ("optimizer", "steps", "lr")
MAX_DEPTH = 20
MAX_SEEDS = 1000
MAX_SEED = 2**32 - 1
MAX_POINTS = 100_000
MAX_CELLS = 100_000
MAX_CONFIG_BYTES = 1 << 20
ROW_FIELDS = ("target", "depth", "method", "seed", "mse", "train_mse", "pieces", "seconds",
              "status", "error")
SUMMARY_FIELDS = ("target", "depth", "method", "n_cells", "n_ok", "n_diverged", "n_failed",
                  "mse_mean", "mse_min", "mse_median", "train_mse_mean", "pieces_mean")
FILES = ("results.csv", "results.json", "summary.csv", "sweep.png")
DIED = ("BrokenProcessPool: the worker process died while running this cell (a crash or out "
        "of memory)")
BROKEN_POOL = ("BrokenProcessPool: a worker process died; if every cell failed so, the workers "
               "could not start: call run_sweep from a script file under "
               "`if __name__ == '__main__':` (spawn re-imports it), or use workers=0")


# ---------------------------------------------------------------------------------------------
# Configuration

@dataclass(frozen=True)
class SweepConfig:
    """A validated sweep grid. Build it with :func:`load_config` or :func:`parse_config`."""

    targets: tuple
    depths: tuple
    methods: tuple
    seeds: tuple
    interval: tuple = (0.0, 1.0)
    points: int = 500
    sparse: int | None = None
    phase1: dict = field(default_factory=lambda: {"optimizer": "lm", "steps": 100, "lr": 1e-3})
    phase2: dict = field(default_factory=lambda: {"optimizer": "lm", "steps": 400, "lr": 1e-3})
    parameterization: str = "sp"

    def cells(self) -> list[dict]:
        """Every cell's fit arguments, in grid order (targets, depths, methods, seeds as given)."""
        return [{"target": t, "depth": d, "method": m, "seed": s, "interval": list(self.interval),
                 "points": self.points, "sparse": self.sparse, "phase1": dict(self.phase1),
                 "phase2": dict(self.phase2), "parameterization": self.parameterization}
                for t in self.targets for d in self.depths for m in self.methods
                for s in self.seeds]

    def __len__(self) -> int:
        return len(self.targets) * len(self.depths) * len(self.methods) * len(self.seeds)

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def load_config(path) -> SweepConfig:
    """Read and validate a sweep TOML file; every problem is an InputError naming the value."""
    p, text = read_user_file(path, "sweep config", MAX_CONFIG_BYTES)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise InputError(f"sweep config {str(p)!r} is not valid TOML: {err}") from None
    return parse_config(raw, source=str(p))


def parse_config(raw: dict, source: str = "sweep config") -> SweepConfig:
    """Validate a mapping (the parsed TOML) into a :class:`SweepConfig`."""
    from .. import targets as T
    from ..training.trainer import METHODS, PARAMETERIZATIONS

    def bad(msg):
        return InputError(f"{source}: {msg}")

    if not isinstance(raw, dict):
        raise bad("must be a table of keys")
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise bad(f"unknown key {unknown[0]!r}; allowed: {', '.join(KEYS)}")
    for key in ("targets", "depths", "methods", "seeds"):
        if key not in raw:
            raise bad(f"missing key {key!r}")

    def nonempty_list(key, kind, what):
        v = raw[key]
        if not isinstance(v, list):
            raise bad(f"{key} must be a list of {what}, got {_show(v)}")
        if not v:
            raise bad(f"{key} is empty; give at least one")
        for item in v:
            if not _is(item, kind):
                raise bad(f"{key} entry {_show(item)} is not {what}")
        if len(set(v)) != len(v):
            dup = next(x for x in v if v.count(x) > 1)
            raise bad(f"{key} lists {_show(dup)} twice")
        return v

    # interval first: targets are checked on it
    interval = raw.get("interval", [0.0, 1.0])
    if not (isinstance(interval, list) and len(interval) == 2
            and all(_is(v, "number") for v in interval)):
        raise bad(f"interval must be two numbers [lo, hi], got {_show(interval)}")
    lo, hi = (float(v) for v in interval)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise bad(f"interval [{lo}, {hi}] is not allowed; need finite lo < hi")

    points, sparse = raw.get("points"), raw.get("sparse")
    if points is not None and sparse is not None:
        raise bad("give points (dense data) or sparse (random points), not both")
    for key, value in (("points", points), ("sparse", sparse)):
        if value is not None and not (_is(value, "int") and 2 <= value <= MAX_POINTS):
            raise bad(f"{key} must be a whole number from 2 to {MAX_POINTS}, got {_show(value)}")
    if points is None and sparse is None:
        points = 500

    texts = nonempty_list("targets", "str", "target expressions (strings)")
    targets = []
    for text in texts:
        try:
            f = T.parse_target(text)
            if f.dims != 1:
                raise InputError(f"target {text!r} is 2D; sweeps take 1D targets (train one 2D "
                                 "target with `relu-regions train`)")
            # the data every cell of this target trains on: rejects a target not finite here
            T.sparse(f, (lo, hi), sparse, sparse) if sparse else T.dense(f, (lo, hi), points)
        except InputError as err:
            raise bad(str(err)) from None
        targets.append(f.text)
    if len(set(targets)) != len(targets):
        raise bad(f"targets lists {next(t for t in targets if targets.count(t) > 1)!r} twice")

    depths = nonempty_list("depths", "int", "whole numbers")
    for d in depths:
        if not 1 <= d <= MAX_DEPTH:
            raise bad(f"depth {d} is not allowed; need 1 <= depth <= {MAX_DEPTH}")
    methods = nonempty_list("methods", "str", "method names")
    for m in methods:
        if m not in METHODS:
            raise bad(f"method {m!r} is not one of {', '.join(METHODS)}")

    seeds = raw["seeds"]
    if _is(seeds, "int"):
        if not 1 <= seeds <= MAX_SEEDS:
            raise bad(f"seeds count {seeds} is not allowed; need 1 <= seeds <= {MAX_SEEDS} "
                      "(or a list of seeds)")
        seeds = list(range(seeds))
    elif isinstance(seeds, list):
        seeds = nonempty_list("seeds", "int", "whole numbers")
        for s in seeds:
            if not 0 <= s <= MAX_SEED:
                raise bad(f"seed {s} is not allowed; need 0 <= seed <= {MAX_SEED}")
    else:
        raise bad(f"seeds must be a count or a list of whole numbers, got {_show(seeds)}")

    parameterization = raw.get("parameterization", "sp")
    if parameterization not in PARAMETERIZATIONS:
        raise bad(f"parameterization {_show(parameterization)} is not one of "
                  f"{', '.join(PARAMETERIZATIONS)}")
    phase1 = _phase(raw.get("phase1", "lm:100"), "phase1", bad)
    phase2 = _phase(raw.get("phase2", "lm:400"), "phase2", bad)

    cfg = SweepConfig(targets=tuple(targets), depths=tuple(depths), methods=tuple(methods),
                      seeds=tuple(seeds), interval=(lo, hi), points=points, sparse=sparse,
                      phase1=phase1, phase2=phase2, parameterization=parameterization)
    if len(cfg) > MAX_CELLS:
        raise bad(f"the grid has {len(cfg)} cells; at most {MAX_CELLS} allowed")
    return cfg


def _phase(value, key, bad) -> dict:
    """'lm:100', 'adam:1000:1e-3' or {optimizer, steps, lr} -> validated {optimizer, steps, lr}."""
    from ..training.trainer import OPTIMIZERS, Phase

    form = (f"{key} must be 'OPTIMIZER:STEPS[:LR]' or a table {{optimizer, steps, lr}} with "
            f"OPTIMIZER in {'/'.join(OPTIMIZERS)}, STEPS >= 0, LR > 0")
    if isinstance(value, str):
        parts = value.split(":")
        try:
            if len(parts) not in (2, 3):
                raise ValueError
            opt, steps = parts[0].strip(), int(parts[1])
            lr = float(parts[2]) if len(parts) == 3 else 1e-3
        except ValueError:
            raise bad(f"{form}, got {value!r}") from None
    elif isinstance(value, dict):
        unknown = sorted(set(value) - set(PHASE_KEYS))
        if unknown:
            raise bad(f"{key} has unknown key {unknown[0]!r}; allowed: {', '.join(PHASE_KEYS)}")
        if "optimizer" not in value or "steps" not in value:
            raise bad(f"{key} table needs optimizer and steps (lr is optional)")
        opt, steps, lr = value["optimizer"], value["steps"], value.get("lr", 1e-3)
        if not isinstance(opt, str) or not _is(steps, "int") or not _is(lr, "number"):
            raise bad(f"{form}, got {_show(value)}")
        lr = float(lr)
    else:
        raise bad(f"{form}, got {_show(value)}")
    if steps > 10**7:
        raise bad(f"{key} steps {steps} is too many (at most 10000000)")
    try:
        ph = Phase(opt, steps, lr).validate(key)
    except InputError as err:
        raise bad(str(err)) from None
    return {"optimizer": ph.optimizer, "steps": ph.steps, "lr": ph.lr}


def _is(value, kind) -> bool:
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    raise AssertionError(kind)


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ---------------------------------------------------------------------------------------------
# One cell (runs in a worker process: top-level, plain-data in and out)

def run_cell(cell: dict) -> dict:
    """Train one (target, depth, method, seed) cell; never raises: a failure is a row.

    ``cell`` is one entry of :meth:`SweepConfig.cells`. Returns a row with ``ROW_FIELDS``.
    """
    row = {k: cell[k] for k in ("target", "depth", "method", "seed")}
    start = time.perf_counter()
    try:
        from ..training.trainer import Phase, fit

        res = fit(cell["target"], depth=cell["depth"], seeds=[cell["seed"]], method=cell["method"],
                  interval=tuple(cell["interval"]), points=cell["points"] or 500,
                  sparse=cell["sparse"], phase1=Phase(**cell["phase1"]),
                  phase2=Phase(**cell["phase2"]), optimum=False, threads=1,
                  parameterization=cell["parameterization"])
        mse, train_mse = float(res.mse[0]), float(res.train_mse[0])
        ok = math.isfinite(mse)
        row.update(mse=mse, train_mse=train_mse, pieces=int(res.pieces[0]),
                   status="ok" if ok else "diverged",
                   error="" if ok else "training diverged (non-finite MSE)")
    except Exception as err:  # noqa: BLE001 - one cell's failure must not stop the sweep
        row.update(mse=None, train_mse=None, pieces=None, status="failed", error=_one_line(err))
    row["seconds"] = round(time.perf_counter() - start, 3)
    return {k: row[k] for k in ROW_FIELDS}


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    msg = f"{type(err).__name__}: {text[0]}" if text else type(err).__name__
    return msg if len(msg) <= 300 else msg[:297] + "..."


def _failed_row(cell: dict, err: BaseException) -> dict:
    row = {k: cell[k] for k in ("target", "depth", "method", "seed")}
    row.update(mse=None, train_mse=None, pieces=None, seconds=None, status="failed",
               error=_one_line(err))
    return {k: row[k] for k in ROW_FIELDS}


# ---------------------------------------------------------------------------------------------
# Running

@dataclass
class SweepResult:
    """Rows (one per cell, grid order), the per-(target, depth, method) summary and the files."""

    config: SweepConfig
    rows: list
    summary: list
    files: dict
    mode: str
    workers: int | None
    seconds: float

    @property
    def failed(self) -> list:
        return [r for r in self.rows if r["status"] == "failed"]

    def to_dict(self) -> dict:
        return {"config": self.config.to_dict(), "mode": self.mode, "workers": self.workers,
                "seconds": round(self.seconds, 3), "cells": len(self.rows),
                "n_ok": sum(r["status"] == "ok" for r in self.rows),
                "n_diverged": sum(r["status"] == "diverged" for r in self.rows),
                "n_failed": len(self.failed),
                "files": {k: str(v) for k, v in self.files.items()},
                "rows": self.rows, "summary": self.summary}

    def report(self) -> str:
        """A short text report for the command line (the library itself never prints)."""
        d = self.to_dict()
        where = (f"{self.workers} local worker(s)" if self.mode == "local"
                 else "this process" if self.mode == "inline" else "Dask cluster")
        lines = [f"{d['cells']} cells on {where} in {d['seconds']:.1f} s: {d['n_ok']} ok, "
                 f"{d['n_diverged']} diverged, {d['n_failed']} failed"]
        for r in self.failed:
            lines.append(f"  failed: target={r['target']!r} depth={r['depth']} "
                         f"method={r['method']} seed={r['seed']}: {r['error']}")
        lines.append(f"{'target':<16} {'depth':>5} {'method':<15} {'ok':>4} {'mse mean':>10} "
                     f"{'mse min':>10}")
        for s in self.summary:
            lines.append(f"{s['target'][:16]:<16} {s['depth']:>5} {s['method']:<15} "
                         f"{s['n_ok']:>4} {_fmt(s['mse_mean']):>10} {_fmt(s['mse_min']):>10}")
        lines += [f"{name:<16} {path}" for name, path in self.files.items()]
        return "\n".join(lines)


def run_sweep(config, out_dir, workers: int | None = None, scheduler=None,
              progress: bool = False, force: bool = False) -> SweepResult:
    """Run every cell of ``config`` (a SweepConfig or a TOML path) and write the tables and plot.

    Local (default): a spawn process pool of ``workers`` processes (default ``os.cpu_count()``),
    one torch thread each; ``workers=0`` runs the cells one by one in this process. Dask: give
    ``scheduler`` as an address ("tcp://host:8786"), a ``dask.distributed`` Client, or a cluster
    object with ``scheduler_address``; the workers need relu-regions installed. ``out_dir`` must
    be empty or missing unless ``force``. Rows come back in grid order, whatever the scheduling.
    """
    if not isinstance(config, SweepConfig):
        config = load_config(config)
    out = _check_out_dir(out_dir, force)
    if scheduler is not None and workers is not None:
        raise InputError("workers applies to local runs; a Dask cluster's workers are set by "
                         "the cluster")
    if workers is not None and not (_is(workers, "int") and workers >= 0):
        raise InputError(f"workers must be a whole number >= 0, got {workers!r}")
    cells = config.cells()
    bar = _bar(len(cells), progress)
    start = time.perf_counter()
    try:
        if scheduler is not None:
            mode, n_workers = "dask", None
            rows = _run_dask(cells, scheduler, bar)
        elif workers == 0:
            mode, n_workers = "inline", 0
            rows = []
            for cell in cells:
                rows.append(run_cell(cell))
                if bar:
                    bar.update(1)
        else:
            mode, n_workers = "local", min(workers or os.cpu_count() or 1, len(cells))
            rows = _run_local(cells, n_workers, bar)
    finally:
        if bar:
            bar.close()
    seconds = time.perf_counter() - start
    summary = summarize(rows, config)
    result = SweepResult(config=config, rows=rows, summary=summary, files={}, mode=mode,
                         workers=n_workers, seconds=seconds)
    result.files = write_results(result, out)
    return result


def _run_local(cells, n_workers, bar) -> list:
    """Cells in spawn process pools; rows in grid order.

    A cell's exception comes back as a row from run_cell. A worker that dies (segfault, out of
    memory) breaks the whole pool and every unfinished cell with it, so those are run again in a
    fresh pool; a round that finishes nothing is rerun with one worker, where the cells run in
    order and the first unfinished one is the cell that killed it: that cell is reported as
    failed, the rest go on. If workers never finish anything (they cannot start), every cell is
    reported failed after a few tries.
    """
    rows = [None] * len(cells)
    todo = list(range(len(cells)))
    width, ever_done, culprits = n_workers, False, 0
    # One BLAS/OpenMP thread per worker (read by the children at start-up): n workers on n cores.
    with _env(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1"):
        while todo:
            done, broken = _pool_round(cells, todo, width, rows, bar)
            ever_done = ever_done or bool(done)
            dead = cf.process.BrokenProcessPool
            for i in [i for i, e in broken.items() if not isinstance(e, dead)]:
                rows[i] = _failed_row(cells[i], broken.pop(i))  # e.g. an unpicklable argument
                if bar:
                    bar.update(1)
            if not broken:
                break
            todo = sorted(broken)
            if width > 1:
                width = n_workers if done else 1
                continue
            culprits += 1
            if not ever_done and culprits >= 3:  # the workers cannot start at all
                for i in todo:
                    rows[i] = {**_failed_row(cells[i], broken[i]), "error": BROKEN_POOL}
                    if bar:
                        bar.update(1)
                break
            i = todo.pop(0)  # one worker, cells in order: the first unfinished one killed it
            rows[i] = {**_failed_row(cells[i], broken[i]),
                       "error": DIED if ever_done else BROKEN_POOL}
            if bar:
                bar.update(1)
            width = n_workers
    return rows


def _pool_round(cells, todo, width, rows, bar):
    """Submit ``todo`` to a fresh pool of ``width`` workers; fill rows; return (done, errors)."""
    done, broken = [], {}
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=min(width, len(todo)), mp_context=ctx) as pool:
        futures = {pool.submit(run_cell, cells[i]): i for i in todo}
        for fut in cf.as_completed(futures):
            i = futures[fut]
            try:
                rows[i] = fut.result()
            except Exception as err:  # noqa: BLE001 - BrokenProcessPool, pickling, ...
                broken[i] = err
                continue
            done.append(i)
            if bar:
                bar.update(1)
    return done, broken


def _run_dask(cells, scheduler, bar) -> list:
    try:
        from dask.distributed import Client, as_completed
    except ImportError:
        raise InputError("Dask mode needs dask[distributed]: pip install 'relu-regions[sweep]'") \
            from None
    own = False
    if isinstance(scheduler, Client):
        client = scheduler
    else:
        address = getattr(scheduler, "scheduler_address", scheduler)
        if not isinstance(address, str) or not address.strip():
            raise InputError(f"scheduler must be an address like tcp://host:8786, got "
                             f"{_show(scheduler)}")
        try:
            client = Client(address.strip(), timeout="20s")
        except (OSError, TimeoutError, ValueError) as err:
            raise InputError(f"cannot connect to the Dask scheduler {address.strip()!r}: "
                             f"{_one_line(err)}") from None
        own = True
    try:
        rows = [None] * len(cells)
        # pure=False: every cell is its own task even if two cells' arguments were equal.
        futures = client.map(run_cell, cells, pure=False)
        index = {f.key: i for i, f in enumerate(futures)}
        for fut in as_completed(futures):
            i = index[fut.key]
            try:
                rows[i] = fut.result()
            except Exception as err:  # noqa: BLE001 - e.g. KilledWorker: this cell only
                rows[i] = _failed_row(cells[i], err)
            if bar:
                bar.update(1)
        return rows
    finally:
        if own:
            client.close()


@contextlib.contextmanager
def _env(**values):
    """Set environment variables that are not already set; restore afterwards."""
    added = [k for k in values if k not in os.environ]
    for k in added:
        os.environ[k] = values[k]
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def _bar(total, enabled):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="sweep", unit="cell")


def _check_out_dir(out_dir, force) -> Path:
    try:
        out = Path(os.fspath(out_dir))
    except TypeError:
        raise InputError(f"out_dir {out_dir!r} must be a path") from None
    if out.exists() and not out.is_dir():
        raise InputError(f"output path {str(out)!r} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise InputError(f"output directory {str(out)!r} is not empty; choose another or use "
                         "--force to overwrite")
    return out


# ---------------------------------------------------------------------------------------------
# Tables and plot

def summarize(rows, config: SweepConfig) -> list:
    """Per (target, depth, method), grid order: counts and mean/min/median of the finite MSEs."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["target"], r["depth"], r["method"]), []).append(r)
    out = []
    for t in config.targets:
        for d in config.depths:
            for m in config.methods:
                g = groups.get((t, d, m), [])
                ok = [r for r in g if r["status"] == "ok"]
                mse = np.array([r["mse"] for r in ok], dtype=float)
                out.append({
                    "target": t, "depth": d, "method": m, "n_cells": len(g), "n_ok": len(ok),
                    "n_diverged": sum(r["status"] == "diverged" for r in g),
                    "n_failed": sum(r["status"] == "failed" for r in g),
                    "mse_mean": float(mse.mean()) if ok else None,
                    "mse_min": float(mse.min()) if ok else None,
                    "mse_median": float(np.median(mse)) if ok else None,
                    "train_mse_mean": (float(np.mean([r["train_mse"] for r in ok]))
                                       if ok else None),
                    "pieces_mean": float(np.mean([r["pieces"] for r in ok])) if ok else None,
                })
    return out


def write_results(result: SweepResult, out: Path) -> dict:
    """results.csv, results.json, summary.csv, sweep.png under ``out`` (each written atomically)."""
    out.mkdir(parents=True, exist_ok=True)
    files = {name: out / name for name in FILES}
    atomic_write_text(files["results.csv"], _csv(result.rows, ROW_FIELDS))
    atomic_write_text(files["summary.csv"], _csv(result.summary, SUMMARY_FIELDS))
    doc = {**result.to_dict(), "files": {k: str(v) for k, v in files.items()}}
    atomic_write_text(files["results.json"], json.dumps(_json_safe(doc), indent=1) + "\n")
    plot_sweep(result.summary, result.config, files["sweep.png"])
    return files


def _csv(rows, fields) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if r[k] is None else repr(r[k]) if isinstance(r[k], float) else r[k]
                    for k in fields})
    return buf.getvalue()


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3g}"


def plot_sweep(summary, config: SweepConfig, path) -> Path:
    """Mean MSE (finite, ok cells) against depth, one line per method, one panel per target."""
    from ..plots import save_figure, subplots

    n = len(config.targets)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for k, target in enumerate(config.targets):
        ax = axes[k // cols][k % cols]
        drawn = False
        for method in config.methods:
            pts = [(s["depth"], s["mse_mean"]) for s in summary
                   if s["target"] == target and s["method"] == method
                   and s["mse_mean"] is not None and s["mse_mean"] > 0]
            if pts:
                ax.plot(*zip(*pts), "o-", label=method, ms=4)
                drawn = True
        if drawn:
            ax.set_yscale("log")
        else:
            ax.text(0.5, 0.5, "no successful cells", ha="center", va="center",
                    transform=ax.transAxes)
        ax.set_title(target if len(target) <= 40 else target[:37] + "...", fontsize=10)
        ax.set_xlabel("depth")
        ax.set_xticks(list(config.depths))
        ax.set_ylabel("mean MSE")
        ax.grid(True, which="both", alpha=0.3)
    for k in range(n, rows * cols):
        axes[k // cols][k % cols].axis("off")
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax in axes.flat:
        h, lab = ax.get_legend_handles_labels()
        if len(lab) > len(labels):
            handles, labels = h, lab
    if labels:
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), fontsize=8,
                   bbox_to_anchor=(0.5, -0.02 - 0.04 * math.ceil(len(labels) / 5)))
    fig.suptitle(f"sweep: {len(config.seeds)} seed(s) per point, mean MSE of ok cells",
                 fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path)
