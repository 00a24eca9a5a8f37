"""``relu-regions track``: exact region counts along random segments (and planes) through data
points, for every checkpoint of a training run; the table, the record and two figures."""

from __future__ import annotations

import argparse
import csv
import glob
import io
import re
import time
from pathlib import Path

import numpy as np

from .. import checkpoint
from ..analysis import plane, regions
from ..analysis.tracking import RegionTracker, track_checkpoints
from ..errors import InputError, read_user_file
from ..nets.reader import lower
from ..training.progress import Progress
from ..training.run_folder import check_out_dir
from ..validation import check_float, check_int, is_int, plural
from .common import finite_numbers, progress_mode, say_if_compiling

MAX_POINTS_CSV_BYTES = 256 * 2**20
FILES = ("track.csv", "track.json", "counts.png", "density.png")


def run(args: argparse.Namespace) -> dict:
    length = check_float(args.length, "--length", low=0.0, low_open=True)
    lines = check_int(args.lines, "--lines", low=0)
    planes = check_int(args.planes, "--planes", low=0)
    check_int(args.seed, "--seed", low=0)
    check_int(args.bins, "--bins", low=1)
    if lines == 0 and planes == 0:
        raise InputError("--lines 0 and --planes 0 count nothing: give --lines N or --planes N")
    if args.scheduler is not None and args.workers is not None:
        raise InputError("--workers runs local processes; a Dask cluster's workers are set by "
                         "the cluster: drop --workers")
    if args.workers is not None:
        check_int(args.workers, "--workers", low=0)
    out = check_out_dir(args.out, args.force, "--out", "keeps other files, replaces ours")
    paths = sorted(Path(p) for p in glob.glob(args.checkpoints) if Path(p).is_file())
    if not paths:
        raise InputError(f"--checkpoints {args.checkpoints!r} matches no files; quote the "
                         f"pattern (e.g. 'ckpts/*.pt') so that the shell does not expand it")
    tasks, n_in = checkpoint_tasks(paths)
    points = read_points(args.data, n_in)
    for option, n in (("--lines", lines), ("--planes", planes)):
        if n > len(points):
            raise InputError(f"{option} {n} is more than the {len(points)} points of "
                             f"{args.data}: one probe per point, at most {len(points)}")
    tracker = RegionTracker.through_points(points, length, n=lines, seed=args.seed,
                                           planes=planes)
    say_if_compiling(regions)
    if planes:
        say_if_compiling(plane)
    start = time.perf_counter()
    workers = args.workers if args.workers is not None or args.scheduler else 0
    with Progress(len(tasks), 0, progress_mode(args), desc="tracking",
                  unit="checkpoint") as progress:
        mode, n_workers = track_checkpoints(
            tracker, tasks, workers=workers, scheduler=args.scheduler,
            bar=progress if progress.tick is not None else None)
    seconds = time.perf_counter() - start
    from ..plots import plot_density_profile, plot_tracked_counts  # matplotlib: when writing

    out.mkdir(parents=True, exist_ok=True)
    files = {name: out / name for name in FILES}
    tracker.to_csv(files["track.csv"])
    tracker.to_json(files["track.json"])
    plot_tracked_counts(tracker, files["counts.png"])
    if lines:
        plot_density_profile(tracker, files["density.png"], bins=args.bins)
    else:
        del files["density.png"]  # a density profile is along segments
    return {"checkpoints": len(tasks), "segments": lines, "planes": planes, "length": length,
            "seed": args.seed, "steps": tracker.steps, "mode": mode, "workers": n_workers,
            "seconds": round(seconds, 3), "files": {k: str(v) for k, v in files.items()},
            "per_step": per_step(tracker)}


