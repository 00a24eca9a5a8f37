"""Exact linear regions of a ReLU MLP on a plane: a 2-input model on a box, or any model on the
plane through three input points.

The partition of the plane into activation regions is built layer by layer, as the 1D counter
(regions.py) builds intervals; docs/regions2d.md has the rules with examples. Every cell is a
convex polygon, stored as its ring of vertices, counter-clockwise. Each ring vertex carries

  * its position (u, v) in the plane, and
  * the *values* of the current layer there (never a gradient plus an intercept: gradients reach
    4^d while values stay O(1), and intercepts would cancel catastrophically),

and each cell carries the Jacobian of the current layer on it, (2, width), by the chain rule
(masked per neuron).

One layer (Linear + ReLU) on a cell: the pre-activations z = W h + b at its vertices are exact up
to rounding. A neuron splits the cell iff its z has strictly opposite signs at two vertices. It is
applied to the sub-cells one neuron at a time: an edge whose end points have strictly opposite z
gets a new vertex at the convex combination lambda = z_n / (z_n - z_p) of its end points, measured
from the negative end (so both cells sharing the edge compute the same vertex, bit for bit), where
every other neuron's value is interpolated the same way; the sub-cell is then cut along the chord
between its two zeros. Cells refine independently, so the network runs depth first on chunks of
cells and memory stays bounded, and large chunks run as parts on worker threads (``threads``).

Exactness rules (the 1D counter's, carried to the plane):

  * Touching zeros. A pre-activation with |z| <= zero_tol (|W| |h| + |b|) at a vertex (a rounding
    bound, zero_tol = 2^-40, as in 1D) is exactly 0, so a neuron that only touches zero along an
    edge or at a vertex makes no sliver. Each crossing this removes is counted in ``snapped``,
    once per edge.
  * Concurrent lines. A new vertex's position along its edge is uncertain by
    dt = zero_tol (m_n + m_p) / |z_n - z_p| of the edge (m: the magnitude z is summed from), large
    when the crossing neuron barely changes along the edge (a nearly parallel line). Another
    neuron whose interpolated value there is within dt |v_p - v_n| + INTERP_ULPS eps (|v_n| +
    |v_p|) of 0 passes through the vertex and is set to exactly 0 (counted in ``snapped``): lines
    through one point (all lines of a bias-free layer) meet in one vertex. This replaces the 1D
    counter's merge of switch points within 16 ulps: a merge decided on one edge would have to be
    repeated on every edge at that vertex, which cells refined independently cannot see, while a
    value set to 0 travels with the vertex.
  * Rounding that breaks convexity. If a neuron's signs around a cell alternate more than twice (a
    line crossing a convex cell meets its boundary twice, so only rounding can do this), every
    crossing is kept, so that neighbours stay consistent, and the cell is cut along chords between
    consecutive zeros; each such cell adds 1 to ``snapped``.
  * Linear pieces. Adjacent cells belong to one linear piece iff their output gradients agree to
    slope_tol times the magnitude |W_out| |J| they are summed from (the function is continuous,
    so equal gradients mean one affine map). Adjacency is found by matching each cell's edges
    with its neighbour's: shared edges are computed bit for bit alike, so they match exactly; an
    interior edge without a match (a topology inconsistency) sets ``resolved = False``.
  * ``resolved`` is False when some cell is thinner (2 area / perimeter) than RESOLUTION_ULPS ulps
    of the box's scale, or an edge is unmatched: the counts are then not guaranteed.

Vertices and edges are those of the planar graph of all cells (box corners included): edges =
(half-edges + boundary half-edges) / 2, vertices = edges - cells + 1 (Euler).
"""

from __future__ import annotations

import copy
import math
import os
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from ..errors import InputError
from ..nets.operators import AffineOperator, is_operator
from ..nets.reader import Lowered, lower, region_keys
from ..validation import check_int, check_level, check_point, torch_threads
from .jit import njit
from .regions import EPS, INTERP_ULPS, RESOLUTION_ULPS, SLOPE_TOL, ZERO_TOL
from .tiles import count_tiled

if TYPE_CHECKING:
    from torch import nn

NO_FACTOR, NO_BIAS = np.empty((0, 0)), np.empty(0)  # a _Dense layer that is not carried-first
MIN_CELLS = 16  # the fewest cells a layer's output arrays are made for
AHEAD_CROSSINGS = 8  # neurons crossing a cell from which its sub-cells find their next split
CHUNK_FLOATS = 1 << 21  # ring floats per layer before the rest of the net runs on halves
# A chunk over FORK_FLOATS (the first on its path) runs the rest of the net as FORK_PARTS tasks,
# with threads or without: the partition must not depend on the thread count, since BLAS's
# W J product is not bit-identical row by row across different row counts.
FORK_FLOATS = 1 << 18
FORK_PARTS = 16
MAX_THREADS = 8  # the default's cap (FORK_PARTS tasks keep this many busy)
Z0 = 3  # first pre-activation column of a pool row (u, v, max|h|, z...)
# Slots of _split_cells' counters: cells and rows written, snapped crossings, and the cells and
# rows a part that did not fit needs.
CELLS_WRITTEN, ROWS_WRITTEN, SNAPPED, CELLS_NEEDED, ROWS_NEEDED = range(5)


@dataclass
class PlaneCount:
    """Exact activation regions and linear pieces of a model on a box of a plane.

    Cells are convex polygons of constant hidden signs: ``polygons[offsets[i]:offsets[i + 1]]``
    are the (u, v) vertices of cell i, counter-clockwise. Per cell: ``patterns`` (packed bits,
    np.packbits order, one bit per hidden neuron, layer by layer: its region key, see
    :meth:`pattern_bits`), ``areas``, ``gradients`` (of the output, in plane coordinates:
    (cells, 2), or (cells, k, 2) for k outputs), ``values`` (output at the mean of the cell's
    vertices: (cells,) or (cells, k)), ``pieces`` (the linear piece the cell belongs to,
    0..linear_pieces-1; with k outputs a piece has one affine map for all of them), ``regions``
    (the activation region it belongs to, 0..activation_regions-1).

    Activation regions are the cells, except in a model with max windows (max-pooling,
    ``torch.maximum``): a region is a cell of constant signs of the other units and a constant
    winner of every window, so edge-adjacent cells that differ only in how two losers of a
    window compare are one region (``cells`` counts them unmerged, as do ``vertices`` and
    ``edges``, the graph of the cells).

    ``decision_segments`` (m, 2, 2): the argmax decision boundary of k > 1 outputs, or the level
    set f = ``level`` of one output, as segments in plane coordinates, one or more per cell it
    crosses; ``decision_length`` their total length in input units. ``pieces_per_output`` (k,): each
    output's own piece count, with ``per_output=True``.
    """

    box: tuple
    activation_regions: int
    linear_pieces: int
    vertices: int
    edges: int
    min_cell_area: float
    min_cell_width: float
    snapped: int
    unmatched_edges: int
    resolved: bool
    polygons: np.ndarray = field(repr=False)
    offsets: np.ndarray = field(repr=False)
    patterns: np.ndarray = field(repr=False)
    areas: np.ndarray = field(repr=False)
    gradients: np.ndarray = field(repr=False)
    values: np.ndarray = field(repr=False)
    pieces: np.ndarray = field(repr=False)
    hidden_neurons: int = 0
    plane: dict | None = None  # origin and basis when counted on a plane through three points
    outputs: int = 1
    level: float | None = 0.0  # the level set's value (one output); None for k > 1 outputs
    decision_segments: np.ndarray = field(default_factory=lambda: np.empty((0, 2, 2)),
                                          repr=False)
    decision_length: float = 0.0
    pieces_per_output: np.ndarray | None = field(default=None, repr=False)
    notes: list = field(default_factory=list)  # what reading the model changed (a float32 model)
    cells: int = 0
    regions: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self, arrays: bool = False) -> dict:
        """JSON-ready summary; ``arrays=True`` adds the polygons, offsets, per-cell arrays and the
        decision segments."""
        d = {k: getattr(self, k) for k in (
            "activation_regions", "cells", "linear_pieces", "vertices", "edges", "min_cell_area",
            "min_cell_width", "snapped", "unmatched_edges", "resolved", "hidden_neurons",
            "outputs", "level", "decision_length")}
        d["decision_segment_count"] = int(self.decision_segments.shape[0])
        d["notes"] = list(self.notes)
        if self.pieces_per_output is not None:
            d["pieces_per_output"] = [int(v) for v in self.pieces_per_output]
        d["box"] = [float(v) for v in self.box]
        if self.plane is not None:
            d["plane"] = {k: np.asarray(v).tolist() for k, v in self.plane.items()}
        if arrays:
            d.update(polygons=self.polygons.tolist(), offsets=self.offsets.tolist(),
                     areas=self.areas.tolist(), gradients=self.gradients.tolist(),
                     values=self.values.tolist(), pieces=self.pieces.tolist(),
                     regions=self.regions.tolist(),
                     patterns=[bytes(p).hex() for p in self.patterns],
                     decision_segments=self.decision_segments.tolist())
        return d

    def pattern_bits(self) -> np.ndarray:
        """(cells, hidden_neurons) bool array of the cells' region keys: each hidden unit's sign
        on the cell (True: on; units of slope 1, which carry values, are always True). In a model
        with max windows the tree units of a window that are off its winning path are False, so
        the rows of one activation region are equal and different regions' rows differ
        (:func:`~relu_regions.nets.reader.region_keys`)."""
        return np.unpackbits(self.patterns, axis=1, count=self.hidden_neurons).astype(bool)


@dataclass
class TiledPlaneCount(PlaneCount):
    """A :class:`~relu_regions.analysis.plane.PlaneCount` merged from a grid of tiles.

    Equal to the untiled count (both resolved): ``activation_regions`` (and ``cells``),
    ``linear_pieces``, ``pieces_per_output``, ``vertices``, ``edges``. Equal to rounding:
    ``min_cell_area`` and ``min_cell_width`` (of the merged cells), ``decision_length``. Not the
    untiled values:
    ``snapped`` (the tiles' sum: a border's snaps count on both sides) and the number of
    ``decision_segments`` (a segment crossing a border is cut in two; a boundary lying exactly
    along a tile border is not reported, as along a cell edge). ``unmatched_edges`` adds border
    points seen from one side only; ``resolved`` needs none of them and merged cells wider than
    the untiled threshold.

    Per-cell arrays are per *tile piece* (a cell cut by tile borders has one piece in each tile
    it meets): ``polygons`` / ``offsets``, ``patterns``, ``areas``, ``gradients``, ``values``
    (the output at the mean of the piece's vertices) and ``pieces`` (the merged linear piece)
    have one row per piece; ``regions`` is each piece's merged activation region
    (0 .. activation_regions - 1) and ``tile_of`` its tile, ix + nx iy. A cell's area is
    ``np.bincount(regions, areas)``.
    """

    regions: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64), repr=False)
    tile_of: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64), repr=False)
    tiles: tuple = (1, 1)

    def to_dict(self, arrays: bool = False) -> dict:
        """:meth:`PlaneCount.to_dict` with the grid and the number of tile pieces; ``arrays=True``
        also gives ``regions`` and ``tile_of``."""
        d = super().to_dict(arrays)
        d["tiles"] = list(self.tiles)
        d["tile_pieces"] = int(self.offsets.size - 1)
        if arrays:
            d.update(regions=self.regions.tolist(), tile_of=self.tile_of.tolist())
        return d



