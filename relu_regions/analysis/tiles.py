"""Tiled region maps on a plane: the box cut into a grid of tiles, each counted alone by the
plane counter (plane._count; one at a time, or on local processes, or on a Dask cluster), and the
tiles' cells merged so that the counts equal the untiled ones (docs/regions2d.md, "Tiles").

Why the merge is exact. Every tile is counted from its own four corners, so a tile border is, to
the two tiles beside it, what an edge shared by two cells is inside one count (plane.py): each
neuron crossing it is found from the values at the border's ends and interpolated from its
negative end, in both tiles alike, so both sides cut the border at the same points, bit for bit.
Between consecutive cut points, a *stretch* of border has one tile piece on each side.

  * Regions. The points of one activation pattern form a convex set (the pattern makes every
    pre-activation an affine map of the point, and the set an intersection of half-planes), so
    two pieces with equal patterns across a stretch belong to one cell, and a cell cut by
    borders is the union of its pieces joined across stretches (union find; the four pieces
    around a tile corner join through their four stretches). Pieces with different patterns
    across a stretch lie on either side of a neuron's line running along the border.
  * Linear pieces. Inside a tile, the tile's own pieces; across a stretch two pieces join when
    they are one cell or when their output gradients agree by the untiled rule (plane.py,
    ``_join_twins``: slope_tol |W_out| |J| per component, from the cells' own magnitudes). A
    piece spanning several cells and tiles is the union of these joins; per output the same
    with that output's columns.
  * Vertices and edges. Borders add points that are no vertices of the map: where a line
    crosses a border, tile corners inside a cell, the borders' ends on the box boundary. A point
    on a border is a vertex of the map iff at least three of its edges are real: edges off the
    border lines (box edges included) and stretches between different patterns (a line running
    along the border). Vertices = the tiles' points off the borders + the border points that are
    vertices; edges by Euler, E = V + F - 1, as the untiled count's V = E - F + 1.

The memory budget (``max_memory``) is split in two halves: one for the tiles being counted
(shared by the workers), one for the per-piece arrays of the merged map. A tile's work is
estimated from the first layer, which refines a tile (one cell) into its whole arrangement at
once. Its lines are straight in the plane, so the cells of their arrangement in each tile are
computed, not sampled: 1 + lines crossing the tile + their crossings inside it (FirstLayerPlan:
the lines crossing the box, each pair intersected once, in blocks). They are multiplied by the
bytes such a cell takes (its ring rows carry every unit of the widest layer), plus the weights, an
operator batch and the chunks a depth-first pass holds (plane.py's CHUNK_FLOATS per layer).
Deeper layers refine cells in bounded chunks; the merged map's arrays are measured as tiles come
back, and the count stops with InputError when they exceed their half.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from functools import partial

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .. import parallel
from ..errors import InputError
from ..nets.operators import is_operator
from ..training.progress import TaskProgress
from ..validation import check_int, one_line, torch_threads
from .regions import RESOLUTION_ULPS

MAX_TILES_SIDE = 1024  # tiles along one side of the box
PLAN_SIDE = MAX_TILES_SIDE // 4  # the planner's finest grid per side (beyond: tiles at rounding)
MAX_PLAN_PAIRS = 1 << 28  # first-layer line pairs the planner intersects (more: a bound)
# Tiles counted in parallel: the grid is refined (up to BALANCE_SIDE per side) until no tile's
# estimated work exceeds 1 / (BALANCE_SHARE x workers) of the whole, since maps are often dense
# in a few tiles and the last of them would keep one worker busy alone.
BALANCE_SHARE = 4
BALANCE_SIDE = 64
ROWS_PER_CELL = 6  # ring rows per cell, on average (each vertex is in about three rings)
UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
         "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


# ---------------------------------------------------------------------------------------------
# Options

def parse_memory(value: int | str, name: str = "max_memory") -> int:
    """Bytes from an int or text such as "2GB", "500MB", "1.5 GiB" (KB/MB/GB/TB: powers of 1000;
    KiB/MiB/GiB/TiB: powers of 1024)."""
    if isinstance(value, bool):
        raise InputError(f"{name} must be bytes (an integer) or text like '2GB', got {value!r}")
    if isinstance(value, (int, np.integer)):
        if value <= 0:
            raise InputError(f"{name} must be positive, got {value}")
        return int(value)
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][0-9]+)?)\s*([A-Za-z]*)\s*", str(value))
    unit = match and UNITS.get(match.group(2).lower())
    if not unit:
        raise InputError(f"{name} must be bytes or a size like '2GB', '500MB', '1.5GiB', got "
                         f"{value!r}")
    size = float(match.group(1)) * unit
    if not size >= 1:
        raise InputError(f"{name} must be at least one byte, got {value!r}")
    return int(size)


def check_tiles(tiles) -> tuple[int, int]:
    """(nx, ny): two integers from 1 to MAX_TILES_SIDE."""
    try:
        nx, ny = tiles
    except (TypeError, ValueError):
        raise InputError(f"tiles must be two integers (nx, ny), got {tiles!r}") from None
    return (check_int(nx, "tiles nx", low=1, high=MAX_TILES_SIDE),
            check_int(ny, "tiles ny", low=1, high=MAX_TILES_SIDE))


def _show_bytes(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} bytes"


# ---------------------------------------------------------------------------------------------
# Memory model and the grid

@dataclass
class MemoryModel:
    """Bytes the counter needs, from the layer widths.

    ``cell_work``: a cell while a layer refines it: its ring rows in, out and pooled (each row
    carries (u, v, max|h|) and every unit of the widest layer, 8 bytes each), its Jacobian in
    and out and the z-gradients (2 x width each), its pattern. ``first_cell``: a cell of the
    first layer's arrangement in a tile, which the first layer writes all at once (the tile is
    one cell before it): its ring rows out, its share of the split's vertex rows (about one
    vertex per cell; rows as above), its Jacobian (2 x width) and the piece the tile's count
    keeps of it. ``piece``: what the merged map keeps per tile piece (ring, offsets, pattern,
    gradients, values, area, perimeter, labels). ``fixed``: the weights, one operator batch's
    work (layers run one at a time) and the depth-first chunks (plane.py's CHUNK_FLOATS floats,
    three arrays per hidden layer) a worker holds whatever the tile.
    """

    cell_work: int
    first_cell: int
    piece: int
    fixed: int

    @classmethod
    def of(cls, layers, kernel: dict) -> MemoryModel:
        """The model for ``layers`` [(W, b)], with plane.py's ``kernel`` (plane._kernel)."""
        widths = [w.shape[0] for w, _ in layers[:-1]] or [1]
        wmax, k = max(widths), layers[-1][0].shape[0]
        n_bytes = max(1, (sum(widths) + 7) // 8)
        row = 8 * (kernel["z0"] + wmax)
        cell_work = 3 * ROWS_PER_CELL * row + 3 * 16 * wmax + n_bytes
        piece = ROWS_PER_CELL * 16 + n_bytes + 8 * (3 * k + 6)
        first_cell = (ROWS_PER_CELL + 1) * row + 16 * wmax + piece
        weights = sum(w.nbytes + b.nbytes for w, b in layers)  # an operator: its kernels
        work = max((w.work_bytes for w, _ in layers if is_operator(w)), default=0)
        fixed = weights + work + 3 * 8 * kernel["chunk_floats"] * (len(layers) - 1)
        return cls(cell_work, first_cell, piece, fixed)


def _plane_lines(layers, leaks, origin, basis, box) -> tuple[np.ndarray, np.ndarray]:
    """The first layer's units as lines a (u, v) + c = 0 of the plane: those crossing ``box``,
    each line once."""
    w, b = layers[0]
    if is_operator(w):  # a conv stage kept as its ops: W applied to the plane's directions
        a = w.apply(basis.T).T
        c = w.apply(origin[None])[0] + b
    else:
        a = w @ basis  # z = a (u, v) + c on the plane
        c = w @ origin + b
    keep = (np.asarray(leaks[0]) != 1.0) & (np.abs(a).sum(1) > 0)  # these never split
    a, c = a[keep], c[keep]
    corners = a @ np.array([[box[0], box[1], box[0], box[1]],
                            [box[2], box[2], box[3], box[3]]]) + c[:, None]
    keep = (corners.min(1) < 0) & (corners.max(1) > 0)
    a, c = a[keep], c[keep]
    # Units with one line (a conv's equal patches, e.g. of images with flat areas) cut the
    # plane once: one line each, from the normalized (a, c) with a's first nonzero entry > 0.
    line = np.column_stack([a, c]) / np.hypot(a[:, 0], a[:, 1])[:, None]
    line *= np.where(line[:, 0] != 0, np.sign(line[:, 0]), np.sign(line[:, 1]))[:, None]
    _, first = np.unique(np.round(line, 12), axis=0, return_index=True)
    first.sort()
    return np.ascontiguousarray(a[first]), c[first]


def _lines_per_tile(a, c, xs, ys) -> np.ndarray:
    """(nx, ny) the number of lines crossing each tile, O(lines x tiles per side): a line
    steeper in v spans, in each column of tiles, the v between its values at the column's
    sides, so it crosses a run of that column's tiles (a difference array); the others likewise
    by rows. A line touching a tile's border counts for it (an upper bound)."""
    nx, ny = xs.size - 1, ys.size - 1
    out = np.zeros((nx, ny), np.int64)
    by_col = np.abs(a[:, 1]) >= np.abs(a[:, 0])
    for sel, t, o, runs, across in ((by_col, 0, 1, xs, ys), (~by_col, 1, 0, ys, xs)):
        if not sel.any():
            continue
        ends = -(a[sel, t, None] * runs[None, :] + c[sel, None]) / a[sel, o, None]
        lo, hi = np.minimum(ends[:, :-1], ends[:, 1:]), np.maximum(ends[:, :-1], ends[:, 1:])
        ok = (hi >= across[0]) & (lo <= across[-1])
        n_across = across.size - 1
        first = np.clip(np.searchsorted(across, lo[ok], "right") - 1, 0, n_across - 1)
        last = np.clip(np.searchsorted(across, hi[ok], "left") - 1, 0, n_across - 1)
        run = np.broadcast_to(np.arange(runs.size - 1), lo.shape)[ok]
        diff = np.zeros((runs.size - 1, n_across + 1), np.int64)
        np.add.at(diff, (run, first), 1)
        np.add.at(diff, (run, last + 1), -1)
        tiles = np.cumsum(diff, 1)[:, :n_across]
        out += tiles if t == 0 else tiles.T
    return out


def _crossings(a, c, xs, ys) -> np.ndarray:
    """(nx, ny) the lines' pairwise crossings inside each tile: all pairs, in blocks."""
    n, nx, ny = a.shape[0], xs.size - 1, ys.size - 1
    counts = np.zeros(nx * ny, np.int64)
    block = max(1, (1 << 20) // max(n, 1))
    for s in range(0, n - 1, block):
        e = min(n - 1, s + block)
        ai, ci = a[s:e, None, :], c[s:e, None]
        aj, cj = a[None, s + 1:], c[None, s + 1:]
        det = ai[..., 0] * aj[..., 1] - ai[..., 1] * aj[..., 0]
        upper = np.arange(s + 1, n)[None, :] > np.arange(s, e)[:, None]  # each pair once
        ok = upper & (det != 0)
        det = np.where(ok, det, 1.0)
        pu = (-ci * aj[..., 1] + cj * ai[..., 1]) / det
        pv = (-ai[..., 0] * cj + aj[..., 0] * ci) / det
        ok &= (pu >= xs[0]) & (pu <= xs[-1]) & (pv >= ys[0]) & (pv <= ys[-1])
        iu = np.clip(np.searchsorted(xs, pu[ok], "right") - 1, 0, nx - 1)
        iv = np.clip(np.searchsorted(ys, pv[ok], "right") - 1, 0, ny - 1)
        counts += np.bincount(iu * ny + iv, minlength=nx * ny)
    return counts.reshape(nx, ny)


class FirstLayerPlan:
    """The first layer's lines crossing ``box`` (straight in the plane) and the cells of their
    arrangement per tile: 1 + lines crossing the tile + their crossings inside it, exact for
    lines in general position. The crossings are found once, on the planner's finest grid
    (PLAN_SIDE per side), whose tiles the coarser power-of-two grids sum; over MAX_PLAN_PAIRS
    pairs, a tile's crossings are bounded by its lines' pairs instead."""

    def __init__(self, layers, leaks, origin, basis, box):
        self.box = tuple(float(x) for x in box)
        self.a, self.c = _plane_lines(layers, leaks, origin, basis, self.box)
        n = self.a.shape[0]
        self.exact = n * (n - 1) // 2 <= MAX_PLAN_PAIRS
        self.fine = None
        if self.exact:
            self.fine = _crossings(self.a, self.c, _edges(*self.box[:2], PLAN_SIDE),
                                   _edges(*self.box[2:], PLAN_SIDE))

    def cells(self, xs, ys) -> np.ndarray:
        """(nx, ny) cells per tile of the grid with edges ``xs``, ``ys`` (on ``box``)."""
        crossing = _lines_per_tile(self.a, self.c, xs, ys)
        nx, ny = crossing.shape
        if not self.exact:
            inside = crossing * (crossing - 1) // 2
        elif (PLAN_SIDE % nx == 0 and PLAN_SIDE % ny == 0
              and np.array_equal(xs, _edges(*self.box[:2], nx))
              and np.array_equal(ys, _edges(*self.box[2:], ny))):  # nested in the fine grid
            inside = self.fine.reshape(nx, PLAN_SIDE // nx, ny, PLAN_SIDE // ny).sum((1, 3))
        else:
            inside = _crossings(self.a, self.c, xs, ys)
        return 1.0 + crossing + inside


def first_layer_cells(layers, leaks, origin, basis, xs, ys) -> np.ndarray:
    """(nx, ny) the cells of the first layer's arrangement in each tile of the grid with edges
    ``xs``, ``ys`` (FirstLayerPlan)."""
    box = (xs[0], xs[-1], ys[0], ys[-1])
    return FirstLayerPlan(layers, leaks, origin, basis, box).cells(xs, ys)


def check_least(layers, budget, concurrency, kernel) -> MemoryModel:
    """The memory model; InputError when half the budget, shared by ``concurrency`` tiles
    counted at once, is less than a tile of a few cells needs."""
    model = MemoryModel.of(layers, kernel)
    least = model.fixed + 4 * ROWS_PER_CELL * model.cell_work
    if budget / 2 / concurrency < least:
        per_vertex = 8 * (kernel["z0"] + max(w.shape[0] for w, _ in layers))
        raise InputError(
            f"max_memory={_show_bytes(budget)} is too small for one tile of this model: a tile "
            f"counted alone needs at least {_show_bytes(least)} (weights, working chunks and "
            f"{_show_bytes(per_vertex)} per vertex), and half the budget is shared by "
            f"{concurrency} tile(s) at a time; give at least "
            f"{_show_bytes(2 * concurrency * least)}")
    return model


def _edges(lo, hi, n):
    out = lo + (hi - lo) * np.arange(n + 1) / n
    out[0], out[-1] = lo, hi
    return out


def _finer(nx, ny) -> tuple[int, int]:
    """The next grid of the planner's sequence 1 x 1, 2 x 1, 2 x 2, 4 x 2, ...: twice the tiles,
    not four times, so a grid is at most twice as fine as the budget needs."""
    return (2 * nx, ny) if nx == ny else (nx, 2 * ny)


def plan_grid(layers, leaks, box, origin, basis, budget, concurrency, kernel, first=None):
    """(nx, ny): the coarsest grid of the sequence 1 x 1, 2 x 1, 2 x 2, 4 x 2, ... (at least
    2 x concurrency tiles when several count at once) whose every tile's estimated work fits
    its share of half the budget; InputError when even one tile cannot. ``first``: the box's
    FirstLayerPlan, if made already."""
    model = check_least(layers, budget, concurrency, kernel)
    share = budget / 2 / concurrency
    nx = ny = 1
    while nx * ny < (2 * concurrency if concurrency > 1 else 1):
        nx, ny = _finer(nx, ny)
    first = first or FirstLayerPlan(layers, leaks, origin, basis, box)
    while True:
        xs, ys = _edges(box[0], box[1], nx), _edges(box[2], box[3], ny)
        cells = first.cells(xs, ys)
        need = model.fixed + cells.max() * model.first_cell
        if need <= share:
            held = cells.sum() * model.piece  # the merged map keeps at least these pieces
            if held > budget / 2:  # and a finer grid cuts more: refused now, not at the end
                raise InputError(
                    f"max_memory={_show_bytes(budget)} is too small for this map: its tiles "
                    f"fit at {nx} x {ny}, but the region map of their pieces needs at least "
                    f"{_show_bytes(held)}, more than the half of the budget it may use; raise "
                    f"max_memory, use fewer workers or count a smaller box")
            return nx, ny
        if ny >= PLAN_SIDE:  # the planner's last grid: beyond, tiles reach rounding
            raise InputError(
                f"max_memory={_show_bytes(budget)} is too small for this map: at {nx} x {ny} "
                f"tiles, a tile's first layer still needs about {_show_bytes(need)} and its "
                f"share of the budget is {_show_bytes(share)}; raise max_memory or count a "
                f"smaller box")
        nx, ny = _finer(nx, ny)


# ---------------------------------------------------------------------------------------------
# One tile (runs in a worker: top-level, plain data in and out)

@dataclass
class TilePart:
    """What a worker returns for one tile: the tile's count (without magnitudes), and what the
    merge needs from it."""

    index: int
    count: object  # the tile's PlaneCount
    own: np.ndarray | None  # (cells, k) each output's piece per cell, with per_output
    stretches: tuple  # (kind 0 vertical / 1 horizontal, line, side, lo, hi, cell) arrays
    points: np.ndarray  # (p, 2) border points, ...
    point_edges: np.ndarray  # ... and how many of their edges in this tile are off the borders
    inner_vertices: int  # distinct ring points off the borders
    perimeters: np.ndarray
    border_cells: np.ndarray  # cells with an edge on a border, and their magnitudes
    border_mags: np.ndarray
    seconds: float

    def nbytes(self) -> int:
        c = self.count
        arrays = [c.polygons, c.offsets, c.patterns, c.areas, c.gradients, c.values, c.pieces,
                  c.decision_segments, self.perimeters, self.border_mags, self.points,
                  *self.stretches]
        return int(sum(a.nbytes for a in arrays) + (0 if self.own is None else self.own.nbytes))


def count_tile(shared: dict, task: tuple) -> TilePart:
    """Count tile ``task`` = (index, ix, iy) of the grid in ``shared`` and extract its borders."""
    start = time.perf_counter()
    index, ix, iy = task
    xs, ys = shared["xs"], shared["ys"]
    box = (float(xs[ix]), float(xs[ix + 1]), float(ys[iy]), float(ys[iy + 1]))
    slope_tol = shared["slope_tol"]
    r = shared["kernel"]["count"](shared["layers"], shared["leaks"], box, shared["origin"],
                                  shared["basis"], shared["zero_tol"], slope_tol, None,
                                  shared["per_output"], shared["level"], magnitudes=True)
    mags = r.magnitudes
    del r.magnitudes
    pts, off = r.polygons, r.offsets
    n, h = off.size - 1, pts.shape[0]
    owner = np.repeat(np.arange(n), np.diff(off))
    nxt = np.arange(1, h + 1)
    nxt[off[1:] - 1] = off[:-1]
    u, v = pts[:, 0], pts[:, 1]
    on_v, on_h = np.isin(u, xs[1:-1]), np.isin(v, ys[1:-1])
    along_v = on_v & on_v[nxt] & (u == u[nxt])  # half-edges lying on a vertical border
    along_h = on_h & on_h[nxt] & (v == v[nxt])
    stretches = []
    for kind, along, fixed, run, lines, t in ((0, along_v, u, v, xs, ix),
                                              (1, along_h, v, u, ys, iy)):
        e = np.flatnonzero(along)
        line = np.searchsorted(lines, fixed[e])
        stretches.append((np.full(e.size, kind), line, (line == t).astype(np.int64),
                          np.minimum(run[e], run[nxt[e]]), np.maximum(run[e], run[nxt[e]]),
                          owner[e]))
    stretches = tuple(np.concatenate(col) for col in zip(*stretches, strict=True))
    # Border points and their edges off the border lines (each such edge is in one or two rings
    # of this tile: counted once).
    on_b, on_line = on_v | on_h, along_v | along_h
    e = np.flatnonzero(~on_line & (on_b | on_b[nxt]))
    i, j = e, nxt[e]
    ends = np.concatenate([np.hstack([pts[i], pts[j]])[on_b[i]],
                           np.hstack([pts[j], pts[i]])[on_b[j]]])
    ends = np.unique(ends, axis=0) if ends.size else np.empty((0, 4))
    points, point_edges = (np.unique(ends[:, :2], axis=0, return_counts=True) if ends.size
                           else (np.empty((0, 2)), np.empty(0, np.int64)))
    inner = pts[~on_b]
    inner_vertices = int(np.unique(inner[:, 0] + 1j * inner[:, 1]).size)
    perimeters = np.bincount(owner, np.hypot(u[nxt] - u, v[nxt] - v), minlength=n)
    border_cells = np.unique(owner[on_line])
    own = None
    if shared["per_output"] and r.outputs > 1:
        own = np.empty((n, r.outputs), np.int64)
        grads = r.gradients.reshape(n, -1)
        label = np.empty(n, np.int64)
        for k in range(r.outputs):
            cols = slice(2 * k, 2 * k + 2)
            shared["kernel"]["pieces"](off, pts, np.ascontiguousarray(grads[:, cols]),
                    np.ascontiguousarray(mags[:, cols]), slope_tol, np.array(box), label)
            own[:, k] = label
    return TilePart(index, r, own, stretches, points, point_edges, inner_vertices, perimeters,
                    border_cells, mags[border_cells], time.perf_counter() - start)


# ---------------------------------------------------------------------------------------------
# Driver

def count_tiled(layers, leaks, box, origin, basis, zero_tol, slope_tol, plane, per_output=False,
                level=0.0, *, kernel, max_memory=None, workers=1, scheduler=None, tiles=None,
                progress=False):
    """The plane count of ``box`` on a grid of tiles, merged (module docstring): ``tiles=(nx,
    ny)`` forces the grid; else ``max_memory`` chooses it (plan_grid); else 2 x workers tiles or
    more (one tile with one worker). ``workers=N`` local processes (this one counts tiles too;
    parallel.run_here_and_local), or ``scheduler`` (a Dask
    address, Client or cluster); results identical to the serial count. ``kernel``: what this
    module uses of plane.py (plane._kernel: the counter, the piece finder, the result class and
    two sizes), passed in so that imports run one way. Returns a plane.TiledPlaneCount."""
    budget = None if max_memory is None else parse_memory(max_memory)
    if isinstance(workers, bool):
        raise InputError(f"workers must be an integer >= 1, got {workers!r}")
    workers = check_int(workers, "workers", low=1)
    if scheduler is not None and workers != 1:
        raise InputError("workers applies to local processes; a Dask cluster's workers are set "
                         "by the cluster: give workers or scheduler, not both")
    layers = [(w if is_operator(w) else np.ascontiguousarray(w, np.float64),
               np.ascontiguousarray(b, np.float64)) for w, b in layers]
    concurrency = workers if scheduler is None else 1
    spread = scheduler is not None or workers > 1
    first = (FirstLayerPlan(layers, leaks, origin, basis, box)
             if spread or (budget is not None and tiles is None) else None)
    if tiles is not None:
        nx, ny = check_tiles(tiles)
        if budget is not None:  # the grid is the user's; the least a tile needs still holds
            check_least(layers, budget, concurrency, kernel)
    elif budget is not None:
        nx, ny = plan_grid(layers, leaks, box, origin, basis, budget, concurrency, kernel,
                           first)
    else:  # at least two tiles per worker (2 x 2 on Dask); one tile serially
        want = 2 * workers if workers > 1 else 4 if scheduler is not None else 1
        nx = ny = next(g for g in (2 ** e for e in range(11)) if g * g >= want)
    work = None  # the first layer's cells per tile, when tiles run in parallel
    if spread and tiles is None:
        nx, ny, work = _balanced(first, box, nx, ny, max(workers, 2))
    xs, ys = _edges(box[0], box[1], nx), _edges(box[2], box[3], ny)
    if np.any(np.diff(xs) <= 0) or np.any(np.diff(ys) <= 0):
        raise InputError(f"tiles ({nx}, {ny}) are too many for the box {list(box)}: its sides "
                         f"cannot be cut so finely in float64; use fewer tiles")
    shared = dict(layers=layers, leaks=[np.ascontiguousarray(x, np.float64) for x in leaks],
                  origin=np.asarray(origin, np.float64), basis=np.asarray(basis, np.float64),
                  zero_tol=zero_tol, slope_tol=slope_tol, per_output=per_output, level=level,
                  xs=xs, ys=ys, kernel=kernel)
    tasks = [(ix + nx * iy, ix, iy) for iy in range(ny) for ix in range(nx)]
    if spread:  # the largest first, so that no large tile starts last (the order is free:
        work = first.cells(xs, ys) if work is None else work  # parts go back by their index)
        tasks.sort(key=lambda t: -work[t[1], t[2]])
    parts: list = [None] * len(tasks)
    failures: list = []
    held = [0]

    def done(i, part):
        parts[part.index] = part
        held[0] += part.nbytes()
        bar.update()

    def error(i, err, why):
        failures.append((i, err, why))

    with TaskProgress(len(tasks), "counting tiles", "tile", progress) as bar:
        if scheduler is not None:
            parallel.run_dask(count_tile, tasks, scheduler, done, error, shared)
        elif workers > 1 and len(tasks) > 1:  # this process counts tiles too (one thread)
            parallel.run_here_and_local(count_tile, tasks, min(workers, len(tasks)), done,
                                        error, shared, here=partial(torch_threads, 1))
        else:
            for i, task in enumerate(tasks):
                done(i, count_tile(shared, task))
                _check_held(held[0], budget, i + 1, len(tasks))
    if failures:
        i, err, why = min(failures, key=lambda f: f[0])
        ix, iy = tasks[i][1:]
        where = (f"tile ({ix}, {iy}) of the {nx} x {ny} grid, box "
                 f"[{xs[ix]:g}, {xs[ix + 1]:g}] x [{ys[iy]:g}, {ys[iy + 1]:g}]")
        more = f" ({len(failures) - 1} more tile(s) failed)" if len(failures) > 1 else ""
        if isinstance(err, InputError):
            raise InputError(f"{where}: {err}{more}")
        what = {parallel.DIED: "its worker process died (a crash or out of memory), also when "
                               "retried alone",
                parallel.NO_START: "the worker processes could not start (call the count from "
                                   "a script under `if __name__ == '__main__':`, or use "
                                   "workers=1)"}.get(why, one_line(err))
        raise RuntimeError(f"{where} failed: {what}{more}")
    _check_held(held[0], budget, len(tasks), len(tasks))
    return merge(parts, (nx, ny), xs, ys, box, slope_tol, per_output, plane, kernel["result"])


def _balanced(first, box, nx, ny, workers) -> tuple[int, int, np.ndarray]:
    """The grid from (nx, ny) on (planner's sequence, up to BALANCE_SIDE per side unless already
    finer) until no tile holds more than 1 / (BALANCE_SHARE x workers) of the first layer's
    cells in ``box``; (nx, ny, that grid's cells per tile)."""
    while True:
        cells = first.cells(_edges(box[0], box[1], nx), _edges(box[2], box[3], ny))
        if max(nx, ny) >= BALANCE_SIDE or cells.max() * BALANCE_SHARE * workers <= cells.sum():
            return nx, ny, cells
        nx, ny = _finer(nx, ny)


def _check_held(held, budget, done, total):
    if budget is not None and held > budget / 2:
        raise InputError(f"max_memory={_show_bytes(budget)}: the region map's per-piece arrays "
                         f"reached {_show_bytes(held)} after {done} of {total} tiles, more than "
                         f"the half of the budget they may use; raise max_memory or count a "
                         f"smaller box")


# ---------------------------------------------------------------------------------------------
# The merge

def _components(n, a, b) -> np.ndarray:
    """Connected-component label of each of n nodes joined by the pairs (a, b), numbered in
    order of each component's first node."""
    graph = coo_matrix((np.ones(a.size, np.int8), (a, b)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    uniq, first = np.unique(labels, return_index=True)
    rank = np.empty(uniq.size, np.int64)
    rank[np.argsort(first)] = np.arange(uniq.size)
    return rank[labels]


def _agree(grads, mags_a, mags_b, a, b, cols, slope_tol) -> np.ndarray:
    """plane._join_twins's rule: every gradient component within slope_tol max(|W_out| |J|)."""
    tol = slope_tol * np.maximum(mags_a[:, cols], mags_b[:, cols])
    return (np.abs(grads[a][:, cols] - grads[b][:, cols]) <= tol).all(1)


def _stretch_pairs(parts, base, xs, ys):
    """Per border line, the stretches between consecutive cut points and the pieces on each
    side: (a, b, length, end points (m, 2) x 2), and the number of cut points seen from one side
    only (or stretches not covered)."""
    cols = [np.concatenate([p.stretches[k] for p in parts]) for k in range(6)]
    kind, line, side, lo, hi = cols[:5]
    cell = cols[5] + np.repeat(base[:-1], [p.stretches[0].size for p in parts])
    out_a, out_b, out_lo, out_hi, out_kind, out_line = [], [], [], [], [], []
    unmatched = 0
    order = np.lexsort((lo, side, line, kind))
    kind, line, side, lo, hi, cell = (x[order] for x in (kind, line, side, lo, hi, cell))
    key = kind * (MAX_TILES_SIDE + 1) + line
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    for s, e in zip(starts, np.r_[starts[1:], key.size], strict=True) if key.size else ():
        sides = [slice(s, s + np.searchsorted(side[s:e], 1)), None]
        sides[1] = slice(sides[0].stop, e)
        a_lo, a_hi, a_c = lo[sides[0]], hi[sides[0]], cell[sides[0]]
        b_lo, b_hi, b_c = lo[sides[1]], hi[sides[1]], cell[sides[1]]
        unmatched += np.setxor1d(np.union1d(a_lo, a_hi), np.union1d(b_lo, b_hi)).size
        cuts = np.unique(np.concatenate([a_lo, a_hi, b_lo, b_hi]))
        mid = 0.5 * (cuts[:-1] + cuts[1:])
        ia = np.searchsorted(a_lo, mid, "right") - 1
        ib = np.searchsorted(b_lo, mid, "right") - 1
        ok = (ia >= 0) & (ib >= 0)
        ia, ib = np.maximum(ia, 0), np.maximum(ib, 0)
        ok &= (a_hi[ia] >= mid) & (b_hi[ib] >= mid) if a_hi.size and b_hi.size else False
        unmatched += int((~ok).sum())
        out_a.append(a_c[ia[ok]])
        out_b.append(b_c[ib[ok]])
        out_lo.append(cuts[:-1][ok])
        out_hi.append(cuts[1:][ok])
        out_kind.append(np.full(int(ok.sum()), kind[s]))
        out_line.append(np.full(int(ok.sum()), line[s]))
    if not out_a:
        empty = np.empty(0, np.int64)
        return empty, empty, np.empty(0), np.empty((0, 2)), np.empty((0, 2)), 0
    a, b = np.concatenate(out_a), np.concatenate(out_b)
    s_lo, s_hi = np.concatenate(out_lo), np.concatenate(out_hi)
    k, li = np.concatenate(out_kind), np.concatenate(out_line)
    at = np.where(k == 0, xs[np.minimum(li, xs.size - 1)], ys[np.minimum(li, ys.size - 1)])
    p_lo = np.where(k[:, None] == 0, np.stack([at, s_lo], 1), np.stack([s_lo, at], 1))
    p_hi = np.where(k[:, None] == 0, np.stack([at, s_hi], 1), np.stack([s_hi, at], 1))
    return a, b, s_hi - s_lo, p_lo, p_hi, unmatched


def _take(counts, name) -> np.ndarray:
    """The tiles' ``name`` arrays concatenated, each dropped from its count once copied: the
    merge then holds the tiles' per-cell arrays and the merged ones about once, not twice."""
    first = getattr(counts[0], name)
    out = np.empty((sum(getattr(c, name).shape[0] for c in counts),) + first.shape[1:],
                   first.dtype)
    at = 0
    for c in counts:
        a = getattr(c, name)
        out[at:at + a.shape[0]] = a
        at += a.shape[0]
        setattr(c, name, None)
    return out


def merge(parts, grid, xs, ys, box, slope_tol, per_output, plane, result_type):
    """One ``result_type`` (plane.TiledPlaneCount) from the tiles' parts (module docstring);
    parts in grid order. The parts' large arrays are moved into the result (``_take``)."""
    counts = [p.count for p in parts]
    sizes = np.array([c.offsets.size - 1 for c in counts])
    base = np.concatenate([[0], np.cumsum(sizes)])
    n = int(base[-1])
    k = counts[0].outputs
    decision = [c.decision_segments for c in counts]
    patterns = _take(counts, "patterns")
    gradients = _take(counts, "gradients")
    grads = gradients.reshape(n, -1)  # a view: (cells, 2 k)
    a, b, length, p_lo, p_hi, unmatched = _stretch_pairs(parts, base, xs, ys)
    unmatched += sum(c.unmatched_edges for c in counts)
    same = (patterns[a] == patterns[b]).all(1)
    regions = _components(n, a[same], b[same])
    n_regions = int(regions.max()) + 1
    # Linear pieces: the tiles' own, joined across stretches by cell or by the slope rule.
    border_cells = np.concatenate([p.border_cells + base[p.index] for p in parts])
    border_mags = np.concatenate([p.border_mags for p in parts])
    other = np.flatnonzero(~same)
    mags_a = border_mags[np.searchsorted(border_cells, a[other])]
    mags_b = border_mags[np.searchsorted(border_cells, b[other])]

    def joined(local, n_nodes, cols):
        join = same.copy()
        join[other] = _agree(grads, mags_a, mags_b, a[other], b[other], cols, slope_tol)
        return _components(n_nodes, local[a[join]], local[b[join]])[local]

    piece_base = np.concatenate([[0], np.cumsum([c.linear_pieces for c in counts])])
    local = np.concatenate([c.pieces + piece_base[i] for i, c in enumerate(counts)])
    pieces = joined(local, int(piece_base[-1]), slice(None))
    n_pieces = int(pieces.max()) + 1
    own = None
    if per_output:
        own = np.empty(k, np.int64)
        if k == 1:
            own[0] = n_pieces
        for j in range(k if k > 1 else 0):
            sizes_j = [int(p.own[:, j].max()) + 1 for p in parts]
            base_j = np.concatenate([[0], np.cumsum(sizes_j)])
            local_j = np.concatenate([p.own[:, j] + base_j[i] for i, p in enumerate(parts)])
            own[j] = int(joined(local_j, int(base_j[-1]), slice(2 * j, 2 * j + 2)).max()) + 1
    # Vertices: points off the borders, and border points with three or more real edges.
    key = np.concatenate([p_lo[:, 0] + 1j * p_lo[:, 1], p_hi[:, 0] + 1j * p_hi[:, 1]])
    tile_pts = np.concatenate([p.points for p in parts])
    tile_key = tile_pts[:, 0] + 1j * tile_pts[:, 1]
    points = np.unique(np.concatenate([key, tile_key]))
    degree = np.zeros(points.size, np.int64)
    np.add.at(degree, np.searchsorted(points, tile_key),
              np.concatenate([p.point_edges for p in parts]))
    real = np.concatenate([~same, ~same])  # a stretch between different patterns is an edge
    np.add.at(degree, np.searchsorted(points, key[real]), 1)
    vertices = sum(p.inner_vertices for p in parts) + int((degree >= 3).sum())
    edges = vertices + n_regions - 1
    # Merged cells: areas, perimeters (less the stretches inside a cell, on both sides).
    areas = _take(counts, "areas")
    cell_area = np.bincount(regions, areas, minlength=n_regions)
    perimeter = (np.bincount(regions, np.concatenate([p.perimeters for p in parts]),
                             minlength=n_regions)
                 - 2 * np.bincount(regions[a[same]], length[same], minlength=n_regions))
    widths = 2 * cell_area / perimeter
    scale = max(max(abs(v) for v in box), box[1] - box[0], box[3] - box[2])
    min_width = float(widths.min())
    segs = np.concatenate(decision)
    shift = np.repeat(np.concatenate([[0], np.cumsum([c.offsets[-1] for c in counts])[:-1]]),
                      sizes)
    offsets = np.concatenate([[0]] + [c.offsets[1:] for c in counts])
    offsets[1:] += shift
    polygons = _take(counts, "polygons")
    values = _take(counts, "values")
    return result_type(
        box=tuple(box), activation_regions=n_regions, linear_pieces=n_pieces,
        cells=n_regions,  # no max windows in a tiled count: its cells are its regions
        vertices=vertices, edges=edges, min_cell_area=float(cell_area.min()),
        min_cell_width=min_width, snapped=sum(c.snapped for c in counts),
        unmatched_edges=int(unmatched),
        resolved=bool(unmatched == 0 and min_width > RESOLUTION_ULPS * np.spacing(scale)),
        polygons=polygons, offsets=offsets, patterns=patterns, areas=areas, gradients=gradients,
        values=values, pieces=pieces, hidden_neurons=counts[0].hidden_neurons, plane=plane,
        outputs=k, level=counts[0].level, decision_segments=segs,
        decision_length=float(np.hypot(*(segs[:, 1] - segs[:, 0]).T).sum()),
        pieces_per_output=own, regions=regions,
        tile_of=np.repeat(np.arange(len(parts)), sizes), tiles=tuple(grid))