def checkpoint_tasks(paths: list[Path]) -> tuple[list[dict], int]:
    """(one task per checkpoint, sorted by step then name; the models' input size).

    A checkpoint's step: the ``"step"`` of its metadata (``checkpoint.save(model, path,
    extra={"step": n})``), else the last number in its file name (``ckpt-00500.pt``: 500); if
    some file has neither, every file's step is its position in name order (0, 1, ...)."""
    found, sizes = [], {}
    for path in paths:
        model, config = checkpoint.load(path)
        sizes[path.name] = lower(model.eval()).layers[0][0].shape[1]
        step = config.get("step")
        if step is not None and not (is_int(step) and step >= 0):
            raise InputError(f"{path}: its metadata step={step!r} is not an integer >= 0")
        if step is None:
            numbers = re.findall(r"\d+", path.stem)
            step = int(numbers[-1]) if numbers else None
        found.append(step)
    if len(set(sizes.values())) > 1:
        raise InputError(f"the checkpoints take different input sizes: {sizes}; track one "
                         f"model's checkpoints at a time")
    if any(step is None for step in found):
        found = list(range(len(paths)))
    tasks = [{"path": str(p), "step": s, "tags": {"checkpoint": p.name}}
             for s, p in sorted(zip(found, paths, strict=True))]
    return tasks, next(iter(sizes.values()))


def read_points(path: Path | str, n_in: int) -> np.ndarray:
    """The data points of a CSV file: rows of ``n_in`` numbers (the model's inputs), or of
    ``n_in + 1`` whose last column (a target or label, as in ``train --data``) is dropped. A
    header row and '#' or blank lines are skipped."""
    p, text = read_user_file(path, "CSV file", MAX_POINTS_CSV_BYTES)
    try:
        rows = [[c.strip() for c in r] for r in csv.reader(io.StringIO(text))]
    except csv.Error as err:
        raise InputError(f"CSV file {str(p)!r} cannot be read: {err}") from None
    rows = [(i, r) for i, r in enumerate(rows, start=1) if any(r) and not r[0].startswith("#")]
    if rows and not finite_numbers(rows[0][1]):
        rows = rows[1:]  # a header
    if not rows:
        raise InputError(f"CSV file {str(p)!r} has no data rows")
    width = len(rows[0][1])
    if width not in (n_in, n_in + 1):
        raise InputError(f"CSV file {str(p)!r} has {width} columns; the model takes {n_in} "
                         f"inputs: give {n_in} columns (the points) or {n_in + 1} (the points "
                         f"and a last column, e.g. the label, which is ignored)")
    points = []
    for line, row in rows:
        values = finite_numbers(row)
        if values is None or len(values) != width:
            raise InputError(f"CSV file {str(p)!r} line {line}: need {width} finite numbers "
                             f"like the first row, got {','.join(row)[:80]!r}")
        points.append(values[:n_in])
    return np.array(points, dtype=np.float64)


def per_step(tracker: RegionTracker) -> list[dict]:
    """Per checkpoint and probe kind: the medians over the probes."""
    out = []
    rows = tracker.rows()
    keys = dict.fromkeys((r["step"], r["checkpoint"], r["kind"]) for r in rows)
    for step, name, kind in keys:
        mine = [r for r in rows if (r["step"], r["checkpoint"], r["kind"]) == (step, name, kind)]
        summary = {"step": step, "checkpoint": name, "kind": kind, "probes": len(mine)}
        for column in ("activation_regions", "linear_pieces", "decision", "density"):
            summary[f"{column}_median"] = float(np.median([r[column] for r in mine]))
        out.append(summary)
    return out




def show(out: dict) -> str:
    where = {"inline": "this process", "local": f"{out['workers']} local process(es)",
             "dask": "a Dask cluster"}[out["mode"]]
    probes = [plural(out["segments"], "segment")] + (
        [plural(out["planes"], "plane")] if out["planes"] else [])
    lines = [f"{plural(out['checkpoints'], 'checkpoint')} x {' and '.join(probes)} of size "
             f"{out['length']:g} through data points, on {where} in {out['seconds']:.1f} s",
             f"{'step':>8} {'kind':<8} {'regions':>9} {'pieces':>9} {'decision':>9} "
             f"{'density':>10}  (medians over the probes)"]
    for s in out["per_step"]:
        lines.append(f"{s['step']:>8} {s['kind']:<8} {s['activation_regions_median']:>9g} "
                     f"{s['linear_pieces_median']:>9g} {s['decision_median']:>9.4g} "
                     f"{s['density_median']:>10.4g}")
    lines += [f"{name:<12} {path}" for name, path in out["files"].items()]
    return "\n".join(lines)