# ---------------------------------------------------------------------------------------------
# Public entry points

def count_regions_2d(model: nn.Module, box: Sequence[float] = (-1.0, 1.0, -1.0, 1.0), *,
                     zero_tol: float = ZERO_TOL, slope_tol: float = SLOPE_TOL,
                     per_output: bool = False, level: float | None = None,
                     max_memory: int | str | None = None, workers: int = 1,
                     scheduler: object = None, tiles: Sequence[int] | None = None,
                     progress: bool | str = False, threads: int | None = None) -> PlaneCount:
    """Exact activation regions, linear pieces, vertices and edges of a 2-input model on the box
    ``(x0, x1, y0, y1)``; the plane's coordinates are the inputs.

    A model with k > 1 outputs: pieces are the vector map's (all k gradients agree), the decision
    segments its argmax boundary; ``per_output=True`` adds each output's piece count. One output:
    the decision segments are its level set f = ``level`` (default 0).

    Tiles (analysis/tiles.py): ``max_memory`` (bytes, or "2GB", "500MB"), ``tiles=(nx, ny)``,
    ``workers=N`` local processes (this one and N - 1 spawned) or ``scheduler="tcp://..."``
    (Dask) count the box as a grid
    of tiles merged to the same counts (a :class:`~relu_regions.analysis.tiles.TiledPlaneCount`);
    ``progress`` shows a bar (True, "bar" or "lines") on stderr.
    ``threads``: worker threads of one untiled count (default: the usable cores, at most 8; 1:
    no pool, and the model is read on one torch thread). The result is the same, bit for bit,
    for every value; small counts never start a pool.
    """
    with torch_threads(_read_threads(threads)):
        lowered = lower(model)
    layers, leaks = lowered.layers, lowered.leaks
    level = check_level(level, layers[-1][0].shape[0])
    if layers[0][0].shape[1] != 2:
        raise InputError(f"the model takes {layers[0][0].shape[1]} inputs, count_regions_2d "
                         f"needs 2: count it on a plane through three points with "
                         f"count_regions_plane(model, p0, p1, p2)")
    box = _check_box(box)
    return _count_or_tile(lowered, (layers, leaks, box, np.zeros(2), np.eye(2), zero_tol,
                                    slope_tol, None, per_output, level),
                          max_memory, workers, scheduler, tiles, progress, threads)


def count_regions_plane(model: nn.Module, p0: ArrayLike, p1: ArrayLike, p2: ArrayLike,
                        extent: Sequence[float] | None = None, *, zero_tol: float = ZERO_TOL,
                        slope_tol: float = SLOPE_TOL, per_output: bool = False,
                        level: float | None = None,
                        input_shape: Sequence[int] | None = None,
                        max_memory: int | str | None = None, workers: int = 1,
                        scheduler: object = None, tiles: Sequence[int] | None = None,
                        progress: bool | str = False, threads: int | None = None) -> PlaneCount:
    """Exact counts on the plane through the input points p0, p1, p2.

    Plane coordinates (u, v): x = p0 + u e1 + v e2 with e1 = (p1 - p0) / |p1 - p0| and e2 the unit
    vector of p2 - p0 orthogonal to e1, so lengths and areas are the input space's. ``extent`` is
    the (u0, u1, v0, v1) box counted; by default the three points' bounding box grown by a quarter
    of its size on each side. ``result.plane`` holds origin, basis and the points' coordinates.
    ``per_output``, ``level`` and ``threads``: as in :func:`count_regions_2d`. The points may be
    given in the model's input shape (e.g. three images (C, H, W) for a conv net, which then sets
    ``input_shape``) or flattened; ``input_shape`` is one sample's shape where the model does not
    say it (docs/models.md). ``max_memory``, ``workers``, ``scheduler``, ``tiles``,
    ``progress``: as in :func:`count_regions_2d`.
    """
    if input_shape is None and np.ndim(p0) > 1:
        input_shape = np.shape(p0)
    with torch_threads(_read_threads(threads)):
        lowered = lower(model, input_shape)
    return count_lowered_plane(lowered, p0, p1, p2, extent, zero_tol=zero_tol,
                               slope_tol=slope_tol, per_output=per_output, level=level,
                               max_memory=max_memory, workers=workers, scheduler=scheduler,
                               tiles=tiles, progress=progress, threads=threads)


def count_lowered_plane(lowered: Lowered, p0: ArrayLike, p1: ArrayLike, p2: ArrayLike,
                        extent: Sequence[float] | None = None, *, zero_tol: float = ZERO_TOL,
                        slope_tol: float = SLOPE_TOL, per_output: bool = False,
                        level: float | None = None, max_memory: int | str | None = None,
                        workers: int = 1, scheduler: object = None,
                        tiles: Sequence[int] | None = None,
                        progress: bool | str = False, threads: int | None = None) -> PlaneCount:
    """:func:`count_regions_plane` of a model already read by
    :func:`~relu_regions.nets.reader.lower`: a caller counting many planes of one model reads it
    once."""
    layers, leaks = lowered.layers, lowered.leaks
    level = check_level(level, layers[-1][0].shape[0])
    n_in = layers[0][0].shape[1]
    pts = [check_point(p, n_in, name) for p, name in ((p0, "p0"), (p1, "p1"), (p2, "p2"))]
    origin, basis, coords = plane_basis(*pts)
    if extent is None:
        lo, hi = coords.min(0), coords.max(0)
        pad = 0.25 * (hi - lo).max()
        extent = (lo[0] - pad, hi[0] + pad, lo[1] - pad, hi[1] + pad)
    box = _check_box(extent, "extent")
    plane = {"origin": origin, "basis": basis.T, "points": coords}
    return _count_or_tile(lowered, (layers, leaks, box, origin, basis, zero_tol, slope_tol,
                                    plane, per_output, level),
                          max_memory, workers, scheduler, tiles, progress, threads)


def _count_or_tile(lowered, args, max_memory, workers, scheduler, tiles, progress,
                   threads) -> PlaneCount:
    """``_count(*args)`` on ``threads`` threads, or tiles.py's count when a tiling option is set
    (its tiles run on ``workers``); the reader's notes."""
    if _tiled(max_memory, workers, scheduler, tiles):
        _check_untiled_windows(lowered)
        if threads not in (None, 1):
            raise InputError("threads is for an untiled count; a tiled one runs its tiles on "
                             "worker processes (workers=, scheduler=): drop threads")
        result = count_tiled(*args, kernel=_kernel(), max_memory=max_memory, workers=workers,
                             scheduler=scheduler, tiles=tiles, progress=progress)
    else:
        result = _count(*args, max_nodes=lowered.max_nodes, threads=_check_threads(threads))
    result.notes = lowered.notes
    return result


def _kernel() -> dict:
    """What tiles.py uses of this module, passed in (tiles.py does not import plane.py, so
    imports run one way)."""
    return {"count": _count, "pieces": _pieces, "result": TiledPlaneCount, "z0": Z0,
            "chunk_floats": CHUNK_FLOATS}


def _tiled(max_memory, workers, scheduler, tiles) -> bool:
    """Whether a tiling option is set (then tiles.py counts)."""
    return (max_memory is not None or tiles is not None or scheduler is not None
            or not (type(workers) is int and workers == 1))


