"""Exact linear-region counting for ReLU MLPs along a line (1D input or a segment in nD).

Algorithm (float64). Along the segment the network is continuous and piecewise affine. We keep
the sorted points p_0 < ... < p_m where some neuron switched so far, and carry

  * the *values* of the current layer at each point (never a slope plus a global intercept: slopes
    reach 4^d, intercepts would cancel catastrophically), and
  * the *slopes* of the current layer on each interval (chain rule, exact up to rounding).

For the next layer, pre-activations z = W h + b at the points are exact up to rounding. A neuron
switches inside an interval iff its z has strictly opposite signs at the two ends; the crossing is
at the convex combination lambda = z_l / (z_l - z_r), where the other neurons' values are
interpolated the same way (convex combinations are stable). Each sub-interval's activation
pattern is the sign of z_l + z_r; its slopes are the parent interval's slopes, masked.

Touching zeros. A neuron whose pre-activation only touches zero (e.g. t1 = relu(s W) where the
sawtooth W touches 0) is computed as +-1e-17 and would split a real piece into a sliver. Values with
|z| <= zero_tol * (|W| |h| + |b|), a rounding-error bound, are set to exactly 0 first; every such
zeroing that removed a strict sign change is counted in ``snapped``, and so is every switch point
merged into a neighbour closer than MERGE_ULPS ulps (two neurons switching at one point, up to
rounding). In float64 a snapped crossing is either rounding or a piece narrower than ~zero_tol of
its interval: no float64 method can tell, so the count is reported rather than hidden.

Linear pieces. Adjacent activation regions belong to the same linear piece iff the output slopes
agree (the function is continuous, so equal slopes mean the same affine map). They are taken equal
when |slope_l - slope_r| <= slope_tol * max(mag_l, mag_r), with mag = |W_out| |h'| the magnitude
the output slope is summed from.

Implementation. Each layer is two compiled (numba) passes over the points: pre-activations with
the zero snapping, which also count the crossings, then the refinement into arrays of that size.
Intervals refine independently, so the network runs depth first on chunks of at most ~CHUNK
points, in reused arrays; only the reported breakpoints, knots and slopes grow with the count
(2^24 pieces: ~400 MB). A net whose layers all stay within CHUNK points (trained nets, small
constructions) runs the same kernels in one compiled call (_count_small): no Python per layer.
The kernels are compiled once (seconds) and cached in the user's cache directory
(:mod:`relu_regions.analysis.jit`); a process's first count still pays ~0.6-0.9 s to set up numba
and load them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from numpy.typing import ArrayLike
from torch import nn

from ..errors import InputError
from ..nets.operators import check_dense
from ..nets.reader import Lowered, lower, region_keys
from ..validation import check_interval, check_level, check_point
from .jit import njit

ZERO_TOL = 2.0**-40  # ~9e-13: about 4000 ulps of the magnitude a pre-activation is summed from
SLOPE_TOL = 1e-11
# Pieces narrower than this many ulps of the segment's scale cannot be placed reliably.
RESOLUTION_ULPS = 64
EPS = np.finfo(np.float64).eps
INTERP_ULPS = 64  # interpolated values within this many eps of their endpoints' size are 0
MERGE_ULPS = 16  # switch points closer than this many ulps of the segment's scale are one
CHUNK = 1 << 14  # points per layer before the rest of the net runs on halves

# The pieces' and decisions' running state, one float64 array shared by the kernels (see
# _chunk_pieces): these slots, then three per output.
PIECE_START, MIN_PIECE, MIN_REGION, WINNER, LAST_DECISION = range(5)
STATE_HEAD = 5
# _count_small's status.
NOT_FINITE, TOO_LARGE, COUNTED = -1, 0, 1


@dataclass
class RegionCount:
    """Exact counts along [lo, hi] (1D) or along t in [0, 1] of a segment (``x0 + t (x1 - x0)``).

    breakpoints: sorted points strictly inside where some neuron switches (activation-region
    boundaries; they do not depend on the output layer); knots: the subset where an output's
    slope changes (boundaries of the linear pieces of the output vector); slopes: the output
    slope on each linear piece (dy/dx in 1D, dy/dt on a segment), shape (pieces,) for one
    output and (pieces, outputs) for more. decision_points: where argmax of the outputs changes
    (one output: where f - level changes sign), in the coordinate of ``breakpoints``.
    pieces_per_output: each output's own piece count, when asked for (``per_output=True``).
    """

    lo: float
    hi: float
    breakpoints: np.ndarray
    knots: np.ndarray
    slopes: np.ndarray
    activation_regions: int
    linear_pieces: int
    min_piece_width: float
    min_region_width: float
    snapped: int
    resolved: bool
    outputs: int = 1
    decision_points: np.ndarray = field(default_factory=lambda: np.empty(0))
    pieces_per_output: list[int] | None = None
    notes: list = field(default_factory=list)  # what reading the model changed (float32 weights)

    def convexity(self) -> Convexity:
        return convexity(self)

    def to_dict(self, arrays: bool = False) -> dict:
        """JSON-ready summary; ``arrays=True`` adds breakpoints, knots, slopes and decision
        points as lists."""
        d = {k: v for k, v in asdict(self).items() if not isinstance(v, np.ndarray)}
        d["breakpoints"] = int(self.breakpoints.size)
        d["knots"] = int(self.knots.size)
        d["decision_points"] = int(self.decision_points.size)
        if d["pieces_per_output"] is None:
            del d["pieces_per_output"]
        if arrays:
            d.update(breakpoint_list=self.breakpoints.tolist(), knot_list=self.knots.tolist(),
                     slope_list=self.slopes.tolist(),
                     decision_point_list=self.decision_points.tolist())
        return d


@dataclass
class Convexity:
    """Convexity report of a piecewise-linear output: how many knots bend up and how many down."""

    convex_knots: int  # slope increases
    concave_knots: int  # slope decreases
    is_convex: bool
    is_concave: bool

    def to_dict(self) -> dict:
        return asdict(self)


def convexity(count: RegionCount) -> Convexity:
    if count.slopes.ndim != 1:
        raise InputError(f"convexity is defined for one output; the model has {count.outputs}")
    jumps = np.diff(count.slopes)
    up, down = int((jumps > 0).sum()), int((jumps < 0).sum())
    return Convexity(up, down, is_convex=down == 0, is_concave=up == 0)


# ---------------------------------------------------------------------------------------------
# The exact counter

def count_regions(model: nn.Module, lo: float, hi: float, *, level: float | None = None,
                  per_output: bool = False, zero_tol: float = ZERO_TOL,
                  slope_tol: float = SLOPE_TOL) -> RegionCount:
    """Exact breakpoints, activation regions, linear pieces and decision points of a 1D-input
    model on [lo, hi].

    ``model`` is anything :func:`~relu_regions.nets.reader.layer_stack` reads (Linear / ReLU /
    LeakyReLU stacks, pass-through units, ``ConstructionNet``, any number of outputs); the rules
    that keep float64 exact are in the module docstring and README. With k > 1 outputs the
    decision points are where the argmax changes; with one output, where f crosses ``level``
    (default 0; refused with k > 1). ``per_output=True`` adds each output's own piece count.

    >>> from relu_regions import ConstructionNet
    >>> r = count_regions(ConstructionNet.build(8, peaks=0.4), 0.0, 1.0)
    >>> r.linear_pieces, r.activation_regions, r.breakpoints.size, r.resolved
    (256, 256, 255, True)
    """
    lowered = lower(model, finite=False)  # _count checks the weights, packed
    layers, leaks = lowered.layers, lowered.leaks
    if layers[0][0].shape[1] != 1:
        raise InputError(f"the model takes {layers[0][0].shape[1]} inputs; count it along a "
                         f"segment with count_regions_segment(model, x0, x1)")
    lo, hi = check_interval((lo, hi), "(lo, hi)")
    points = np.array([lo, hi])
    values = points[:, None].copy()
    slopes = np.ones((1, 1))
    result = _count(layers, leaks, points, values, slopes, zero_tol, slope_tol, level, per_output)
    result.notes = lowered.notes
    if lowered.max_nodes is not None:
        _merge_windows(result, layers, leaks, lowered.max_nodes, np.zeros(1), np.ones(1),
                       zero_tol)
    return result


def count_regions_segment(model: nn.Module, x0: ArrayLike, x1: ArrayLike, *,
                          level: float | None = None, per_output: bool = False,
                          zero_tol: float = ZERO_TOL,
                          slope_tol: float = SLOPE_TOL,
                          input_shape: Sequence[int] | None = None) -> RegionCount:
    """Exact counts along the segment x0 + t (x1 - x0), t in [0, 1]; positions are t. The
    model and options as for :func:`count_regions`. The ends may be given in the model's input
    shape (e.g. two images (C, H, W) for a conv net, which then sets ``input_shape``) or
    flattened."""
    if input_shape is None and np.ndim(x0) > 1:
        input_shape = np.shape(x0)
    lowered = lower(model, input_shape, finite=False)  # _count checks the weights, packed
    return count_lowered_segment(lowered, x0, x1, level=level, per_output=per_output,
                                 zero_tol=zero_tol, slope_tol=slope_tol)


def count_lowered_segment(lowered: Lowered, x0: ArrayLike, x1: ArrayLike, *,
                          level: float | None = None, per_output: bool = False,
                          zero_tol: float = ZERO_TOL, slope_tol: float = SLOPE_TOL) -> RegionCount:
    """:func:`count_regions_segment` of a model already read by
    :func:`~relu_regions.nets.reader.lower`: a caller counting many segments of one model reads
    it once."""
    layers, leaks = lowered.layers, lowered.leaks
    n_in = layers[0][0].shape[1]
    x0 = check_point(x0, n_in, "x0")
    x1 = check_point(x1, n_in, "x1")
    if np.array_equal(x0, x1):
        raise InputError("the segment is empty: x0 equals x1")
    points = np.array([0.0, 1.0])
    values = np.stack([x0, x1])
    slopes = (x1 - x0)[None, :]
    result = _count(layers, leaks, points, values, slopes, zero_tol, slope_tol, level, per_output)
    result.notes = lowered.notes
    if lowered.max_nodes is not None:
        _merge_windows(result, layers, leaks, lowered.max_nodes, x0, x1 - x0, zero_tol)
    return result


def count_lowered_segments(lowered: Lowered, starts: ArrayLike, ends: ArrayLike, *,
                           level: float | None = None, per_output: bool = False,
                           zero_tol: float = ZERO_TOL,
                           slope_tol: float = SLOPE_TOL) -> list[RegionCount]:
    """:func:`count_lowered_segment` of each segment ``(starts[i], ends[i])`` (rows of the
    model's input size), the same results bit for bit, in one compiled call where every layer
    of a segment stays small (the per-call Python work would cost as much as the count of a
    short segment of a small net; the tracker counts hundreds per record)."""
    layers, leaks = lowered.layers, lowered.leaks
    n_in = layers[0][0].shape[1]
    starts = np.ascontiguousarray(starts, dtype=np.float64)
    ends = np.ascontiguousarray(ends, dtype=np.float64)
    if starts.ndim != 2 or starts.shape != ends.shape or starts.shape[1] != n_in:
        raise InputError(f"starts and ends must be arrays of the same shape (segments, {n_in}), "
                         f"got {starts.shape} and {ends.shape}")
    if not (np.isfinite(starts).all() and np.isfinite(ends).all()):
        raise InputError("the segments' ends must be finite numbers")
    if (starts == ends).all(axis=1).any():
        raise InputError("a segment is empty: its x0 equals its x1")
    check_dense(layers, "the line counter")
    decide_w, decide_b = decision_map(layers, level)
    packed = np.concatenate([a.reshape(-1) for pair in layers for a in pair])
    widths = np.array([w.shape[0] for w, _ in layers])
    all_leaks = np.concatenate(leaks) if leaks else np.zeros(0)
    merge_tol = MERGE_ULPS * math.ulp(1.0)  # _count's rule on [0, 1]
    head, flat, offsets = _count_many(packed, widths, all_leaks, decide_w, decide_b, starts,
                                      ends, zero_tol, merge_tol, slope_tol, CHUNK)
    k = layers[-1][0].shape[0]
    results = []
    for i, (status, n_regions, n_pieces, n_dec, snapped) in enumerate(head):
        if status == NOT_FINITE:
            raise InputError("the model has non-finite weights")
        if status == TOO_LARGE:
            results.append(count_lowered_segment(lowered, starts[i], ends[i], level=level,
                                                 per_output=per_output, zero_tol=zero_tol,
                                                 slope_tol=slope_tol))
            continue
        out = flat[offsets[i]:offsets[i + 1]]
        knots_at = n_regions - 1
        slopes_at = knots_at + n_pieces - 1
        dec_at = slopes_at + n_pieces * k
        state_at = dec_at + n_dec
        r = _region_count(0.0, 1.0, out[:knots_at], out[knots_at:slopes_at],
                          out[slopes_at:dec_at], out[dec_at:state_at], out[state_at:],
                          int(snapped), k, per_output)
        r.notes = lowered.notes
        if lowered.max_nodes is not None:
            _merge_windows(r, layers, leaks, lowered.max_nodes, starts[i], ends[i] - starts[i],
                           zero_tol)
        results.append(r)
    return results


@njit(cache=True)
def _count_many(packed, widths, leaks, decide_w, decide_b, starts, ends, zero_tol, merge_tol,
                slope_tol, chunk):
    """_count_small on each segment (t in [0, 1] from starts[i] to ends[i]): per segment
    (status, regions, pieces, decisions, snapped), and the outputs one after another with their
    offsets (empty for a segment not counted here)."""
    n, n_in = starts.shape
    head = np.zeros((n, 5), np.int64)
    sizes = np.zeros(n + 1, np.int64)
    parts = []
    points = np.array([0.0, 1.0])
    for i in range(n):
        values = np.empty((2, n_in))
        values[0] = starts[i]
        values[1] = ends[i]
        slopes = np.empty((1, n_in))
        slopes[0] = ends[i] - starts[i]
        status, n_regions, n_pieces, n_dec, snapped, out = _count_small(
            packed, widths, leaks, decide_w, decide_b, points, values, slopes, zero_tol,
            merge_tol, slope_tol, chunk)
        head[i, 0], head[i, 1], head[i, 2] = status, n_regions, n_pieces
        head[i, 3], head[i, 4] = n_dec, snapped
        if status == COUNTED:
            parts.append(out)
            sizes[i + 1] = out.size
        else:
            parts.append(np.empty(0))
    offsets = np.cumsum(sizes)
    flat = np.empty(offsets[-1])
    for i in range(n):
        flat[offsets[i]:offsets[i + 1]] = parts[i]
    return head, flat, offsets


def _merge_windows(result: RegionCount, layers, leaks, max_nodes, origin, direction,
                   zero_tol) -> None:
    """Merge the adjacent intervals of ``result`` whose region keys are equal (a model with max
    windows; :func:`~relu_regions.nets.reader.region_keys`): only breakpoints where some key
    changes stay. The breakpoints are where units switch, so each unit's sign on an interval is
    the sign of z_l + z_r at its ends (the counter's rule), z evaluated at the points
    ``origin + t direction`` with the counter's zero snapping; the keys then keep, of each
    window's tree units, its winning path. Knots and decision points are unchanged: one key is
    one affine map."""
    points = np.concatenate([[result.lo], result.breakpoints, [result.hi]])
    widths = [w.shape[0] for w, _ in layers[:-1]]
    keep = np.empty(points.size - 2, dtype=bool)
    last = None
    for a in range(0, points.size - 1, CHUNK):  # chunks share their end point
        h = origin + points[a:a + CHUNK + 1, None] * direction
        on = []
        for (w, b), leak in zip(layers[:-1], leaks, strict=True):
            z = rows_times(h, w) + b
            switches = leak != 1.0
            small = np.abs(z) <= zero_tol * (rows_times(np.abs(h), np.abs(w)) + np.abs(b))
            z[small & switches] = 0.0
            on.append((z[:-1] + z[1:] > 0) | ~switches)
            h = np.where(z > 0, z, leak * z)
        keys = region_keys(np.concatenate(on, axis=1), max_nodes, widths)
        if last is not None:  # the interval before this chunk: the breakpoint between
            keys = np.vstack([last, keys])
        start = a - 1 if last is not None else 0
        keep[start:start + keys.shape[0] - 1] = np.any(keys[1:] != keys[:-1], axis=1)
        last = keys[-1:]
    result.breakpoints = result.breakpoints[keep]
    result.activation_regions = result.breakpoints.size + 1
    edges = np.concatenate([[result.lo], result.breakpoints, [result.hi]])
    result.min_region_width = float(np.diff(edges).min())


def decision_map(layers, level: float | None) -> tuple[np.ndarray, np.ndarray]:
    """(W, b) whose argmax the decision points follow: the output layer for k > 1 outputs; for
    one output f, the pair (f, level), whose argmax changes where f - level changes sign, as
    W = W_f (one row) and b = (b_f, level) (_chunk_decisions reads a one-row W so)."""
    w, b = layers[-1]
    level = check_level(level, w.shape[0])
    if level is None:  # k > 1 outputs: their argmax
        return np.ascontiguousarray(w), np.ascontiguousarray(b)
    return np.ascontiguousarray(w), np.array([float(b[0]), level])


def _count(layers, leaks, points, values, slopes, zero_tol, slope_tol, level,
           per_output) -> RegionCount:
    check_dense(layers, "the line counter")
    lo, hi = float(points[0]), float(points[-1])
    merge_tol = MERGE_ULPS * math.ulp(max(abs(lo), abs(hi), hi - lo))
    # One memory layout for the kernels' arguments: each other layout would compile anew.
    points, values, slopes = map(np.ascontiguousarray, (points, values, slopes))
    decide_w, decide_b = decision_map(layers, level)
    leaks = np.concatenate(leaks) if leaks else np.zeros(0)
    # Small nets (every layer within CHUNK points, the common case for trained nets): the same
    # kernels in the same order, in one compiled call, so a count costs no Python per layer.
    status, n_regions, n_pieces, n_dec, snapped, out = _count_small(
        np.concatenate([a.reshape(-1) for pair in layers for a in pair]),  # W0 b0 W1 b1 ...
        np.array([w.shape[0] for w, _ in layers]), leaks, decide_w, decide_b, points, values,
        slopes, zero_tol, merge_tol, slope_tol, CHUNK)
    if status == NOT_FINITE:
        raise InputError("the model has non-finite weights")
    k = layers[-1][0].shape[0]
    if status == COUNTED:  # out: breakpoints, knots, slopes, decision points, state
        knots_at = n_regions - 1
        slopes_at = knots_at + n_pieces - 1
        dec_at = slopes_at + n_pieces * k
        state_at = dec_at + n_dec
        return _region_count(lo, hi, out[:knots_at], out[knots_at:slopes_at],
                             out[slopes_at:dec_at], out[dec_at:state_at], out[state_at:],
                             snapped, k, per_output)
    layers = [(np.ascontiguousarray(w), np.ascontiguousarray(b)) for w, b in layers]
    # None: a layer of plain ReLUs, run by the kernels compiled without the leak tests
    hidden_leaks = [leak if leak.any() else None
                    for leak in np.split(leaks, np.cumsum([w.shape[0] for w, _ in layers[:-2]]))]
    pieces = _Pieces(layers[-1][0], decide_w, decide_b, slope_tol, merge_tol, lo, hi)
    snapped = _propagate(layers, hidden_leaks, points, values, slopes, zero_tol, merge_tol,
                         pieces, _Workspace(), nest=0)
    return pieces.result(lo, hi, snapped, per_output)


def _propagate(layers, leaks, points, values, slopes, zero_tol, merge_tol, pieces, work,
               nest) -> int:
    """Run the hidden layers, hand each final chunk to ``pieces`` (left to right), return the
    snapped count.

    Intervals refine independently, so once a layer holds more than CHUNK points the rest of the
    network runs on each half separately, depth first: the working arrays stay cache-sized and
    only the reported arrays grow with the number of pieces.
    """
    snapped = 0
    for depth, (w, b) in enumerate(layers[:-1]):
        if points.size > CHUNK:
            rest, rest_leaks, mid = layers[depth:], leaks[depth:], points.size // 2
            halves = ((points[:mid + 1], values[:mid + 1], slopes[:mid]),
                      (points[mid:], values[mid:], slopes[mid:]))
            for half in halves:
                snapped += _propagate(rest, rest_leaks, *half, zero_tol, merge_tol, pieces,
                                      work, nest + 1)
            return snapped
        points, values, slopes, n_snapped = _relu_layer(
            points, values, slopes, w, b, leaks[depth], zero_tol, merge_tol, work,
            (nest, depth % 2))
        snapped += n_snapped
    pieces.add(points, values, slopes)
    return snapped


def _relu_layer(points, values, slopes, w, b, leak, zero_tol, merge_tol, work, key):
    """One Linear + (leaky) ReLU: insert the switching points; return points, values and slopes
    after it (views of ``work``'s arrays under ``key``) and the snapped count. ``leak`` None: a
    layer of plain ReLUs.

    Two compiled passes: pre-activations, which also count the new points, then the refinement
    into arrays of that size (fewer are used when switch points merge).
    """
    m, width = points.size, w.shape[0]
    z = work.array("z", m, width)
    if leak is None:
        snapped, crossings = _preactivations_relu(values, w, b, zero_tol, z)
    else:
        snapped, crossings = _preactivations(values, w, b, leak, zero_tol, z)
    size = m + crossings
    out = (work.array(key + ("points",), size), work.array(key + ("values",), size, width),
           work.array(key + ("slopes",), size - 1, width))
    if leak is None:
        n, merged = _refine_relu(points, z, slopes, w, merge_tol, *out)
    else:
        n, merged = _refine(points, z, slopes, w, leak, merge_tol, *out)
    return out[0][:n], out[1][:n], out[2][:n - 1], snapped + merged


class _Workspace:
    """Arrays reused from layer to layer and chunk to chunk: fresh memory costs a page fault per
    4 KB, which cost more than the kernels' arithmetic (2.5x fewer faults at 2^24 pieces).

    A layer reads one set of arrays and writes the other; each recursion level has its own pair
    (a level's input is its parent's output, still needed for the second half). ``z`` is scratch.
    """

    def __init__(self):
        self.flat = {}

    def array(self, key, *shape):
        size = math.prod(shape)
        flat = self.flat.get(key)
        if flat is None or flat.size < size:
            grown = 2 * flat.size if flat is not None else 0
            flat = self.flat[key] = np.empty(max(size, grown))
        return flat[:size].reshape(shape)


@njit(cache=True)
def _preactivations(values, w, b, leak, zero_tol, z):
    """z = W h + b at every point, into ``z``, touching zeros snapped to exactly 0.

    |z| <= zero_tol * (|W||h| + |b|), a rounding-error bound, becomes 0; a cheap upper bound
    (max|h| sum|W| + |b|) skips the exact one for most entries. Returns the number of strict sign
    changes (interval, neuron) the zeroing removed, and the number left: the crossings. Units
    with ``leak`` 1 pass z on and never switch: they are neither snapped nor counted.
    """
    return _preactivations_body(values, w, b, leak, zero_tol, z, True)


@njit(cache=True)
def _preactivations_relu(values, w, b, zero_tol, z):
    """_preactivations for a layer of plain ReLUs (every leak 0): compiled without the leak
    tests, which cost the small nets' count ~10%."""
    return _preactivations_body(values, w, b, b, zero_tol, z, False)  # leak is not read


@njit(inline="always")  # inlined with a constant ``leaky``: numba/LLVM drop the dead branches
def _preactivations_body(values, w, b, leak, zero_tol, z, leaky):
    m, n_in = values.shape
    width = w.shape[0]
    w_abs_sum = np.zeros(width)
    for c in range(width):
        for j in range(n_in):
            w_abs_sum[c] += abs(w[c, j])
    raw_prev = np.zeros(width)  # previous point's z before snapping
    snap_prev = np.zeros(width, dtype=np.bool_)
    wide, wt, acc = _wide(w)
    removed = crossings = 0
    for i in range(m):
        h_max = 0.0
        for j in range(n_in):
            h_max = max(h_max, abs(values[i, j]))
        if wide:
            _times(values[i], wt, acc)
        for c in range(width):
            if wide:
                raw = acc[c]
            else:
                raw = 0.0
                for j in range(n_in):
                    raw += values[i, j] * w[c, j]
            raw += b[c]
            snap = False
            if leaky and leak[c] == 1.0:
                z[i, c] = raw
                continue
            if abs(raw) <= zero_tol * (h_max * w_abs_sum[c] + abs(b[c])):
                bound = abs(b[c])
                for j in range(n_in):
                    bound += abs(values[i, j]) * abs(w[c, j])
                snap = abs(raw) <= zero_tol * bound
            z[i, c] = 0.0 if snap else raw
            if i > 0:
                # A zero ends every sign change of the intervals it bounds.
                if raw_prev[c] * raw < 0 and (snap or snap_prev[c]):
                    removed += 1
                if z[i - 1, c] * z[i, c] < 0:
                    crossings += 1
            raw_prev[c], snap_prev[c] = raw, snap
    return removed, crossings


# From this many inputs per unit on, W h is summed input by input into a row of all units (the
# compiler vectorizes that loop over the units; a unit's own sum, a dependent chain, it does
# not). Each unit's terms are added in the same order either way: the same sums, bit for bit.
WIDE_INPUTS = 16


@njit(inline="always")
def _wide(w):
    """(whether W is wide enough for the row-wise product, W^T as a C array, a row buffer)."""
    width, n_in = w.shape
    if n_in < WIDE_INPUTS:
        return False, np.empty((0, width)), np.empty(width)
    return True, np.ascontiguousarray(w.T), np.empty(width)


@njit(inline="always")
def _times(h, wt, out):
    """out = h W^T (W^T as ``wt``), each unit's terms summed in input order from 0.0. A zero
    input's terms are skipped: they add +0.0 or -0.0 to a sum that is never -0.0, so the sums
    are the same (dead units' slopes are zeros)."""
    out[:] = 0.0
    for j in range(wt.shape[0]):
        hj = h[j]
        if hj != 0.0:
            for c in range(wt.shape[1]):
                out[c] += hj * wt[j, c]


@njit(cache=True)
def _refine(points, z, slopes, w, leak, merge_tol, out_points, out_values, out_slopes):
    """Insert each interval's switch points (strict sign changes of z) in order, apply the
    (leaky) ReLU to the values and the slopes, into the ``out_`` arrays. Units with ``leak`` 1
    pass their values and slopes on and never switch.

    Returns the number of points written (fewer than the arrays hold when switch points merged)
    and the snapped count: neurons zeroed at a new point besides the crossing one, plus merged
    points.
    """
    return _refine_body(points, z, slopes, w, leak, merge_tol, out_points, out_values,
                        out_slopes, True)


@njit(cache=True)
def _refine_relu(points, z, slopes, w, merge_tol, out_points, out_values, out_slopes):
    """_refine for a layer of plain ReLUs (every leak 0), compiled without the leak tests."""
    return _refine_body(points, z, slopes, w, points, merge_tol, out_points, out_values,
                        out_slopes, False)  # leak is not read


@njit(inline="always")  # inlined with a constant ``leaky``: numba/LLVM drop the dead branches
def _refine_body(points, z, slopes, w, leak, merge_tol, out_points, out_values, out_slopes,
                 leaky):
    m, width = z.shape
    n_in = slopes.shape[1]
    z_slopes = np.empty(width)  # slopes of z on the current parent interval
    lam = np.empty(width)  # the interval's crossings: where (as a fraction of it) and which
    who = np.empty(width, dtype=np.int64)
    z_new = np.empty(width)
    z_mask = np.empty(width)  # z_new before the zeroing below: its sign is still right
    z_last = np.empty(width)  # pre-activation at the last point written: masks the next piece
    interp_tol = INTERP_ULPS * EPS
    snapped = 0
    _emit(out_points, out_values, out_slopes, 0, points[0], z[0], z[0], z_last, z_slopes, leak,
          leaky)
    wide, wt, _ = _wide(w)
    at = 0
    for i in range(m - 1):
        if wide:
            _times(slopes[i], wt, z_slopes)
        else:
            for c in range(width):
                s = 0.0
                for j in range(n_in):
                    s += slopes[i, j] * w[c, j]
                z_slopes[c] = s
        # Crossings sorted by lam, stable (ties keep neuron order). At most `width` of them, so
        # an insertion sort.
        n_cross = 0
        for c in range(width):
            zl, zr = z[i, c], z[i + 1, c]
            if zl * zr < 0 and not (leaky and leak[c] == 1.0):
                t = zl / (zl - zr)
                q = n_cross
                while q > 0 and lam[q - 1] > t:
                    lam[q], who[q] = lam[q - 1], who[q - 1]
                    q -= 1
                lam[q], who[q] = t, c
                n_cross += 1
        left, right = points[i], points[i + 1]
        prev = left
        for q in range(n_cross):
            t = lam[q]
            p = left + t * (right - left)
            for c in range(width):
                zl, zr = z[i, c], z[i + 1, c]
                v = zl + t * (zr - zl)
                # Interpolation is exact up to ~4 eps (|z_l| + |z_r|): a neuron that small at
                # the crossing switches there too (e.g. all units through the origin); make it
                # exactly 0, as the crossing neuron's own value is, so its rounding noise cannot
                # seed slivers deeper in the net.
                if c == who[q]:
                    v = 0.0
                z_mask[c] = v
                if abs(v) <= interp_tol * (abs(zl) + abs(zr)) and not (leaky and leak[c] == 1.0):
                    v = 0.0
                    snapped += c != who[q]
                z_new[c] = v
            # Switches within rounding of a point already there, or of the previous switch in
            # this interval (kept or not), are one point: drop this one. All pieces of the
            # interval share its z-slopes, so the merged piece's slopes are unaffected.
            if p - left > merge_tol and right - p > merge_tol and p - prev > merge_tol:
                at += 1
                _emit(out_points, out_values, out_slopes, at, p, z_new, z_mask, z_last,
                      z_slopes, leak, leaky)
            else:
                snapped += 1
            prev = p
        at += 1
        _emit(out_points, out_values, out_slopes, at, right, z[i + 1], z[i + 1], z_last,
              z_slopes, leak, leaky)
    return at + 1, snapped


@njit(inline="always")  # a call per point cost more than the work it does
def _emit(out_points, out_values, out_slopes, at, p, z_here, z_mask, z_last, z_slopes, leak,
          leaky):
    """Write point ``at`` (value max(z_here, leak z_here)) and, for at > 0, the piece ending
    there: the parent interval's z-slopes where the neuron is on, i.e. z_last + z_mask > 0, else
    leak times them (a unit with leak 1 passes both on). Updates z_last.

    The mask uses the values before the interpolation zeroing (``z_mask``): a unit zeroed at one
    crossing that switches itself a few dozen ulps later is on (or off) in between, and the
    zeroed value would mask it off there (a wrong slope on a region ``resolved`` calls placed).
    ``leaky`` False: every leak is 0 and ``leak`` is not read."""
    out_points[at] = p
    for c in range(z_here.size):
        a = leak[c] if leaky else 0.0
        if at > 0:
            if z_last[c] + z_mask[c] > 0:
                out_slopes[at - 1, c] = z_slopes[c]
            else:  # 0.0, not 0 * slope: a ReLU's slopes stay +0.0, bit for bit
                out_slopes[at - 1, c] = 0.0 if a == 0.0 else a * z_slopes[c]
        v = z_here[c]
        out_values[at, c] = max(v, 0.0) if a == 0.0 or v > 0 else a * v
        z_last[c] = z_mask[c]


def rows_times(rows: np.ndarray, w: np.ndarray) -> np.ndarray:
    """rows @ w.T; einsum is ~9x faster than BLAS matmul for these tall, 4-wide shapes."""
    return np.einsum("nj,kj->nk", rows, w)


class _Pieces:
    """The output's linear pieces and decision points, assembled from the final chunks as they
    arrive left to right.

    Each chunk is summarized on arrival, so only the reported arrays (breakpoints, knots, piece
    slopes, decision points) accumulate, each in one growing buffer.
    """

    def __init__(self, w_out, decide_w, decide_b, slope_tol, merge_tol, lo, hi):
        self.w_out, self.slope_tol = w_out, slope_tol
        self.decide = (decide_w, decide_b, merge_tol, lo, hi)
        self.breakpoints, self.knots, self.slopes = _Buffer(), _Buffer(), _Buffer()
        self.decisions = _Buffer()
        self.state = _new_state(w_out.shape[0])  # links the chunks: see _chunk_pieces

    def add(self, points, values, slopes):
        first = self.slopes.size == 0
        self.breakpoints.append(points[1:])  # its first point is the previous chunk's last
        n, k = slopes.shape[0], self.w_out.shape[0]
        piece_slopes = self.slopes.tail(n * k).reshape(n, k)
        n_knots = _chunk_pieces(points, slopes, self.w_out, self.slope_tol, first, self.state,
                                self.knots.tail(n), piece_slopes)  # both write <= n rows
        self.knots.size += n_knots
        self.slopes.size += (n_knots + first) * k  # the first chunk gives the first piece too
        n_dec = _chunk_decisions(points, values, *self.decide, self.state,
                                 self.decisions.tail(n * max(self.decide[0].shape[0], 2)))
        self.decisions.size += n_dec

    def result(self, lo, hi, snapped, per_output) -> RegionCount:
        self.breakpoints.size -= 1  # the last point appended is hi, which bounds the last region
        return _region_count(lo, hi, self.breakpoints.array(), self.knots.array(),
                             self.slopes.array(), self.decisions.array(), self.state, snapped,
                             self.w_out.shape[0], per_output)


def _region_count(lo, hi, breakpoints, knots, slopes, decisions, state, snapped, k,
                  per_output) -> RegionCount:
    """The RegionCount of the assembled arrays; ``state`` as in _chunk_pieces."""
    # Python floats: cheaper to compare
    start, min_piece, min_region = (float(state[i]) for i in (PIECE_START, MIN_PIECE, MIN_REGION))
    min_piece = min(min_piece, hi - start)
    scale = max(abs(lo), abs(hi), hi - lo)
    if k > 1:
        slopes = slopes.reshape(-1, k)
    return RegionCount(
        lo=lo, hi=hi, breakpoints=breakpoints, knots=knots, slopes=slopes,
        activation_regions=breakpoints.size + 1, linear_pieces=slopes.shape[0],
        min_piece_width=min_piece, min_region_width=min_region, snapped=int(snapped),
        resolved=min_region > RESOLUTION_ULPS * math.ulp(scale), outputs=k,
        decision_points=decisions,
        pieces_per_output=([int(state[STATE_HEAD + 3 * o + 2]) + 1 for o in range(k)]
                           if per_output else None),
    )


class _Buffer:
    """A float64 array grown in place by half its size, so each page is written about once.

    ndarray.resize reallocs, and a large block (the first is 64 MB: always mmapped) moves by
    remapping its pages, not copying them; pages past the end are not backed by memory until
    written. No view of ``data`` outlives its use, so skipping resize's reference check (which
    profilers' references also trip) is safe.
    """

    def __init__(self):
        self.data, self.size = np.empty(1 << 23), 0

    def tail(self, n):
        """Room for n more values, to be filled from the start and then added to ``size``."""
        if self.size + n > self.data.size:
            self.data.resize(max(self.size + n, 3 * self.data.size // 2), refcheck=False)
        return self.data[self.size:self.size + n]

    def append(self, values):
        self.tail(values.size)[:] = values
        self.size += values.size

    def array(self):
        self.data.resize(self.size, refcheck=False)  # give back the unused capacity
        return self.data


@njit(cache=True)
def _new_state(k):
    """A fresh state for k outputs: no slope seen yet, no piece or region measured, no winner."""
    state = np.zeros(STATE_HEAD + 3 * k)
    state[MIN_PIECE] = state[MIN_REGION] = np.inf
    state[WINNER], state[LAST_DECISION] = -1.0, -np.inf
    return state


@njit(cache=True)
def _chunk_pieces(points, slopes, w_out, slope_tol, first, state, knots, piece_slopes):
    """Write one chunk's knots and its new pieces' slopes (a row of k per piece); return the
    number of knots.

    An output's slope jumps at a point when it changes by more than slope_tol times the
    magnitude |W_out| |h'| it is summed from, on either side; a knot of the vector map is a point
    where any output's slope jumps (each output's own jumps are counted in ``state``). ``state``
    (slots: PIECE_START ..., then per output its last slope, magnitude and jumps) links the
    chunks and is updated in place.
    """
    n_out = w_out.shape[0]
    if n_out == 1:  # the common case, in scalars: the generic loop below cost 1.7x as much
        return _chunk_pieces_one(points, slopes, w_out[0], slope_tol, first, state, knots,
                                 piece_slopes.reshape(-1))  # C, not a strided column
    start, min_piece, min_region = state[PIECE_START], state[MIN_PIECE], state[MIN_REGION]
    prev_slope, prev_mag = np.empty(n_out), np.empty(n_out)
    s, mag = np.empty(n_out), np.empty(n_out)
    for o in range(n_out):
        prev_slope[o], prev_mag[o] = state[STATE_HEAD + 3 * o], state[STATE_HEAD + 3 * o + 1]
    head = 1 if first else 0
    k = 0
    for i in range(slopes.shape[0]):
        jump = False
        for o in range(n_out):
            so = mo = 0.0
            for c in range(slopes.shape[1]):
                so += slopes[i, c] * w_out[o, c]
                mo += abs(slopes[i, c]) * abs(w_out[o, c])
            s[o], mag[o] = so, mo
            if abs(so - prev_slope[o]) > slope_tol * max(prev_mag[o], mo) and not (
                    i == 0 and first):
                jump = True
                state[STATE_HEAD + 3 * o + 2] += 1
        if i == 0 and first:
            piece_slopes[0, :] = s
            start = points[0]
        elif jump:
            knots[k] = points[i]
            piece_slopes[k + head, :] = s
            min_piece = min(min_piece, points[i] - start)
            start = points[i]
            k += 1
        min_region = min(min_region, points[i + 1] - points[i])
        prev_slope[:] = s
        prev_mag[:] = mag
    for o in range(n_out):
        state[STATE_HEAD + 3 * o], state[STATE_HEAD + 3 * o + 1] = prev_slope[o], prev_mag[o]
    state[PIECE_START], state[MIN_PIECE], state[MIN_REGION] = start, min_piece, min_region
    return k


@njit(cache=True)
def _chunk_pieces_one(points, slopes, w_out, slope_tol, first, state, knots, piece_slopes):
    """_chunk_pieces for one output (``w_out`` a vector, ``piece_slopes`` one per piece)."""
    prev_slope, prev_mag = state[STATE_HEAD], state[STATE_HEAD + 1]
    start, min_piece, min_region = state[PIECE_START], state[MIN_PIECE], state[MIN_REGION]
    head = 1 if first else 0
    k = 0
    for i in range(slopes.shape[0]):
        s = mag = 0.0
        for c in range(slopes.shape[1]):
            s += slopes[i, c] * w_out[c]
            mag += abs(slopes[i, c]) * abs(w_out[c])
        if i == 0 and first:
            piece_slopes[0], start = s, points[0]
        elif abs(s - prev_slope) > slope_tol * max(prev_mag, mag):
            knots[k], piece_slopes[k + head] = points[i], s
            min_piece = min(min_piece, points[i] - start)
            start = points[i]
            k += 1
        min_region = min(min_region, points[i + 1] - points[i])
        prev_slope, prev_mag = s, mag
    state[STATE_HEAD], state[STATE_HEAD + 1], state[STATE_HEAD + 2] = prev_slope, prev_mag, (
        state[STATE_HEAD + 2] + k)
    state[PIECE_START], state[MIN_PIECE], state[MIN_REGION] = start, min_piece, min_region
    return k


@njit(inline="always")
def _keep_decision(out, n, p, last, merge_tol, lo, hi):
    """Write decision point p unless it is within merge_tol of the previous one or of an end
    (the counter's merging rule); return the count written."""
    if p - last > merge_tol and p - lo > merge_tol and hi - p > merge_tol:
        out[n] = p
        n += 1
    return n


@njit(cache=True)
def _chunk_decisions(points, values, w, b, merge_tol, lo, hi, state, out):
    """Write the chunk's decision points, where argmax_j (W h + b)_j changes; return how many.

    The outputs are affine on each interval between points and exact (up to rounding) at its
    ends, so the winner is walked along the upper envelope of k lines: from the winner just
    right of the left end (largest value, then largest right-end value, then lowest index), the
    next line to overtake it is the one with the earliest crossing lambda = d_l / (d_l - d_r) of
    the differences d at the ends, a convex combination as for the switch points. Each step
    raises the winner's right-end value, so an interval has at most k - 1 changes. A change at a
    point shared by two intervals is seen as the last winner differing from the next first one.
    Points within merge_tol of the previous one (several outputs tying at once) or of lo/hi are
    one point / none. ``state`` carries the last winner and point across chunks. A one-row W
    with b = (b_f, level) stands for the outputs (f, level) (see decision_map). ``out`` holds
    max(k, 2) points per interval.
    """
    m, k = points.size, w.shape[0]
    if k == 1:  # one output f against a level: the same walk in scalars
        return _chunk_level(points, values, w[0], b[0], b[1], merge_tol, lo, hi, state, out)
    yl, yr = np.empty(k), np.empty(k)  # the outputs at the interval's ends
    _outputs(values, 0, w, b, yr)
    winner, last = int(state[WINNER]), state[LAST_DECISION]
    n = 0
    for i in range(m - 1):
        left, right = points[i], points[i + 1]
        yl, yr = yr, yl
        _outputs(values, i + 1, w, b, yr)
        best = 0
        for o in range(1, k):  # just right of the left end
            if yl[o] > yl[best] or (yl[o] == yl[best] and yr[o] > yr[best]):
                best = o
        if winner >= 0 and best != winner:
            n = _keep_decision(out, n, left, last, merge_tol, lo, hi)
            last = left
        winner = best
        lam0 = 0.0
        while True:
            nxt, lam_next = -1, 2.0
            for o in range(k):
                d_l, d_r = yl[winner] - yl[o], yr[winner] - yr[o]
                if d_r < 0:
                    lam = max(d_l / (d_l - d_r), lam0) if d_l > 0 else lam0
                    if lam < lam_next or (lam == lam_next and yr[o] > yr[nxt]):
                        nxt, lam_next = o, lam
            if nxt < 0:
                break
            p = left + lam_next * (right - left)
            n = _keep_decision(out, n, p, last, merge_tol, lo, hi)
            last = p
            winner, lam0 = nxt, lam_next
    state[WINNER], state[LAST_DECISION] = winner, last
    return n


@njit(cache=True)
def _chunk_level(points, values, w, b, level, merge_tol, lo, hi, state, out):
    """_chunk_decisions for the outputs (f, level), f = w h + b: the same winners (0: f, 1: the
    level), crossings and merging, without the k-output loops."""
    winner, last = int(state[WINNER]), state[LAST_DECISION]
    n = 0
    f = 0.0  # summed as _outputs does: the same bits as the k-output walk
    for c in range(values.shape[1]):
        f += values[0, c] * w[c]
    d_r = (f + b) - level
    for i in range(values.shape[0] - 1):
        left, right = points[i], points[i + 1]
        f = 0.0
        for c in range(values.shape[1]):
            f += values[i + 1, c] * w[c]
        d_l, d_r = d_r, (f + b) - level
        best = 1 if d_l < 0 or (d_l == 0 and d_r < 0) else 0
        if winner >= 0 and best != winner:
            n = _keep_decision(out, n, left, last, merge_tol, lo, hi)
            last = left
        winner = best
        # the other line overtakes once at most: f falls below the level, or rises above it
        e_l, e_r = (d_l, d_r) if winner == 0 else (-d_l, -d_r)
        if e_r < 0:
            lam = e_l / (e_l - e_r) if e_l > 0 else 0.0
            p = left + lam * (right - left)
            n = _keep_decision(out, n, p, last, merge_tol, lo, hi)
            last = p
            winner = 1 - winner
    state[WINNER], state[LAST_DECISION] = winner, last
    return n


@njit(inline="always")
def _outputs(values, i, w, b, out):
    """out = W h_i + b."""
    for o in range(w.shape[0]):
        acc = 0.0
        for c in range(values.shape[1]):
            acc += values[i, c] * w[o, c]
        out[o] = acc + b[o]


@njit(cache=True)
def _count_small(packed, widths, leaks, decide_w, decide_b, points, values, slopes, zero_tol,
                 merge_tol, slope_tol, chunk):
    """The whole count in one call while every layer stays within ``chunk`` points: the hidden
    layers as _relu_layer does them, then _chunk_pieces and _chunk_decisions on the one final
    chunk; the same arithmetic as the general path, so the same result.

    ``packed``: W_0, b_0, W_1, b_1, ... flattened; ``widths``: each layer's outputs (the widths
    chain, checked by the caller); ``leaks``: the hidden units' negative slopes, concatenated.
    Returns (status, regions, pieces, decisions, snapped, out) with out = breakpoints, knots,
    piece slopes (k per piece), decision points, state (as in _chunk_pieces), one array (a
    single array to box). status COUNTED: counted; TOO_LARGE: a layer would exceed ``chunk``
    (the caller runs the general path); -1: a weight is not finite.
    """
    for v in packed:
        if not np.isfinite(v):
            return NOT_FINITE, 0, 0, 0, 0, packed
    at = unit = snapped = 0
    for layer in range(widths.size - 1):
        width, n_in = widths[layer], values.shape[1]
        w = packed[at:at + width * n_in].reshape((width, n_in))  # views: leading-axis slices
        at += width * n_in                                         # of C arrays stay C
        b = packed[at:at + width]
        at += width
        leak = leaks[unit:unit + width]
        unit += width
        m = points.size
        if m > chunk:
            return TOO_LARGE, 0, 0, 0, 0, packed
        z = np.empty((m, width))
        leaky = leak.any()  # else the kernels compiled without the leak tests
        if leaky:
            removed, crossings = _preactivations(values, w, b, leak, zero_tol, z)
        else:
            removed, crossings = _preactivations_relu(values, w, b, zero_tol, z)
        size = m + crossings
        out_points, out_values = np.empty(size), np.empty((size, width))
        out_slopes = np.empty((size - 1, width))
        if leaky:
            n, merged = _refine(points, z, slopes, w, leak, merge_tol, out_points, out_values,
                                out_slopes)
        else:
            n, merged = _refine_relu(points, z, slopes, w, merge_tol, out_points, out_values,
                                     out_slopes)
        snapped += removed + merged
        points, values, slopes = out_points[:n], out_values[:n], out_slopes[:n - 1]
    n_out = widths[-1]
    w_out = packed[at:at + n_out * values.shape[1]].reshape((n_out, values.shape[1]))
    n = slopes.shape[0]  # regions
    state = _new_state(n_out)
    knots, piece_slopes = np.empty(n), np.empty((n, n_out))
    k = _chunk_pieces(points, slopes, w_out, slope_tol, True, state, knots, piece_slopes)
    decisions = np.empty(n * max(decide_w.shape[0], 2))
    n_dec = _chunk_decisions(points, values, decide_w, decide_b, merge_tol, points[0],
                             points[-1], state, decisions)
    # n - 1 breakpoints, k knots, k + 1 rows of slopes, the decision points, state
    size = n - 1 + k + (k + 1) * n_out + n_dec + state.size
    out = np.empty(size)
    out[:n - 1] = points[1:-1]
    at = n - 1
    out[at:at + k] = knots[:k]
    at += k
    out[at:at + (k + 1) * n_out] = piece_slopes[:k + 1].reshape(-1)
    at += (k + 1) * n_out
    out[at:at + n_dec] = decisions[:n_dec]
    out[size - state.size:] = state
    return COUNTED, n, k + 1, n_dec, snapped, out
