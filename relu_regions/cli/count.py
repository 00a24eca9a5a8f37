"""``relu-regions count``: the construction (--depth) or a saved model (--checkpoint), counted
exactly on an interval, a segment or a plane; the points of --through read from text."""

from __future__ import annotations

import argparse
import csv
import io
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from .. import checkpoint
from ..analysis import plane, regions
from ..analysis.pieces import PIECE_COLUMNS, pieces_rows, pieces_table, write_pieces_csv
from ..analysis.plane import count_regions_2d, count_regions_plane
from ..analysis.regions import count_regions, count_regions_segment
from ..analysis.sampling import sample_regions
from ..analysis.tiles import check_tiles, parse_memory
from ..errors import InputError, read_user_file
from ..nets.composite import random_peaks
from ..nets.parametrize import ConstructionNet
from ..training.config import MAX_DEPTH
from ..validation import check_int, check_point, plural
from .common import finite_numbers, say_if_compiling

MAX_COUNT_DEPTH = MAX_DEPTH  # one limit for count, train and sweep (training.config)
MAX_JSON_PIECES = 1_000_000  # a JSON list of rows costs ~0.5 KB a row in Python
MAX_POINTS_CSV_BYTES = 256 * 2**20


def run(args: argparse.Namespace) -> dict:
    check_int(args.seed, "--seed", low=0)
    if args.plot:
        from ..plots import check_figure_path  # matplotlib (~0.6 s): only for --plot

        check_figure_path(args.plot, "--plot")
    for option, path in (("--plot", args.plot), ("--pieces", args.pieces)):
        if path is not None and Path(path).is_dir():
            name = "pieces.csv" if option == "--pieces" else "plot.png"
            raise InputError(f"{option} {path} is a folder; give a file name, e.g. "
                             f"{Path(path) / name}")
    info = {}
    if args.checkpoint:
        if args.depth is not None or args.a is not None:
            raise InputError("--checkpoint counts a saved model: drop --depth/--a")
        model, config = checkpoint.load(args.checkpoint)
        n_in = next(m for m in model.modules() if isinstance(m, torch.nn.Linear)).in_features
        saved = config.get("model", {}).get("interval") or config.get("interval")
        if args.segment_from is None and (n_in == 2 or args.box or args.through):
            return _count_plane(args, model, n_in, saved, {"checkpoint": str(args.checkpoint)})
        if n_in > 1 and args.segment_from is None:
            raise InputError(f"the model takes {n_in} inputs; count it on the plane through "
                             f"three points with --through P0 P1 P2, or along a segment with "
                             f"--from X0 --to X1 (e.g. --from={','.join(['-1'] * n_in)} "
                             f"--to {','.join(['1'] * n_in)})")
        saved = saved if n_in == 1 else None  # a 2D run saves one interval per input
        lo, hi = args.interval or (tuple(saved) if saved else (0.0, 1.0))
        info["checkpoint"] = str(args.checkpoint)
    else:
        if args.depth is None:
            raise InputError("give --depth D (count the construction) or --checkpoint PATH")
        if args.box or args.through:
            raise InputError("--box and --through count a saved model with 2 or more inputs "
                             "(--checkpoint); the construction has one input")
        if not 1 <= args.depth <= MAX_COUNT_DEPTH:
            raise InputError(f"--depth must be between 1 and {MAX_COUNT_DEPTH}, got {args.depth}")
        n_peaks = args.depth + 1 if args.thm31 else args.depth
        # the default: the trainer's draw (uniform on PEAK_RANGE) for one seed
        peaks = args.a if args.a is not None else random_peaks([args.seed], (n_peaks,))[0].tolist()
        if len(peaks) not in (1, args.depth, n_peaks):
            raise InputError(f"--a needs 1 or {args.depth} values (one per hidden layer), "
                             f"got {len(peaks)}")
        lo, hi, n_in = *(args.interval or (0.0, 1.0)), 1
        model = ConstructionNet.build(args.depth, peaks=peaks, thm31=args.thm31,
                                      interval=(lo, hi), concave=args.concave)
        info.update(depth=args.depth, thm31=args.thm31,
                    peaks=[round(v, 6) for v in model.construction.peaks().tolist()])
    if _tiling(args):
        raise InputError("--max-memory, --workers, --scheduler and --tiles tile a plane count "
                         "(--box or --through, or a 2-input checkpoint); a count along an "
                         "interval or a segment is not tiled: drop them")
    start = time.perf_counter()
    if args.segment_from is not None or args.segment_to is not None:
        if args.segment_from is None or args.segment_to is None:
            raise InputError("a segment needs both --from and --to")
        if args.sample is not None or args.plot:
            raise InputError("--sample and --plot work on an interval of a 1D input, not on a "
                             "segment")
        if args.interval is not None:
            raise InputError("--interval is for a 1D input; a segment is given by --from and "
                             "--to alone")
        segment = (check_point(args.segment_from, n_in, "--from"),
                   check_point(args.segment_to, n_in, "--to"))
        say_if_compiling(regions)
        result = count_regions_segment(model, *segment)
        info["segment"] = {"from": segment[0].tolist(), "to": segment[1].tolist()}
    else:
        segment = (None, None)
        say_if_compiling(regions)
        result = count_regions(model, lo, hi)
    seconds = time.perf_counter() - start
    out = {**info, **result.to_dict(), "seconds": round(seconds, 4)}
    if result.outputs == 1:  # the shape of one output's graph
        out["convexity"] = result.convexity().to_dict()
    if args.pieces:
        if args.json and result.linear_pieces > MAX_JSON_PIECES:
            raise InputError(f"--json lists at most {MAX_JSON_PIECES} pieces and this count has "
                             f"{result.linear_pieces}; drop --json to write only {args.pieces}")
        table = pieces_table(result, model, *segment)
        if args.json:
            out["pieces"] = pieces_rows(table)
        out["pieces_file"] = str(write_pieces_csv(args.pieces, table))
    if args.sample is not None:
        out["sampled"] = sample_regions(model, lo, hi, samples=args.sample).to_dict()
    if args.plot:
        from ..plots import plot_regions

        out["plot"] = str(plot_regions(model, lo, hi, args.plot, count=result))
    return out