def plane_basis(p0: ArrayLike, p1: ArrayLike,
                p2: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(origin, basis (n, 2) with orthonormal columns, the points' (u, v) coordinates (3, 2)).

    Raises InputError when the points are (numerically) collinear: no plane passes through them.
    """
    d1, d2 = p1 - p0, p2 - p0
    n1 = np.linalg.norm(d1)
    if n1 == 0:
        raise InputError("p0 and p1 are the same point: three distinct, non-collinear points "
                         "span a plane")
    e1 = d1 / n1
    r = d2 - (d2 @ e1) * e1
    r = r - (r @ e1) * e1  # a second Gram-Schmidt pass keeps e2 orthogonal to the last ulp
    n2 = np.linalg.norm(r)
    if not n2 > 1e-9 * max(np.linalg.norm(d2), n1):
        raise InputError("the three points are collinear (or nearly: the third is within 1e-9 of "
                         "the line through the first two): give points that span a plane")
    e2 = r / n2
    basis = np.stack([e1, e2], axis=1)
    coords = np.stack([np.zeros(2), [n1, 0.0], [d2 @ e1, d2 @ e2]])
    return p0, basis, coords


def _check_untiled_windows(lowered: Lowered) -> None:
    """Tiles merge across borders by activation pattern; a model with max windows also merges
    cells inside a tile by region key, which the tile merge does not do yet."""
    if lowered.max_nodes is not None:
        raise InputError("a model with max-pooling (or torch.maximum) is counted untiled: drop "
                         "tiles=, max_memory=, workers= and scheduler= (or --tiles, "
                         "--max-memory, --workers, --scheduler)")


def _check_threads(threads) -> int:
    """The worker threads of one count: ``threads``, or by default the usable cores (at most
    MAX_THREADS)."""
    if threads is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # no affinity on this platform (macOS, Windows)
            cores = os.cpu_count() or 1
        return max(1, min(cores, MAX_THREADS))
    return check_int(threads, "threads", low=1,
                     hint="give the worker threads of one count (1: serial), or leave it out "
                          "for one per core")


def _read_threads(threads) -> int | None:
    """torch's intra-op threads for reading the model of a count on ``threads``: one for a
    one-thread count (its small products gain nothing from a second thread, and on a busy
    machine OpenMP's spinning cost a residual net's reading 10x), else torch's own setting."""
    return 1 if type(threads) is int and threads == 1 else None


def _check_box(box, name="box"):
    try:
        vals = [float(v) for v in box]
    except (TypeError, ValueError):
        raise InputError(f"{name} must be four numbers (x0, x1, y0, y1), got {box!r}") from None
    if len(vals) != 4:
        raise InputError(f"{name} must be four numbers (x0, x1, y0, y1), got {len(vals)}")
    x0, x1, y0, y1 = vals
    if not all(math.isfinite(v) for v in vals):
        raise InputError(f"{name} corners must be finite, got {vals}")
    if not (x0 < x1 and y0 < y1):
        raise InputError(f"{name} needs x0 < x1 and y0 < y1, got {vals}")
    return tuple(vals)


# ---------------------------------------------------------------------------------------------
# Driver

def _count(layers, leaks, box, origin, basis, zero_tol, slope_tol, plane, per_output=False,
           level=0.0, max_nodes=None, magnitudes=False, threads=1) -> PlaneCount:
    """The count on ``box``; ``max_nodes``: a model's max windows (``Lowered.max_nodes``), whose
    cells of equal region keys merge; ``magnitudes=True`` (tiles.py) keeps each cell's |W_out|
    |J|, the scale of the slope rule, as ``result.magnitudes`` (cells, 2 k); ``threads``: worker
    threads of this count."""
    x0, x1, y0, y1 = box
    layers = [(w if is_operator(w) else np.ascontiguousarray(w), np.ascontiguousarray(b))
              for w, b in layers]
    leaks = [np.ascontiguousarray(leak, np.float64) for leak in leaks]
    widths = [w.shape[0] for w, _ in layers[:-1]]
    n_hidden = sum(widths)
    n_bytes = max(1, (n_hidden + 7) // 8)
    corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    ring = np.empty((4, 2 + basis.shape[0]))
    ring[:, :2] = corners
    ring[:, 2:] = origin + corners @ basis.T
    jac = np.ascontiguousarray(basis.T[None, :, :])
    chunk = (np.array([0, 4]), ring, jac, np.zeros((1, n_bytes), np.uint8))
    acc = _Accumulator(layers[-1], np.array(box), level)
    stats = np.zeros(1, np.int64)  # snapped
    bit0 = np.cumsum([0] + widths)
    _propagate(layers, leaks, bit0, chunk, np.array(box), zero_tol, stats, acc, threads)
    return acc.result(box, int(stats[0]), slope_tol, n_hidden, plane, per_output,
                      None if max_nodes is None else (max_nodes, widths), magnitudes)


def _propagate(layers, leaks, bit0, chunk, box, zero_tol, stats, acc, threads=1):
    """Run the hidden layers on a chunk of cells, depth first, then hand the cells to ``acc``.

    Cells refine independently, so a chunk holding more than CHUNK_FLOATS runs the rest of the
    network on each half, and a layer's output comes in pieces that each go on alone: the
    working arrays stay bounded and nothing is copied to grow them. The first chunk on a path
    holding more than FORK_FLOATS runs the rest as FORK_PARTS tasks: in order here with
    ``threads=1``, else on a pool of ``threads`` workers whose cells ``acc`` receives in the same
    order. Both partition alike, so the counts are the same bit for bit.
    """
    layers = [(_dense(w, b, leak) if isinstance(w, np.ndarray) else w, b)
              for (w, b), leak in zip(layers[:-1], leaks, strict=True)] + [layers[-1]]
    if threads == 1:
        def fork(layers, leaks, bit0, part):
            _walk(layers, leaks, bit0, part, box, zero_tol, stats, acc, None)

        _walk(layers, leaks, bit0, chunk, box, zero_tol, stats, acc, fork)
        return
    with _Tasks(threads, acc, stats, box, zero_tol) as tasks:
        _walk(layers, leaks, bit0, chunk, box, zero_tol, stats, tasks, tasks.fork)


def _walk(layers, leaks, bit0, chunk, box, zero_tol, stats, acc, fork):
    """:func:`_propagate`'s depth-first recursion; ``fork(layers, leaks, bit0, part)`` runs the
    rest of the network on a part of a chunk over FORK_FLOATS (None: no forking on this path)."""
    for depth in range(len(layers)):
        off, ring = chunk[0], chunk[1]
        if fork is not None and ring.size > FORK_FLOATS and off.size > FORK_PARTS:
            for part in _parts(chunk, FORK_PARTS):
                fork(layers[depth:], leaks[depth:], bit0[depth:], part)
            return
        if depth == len(layers) - 1:
            break
        if ring.size > CHUNK_FLOATS and off.size > 2:
            mid = (off.size - 1) // 2
            for part in (slice(0, mid), slice(mid, off.size - 1)):
                a, e = off[part.start], off[part.stop]
                sub = (off[part.start:part.stop + 1] - a, ring[a:e], chunk[2][part], chunk[3][part])
                _walk(layers[depth:], leaks[depth:], bit0[depth:], sub, box, zero_tol, stats, acc,
                      fork)
            return
        w, b = layers[depth]
        outs = _layer(chunk, w, b, leaks[depth], int(bit0[depth]), box, zero_tol, stats)
        if len(outs) > 1:
            for out in outs:
                _walk(layers[depth + 1:], leaks[depth + 1:], bit0[depth + 1:], out, box,
                      zero_tol, stats, acc, fork)
            return
        chunk = outs[0]
    acc.add(*chunk)


def _parts(chunk, n):
    """``chunk`` cut between cells into at most ``n`` parts of about equal rows."""
    off, ring, jac, pat = chunk
    n_cells = off.size - 1
    cuts = np.searchsorted(off, np.arange(1, n) * (off[-1] / n))
    cuts = np.unique(np.concatenate([[0], np.clip(cuts, 1, n_cells - 1), [n_cells]]))
    for c0, c1 in zip(cuts[:-1], cuts[1:], strict=True):
        a, e = off[c0], off[c1]
        yield off[c0:c1 + 1] - a, ring[a:e], jac[c0:c1], pat[c0:c1]


class _Tasks:
    """A pool for one count: forked parts, and the cells the main walk finishes once a fork is
    pending, run as tasks whose cells go to ``acc`` in submission order (each task collects its
    own, with its own ``snapped`` counter). At most 2 x threads tasks wait unmerged, so memory
    stays bounded as in the serial walk; the pool starts at the first fork, so a count too small
    to fork never starts one."""

    def __init__(self, threads, acc, stats, box, zero_tol):
        self.threads, self.acc, self.stats = threads, acc, stats
        self.box, self.zero_tol = box, zero_tol
        self.pool = None
        self.pending = deque()

    def __enter__(self):
        return self

    def __exit__(self, kind, value, trace):
        if self.pool is None:
            return
        if kind is None:
            while self.pending:
                self._merge()
        self.pool.shutdown(cancel_futures=kind is not None)

    def fork(self, layers, leaks, bit0, part):
        self._submit(_rest_task, layers, leaks, bit0, part, self.box, self.zero_tol)

    def add(self, *chunk):
        if self.pending:
            self._submit(_leaf_task, *chunk)
        else:  # nothing before it is pending: in order as it is
            self.acc.add(*chunk)

    def _submit(self, fn, *args):
        if self.pool is None:
            self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="plane-count")
        self.pending.append(self.pool.submit(fn, self.acc, *args))
        while len(self.pending) > 2 * self.threads:
            self._merge()

    def _merge(self):
        parts, snapped = self.pending.popleft().result()
        self.acc.parts.extend(parts)
        self.stats += snapped


def _rest_task(acc, layers, leaks, bit0, part, box, zero_tol):
    """The rest of the network on ``part``, into a copy of ``acc`` of its own: (its cells' parts,
    its snapped counter)."""
    own, stats = _own(acc), np.zeros(1, np.int64)
    _walk(layers, leaks, bit0, part, box, zero_tol, stats, own, None)
    return own.parts, stats


def _leaf_task(acc, *chunk):
    own = _own(acc)
    own.add(*chunk)
    return own.parts, np.zeros(1, np.int64)


def _own(acc):
    """``acc`` sharing its output layer, with no cells yet."""
    own = copy.copy(acc)
    own.parts = []
    return own


def _layer(chunk, w, b, leak, bit0, box, zero_tol, stats):
    """One Linear + ReLU (negative-side slope ``leak[c]`` per unit) on a chunk: a list of output
    chunks (one unless the first arrays filled up; then the remaining cells go to fresh arrays
    rather than grown ones)."""
    if isinstance(w, AffineOperator):
        return _layer_operator(chunk, w, b, leak, bit0, box, zero_tol, stats)
    if not isinstance(w, _Dense):
        w = _dense(w, b, leak)
    off, ring, jac, pat = chunk
    width = w.w.shape[0]
    n_cells = off.size - 1
    rows = jac.reshape(2 * n_cells, -1)
    # one compiled kernel for both forms (each costs its first count a load from the cache)
    if w.at is None:
        form = (w.wt, w.hi, w.ex, b, NO_FACTOR, NO_BIAS)
    else:
        form = (w.ct, w.hi_c, w.ex_c, w.b_c, w.at, w.b_r)
    uid, zs, raw_sign = _vertex_preactivations(ring, w.w, *form, b, w.w_abs_sum, leak, zero_tol)
    # Gradients of z per cell, W J, row by row (they do not steer any split).
    grads = _pair_times(rows, form[0], form[1], form[2], form[4]).reshape(n_cells, 2, width)
    return _split_all(off, ring, grads, pat, uid, zs, raw_sign, w.w, w.wt, b, w.w_abs_sum, leak,
                      bit0, box, zero_tol, stats)


@dataclass(frozen=True)
class _Dense:
    """A dense hidden layer's map, prepared once per count: ``w`` (out, in), ``wt`` its
    transpose, ``w_abs_sum`` the row sums of |W|, and per input j the units its weights reach:
    ``0:hi[j]`` and ``ex[j]`` (-1: none), all other weights being zeros.

    A layer with carried values (units of slope 1, a skip connection's ``x``) feeds each of them
    from one input with weight 1 (``[W1; I]``, ``[W1 W2, W1; W2, I]``): there an input's
    weights are the first units and one more, which the products skip to (a third to a half of
    the width^2 work of a residual block). A layer without carried values keeps every input's
    full row: its sums are the plain products'.

    ``at`` (not None): the layer is r ReLU units then carried ones, y = C h + b_c, with the ReLU
    units' map A y + b_r (:func:`_factors`): the products compute y first (by ``ct``'s spans
    ``hi_c``, ``ex_c``), then A y, as the model does (a residual block's ``W1 (x + W2 h)``),
    instead of the composed W_R h; the ReLU units' values then differ from W_R h + b by
    rounding only."""

    w: np.ndarray
    wt: np.ndarray
    w_abs_sum: np.ndarray
    hi: np.ndarray
    ex: np.ndarray
    at: np.ndarray | None = None
    ct: np.ndarray | None = None
    hi_c: np.ndarray | None = None
    ex_c: np.ndarray | None = None
    b_c: np.ndarray | None = None
    b_r: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.w.shape


def _dense(w, b, leak) -> _Dense:
    """:class:`_Dense` of the layer ``w``, ``b`` whose units have negative-side slopes
    ``leak``."""
    w = np.ascontiguousarray(w, np.float64)
    wt = np.ascontiguousarray(w.T)
    n_in, width = wt.shape
    hi = np.full(n_in, width, np.int64)
    ex = np.full(n_in, -1, np.int64)
    leak = np.asarray(leak)
    if not (width and n_in and (leak == 1.0).any()):
        return _Dense(w, wt, np.abs(w).sum(1), hi, ex)
    hi, ex = _spans(wt)
    factors = _factors(w, np.asarray(b, np.float64), leak, int(hi.sum() + (ex >= 0).sum()))
    return _Dense(w, wt, np.abs(w).sum(1), hi, ex, *(factors or ()))


def _spans(wt):
    """(hi, ex) of :class:`_Dense` for the weights ``wt`` (in, out): per input, the units up to
    its last nonzero weight, or up to the one before when the last stands apart (ex)."""
    n_in, width = wt.shape
    nz = wt != 0.0
    cols = np.arange(width)
    some = nz.any(1)
    last = width - 1 - np.argmax(nz[:, ::-1], 1)
    before = nz & (cols < last[:, None])  # the nonzeros before the last one
    prev = np.where(before.any(1), width - 1 - np.argmax(before[:, ::-1], 1), -1)
    alone = (prev >= 0) & (last - prev > 1)  # the last weight stands apart: ex
    hi = np.where(some, np.where(alone, prev + 1, last + 1), 0)
    return hi.astype(np.int64), np.where(alone, last, -1).astype(np.int64)


def _factors(w, b, leak, cost):
    """The carried-first form of a layer whose units are r ReLU units, then carried ones (slope
    1) with values y = C h + b_C, where the ReLU units' map is a map of y: W_R = A C (a residual
    block's next pre-activation, W1 (x + W2 h)). A is read off W_R's columns at the inputs that
    reach one carried unit each, with weight 1 (exactly: those columns of A C are A's); the
    form is used only if A C equals W_R to rounding and it takes fewer products than ``cost``
    (0.85 of it).
    Returns (A^T, C^T, its hi and ex, b_C, b_R - A b_C) or None."""
    carried = leak == 1.0
    r = int((~carried).sum())
    if r == 0 or not carried[r:].all():
        return None
    c = w[r:]
    one_hot = ((c != 0.0).sum(0) == 1) & (c.max(0) == 1.0)
    cols = np.full(c.shape[0], -1)
    for j in np.flatnonzero(one_hot)[::-1]:  # the first such input of each carried unit
        cols[np.argmax(c[:, j])] = j
    if (cols < 0).any():
        return None
    ct = np.ascontiguousarray(c.T)
    hi_c, ex_c = _spans(ct)
    if r * c.shape[0] + hi_c.sum() + (ex_c >= 0).sum() > 0.85 * cost:
        return None
    a = w[:r][:, cols]
    # A C = W_R to rounding, on two fixed random vectors, by elementwise sums: a BLAS product
    # would start its threads, which spin on a busy machine.
    for v in np.random.default_rng(0).standard_normal((2, c.shape[1])):
        got, want = (a * (c * v).sum(1)).sum(1), (w[:r] * v).sum(1)
        scale = (np.abs(a) * (np.abs(c) * np.abs(v)).sum(1)).sum(1)
        if not (np.abs(got - want) <= 1e-9 * scale + 1e-300).all():
            return None
    return (np.ascontiguousarray(a.T), ct, hi_c, ex_c, b[r:].copy(), b[:r] - (a * b[r:]).sum(1))


def _layer_operator(chunk, op, b, leak, bit0, box, zero_tol, stats):
    """:func:`_layer` for a layer whose map is an
    :class:`~relu_regions.nets.operators.AffineOperator` (a large conv stage): z = W h + b and
    the bound |W| |h| + |b| of the zero-snap by the operator's ops, in batches, on the chunk's
    distinct vertices (found as :func:`_vertex_preactivations` finds them), snapped by the same
    rule; the gradients W J by its bias-free map; row sums of |W| by :meth:`row_abs_sum` (upper
    bounds, which only widen the rounding bounds). The cells then split as a dense layer's."""
    off, ring, jac, pat = chunk
    width = op.shape[0]
    uid, first = _distinct_vertices(ring)
    n_u = first.size
    zs = np.empty((n_u, Z0 + width))
    raw_sign = np.empty((n_u, width), np.int8)
    b_abs = np.abs(b)
    for s in range(0, n_u, op.batch_rows):
        e = min(n_u, s + op.batch_rows)
        h = ring[first[s:e], 2:]
        zs[s:e, :2] = ring[first[s:e], :2]
        zs[s:e, 2] = np.abs(h).max(1) if h.shape[1] else 0.0
        zs[s:e, Z0:] = op.apply(h) + b
        _snap(zs[s:e], op.apply_abs(h) + b_abs, raw_sign[s:e], leak, zero_tol)
    n_cells = off.size - 1
    grads = op.linear(jac.reshape(2 * n_cells, -1)).reshape(n_cells, 2, width)
    w, wt = np.empty((width, 0)), np.empty((0, width))  # _split_cells reads only the width
    return _split_all(off, ring, grads, pat, uid, zs, raw_sign, w, wt, b, op.row_abs_sum(),
                      leak, bit0, box, zero_tol, stats)


def _split_all(off, ring, grads, pat, uid, zs, raw_sign, w, wt, b, w_abs_sum, leak, bit0, box,
               zero_tol, stats):
    """:func:`_split_cells` over all cells of a chunk, into fresh arrays as they fill up; the rest
    of the cells go on at the rate the first part grew (at least what the cell that did not fit
    needs, whose sub-cells, split once, are written first)."""
    width = w.shape[0]
    n_cells = off.size - 1
    need_cells, need_rows = 2 * n_cells, 2 * ring.shape[0]
    outs, cell, pending = [], 0, None
    while cell < n_cells:
        cap_cells, cap_rows = max(MIN_CELLS, need_cells), max(4 * MIN_CELLS, need_rows)
        o_off = np.zeros(cap_cells + 1, np.int64)
        o_ring = np.empty((cap_rows, 2 + width))
        o_jac = np.empty((cap_cells, 2, width))
        o_pat = np.empty((cap_cells, pat.shape[1]), np.uint8)
        counters = np.zeros(5, np.int64)
        if pending is not None:  # the cell that did not fit
            vert, idx, alive, p_start, p_len = pending
            _write_cells(vert, idx, alive, alive.size, p_start, p_len, grads[cell], pat[cell],
                         leak, _switching(leak), bit0, np.empty(width),
                         np.empty(width, np.bool_), o_off, o_ring, o_jac, o_pat, counters)
            cell += 1
        cell, *rest = _split_cells(off, grads, pat, uid, zs, raw_sign, w, wt, b, w_abs_sum, leak,
                                   zero_tol, EPS * INTERP_ULPS, bit0, box, cell, o_off, o_ring,
                                   o_jac, o_pat, counters)
        pending = rest if cell < n_cells else None
        stats[0] += counters[SNAPPED]
        nc, nr = counters[CELLS_WRITTEN], counters[ROWS_WRITTEN]
        if nc:
            outs.append((o_off[:nc + 1], o_ring[:nr], o_jac[:nc], o_pat[:nc]))
        left = n_cells - cell
        grow = max(nc, 1) / max(cell, 1)
        need_cells = max(int(counters[CELLS_NEEDED]), int(1.25 * grow * left) + 16)
        need_rows = max(int(counters[ROWS_NEEDED]),
                        int(1.25 * max(nr, 1) / max(cell, 1) * left) + 64)
    return outs


@njit(cache=True, nogil=True)
def _pair_sums(rows, wt, hi, ex):
    """rows @ wt for an even number of rows (a cell's two Jacobian rows), each row summed input
    by input into a row of all units (a loop the compiler vectorizes): the line counter's
    :func:`~relu_regions.analysis.regions._times` sums, whatever rows are beside them, unlike
    BLAS (whose rounding of a row depends on the block it is in), and no BLAS threads, which
    cost more than they gain on these many small products when the cores are busy.

    Two rows at a time read each row of wt once (a wide layer's W^T does not fit in cache).
    Skipped terms: inputs zero in both rows, and weights outside 0:hi[j] and ex[j] (zeros, see
    :class:`_Dense`; a loop from 0 has no negative index to wrap, so it vectorizes). A skipped
    or a kept zero term adds +-0 to a sum that starts at +0.0 and is never -0.0, so the sums
    are _times' bit for bit."""
    out = np.zeros((rows.shape[0], wt.shape[1]))
    for i in range(0, rows.shape[0], 2):
        r0, r1, o0, o1 = rows[i], rows[i + 1], out[i], out[i + 1]
        for j in range(wt.shape[0]):
            h0, h1 = r0[j], r1[j]
            if h0 != 0.0 or h1 != 0.0:
                for c in range(hi[j]):
                    o0[c] += h0 * wt[j, c]
                    o1[c] += h1 * wt[j, c]
                e = ex[j]
                if e >= 0:
                    o0[e] += h0 * wt[j, e]
                    o1[e] += h1 * wt[j, e]
    return out


@njit(cache=True, nogil=True)
def _pair_times(rows, ct, hi_c, ex_c, at):
    """W J of a layer as :class:`_Dense` has it (see :func:`_vertex_preactivations`): C J by
    :func:`_pair_sums`, and with ``at`` (r columns) the first r units' A (C J) before it."""
    y = _pair_sums(rows, ct, hi_c, ex_c)
    r = at.shape[1]
    if r == 0:
        return y
    out = np.empty((rows.shape[0], r + y.shape[1]))
    out[:, r:] = y
    out[:, :r] = _pair_sums(y, at, np.full(at.shape[0], r, np.int64),
                            np.full(at.shape[0], -1, np.int64))
    return out


@njit(cache=True, nogil=True)
def _vertex_preactivations(ring, w, ct, hi_c, ex_c, b_c, at, b_r, b, w_abs_sum, leak, zero_tol):
    """z = W h + b once per distinct vertex of the chunk (a vertex is in ~3 rings): returns each
    ring row's vertex id, the vertices' pool rows (u, v, max|h|, z...) and the signs of z before
    snapping.

    The layer as :class:`_Dense` has it: y = C h + b_c for its units, C^T as ``ct`` (input j's
    terms go to units 0:hi_c[j] and ex_c[j], the others' weights being zeros), and with ``at``
    (r columns; none: (0, 0)) a carried-first layer, whose first r units are A y + b_r and the
    rest y. Vertices go in pairs, so that each row of ``ct`` is read once per pair (a wide
    layer's W^T does not fit in cache). Each unit's terms are summed from its bias in input
    order; a term of a zero input (kept for its pair's other vertex) adds +-0, which changes no
    sum that starts from the bias with -0.0 read as +0.0: the sums of one vertex at a time, but
    for the sign of a zero.

    Touching zeros: |z| <= zero_tol (|W| |h| + |b|), a rounding-error bound (W, b: the layer's
    composed map), becomes exactly 0; a cheap upper bound (max|h| sum|W| + |b|) skips the exact
    one for most entries. Only the vertex's own data enter, so every cell holding a vertex sees
    the same values. Units with slope 1 (affine) are never snapped: their value is carried, not
    a sign.
    """
    n_prev = ring.shape[1] - 2
    r, n_c = at.shape[1], ct.shape[1]
    width = r + n_c
    uid, first = _distinct_vertices(ring)
    n_u = first.size
    zs = np.empty((n_u, Z0 + width))
    raw_sign = np.empty((n_u, width), np.int8)
    y0, y1 = np.empty(n_c), np.empty(n_c)
    z0, z1 = np.empty(r), np.empty(r)
    acc0, acc1 = np.empty(width), np.empty(width)
    bc, br = b_c + 0.0, b_r + 0.0  # -0.0 as +0.0
    for u0 in range(0, n_u, 2):
        u1 = min(u0 + 1, n_u - 1)  # an odd last vertex pairs with itself
        src0, src1 = ring[first[u0]], ring[first[u1]]
        h_max0 = h_max1 = 0.0
        y0[:] = bc
        y1[:] = bc
        for j in range(n_prev):
            h0, h1 = src0[2 + j], src1[2 + j]
            if h0 != 0.0 or h1 != 0.0:
                h_max0 = max(h_max0, abs(h0))
                h_max1 = max(h_max1, abs(h1))
                for c in range(hi_c[j]):
                    y0[c] += h0 * ct[j, c]
                    y1[c] += h1 * ct[j, c]
                e = ex_c[j]
                if e >= 0:
                    y0[e] += h0 * ct[j, e]
                    y1[e] += h1 * ct[j, e]
        if r:
            z0[:] = br
            z1[:] = br
            for p in range(n_c):
                v0, v1 = y0[p], y1[p]
                if v0 != 0.0 or v1 != 0.0:
                    for c in range(r):
                        z0[c] += v0 * at[p, c]
                        z1[c] += v1 * at[p, c]
            acc0[:r], acc0[r:] = z0, y0
            acc1[:r], acc1[r:] = z1, y1
            _vertex_row(zs, raw_sign, u0, src0, acc0, h_max0, w, b, w_abs_sum, leak, zero_tol)
            _vertex_row(zs, raw_sign, u1, src1, acc1, h_max1, w, b, w_abs_sum, leak, zero_tol)
        else:
            _vertex_row(zs, raw_sign, u0, src0, y0, h_max0, w, b, w_abs_sum, leak, zero_tol)
            _vertex_row(zs, raw_sign, u1, src1, y1, h_max1, w, b, w_abs_sum, leak, zero_tol)
    return uid, zs, raw_sign


BLOCK = 32  # rows of an output product's block: its inner loop runs over them


@njit(cache=True, nogil=True)
def _out_grads(rows, wt, wt_abs):
    """(W_out J, |W_out| |J|) per cell, (cells, k, 2) each, from the cells' Jacobian rows (cell
    i's are rows 2i, 2i + 1) and W_out^T, |W_out|^T as ``wt``, ``wt_abs``.

    k outputs (10, say) are too few for the vector unit, so rows go in blocks of BLOCK,
    transposed, and the inner loop runs over the block's rows. Each output's terms are still
    summed in input order from +0.0, as :func:`_pair_sums` sums them: inputs zero in every row
    of the block are skipped, and a zero input's term in a row adds +-0 to a sum that is never
    -0.0."""
    n_rows, n_in = rows.shape
    k = wt.shape[1]
    grads = np.empty((n_rows // 2, k, 2))
    mags = np.empty((n_rows // 2, k, 2))
    t = np.empty((n_in, BLOCK))
    live = np.empty(n_in, np.bool_)
    og = np.empty((k, BLOCK))
    om = np.empty((k, BLOCK))
    for r0 in range(0, n_rows, BLOCK):
        m = min(BLOCK, n_rows - r0)
        live[:] = False
        for i in range(m):
            for j in range(n_in):
                v = rows[r0 + i, j]
                t[j, i] = v
                live[j] |= v != 0.0
        og[:, :m] = 0.0
        om[:, :m] = 0.0
        for j in range(n_in):
            if live[j]:
                for c in range(k):
                    w, wa = wt[j, c], wt_abs[j, c]
                    for i in range(m):
                        og[c, i] += t[j, i] * w
                        om[c, i] += abs(t[j, i]) * wa
        for i in range(m):
            cell, side = (r0 + i) // 2, (r0 + i) % 2
            for c in range(k):
                grads[cell, c, side] = og[c, i]
                mags[cell, c, side] = om[c, i]
    return grads, mags


@njit(cache=True, nogil=True)
def _vertex_outputs(ring, wt, b):
    """(each ring row's vertex id, y = W_out h + b at each distinct vertex, (vertices, k)): the
    sums of :func:`_vertex_preactivations` (from b, -0.0 as +0.0, in input order) in blocks of
    BLOCK vertices, as :func:`_out_grads` runs them."""
    uid, first = _distinct_vertices(ring)
    n_u, n_in, k = first.size, ring.shape[1] - 2, wt.shape[1]
    y = np.empty((n_u, k))
    t = np.empty((n_in, BLOCK))
    live = np.empty(n_in, np.bool_)
    acc = np.empty((k, BLOCK))
    b0 = b + 0.0
    for u0 in range(0, n_u, BLOCK):
        m = min(BLOCK, n_u - u0)
        live[:] = False
        for i in range(m):
            src = ring[first[u0 + i]]
            for j in range(n_in):
                v = src[2 + j]
                t[j, i] = v
                live[j] |= v != 0.0
        for c in range(k):
            acc[c, :m] = b0[c]
        for j in range(n_in):
            if live[j]:
                for c in range(k):
                    w = wt[j, c]
                    for i in range(m):
                        acc[c, i] += t[j, i] * w
        for i in range(m):
            for c in range(k):
                y[u0 + i, c] = acc[c, i]
    return uid, y


@njit(cache=True, nogil=True)
def _distinct_vertices(ring):
    """(each ring row's vertex id, a ring row holding each distinct vertex): rows equal in
    (u, v) and every carried value are one vertex (the hash of :func:`_vertex_preactivations`)."""
    rows, cols = ring.shape
    size = 1
    while size < 2 * rows + 2:
        size *= 2
    mask = np.uint64(size - 1)
    table = np.full(size, -1, np.int64)
    bits = ring[:, :2].copy().view(np.uint64)
    uid = np.empty(rows, np.int64)
    first = np.empty(rows, np.int64)
    n_u = 0
    for i in range(rows):
        h = _mix(_mix(bits[i, 0]) ^ bits[i, 1]) & mask
        found = -1
        while table[h] >= 0:
            r = first[table[h]]
            same = True
            for col in range(cols):
                if ring[r, col] != ring[i, col]:
                    same = False
                    break
            if same:
                found = table[h]
                break
            h = (h + np.uint64(1)) & mask
        if found < 0:
            found = n_u
            first[n_u] = i
            table[h] = n_u
            n_u += 1
        uid[i] = found
    return uid, first[:n_u].copy()


@njit(cache=True, nogil=True)
def _snap(zs, bound, raw_sign, leak, zero_tol):
    """The zero rule of :func:`_vertex_preactivations` on pool rows ``zs`` (u, v, max|h|, z...)
    with a given bound of |W| |h| + |b| per entry: |z| <= zero_tol bound is exactly 0 (units of
    slope 1 are never snapped); ``raw_sign`` the signs before."""
    width = zs.shape[1] - Z0
    for u in range(zs.shape[0]):
        for c in range(width):
            z = zs[u, Z0 + c]
            raw_sign[u, c] = 1 if z > 0 else (-1 if z < 0 else 0)
            if abs(z) <= zero_tol * bound[u, c] and leak[c] != 1.0:
                zs[u, Z0 + c] = 0.0


# ---------------------------------------------------------------------------------------------
# The layer kernel

@njit(cache=True, nogil=True)
def _split_cells(off, grads, pat, uid, zs, raw_sign, w, wt, b, w_abs_sum, leak, zero_tol,
                 interp_tol, bit0, box, cell0, o_off, o_ring, o_jac, o_pat, counters):
    """Refine cells cell0.. by one Linear + ReLU into the ``o_`` arrays; return the first cell
    that did not fit (len(off) - 1 when all did). ``counters``: see CELLS_WRITTEN and its
    neighbours. ``leak[c]`` is unit c's negative-side slope; a unit with slope 1 is affine (a
    carried input): it never splits a cell, keeps its value and has pattern bit 1.

    Within a cell, vertices are rows of ``vert`` (u, v, max|h|, z...), written once; sub-cells
    are rings of row numbers in ``idx``, so a split copies numbers, not rows.
    """
    n_cells = off.size - 1
    width = w.shape[0]
    n_sw = _switching(leak)
    cols = Z0 + width
    vert = np.empty((256, cols))
    idx = np.empty(1024, np.int64)
    spare = np.empty(1024, np.int64)
    p_start = np.empty(64, np.int64)
    p_len = np.empty(64, np.int64)
    p_next = np.empty(64, np.int64)
    due = np.empty(64, np.int64)
    alive = np.empty(64, np.int64)
    nxt = np.empty(64, np.int64)
    cuts = np.empty(64, np.int64)
    cross = np.empty(width, np.int64)
    has_pos = np.empty(width, np.bool_)
    has_neg = np.empty(width, np.bool_)
    tot = np.empty(width)
    on = np.empty(width, np.bool_)
    for cell in range(cell0, n_cells):
        a, k = off[cell], off[cell + 1] - off[cell]
        if k > vert.shape[0]:
            vert = np.empty((2 * k, cols))
        if 8 * k + 8 > idx.size:
            idx = np.empty(16 * k + 16, np.int64)
            spare = np.empty(idx.size, np.int64)
        # Pre-activations at the vertices (computed once per distinct vertex, beforehand).
        for i in range(k):
            vert[i] = zs[uid[a + i]]
            idx[i] = i
        n_vert = k
        # Crossings the snapping removed, once per edge (the cell holding it in its canonical
        # direction counts it).
        for i in range(k):
            i2 = (i + 1) % k
            if _canonical(vert, i, i2, box):
                u1, u2 = uid[a + i], uid[a + i2]
                for c in range(n_sw):  # carried units are never snapped
                    if (raw_sign[u1, c] * raw_sign[u2, c] < 0
                            and not vert[i, Z0 + c] * vert[i2, Z0 + c] < 0):
                        counters[SNAPPED] += 1
        grad = grads[cell]  # gradient of z on the cell, W J
        # Neurons that switch inside the cell. Sub-cells hold only convex combinations of the
        # cell's vertices, so no other neuron can switch in them.
        has_pos[:] = False
        has_neg[:] = False
        for i in range(k):
            for c in range(n_sw):
                z = vert[i, Z0 + c]
                has_pos[c] |= z > 0
                has_neg[c] |= z < 0
        n_cross = 0
        for c in range(n_sw):
            if has_pos[c] and has_neg[c] and leak[c] != 1.0:
                cross[n_cross] = c
                n_cross += 1
        # Sub-cells: vertex rows idx[p_start[p]:p_start[p] + p_len[p]]. A sub-cell is split
        # by the neurons of ``cross`` in order, each one that has both signs at its vertices.
        # Many neurons (``ahead``): ``p_next[p]`` is the first such position after the neuron
        # that made the sub-cell, found once from its vertices' rows (neighbouring columns, so
        # in cache) rather than by reading every alive ring at every neuron; ``due[q]``: the
        # alive sub-cells split at q. Few: each alive ring is read at each neuron.
        ahead = n_cross >= AHEAD_CROSSINGS
        if n_cross > due.size:
            due = np.empty(2 * n_cross, np.int64)
        due[:n_cross] = 0
        p_start[0], p_len[0], p_next[0] = 0, k, 0  # cross[0] splits the cell
        if n_cross:
            due[0] = 1
        n_poly, n_alive, top = 1, 1, k
        alive[0] = 0
        for q in range(n_cross):
            if ahead and due[q] == 0:
                continue  # no alive sub-cell changes
            c = cross[q]
            n_next = 0
            for ai in range(n_alive):
                p = alive[ai]
                s, L = p_start[p], p_len[p]
                if ahead:
                    split = p_next[p] == q
                else:
                    pos = neg = False
                    for i in range(s, s + L):
                        z = vert[idx[i], Z0 + c]
                        pos |= z > 0
                        neg |= z < 0
                    split = pos and neg
                if not split:
                    if n_next >= nxt.size:
                        nxt = _grow_ints(nxt, 2 * nxt.size)
                    nxt[n_next] = p
                    n_next += 1
                    continue
                # The ring with the crossings inserted, at idx's top.
                if top + 8 * L + 8 > idx.size:
                    idx = _grow_ints(idx, 2 * (top + 8 * L + 8))
                    spare = np.empty(idx.size, np.int64)
                if n_vert + L > vert.shape[0]:
                    vert = _grow_rows(vert, 2 * (n_vert + L))
                t0 = top
                for i in range(L):
                    i1, i2 = idx[s + i], idx[s + (i + 1) % L]
                    idx[top] = i1
                    top += 1
                    if vert[i1, Z0 + c] * vert[i2, Z0 + c] < 0:
                        counters[SNAPPED] += _crossing(vert, i1, i2, c, n_vert, interp_tol,
                                                       zero_tol, w_abs_sum, b, leak, box)
                        idx[top] = n_vert
                        n_vert += 1
                        top += 1
                lr = top - t0
                if lr > cuts.size:
                    cuts = _grow_ints(cuts, 2 * lr)
                n_cut = _cuts(vert, idx, t0, lr, Z0 + c, cuts)
                if n_cut > 2:
                    counters[SNAPPED] += 1
                # Pieces: between consecutive cuts; piece 0 also takes the other cut points.
                for pi in range(n_cut):
                    n_extra = n_cut - 2 if pi == 0 else 0
                    start = top
                    r = cuts[pi]
                    end = cuts[(pi + 1) % n_cut]
                    while True:
                        idx[top] = idx[t0 + r]
                        top += 1
                        if r == end:
                            break
                        r = (r + 1) % lr
                    for e in range(n_extra):
                        idx[top] = idx[t0 + cuts[(2 + e) % n_cut]]
                        top += 1
                    if n_poly >= p_start.size:
                        p_start = _grow_ints(p_start, 2 * p_start.size)
                        p_len = _grow_ints(p_len, 2 * p_len.size)
                        p_next = _grow_ints(p_next, 2 * p_next.size)
                    p_start[n_poly], p_len[n_poly] = start, top - start
                    if ahead:
                        p_next[n_poly] = _next_cross(vert, idx, start, top - start, cross,
                                                     q + 1, n_cross)
                        if p_next[n_poly] < n_cross:
                            due[p_next[n_poly]] += 1
                    if n_next >= nxt.size:
                        nxt = _grow_ints(nxt, 2 * nxt.size)
                    nxt[n_next] = n_poly
                    n_next += 1
                    n_poly += 1
            if n_next > alive.size:
                alive = _grow_ints(alive, nxt.size)
            alive[:n_next] = nxt[:n_next]
            n_alive = n_next
            # Compact idx when dead rings dominate: copy the live ones to the front.
            live = 0
            for ai in range(n_alive):
                live += p_len[alive[ai]]
            if top > 4 * live + 64:
                at = 0
                for ai in range(n_alive):
                    p = alive[ai]
                    spare[at:at + p_len[p]] = idx[p_start[p]:p_start[p] + p_len[p]]
                    p_start[p] = at
                    at += p_len[p]
                idx, spare = spare, idx
                top = at
        # Write the sub-cells; stop if they do not fit, handing them back to be written into
        # fresh arrays (:func:`_write_cells`) rather than split again.
        rows = 0
        for ai in range(n_alive):
            rows += p_len[alive[ai]]
        nc, nr = counters[CELLS_WRITTEN], counters[ROWS_WRITTEN]
        if nc + n_alive > o_jac.shape[0] or nr + rows > o_ring.shape[0]:
            counters[CELLS_NEEDED], counters[ROWS_NEEDED] = nc + n_alive, nr + rows
            return cell, vert, idx, alive[:n_alive].copy(), p_start, p_len
        _write_cells(vert, idx, alive, n_alive, p_start, p_len, grad, pat[cell], leak, n_sw, bit0,
                     tot, on, o_off, o_ring, o_jac, o_pat, counters)
    return n_cells, vert, idx, alive[:0].copy(), p_start, p_len


@njit(cache=True, nogil=True, inline="always")
def _write_cells(vert, idx, alive, n_alive, p_start, p_len, grad, pat_row, leak, n_sw, bit0,
                 tot, on, o_off, o_ring, o_jac, o_pat, counters):
    """Write a cell's sub-cells (rings of vertex rows, see :func:`_split_cells`) after those
    the ``o_`` arrays hold: the ReLU'd values, the masked gradient ``grad`` (W J), the pattern
    ``pat_row`` with the units that are on set (units n_sw.. are carried: on); ``tot`` and
    ``on``: scratch of the width."""
    width = grad.shape[1]
    nc, nr = counters[CELLS_WRITTEN], counters[ROWS_WRITTEN]
    for ai in range(n_alive):
        p = alive[ai]
        s, L = p_start[p], p_len[p]
        tot[:n_sw] = 0.0
        for i in range(s, s + L):
            row = vert[idx[i]]
            for c in range(n_sw):
                tot[c] += row[Z0 + c]
        for c in range(n_sw):
            on[c] = tot[c] > 0 or leak[c] == 1.0
        on[n_sw:] = True
        for i in range(s, s + L):
            row = vert[idx[i]]
            o_ring[nr, 0], o_ring[nr, 1] = row[0], row[1]
            for c in range(width):
                z = row[Z0 + c]
                o_ring[nr, 2 + c] = z if z > 0 else (leak[c] * z if leak[c] != 0.0 else 0.0)
            nr += 1
        for c in range(width):
            f = 1.0 if on[c] else leak[c]
            o_jac[nc, 0, c], o_jac[nc, 1, c] = f * grad[0, c], f * grad[1, c]
        o_pat[nc] = pat_row
        for c in range(width):
            if on[c]:
                bit = bit0 + c
                o_pat[nc, bit >> 3] |= np.uint8(128 >> (bit & 7))
        nc += 1
        o_off[nc] = nr
    counters[CELLS_WRITTEN], counters[ROWS_WRITTEN] = nc, nr


@njit(cache=True)
def _switching(leak):
    """The units before the trailing carried ones (slope 1: they never switch)."""
    n = leak.size
    while n > 0 and leak[n - 1] == 1.0:
        n -= 1
    return n


@njit(inline="always")
def _next_cross(vert, idx, s, L, cross, q0, n_cross):
    """The first position q >= q0 of ``cross`` whose neuron has strictly opposite signs at two
    vertices of the ring idx[s:s + L] (n_cross if none)."""
    for q in range(q0, n_cross):
        col = Z0 + cross[q]
        pos = neg = False
        for i in range(s, s + L):
            z = vert[idx[i], col]
            pos |= z > 0
            neg |= z < 0
        if pos and neg:
            return q
    return n_cross


@njit(inline="always")
def _vertex_row(zs, raw_sign, u, src, acc, h_max, w, b, w_abs_sum, leak, zero_tol):
    """Vertex u's pool row from its sums ``acc``: the signs, then the zero rule."""
    zs[u, 0], zs[u, 1], zs[u, 2] = src[0], src[1], h_max
    n_prev = src.size - 2
    for c in range(acc.size):
        z = acc[c]
        raw_sign[u, c] = 1 if z > 0 else (-1 if z < 0 else 0)
        if (abs(z) <= zero_tol * (h_max * w_abs_sum[c] + abs(b[c]))
                and leak[c] != 1.0):
            bound = abs(b[c])
            for j in range(n_prev):
                bound += abs(src[2 + j]) * abs(w[c, j])
            if abs(z) <= zero_tol * bound:
                z = 0.0
        zs[u, Z0 + c] = z


@njit(inline="always")
def _canonical(rows, i, j, box):
    """Whether edge i -> j is counted from this side: it lies on the box boundary (one cell holds
    it), or it runs from the lexicographically smaller end point (the other cell runs it back)."""
    xi, yi, xj, yj = rows[i, 0], rows[i, 1], rows[j, 0], rows[j, 1]
    if ((xi == box[0] and xj == box[0]) or (xi == box[1] and xj == box[1])
            or (yi == box[2] and yj == box[2]) or (yi == box[3] and yj == box[3])):
        return True
    return xi < xj or (xi == xj and yi < yj)


@njit(cache=True, nogil=True)
def _crossing(pool, i1, i2, c, dst, interp_tol, zero_tol, w_abs_sum, b, leak, box):
    """Write at row ``dst`` the point where neuron c crosses zero on edge i1-i2 (strictly
    opposite signs). Computed from the negative end, whichever way the ring runs, so the two
    cells sharing the edge get the same point and values. Returns the interpolated values snapped
    to zero, if this side counts the edge.

    Where the crossing lies is uncertain by dt = zero_tol (m_n + m_p) / |z_n - z_p| (m: the
    magnitude |W_c| |h| + |b_c| that z_c is summed from, bounded through max|h|): large when the
    neuron barely changes along the edge, e.g. a line nearly parallel to it. Another neuron whose
    value here is within that uncertainty (dt |v_p - v_n|), or within interpolation rounding, of 0
    passes through this vertex: it is set to exactly 0, so that lines meeting in one point (all
    lines of a bias-free layer, say) meet in one vertex.
    """
    n, p = (i1, i2) if pool[i1, Z0 + c] < 0 else (i2, i1)
    zn, zp = pool[n, Z0 + c], pool[p, Z0 + c]
    t = zn / (zn - zp)
    m = (pool[n, 2] + pool[p, 2]) * w_abs_sum[c] + 2.0 * abs(b[c])
    dt = zero_tol * m / (zp - zn)
    snapped = 0
    for col in range(pool.shape[1]):
        vn, vp = pool[n, col], pool[p, col]
        v = vn + t * (vp - vn)
        if col >= Z0:
            if col == Z0 + c:
                v = 0.0
            elif (v != 0.0 and abs(v) <= interp_tol * (abs(vn) + abs(vp)) + dt * abs(vp - vn)
                  and leak[col - Z0] != 1.0):
                v = 0.0
                snapped += 1
        pool[dst, col] = v
    return snapped if _canonical(pool, i1, i2, box) else 0


@njit(cache=True)
def _cuts(vert, idx, t0, lr, col, cuts):
    """Cut points of a ring (vertex rows idx[t0:t0 + lr]) by the sign of column ``col``: the
    first zero after each run of one sign that is followed by the opposite sign. Returns their
    number (even)."""
    r0 = 0
    while vert[idx[t0 + r0], col] == 0:
        r0 += 1
    cur = vert[idx[t0 + r0], col] > 0
    first_zero, n = -1, 0
    for step in range(1, lr + 1):
        r = (r0 + step) % lr
        v = vert[idx[t0 + r], col]
        if v == 0:
            if first_zero < 0:
                first_zero = r
        elif (v > 0) == cur:
            first_zero = -1
        else:
            cuts[n] = first_zero
            n += 1
            cur = not cur
            first_zero = -1
    return n


@njit(cache=True)
def _grow_rows(a, n):
    out = np.empty((n, a.shape[1]))
    out[:a.shape[0]] = a
    return out


@njit(cache=True)
def _grow_vec(a, n):
    out = np.empty(n)
    out[:a.size] = a
    return out


@njit(cache=True)
def _grow_ints(a, n):
    out = np.empty(n, np.int64)
    out[:a.size] = a
    return out


# ---------------------------------------------------------------------------------------------
# Output layer, cells and pieces

class _Accumulator:
    """Collects the final cells chunk by chunk: polygons, patterns, output gradients and values,
    area, decision segments; then finds the linear pieces."""

    def __init__(self, out_layer, box, level):
        w, b = out_layer
        self.k = w.shape[0]
        if self.k == 1:
            self.w_out, self.b_out = np.ascontiguousarray(w[0]), float(b[0])
        else:
            self.b, self.wt = np.ascontiguousarray(b), np.ascontiguousarray(w.T)
            self.w_abs_t = np.abs(self.wt)
        self.level = level
        self.box = box
        self.parts = []

    def add(self, off, ring, jac, pat):
        n = off.size - 1
        areas, widths = np.empty(n), np.empty(n)
        rel = off - off[0]
        if self.k == 1:
            grads, mags, values = np.empty((n, 2)), np.empty((n, 2)), np.empty(n)
            y = np.empty((ring.shape[0], 2))
            _finish(off, ring, jac, self.w_out, self.b_out, grads, mags, areas, widths, values,
                    y)
            y[:, 0] = self.level  # the level set is where f = level overtakes the constant
        else:
            # W_out J and |W_out| |J| per cell (summed as a hidden layer's gradients); y once
            # per distinct vertex (a vertex is in ~3 rings), exactly as a hidden layer's z.
            grads, mags = _out_grads(jac.reshape(2 * n, jac.shape[2]), self.wt, self.w_abs_t)
            uid, y = _vertex_outputs(ring, self.wt, self.b)
            y = y[uid]
            _shape(rel, ring, areas, widths)
            values = np.add.reduceat(y, rel[:-1], axis=0) / np.diff(rel)[:, None]
        segs = _decision(rel, ring, y)
        self.parts.append((rel[1:], ring[:, :2].copy(), pat.copy(), grads, mags, areas,
                           widths, values, segs))

    def result(self, box, snapped, slope_tol, n_hidden, plane, per_output,
               windows=None, magnitudes=False) -> PlaneCount:
        """The PlaneCount; ``windows`` (max_nodes, hidden widths) of a model with max windows:
        its patterns become region keys and cells of equal keys that share an edge merge;
        ``magnitudes``: keep each cell's |W_out| |J| (tiles.py)."""
        lens = [p[0][-1] for p in self.parts]
        shift = np.cumsum([0] + lens[:-1])
        offsets = np.concatenate([[0]] + [p[0] + s for p, s in zip(self.parts, shift, strict=True)])
        polygons = np.concatenate([p[1] for p in self.parts])
        pat, grads, mags, areas, widths, values, segs = (
            np.concatenate([p[i] for p in self.parts]) for i in range(2, 9))
        self.parts = []
        n = offsets.size - 1
        pieces = np.empty(n, np.int64)
        regions, key_ids = np.arange(n), None
        if windows is not None:
            bits = np.unpackbits(pat, axis=1, count=n_hidden).astype(bool)
            pat = np.packbits(region_keys(bits, *windows), axis=1)
            key_ids = _row_ids(pat)
        n_pieces, boundary, unmatched, own, n_regions = _pieces(
            offsets, polygons, grads.reshape(n, -1), mags.reshape(n, -1), slope_tol, self.box,
            pieces, self.k if per_output else 0, key_ids, regions)
        half = polygons.shape[0]
        edges = (half + boundary + unmatched) // 2
        scale = max(abs(v) for v in box)
        scale = max(scale, box[1] - box[0], box[3] - box[2])
        min_width = float(widths.min())
        segs = segs.reshape(-1, 2, 2)
        result = PlaneCount(
            box=tuple(box), activation_regions=n_regions, linear_pieces=n_pieces,
            vertices=edges - n + 1, edges=edges, min_cell_area=float(areas.min()),
            min_cell_width=min_width, snapped=snapped, unmatched_edges=unmatched,
            resolved=bool(unmatched == 0 and min_width > RESOLUTION_ULPS * np.spacing(scale)),
            polygons=polygons, offsets=offsets, patterns=pat, areas=areas, gradients=grads,
            values=values, pieces=pieces, hidden_neurons=n_hidden, plane=plane, outputs=self.k,
            level=self.level, decision_segments=segs,
            decision_length=float(np.hypot(*(segs[:, 1] - segs[:, 0]).T).sum()),
            pieces_per_output=own, cells=n, regions=regions)
        if magnitudes:
            result.magnitudes = mags.reshape(n, -1)
        return result


def _row_ids(rows: np.ndarray) -> np.ndarray:
    """An integer per row of the uint8 array ``rows``, equal iff the rows are: a lexsort of the
    rows as 64-bit words (np.unique on whole rows sorts bytes, ~10x slower)."""
    n, width = rows.shape
    words = np.zeros((n, -(-width // 8) * 8), np.uint8)
    words[:, :width] = rows
    words = words.view(np.uint64)
    order = np.lexsort(words.T[::-1])
    new = np.ones(n, dtype=bool)
    new[1:] = np.any(words[order[1:]] != words[order[:-1]], axis=1)
    ids = np.empty(n, np.int64)
    ids[order] = np.cumsum(new) - 1
    return ids


@njit(cache=True, nogil=True)
def _finish(off, ring, jac, w_out, b_out, grads, mags, areas, widths, values, y_out):
    """Per cell: output gradient (W_out J), its magnitude |W_out| |J|, area (shoelace), thickness
    2 area / perimeter, and the output at the mean of the vertices; the output at every ring
    vertex goes to ``y_out[:, 1]``."""
    width = w_out.size
    for cell in range(off.size - 1):
        g0 = g1 = m0 = m1 = 0.0
        for c in range(width):
            g0 += w_out[c] * jac[cell, 0, c]
            g1 += w_out[c] * jac[cell, 1, c]
            m0 += abs(w_out[c] * jac[cell, 0, c])
            m1 += abs(w_out[c] * jac[cell, 1, c])
        grads[cell, 0], grads[cell, 1], mags[cell, 0], mags[cell, 1] = g0, g1, m0, m1
        a, e = off[cell] - off[0], off[cell + 1] - off[0]
        u0, v0 = ring[a, 0], ring[a, 1]  # shoelace about the first vertex, as in _shape
        area = perim = val = 0.0
        for i in range(a, e):
            i2 = i + 1 if i + 1 < e else a
            area += ((ring[i, 0] - u0) * (ring[i2, 1] - v0)
                     - (ring[i2, 0] - u0) * (ring[i, 1] - v0))
            perim += math.hypot(ring[i2, 0] - ring[i, 0], ring[i2, 1] - ring[i, 1])
            y = b_out
            for c in range(width):
                y += w_out[c] * ring[i, 2 + c]
            y_out[i, 1] = y
            val += y
        areas[cell] = 0.5 * area
        widths[cell] = area / perim if perim > 0 else 0.0
        values[cell] = val / (e - a)


@njit(cache=True, nogil=True)
def _shape(off, ring, areas, widths):
    """Per cell (offsets from 0): area (shoelace, about the cell's first vertex: a cell 1e-7
    across far from the origin keeps its area instead of cancelling to 0) and thickness
    2 area / perimeter."""
    for cell in range(off.size - 1):
        a, e = off[cell], off[cell + 1]
        u0, v0 = ring[a, 0], ring[a, 1]
        area = perim = 0.0
        for i in range(a, e):
            i2 = i + 1 if i + 1 < e else a
            area += ((ring[i, 0] - u0) * (ring[i2, 1] - v0)
                     - (ring[i2, 0] - u0) * (ring[i, 1] - v0))
            perim += math.hypot(ring[i2, 0] - ring[i, 0], ring[i2, 1] - ring[i, 1])
        areas[cell] = 0.5 * area
        widths[cell] = area / perim if perim > 0 else 0.0


@njit(cache=True, nogil=True)
def _decision(off, ring, y):
    """Segments (m, 4: u0, v0, u1, v1) of the argmax boundary of the columns of ``y`` (outputs
    at every ring vertex; offsets from 0), ties to the lowest index as np.argmax.

    Outputs are affine on a cell, so where one output wins is convex: a cell whose vertices all
    have one winner holds no boundary and costs one pass over its vertices. In the others, each
    output's winning polygon is the cell clipped by y_j >= y_i for every i (edges keep the index
    of the line that made them); its edges on y_j = y_i with i > j are boundary segments (the
    region of i holds the same edge and does not report it again).
    """
    k = y.shape[1]
    segs = np.empty((64, 4))
    m = 0
    for cell in range(off.size - 1):
        a, e = off[cell], off[cell + 1]
        first = np.argmax(y[a])
        mixed = False
        for i in range(a + 1, e):
            if np.argmax(y[i]) != first:
                mixed = True
                break
        if not mixed:
            continue
        L = e - a
        cap = L + k + 2
        cols = 2 + k
        poly = np.empty((cap, cols))
        tmp = np.empty((cap, cols))
        lab = np.empty(cap, np.int64)
        tlab = np.empty(cap, np.int64)
        d = np.empty(cap)
        for j in range(k):
            n = L
            if poly.shape[0] < L + 2:
                poly, tmp = np.empty((L + 2, cols)), np.empty((L + 2, cols))
                lab, tlab, d = np.empty(L + 2, np.int64), np.empty(L + 2, np.int64), np.empty(L + 2)
            for t in range(L):
                poly[t, 0], poly[t, 1] = ring[a + t, 0], ring[a + t, 1]
                poly[t, 2:] = y[a + t]
                lab[t] = -1
            for i in range(k):
                if i == j:
                    continue
                lo, hi = np.inf, -np.inf
                for t in range(n):
                    d[t] = poly[t, 2 + j] - poly[t, 2 + i]
                    lo, hi = min(lo, d[t]), max(hi, d[t])
                if hi <= 0.0 and (lo < 0.0 or i < j):
                    n = 0  # i wins everywhere here (or ties it and comes first)
                    break
                if lo >= 0.0:
                    continue
                if 2 * n + 2 > poly.shape[0]:  # a convex ring gains one vertex; rounding, more
                    size = 2 * n + 2
                    poly, tmp = _grow_rows(poly[:n], size), np.empty((size, cols))
                    lab, tlab = _grow_ints(lab[:n], size), np.empty(size, np.int64)
                    d = _grow_vec(d[:n], size)
                q = 0
                for t in range(n):
                    t2 = t + 1 if t + 1 < n else 0
                    d1, d2 = d[t], d[t2]
                    if d1 >= 0.0:
                        tmp[q] = poly[t]
                        tlab[q] = lab[t] if d2 >= 0.0 else (i if d1 == 0.0 else lab[t])
                        q += 1
                        if d1 > 0.0 and d2 < 0.0:
                            f = d1 / (d1 - d2)
                            for col in range(cols):
                                tmp[q, col] = poly[t, col] + f * (poly[t2, col] - poly[t, col])
                            tlab[q] = i
                            q += 1
                    elif d2 > 0.0:
                        f = d2 / (d2 - d1)
                        for col in range(cols):
                            tmp[q, col] = poly[t2, col] + f * (poly[t, col] - poly[t2, col])
                        tlab[q] = lab[t]
                        q += 1
                poly, tmp = tmp, poly
                lab, tlab = tlab, lab
                n = q
                if n < 3:
                    n = 0
                    break
            for t in range(n):
                if lab[t] > j:
                    t2 = t + 1 if t + 1 < n else 0
                    if poly[t, 0] == poly[t2, 0] and poly[t, 1] == poly[t2, 1]:
                        continue
                    if m >= segs.shape[0]:
                        segs = _grow_rows(segs, 2 * m)
                    segs[m, 0], segs[m, 1] = poly[t, 0], poly[t, 1]
                    segs[m, 2], segs[m, 3] = poly[t2, 0], poly[t2, 1]
                    m += 1
    return segs[:m].copy()


def _pieces(off, pts, grads, mags, slope_tol, box, label, per_output=0, key_ids=None,
            regions=None):
    """Linear pieces: union of edge-adjacent cells with equal output gradients (all columns of
    ``grads``, two per output). Returns (pieces, boundary half-edges, unmatched interior
    half-edges, each output's own piece count if ``per_output`` (= k) else None, activation
    regions); ``label`` gets each cell's piece. With ``key_ids`` (a model with max windows:
    each cell's region key as an integer) edge-adjacent cells of equal keys join into one
    activation region by the same twin walk, ``regions`` getting each cell's; else every cell
    is one.

    Edges are matched by sorting: each interior half-edge gets a key whose high bits hash its
    end points in a fixed order (a shared edge's two halves, which are bit-identical, get the
    same hash) and whose low bits are its index, so one sort of integers (no argsort) lines
    twins up.
    """
    n_half = pts.shape[0]
    owner, nxt = _ring_links(off, n_half)
    index_bits = max(1, int(n_half).bit_length())
    keys = _edge_keys(pts, nxt, box, index_bits)
    boundary = n_half - keys.size
    keys.sort()
    unmatched = _join_twins(keys, pts, nxt, owner, grads, mags, slope_tol, index_bits, label)
    own = None
    if per_output:
        own = np.empty(per_output, np.int64)
        scratch = np.empty_like(label)
        for j in range(per_output):
            cols = slice(2 * j, 2 * j + 2)
            _join_twins(keys, pts, nxt, owner, np.ascontiguousarray(grads[:, cols]),
                        np.ascontiguousarray(mags[:, cols]), slope_tol, index_bits, scratch)
            own[j] = scratch.max() + 1 if scratch.size else 0
    n_regions = label.size
    if key_ids is not None:  # equal keys: difference 0 within tolerance 0
        _join_twins(keys, pts, nxt, owner, key_ids.astype(np.float64)[:, None],
                    np.zeros((label.size, 1)), 0.0, index_bits, regions)
        n_regions = int(regions.max() + 1 if regions.size else 0)
    return (int(label.max() + 1 if label.size else 0), int(boundary), int(unmatched), own,
            n_regions)


@njit(cache=True)
def _ring_links(off, n_half):
    owner = np.empty(n_half, np.int64)
    nxt = np.empty(n_half, np.int64)
    for cell in range(off.size - 1):
        for i in range(off[cell], off[cell + 1]):
            owner[i] = cell
            nxt[i] = i + 1 if i + 1 < off[cell + 1] else off[cell]
    return owner, nxt


@njit(cache=True)
def _edge_keys(pts, nxt, box, index_bits):
    bits = pts.view(np.uint64)
    keys = np.empty(pts.shape[0], np.uint64)
    low = (np.uint64(1) << np.uint64(index_bits)) - np.uint64(1)
    n = 0
    for i in range(pts.shape[0]):
        j = nxt[i]
        xi, yi, xj, yj = pts[i, 0], pts[i, 1], pts[j, 0], pts[j, 1]
        if ((xi == box[0] and xj == box[0]) or (xi == box[1] and xj == box[1])
                or (yi == box[2] and yj == box[2]) or (yi == box[3] and yj == box[3])):
            continue  # on the box's boundary: one cell holds it
        a, b = (i, j) if (bits[i, 0], bits[i, 1]) < (bits[j, 0], bits[j, 1]) else (j, i)
        h = _mix(_mix(_mix(_mix(bits[a, 0]) ^ bits[a, 1]) ^ bits[b, 0]) ^ bits[b, 1])
        keys[n] = (h & ~low) | np.uint64(i)
        n += 1
    return keys[:n]


@njit(cache=True)
def _join_twins(keys, pts, nxt, owner, grads, mags, slope_tol, index_bits, label):
    """Walk runs of equal hash: twins (i -> j and j -> i) join their cells' pieces when the
    gradients agree to slope_tol |W_out| |J|. Returns the half-edges left without a twin."""
    n_cells = label.size
    parent = np.arange(n_cells)
    low = (np.uint64(1) << np.uint64(index_bits)) - np.uint64(1)
    matched = 0
    start = 0
    while start < keys.size:
        end = start + 1
        while end < keys.size and (keys[end] & ~low) == (keys[start] & ~low):
            end += 1
        for p in range(start, end):
            i = np.int64(keys[p] & low)
            for q in range(p + 1, end):
                t = np.int64(keys[q] & low)
                j, t2 = nxt[i], nxt[t]
                if (pts[t, 0] == pts[j, 0] and pts[t, 1] == pts[j, 1]
                        and pts[t2, 0] == pts[i, 0] and pts[t2, 1] == pts[i, 1]):
                    matched += 2
                    c1, c2 = owner[i], owner[t]
                    same = True
                    for d in range(grads.shape[1]):
                        tol = slope_tol * max(mags[c1, d], mags[c2, d])
                        if abs(grads[c1, d] - grads[c2, d]) > tol:
                            same = False
                    if same:
                        r1, r2 = _root(parent, c1), _root(parent, c2)
                        if r1 != r2:
                            parent[max(r1, r2)] = min(r1, r2)
        start = end
    n_pieces = 0
    for cell in range(n_cells):
        r = _root(parent, cell)
        if r == cell:
            label[cell] = n_pieces
            n_pieces += 1
        else:
            label[cell] = label[r]
    return keys.size - matched


@njit(inline="always")
def _mix(h):
    """splitmix64's finalizer: every input bit reaches every output bit."""
    h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


@njit(cache=True)
def _root(parent, i):
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i
