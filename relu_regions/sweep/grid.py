"""Sweeps: a grid of fits over any FitConfig fields x seeds, run in parallel, in one table.

A sweep is described by a TOML file (docs/sweeps.md). Every ``relu_regions.FitConfig`` field
may be given under its own name; a list makes it an axis of the grid (``shape = ["convex",
"dc"]``, ``starts = [1, 2]``, ``interval = [[0, 1], [-1, 1]]``). The plural keys ``targets``,
``depths``, ``methods`` are the old spellings of the first three axes::

    targets = ["x**3", "sin(3*x)"]
    depths = [3, 4]
    methods = ["kaiming", "pretrain-thm31"]
    seeds = 2                      # a count (seeds 0..N-1) or a list [0, 7, 9]
    interval = [0.0, 1.0]
    points = 200                   # or sparse = 10 (random train/test points), not both
    phase1 = "lm:20"               # OPTIMIZER:STEPS[:LR], or a table {optimizer, steps, lr}
    phase2 = "lm:40"
    parameterization = "sp"        # or "gmp"

One *cell* is (grid point, seed): it trains one seed with ``fit(seeds=[s])``, so cells are
independent and a cell's numbers do not depend on how the grid is scheduled (a seed trained
alone equals the same seed inside a batch to ~1e-11; the optimizers keep every seed's update its
own). Cells run in a local process pool (``concurrent.futures``, spawn, one torch thread per
worker) or on a Dask cluster (``scheduler="tcp://host:8786"``); a cell that raises becomes a row
with ``status="failed"`` and the error, and the rest of the sweep goes on.

Output, written atomically and only under ``out_dir``: ``results.csv`` / ``results.json`` (one
row per cell, in grid order, a column per varied field), ``summary.csv`` (per grid point) and
``sweep.png``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write_text
from ..parallel import DIED as WORKER_DIED
from ..parallel import NO_START, run_tasks
from ..validation import json_safe, one_line
from .config import SweepConfig, load_config

# a failed cell's error when its worker process died, or the workers never started
DIED = ("BrokenProcessPool: the worker process died while running this cell (a crash or out "
        "of memory)")
BROKEN_POOL = ("BrokenProcessPool: a worker process died; if every cell failed so, the workers "
               "could not start: call run_sweep from a script file under "
               "`if __name__ == '__main__':` (spawn re-imports it), or use workers=0")

ROW_FIELDS = ("target", "depth", "method", "seed", "mse", "train_mse", "pieces", "seconds",
              "trained", "status", "error")
SUMMARY_FIELDS = ("target", "depth", "method", "n_cells", "n_ok", "n_diverged", "n_failed",
                  "mse_mean", "mse_min", "mse_median", "train_mse_mean", "pieces_mean")
FILES = ("results.csv", "results.json", "summary.csv", "sweep.png")


# ---------------------------------------------------------------------------------------------
# One cell (runs in a worker process: top-level, plain-data in and out)

def run_cell(cell: dict) -> dict:
    """Train one cell (one grid point, one seed); never raises: a failure is a row.

    ``cell`` is one entry of :meth:`SweepConfig.cells`: FitConfig fields, ``seed`` and
    ``varied`` (the names of the grid's other axes). Returns a row with :func:`row_fields`.
    """
    row = _row_key(cell)
    start = time.perf_counter()
    try:
        from ..training import fitting
        from ..training.auto import describe_training
        from ..training.config import FitConfig

        settings = {k: v for k, v in cell.items() if k not in ("seed", "varied")}
        config = FitConfig.from_dict(settings).replace(seeds=[cell["seed"]], optimum=False,
                                                       threads=1)
        res = fitting.fit(config=config)
        mse, train_mse = float(res.mse[0]), float(res.train_mse[0])
        ok = math.isfinite(mse)
        # starts and growth as fit chose them: a setting that changed nothing shows here
        row.update(mse=mse, train_mse=train_mse, pieces=int(res.pieces[0]),
                   trained=describe_training(res.training, res.depth, points=False),
                   status="ok" if ok else "diverged",
                   error="" if ok else "training diverged (non-finite MSE)")
    except Exception as err:  # one cell's failure must not stop the sweep
        return {**_failed_row(cell, err), "seconds": round(time.perf_counter() - start, 3)}
    row["seconds"] = round(time.perf_counter() - start, 3)
    return {k: row[k] for k in row_fields(cell.get("varied", ()))}


def row_fields(varied: Sequence[str] = ()) -> tuple:
    """results.csv's columns: ROW_FIELDS with a column per varied field after ``method``."""
    return ROW_FIELDS[:3] + tuple(varied) + ROW_FIELDS[3:]


def _row_key(cell) -> dict:
    """The cell's grid coordinates as table values (a phase as its 'lm:100:0.001' spec)."""
    key = {k: cell[k] for k in ("target", "depth", "method", "seed")}
    for name in cell.get("varied", ()):
        v = cell[name]
        key[name] = (f"{v['optimizer']}:{v['steps']}:{v['lr']!r}" if isinstance(v, dict)
                     else list(v) if isinstance(v, tuple) else v)
    return key


def _failed_row(cell: dict, err: BaseException | str) -> dict:
    """The row of a cell that failed with ``err`` (an exception, or its one-line text)."""
    row = _row_key(cell)
    row.update(mse=None, train_mse=None, pieces=None, seconds=None, trained="",
               status="failed", error=err if isinstance(err, str) else one_line(err))
    return {k: row[k] for k in row_fields(cell.get("varied", ()))}


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
            extra = "".join(f" {k}={r[k]}" for k in self.config.varied)
            lines.append(f"  failed: target={r['target']!r} depth={r['depth']} "
                         f"method={r['method']}{extra} seed={r['seed']}: {r['error']}")
        lines.append(f"{'target':<16} {'depth':>5} {'method':<15} {'ok':>4} {'mse mean':>10} "
                     f"{'mse min':>10}")
        for s in self.summary:
            extra = "".join(f"  {k}={s[k]}" for k in self.config.varied)
            lines.append(f"{s['target'][:16]:<16} {s['depth']:>5} {s['method']:<15} "
                         f"{s['n_ok']:>4} {_fmt(s['mse_mean']):>10} {_fmt(s['mse_min']):>10}"
                         + extra)
        lines += [f"{name:<16} {path}" for name, path in self.files.items()]
        return "\n".join(lines)


def run_sweep(config: SweepConfig | Path | str, out_dir: Path | str, workers: int | None = None,
              scheduler: Any = None,
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
    cells = config.cells()
    bar = _bar(len(cells), progress)
    start = time.perf_counter()
    try:
        rows, mode, n_workers = run_tasks(run_cell, cells, _failed_row, workers=workers,
                                          scheduler=scheduler, bar=bar,
                                          texts={WORKER_DIED: DIED, NO_START: BROKEN_POOL})
    finally:
        if bar:
            bar.close()
    seconds = time.perf_counter() - start
    summary = summarize(rows, config)
    result = SweepResult(config=config, rows=rows, summary=summary, files={}, mode=mode,
                         workers=n_workers, seconds=seconds)
    result.files = write_results(result, out)
    return result


def _bar(total, enabled):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="sweep", unit="cell")


def _check_out_dir(out_dir, force) -> Path:
    from ..training.run_folder import check_out_dir

    return check_out_dir(out_dir, force, "output directory", "keeps other files, replaces ours")


# ---------------------------------------------------------------------------------------------
# Tables and plot

def summarize(rows: list[dict], config: SweepConfig) -> list:
    """Per grid point (target, depth, method, other axes), grid order: counts and
    mean/min/median of the finite MSEs."""
    keys = ("target", "depth", "method", *config.varied)
    groups: dict = {}
    for r in rows:
        groups.setdefault(repr([r[k] for k in keys]), []).append(r)
    out, done = [], set()
    for cell in config.cells():
        key = _row_key(cell)
        at = repr([key[k] for k in keys])
        if at in done:
            continue
        done.add(at)
        g = groups.get(at, [])
        ok = [r for r in g if r["status"] == "ok"]
        mse = np.array([r["mse"] for r in ok], dtype=float)
        out.append({
            **{k: key[k] for k in keys}, "n_cells": len(g), "n_ok": len(ok),
            "n_diverged": sum(r["status"] == "diverged" for r in g),
            "n_failed": sum(r["status"] == "failed" for r in g),
            "mse_mean": float(mse.mean()) if ok else None,
            "mse_min": float(mse.min()) if ok else None,
            "mse_median": float(np.median(mse)) if ok else None,
            "train_mse_mean": float(np.mean([r["train_mse"] for r in ok])) if ok else None,
            "pieces_mean": float(np.mean([r["pieces"] for r in ok])) if ok else None,
        })
    return out


def write_results(result: SweepResult, out: Path) -> dict:
    """results.csv, results.json, summary.csv, sweep.png under ``out`` (each written atomically)."""
    out.mkdir(parents=True, exist_ok=True)
    files = {name: out / name for name in FILES}
    varied = tuple(result.config.varied)
    atomic_write_text(files["results.csv"], _csv(result.rows, row_fields(varied)))
    atomic_write_text(files["summary.csv"],
                      _csv(result.summary, SUMMARY_FIELDS[:3] + varied + SUMMARY_FIELDS[3:]))
    doc = {**result.to_dict(), "files": {k: str(v) for k, v in files.items()}}
    atomic_write_text(files["results.json"], json.dumps(json_safe(doc), indent=1) + "\n")
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


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3g}"


def _line_label(s, config) -> str:
    """One line per method and value of the other axes: "pretrain-thm31, shape=dc"."""
    return ", ".join([s["method"], *(f"{k}={s[k]}" for k in config.varied)])


def plot_sweep(summary: list[dict], config: SweepConfig, path: Path | str) -> Path:
    """Mean MSE (finite, ok cells) against depth, one line per method, one panel per target."""
    from ..plots import save_figure, subplots

    n = len(config.targets)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for k, target in enumerate(config.targets):
        ax = axes[k // cols][k % cols]
        drawn = False
        for label in dict.fromkeys(_line_label(s, config) for s in summary):
            pts = [(s["depth"], s["mse_mean"]) for s in summary
                   if s["target"] == target and _line_label(s, config) == label
                   and s["mse_mean"] is not None and s["mse_mean"] > 0]
            if pts:
                ax.plot(*zip(*pts, strict=True), "o-", label=label, ms=4)
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