def _count_plane(args, model, n_in, saved, info) -> dict:
    """count on a plane: the box of a 2-input model, or the plane through three points."""
    if args.interval or args.sample is not None or args.pieces:
        raise InputError("--interval, --sample and --pieces are for 1D inputs; a plane takes "
                         "--box")
    tiling = _tiling_options(args)
    if args.through:
        points = parse_points(args.through, n_in, args.data)
        start = time.perf_counter()
        say_if_compiling(plane)
        result = count_regions_plane(model, *points, extent=args.box, **tiling)
        marks = result.plane["points"]
    else:
        if n_in != 2:
            raise InputError(f"--box counts a model with 2 inputs; this one takes {n_in}: add "
                             f"--through P0 P1 P2")
        box = args.box
        if box is None and saved and len(saved) == 2 and all(len(b) == 2 for b in saved):
            box = [saved[0][0], saved[0][1], saved[1][0], saved[1][1]]  # its training domain
        start = time.perf_counter()
        say_if_compiling(plane)
        result = count_regions_2d(model, box if box is not None else (0.0, 1.0, 0.0, 1.0),
                                  **tiling)
        marks = None
    out = {**info, **result.to_dict(), "seconds": round(time.perf_counter() - start, 4)}
    if args.plot:
        from ..plots import plot_region_map

        out["plot"] = str(plot_region_map(result, args.plot, points=marks))
    return out


def _tiling(args) -> bool:
    return any(getattr(args, k) is not None for k in ("max_memory", "workers", "scheduler",
                                                       "tiles"))


def _tiling_options(args) -> dict:
    """count_regions_2d / count_regions_plane's tiling keywords from the options, checked."""
    if not _tiling(args):
        return {}
    if args.workers is not None and args.scheduler is not None:
        raise InputError("--workers counts on local processes and --scheduler on a Dask "
                         "cluster (whose workers the cluster sets): give one of them")
    return {"max_memory": (None if args.max_memory is None
                           else parse_memory(args.max_memory, "--max-memory")),
            "workers": 1 if args.workers is None else check_int(args.workers, "--workers",
                                                                 low=1),
            "scheduler": args.scheduler,
            "tiles": None if args.tiles is None else check_tiles(args.tiles),
            "progress": not args.json}


def parse_points(specs: Sequence[str], n_in: int,
                 csv_path: Path | str | None = None) -> list[list[float]]:
    """The points named by ``specs`` (--through): each a comma list of n_in numbers, or (with
    ``csv_path``, --data) a data row number (0 = the first data row; a header row and '#' lines
    do not count) whose first n_in columns are the point (a further column, e.g. a label, is
    ignored)."""
    rows = None
    out = []
    for spec in specs:
        text = str(spec).strip()
        if text.lstrip("-").isdigit() and "," not in text:
            if csv_path is None:
                raise InputError(f"point {text!r} is a row number: give the CSV file with --data "
                                 f"(or the point as {n_in} comma-separated numbers)")
            if rows is None:
                _, content = read_user_file(csv_path, "CSV file", MAX_POINTS_CSV_BYTES)
                rows = [r for r in csv.reader(io.StringIO(content))
                        if any(c.strip() for c in r) and not r[0].strip().startswith("#")]
                if rows and not finite_numbers(rows[0]):
                    rows = rows[1:]  # a header
            k = int(text)
            if not 0 <= k < len(rows):
                raise InputError(f"row {k} is not in the CSV file ({len(rows)} data rows, "
                                 f"numbered from 0)")
            values = finite_numbers(rows[k][:n_in])
            if values is None or len(values) != n_in:
                raise InputError(f"CSV row {k} does not start with {n_in} numbers (the model's "
                                 f"inputs)")
        else:
            values = finite_numbers(text.split(","))
            if values is None or len(values) != n_in:
                raise InputError(f"point {text!r} must be {n_in} comma-separated numbers (the "
                                 f"model's inputs) or a row number of --data")
        out.append(values)
    return out



def _row(label: str, value: object) -> str:
    return f"{label:<19}{value}"


def _decision(out: dict, where: str) -> str:
    """The argmax boundary of k outputs, or the level set of one."""
    if out.get("outputs", 1) > 1:
        return _row("decision boundary", f"{where} (argmax of {out['outputs']} outputs)")
    return _row("level set", f"{where} (where the output equals {out.get('level', 0):g})")


def show(out: dict) -> str:
    lines = []
    if "edges" in out:  # a plane count
        x0, x1, y0, y1 = out["box"]
        lines += [f"checkpoint: {out['checkpoint']}"] if "checkpoint" in out else []
        if "plane" in out:
            lines.append("plane through three points, coordinates (u, v) in input units")
        lines += [
            _row("box", f"[{x0:g}, {x1:g}] x [{y0:g}, {y1:g}]"),
            _row("activation regions", out["activation_regions"]),
            _row("linear pieces", out["linear_pieces"]),
            _row("vertices, edges", f"{out['vertices']}, {out['edges']}"),
            _row("min cell area", f"{out['min_cell_area']:.3e}")
            + ("" if out["resolved"] else "  (below float64 resolution: counts not guaranteed)"),
            _decision(out, f"length {out['decision_length']:.6g}"),
            _row("rounding snaps", f"{out['snapped']} (touching zeros / concurrent lines)"),
            _row("time", f"{out['seconds']:.3f} s"),
        ]
        if "tiles" in out:
            nx, ny = out["tiles"]
            lines.insert(-1, _row("tiles", f"{nx} x {ny}, {out['tile_pieces']} pieces merged"))
        lines += [_row("note", note) for note in out.get("notes", [])]
        if "plot" in out:
            lines.append(_row("plot", out["plot"]))
        return "\n".join(lines)
    if "depth" in out:
        lines.append(f"construction: depth {out['depth']}, "
                     f"{'Theorem 3.1 scales' if out['thm31'] else 'free scales'}")
    if "checkpoint" in out:
        lines.append(f"checkpoint: {out['checkpoint']}")
    if "segment" in out:
        ends = [", ".join(f"{v:g}" for v in out["segment"][k]) for k in ("from", "to")]
        where = _row("segment", f"({ends[0]}) to ({ends[1]}); positions t in [0, 1] along it, "
                     "slopes dy/dt")
    else:
        where = _row("interval", f"[{out['lo']:g}, {out['hi']:g}]")
    lines += [
        where,
        _row("linear pieces", out["linear_pieces"]),
        _row("activation regions", out["activation_regions"]),
        _row("breakpoints", f"{out['breakpoints']} (knots where the slope changes: "
                            f"{out['knots']})"),
        _row("min piece width", f"{out['min_piece_width']:.3e}")
        + ("" if out["resolved"] else "  (below float64 resolution: counts are a lower bound)"),
    ]
    if "convexity" in out:
        lines.append(_row("convexity", "the slope rises at "
                          f"{plural(out['convexity']['convex_knots'], 'knot')}, falls at "
                          f"{plural(out['convexity']['concave_knots'], 'knot')}"))
    lines += [
        _decision(out, plural(out.get("decision_points", 0), "point")),
        _row("rounding snaps", f"{out['snapped']} (touching zeros / simultaneous switches)"),
        _row("time", f"{out['seconds']:.3f} s"),
    ]
    if "sampled" in out:
        s = out["sampled"]
        lines.append(f"sampling ({s['samples']} points) sees "
                     f"{plural(s['linear_pieces'], 'piece')}, "
                     f"{plural(s['activation_regions'], 'region')} (never more than exist)")
    if "plot" in out:
        lines.append(_row("plot", out["plot"]))
    if "pieces_file" in out:
        rows = plural(out["linear_pieces"], "row")
        lines.append(_row("pieces", f"{out['pieces_file']} ({rows}: {','.join(PIECE_COLUMNS)})"))
    return "\n".join(lines)
