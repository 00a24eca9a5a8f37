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
from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import ArrayLike
from torch import nn

from ..errors import InputError
from ..nets.reader import relu_layers
from ..validation import check_interval, check_point
from .jit import njit

ZERO_TOL = 2.0**-40  # ~9e-13: about 4000 ulps of the magnitude a pre-activation is summed from
SLOPE_TOL = 1e-11
# Pieces narrower than this many ulps of the segment's scale cannot be placed reliably.
RESOLUTION_ULPS = 64
EPS = np.finfo(np.float64).eps
INTERP_ULPS = 64  # interpolated values within this many eps of their endpoints' size are 0
MERGE_ULPS = 16  # switch points closer than this many ulps of the segment's scale are one
CHUNK = 1 << 14  # points per layer before the rest of the net runs on halves

# The pieces' running state, one float64 array shared by the kernels (see _Pieces): slots.
PREV_SLOPE, PREV_MAG, PIECE_START, MIN_PIECE, MIN_REGION = range(5)
STATE_SIZE = 5
# _count_small's status.
NOT_FINITE, TOO_LARGE, COUNTED = -1, 0, 1


@dataclass
class RegionCount:
    """Exact counts along [lo, hi] (1D) or along t in [0, 1] of a segment (``x0 + t (x1 - x0)``).

    breakpoints: sorted points strictly inside where some neuron switches (activation-region
    boundaries); knots: the subset where the output's slope changes (linear-piece boundaries);
    slopes: output slope on each linear piece (dy/dx in 1D, dy/dt on a segment).
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

    def convexity(self) -> Convexity:
        return convexity(self)

    def to_dict(self, arrays: bool = False) -> dict:
        """JSON-ready summary; ``arrays=True`` adds breakpoints, knots and slopes as lists."""
        d = {k: v for k, v in asdict(self).items() if not isinstance(v, np.ndarray)}
        d["breakpoints"] = int(self.breakpoints.size)
        d["knots"] = int(self.knots.size)
        if arrays:
            d.update(breakpoint_list=self.breakpoints.tolist(), knot_list=self.knots.tolist(),
                     slope_list=self.slopes.tolist())
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
    jumps = np.diff(count.slopes)
    up, down = int((jumps > 0).sum()), int((jumps < 0).sum())
    return Convexity(up, down, is_convex=down == 0, is_concave=up == 0)


# ---------------------------------------------------------------------------------------------
# The exact counter

def count_regions(model: nn.Module, lo: float, hi: float, *, zero_tol: float = ZERO_TOL,
                  slope_tol: float = SLOPE_TOL) -> RegionCount:
    """Exact breakpoints, activation regions and linear pieces of a 1D-input model on [lo, hi].

    ``model`` is an ``nn.Sequential`` of ``nn.Linear``/``nn.ReLU`` or a ``ConstructionNet``; the
    rules that keep float64 exact are in the module docstring and README.

    >>> from relu_regions import ConstructionNet
    >>> r = count_regions(ConstructionNet.build(8, peaks=0.4), 0.0, 1.0)
    >>> r.linear_pieces, r.activation_regions, r.breakpoints.size, r.resolved
    (256, 256, 255, True)
    """
    layers = relu_layers(model, finite=False)  # _count checks them, packed
    if layers[0][0].shape[1] != 1:
        raise InputError(f"the model takes {layers[0][0].shape[1]} inputs; count it along a "
                         f"segment with count_regions_segment(model, x0, x1)")
    lo, hi = check_interval((lo, hi), "(lo, hi)")
    points = np.array([lo, hi])
    values = points[:, None].copy()
    slopes = np.ones((1, 1))
    return _count(layers, points, values, slopes, zero_tol, slope_tol)


def count_regions_segment(model: nn.Module, x0: ArrayLike, x1: ArrayLike, *,
                          zero_tol: float = ZERO_TOL,
                          slope_tol: float = SLOPE_TOL) -> RegionCount:
    """Exact counts along the segment x0 + t (x1 - x0), t in [0, 1]; positions are t."""
    layers = relu_layers(model, finite=False)  # _count checks them, packed
    n_in = layers[0][0].shape[1]
    x0 = check_point(x0, n_in, "x0")
    x1 = check_point(x1, n_in, "x1")
    if np.array_equal(x0, x1):
        raise InputError("the segment is empty: x0 equals x1")
    points = np.array([0.0, 1.0])
    values = np.stack([x0, x1])
    slopes = (x1 - x0)[None, :]
    return _count(layers, points, values, slopes, zero_tol, slope_tol)


def _count(layers, points, values, slopes, zero_tol, slope_tol) -> RegionCount:
    lo, hi = float(points[0]), float(points[-1])
    merge_tol = MERGE_ULPS * math.ulp(max(abs(lo), abs(hi), hi - lo))
    # One memory layout for the kernels' arguments: each other layout would compile anew.
    points, values, slopes = map(np.ascontiguousarray, (points, values, slopes))
    # Small nets (every layer within CHUNK points, the common case for trained nets): the same
    # kernels in the same order, in one compiled call, so a count costs no Python per layer.
    status, n_regions, n_pieces, snapped, out = _count_small(
        np.concatenate([a.reshape(-1) for pair in layers for a in pair]),  # W0 b0 W1 b1 ...
        np.array([w.shape[0] for w, _ in layers]), points, values, slopes, zero_tol, merge_tol,
        slope_tol, CHUNK)
    if status == NOT_FINITE:
        raise InputError("the model has non-finite weights")
    if status == COUNTED:  # out: breakpoints, knots, slopes, state
        knots_at, slopes_at = n_regions - 1, n_regions + n_pieces - 2
        return _region_count(lo, hi, out[:knots_at], out[knots_at:slopes_at],
                             out[slopes_at:-STATE_SIZE], out[-STATE_SIZE:], snapped)
    layers = [(np.ascontiguousarray(w), np.ascontiguousarray(b)) for w, b in layers]
    pieces = _Pieces(layers[-1][0][0], slope_tol)
    snapped = _propagate(layers, points, values, slopes, zero_tol, merge_tol, pieces,
                         _Workspace(), level=0)
    return pieces.result(lo, hi, snapped)


def _propagate(layers, points, values, slopes, zero_tol, merge_tol, pieces, work, level) -> int:
    """Run the hidden layers, hand each final chunk to ``pieces`` (left to right), return the
    snapped count.

    Intervals refine independently, so once a layer holds more than CHUNK points the rest of the
    network runs on each half separately, depth first: the working arrays stay cache-sized and
    only the reported arrays grow with the number of pieces.
    """
    snapped = 0
    for depth, (w, b) in enumerate(layers[:-1]):
        if points.size > CHUNK:
            rest, mid = layers[depth:], points.size // 2
            halves = ((points[:mid + 1], values[:mid + 1], slopes[:mid]),
                      (points[mid:], values[mid:], slopes[mid:]))
            for half in halves:
                snapped += _propagate(rest, *half, zero_tol, merge_tol, pieces, work, level + 1)
            return snapped
        points, values, slopes, n_snapped = _relu_layer(
            points, values, slopes, w, b, zero_tol, merge_tol, work, (level, depth % 2))
        snapped += n_snapped
    pieces.add(points, slopes)
    return snapped


def _relu_layer(points, values, slopes, w, b, zero_tol, merge_tol, work, key):
    """One Linear + ReLU: insert the switching points; return points, values and slopes after
    the ReLU (views of ``work``'s arrays under ``key``) and the snapped count.

    Two compiled passes: pre-activations, which also count the new points, then the refinement
    into arrays of that size (fewer are used when switch points merge).
    """
    m, width = points.size, w.shape[0]
    z = work.array("z", m, width)
    snapped, crossings = _preactivations(values, w, b, zero_tol, z)
    size = m + crossings
    out = (work.array(key + ("points",), size), work.array(key + ("values",), size, width),
           work.array(key + ("slopes",), size - 1, width))
    n, merged = _refine(points, z, slopes, w, merge_tol, *out)
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
def _preactivations(values, w, b, zero_tol, z):
    """z = W h + b at every point, into ``z``, touching zeros snapped to exactly 0.

    |z| <= zero_tol * (|W||h| + |b|), a rounding-error bound, becomes 0; a cheap upper bound
    (max|h| sum|W| + |b|) skips the exact one for most entries. Returns the number of strict sign
    changes (interval, neuron) the zeroing removed, and the number left: the crossings.
    """
    m, n_in = values.shape
    width = w.shape[0]
    w_abs_sum = np.zeros(width)
    for c in range(width):
        for j in range(n_in):
            w_abs_sum[c] += abs(w[c, j])
    raw_prev = np.zeros(width)  # previous point's z before snapping
    snap_prev = np.zeros(width, dtype=np.bool_)
    removed = crossings = 0
    for i in range(m):
        h_max = 0.0
        for j in range(n_in):
            h_max = max(h_max, abs(values[i, j]))
        for c in range(width):
            raw = 0.0
            for j in range(n_in):
                raw += values[i, j] * w[c, j]
            raw += b[c]
            snap = False
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


@njit(cache=True)
def _refine(points, z, slopes, w, merge_tol, out_points, out_values, out_slopes):
    """Insert each interval's switch points (strict sign changes of z) in order, ReLU the values
    and mask the slopes, into the ``out_`` arrays.

    Returns the number of points written (fewer than the arrays hold when switch points merged)
    and the snapped count: neurons zeroed at a new point besides the crossing one, plus merged
    points.
    """
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
    _emit(out_points, out_values, out_slopes, 0, points[0], z[0], z[0], z_last, z_slopes)
    at = 0
    for i in range(m - 1):
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
            if zl * zr < 0:
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
                if abs(v) <= interp_tol * (abs(zl) + abs(zr)):
                    v = 0.0
                    snapped += c != who[q]
                z_new[c] = v
            # Switches within rounding of a point already there, or of the previous switch in
            # this interval (kept or not), are one point: drop this one. All pieces of the
            # interval share its z-slopes, so the merged piece's slopes are unaffected.
            if p - left > merge_tol and right - p > merge_tol and p - prev > merge_tol:
                at += 1
                _emit(out_points, out_values, out_slopes, at, p, z_new, z_mask, z_last,
                      z_slopes)
            else:
                snapped += 1
            prev = p
        at += 1
        _emit(out_points, out_values, out_slopes, at, right, z[i + 1], z[i + 1], z_last,
              z_slopes)
    return at + 1, snapped


@njit(inline="always")  # a call per point cost more than the work it does
def _emit(out_points, out_values, out_slopes, at, p, z_here, z_mask, z_last, z_slopes):
    """Write point ``at`` (value relu(z_here)) and, for at > 0, the piece ending there: the parent
    interval's z-slopes where the neuron is on, i.e. z_last + z_mask > 0. Updates z_last.

    The mask uses the values before the interpolation zeroing (``z_mask``): a unit zeroed at one
    crossing that switches itself a few dozen ulps later is on (or off) in between, and the
    zeroed value would mask it off there (a wrong slope on a region ``resolved`` calls placed)."""
    out_points[at] = p
    for c in range(z_here.size):
        if at > 0:
            out_slopes[at - 1, c] = z_slopes[c] if z_last[c] + z_mask[c] > 0 else 0.0
        out_values[at, c] = max(z_here[c], 0.0)
        z_last[c] = z_mask[c]


def rows_times(rows: np.ndarray, w: np.ndarray) -> np.ndarray:
    """rows @ w.T; einsum is ~9x faster than BLAS matmul for these tall, 4-wide shapes."""
    return np.einsum("nj,kj->nk", rows, w)


class _Pieces:
    """The output's linear pieces, assembled from the final chunks as they arrive left to right.

    Each chunk is summarized on arrival, so only the reported arrays (breakpoints, knots, piece
    slopes) accumulate, each in one growing buffer.
    """

    def __init__(self, w_out, slope_tol):
        self.w_out, self.slope_tol = w_out, slope_tol
        self.breakpoints, self.knots, self.slopes = _Buffer(), _Buffer(), _Buffer()
        # Output slope and magnitude on the last interval seen, start of the current piece,
        # narrowest complete piece, narrowest region.
        self.state = _new_state()

    def add(self, points, slopes):
        first = self.slopes.size == 0
        self.breakpoints.append(points[1:])  # its first point is the previous chunk's last
        n = slopes.shape[0]
        n_knots = _chunk_pieces(points, slopes, self.w_out, self.slope_tol, first, self.state,
                                self.knots.tail(n), self.slopes.tail(n))  # both write <= n
        self.knots.size += n_knots
        self.slopes.size += n_knots + first  # the first chunk also gives the first piece's slope

    def result(self, lo, hi, snapped) -> RegionCount:
        self.breakpoints.size -= 1  # the last point appended is hi, which bounds the last region
        return _region_count(lo, hi, self.breakpoints.array(), self.knots.array(),
                             self.slopes.array(), self.state, snapped)


def _region_count(lo, hi, breakpoints, knots, slopes, state, snapped) -> RegionCount:
    """The RegionCount of the assembled arrays; ``state`` as in _Pieces."""
    # Python floats: cheaper to compare
    start, min_piece, min_region = (float(state[i]) for i in (PIECE_START, MIN_PIECE, MIN_REGION))
    min_piece = min(min_piece, hi - start)
    scale = max(abs(lo), abs(hi), hi - lo)
    return RegionCount(
        lo=lo, hi=hi, breakpoints=breakpoints, knots=knots, slopes=slopes,
        activation_regions=breakpoints.size + 1, linear_pieces=slopes.size,
        min_piece_width=min_piece, min_region_width=min_region, snapped=int(snapped),
        resolved=min_region > RESOLUTION_ULPS * math.ulp(scale),
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
def _new_state():
    """A fresh pieces state: no slope seen yet, no piece or region measured."""
    state = np.zeros(STATE_SIZE)
    state[MIN_PIECE] = state[MIN_REGION] = np.inf
    return state


@njit(cache=True)
def _chunk_pieces(points, slopes, w_out, slope_tol, first, state, knots, piece_slopes):
    """Write one chunk's knots and its new pieces' slopes; return the number of knots.

    The output slope jumps at a point when it changes by more than slope_tol times the magnitude
    |W_out| |h'| it is summed from, on either side. ``state`` (see _Pieces) links the chunks and
    is updated in place.
    """
    prev_slope, prev_mag, start = state[PREV_SLOPE], state[PREV_MAG], state[PIECE_START]
    min_piece, min_region = state[MIN_PIECE], state[MIN_REGION]
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
    state[PREV_SLOPE], state[PREV_MAG], state[PIECE_START] = prev_slope, prev_mag, start
    state[MIN_PIECE], state[MIN_REGION] = min_piece, min_region
    return k


@njit(cache=True)
def _count_small(packed, widths, points, values, slopes, zero_tol, merge_tol, slope_tol, chunk):
    """The whole count in one call while every layer stays within ``chunk`` points: the hidden
    layers as _relu_layer does them, then _chunk_pieces on the one final chunk; the same
    arithmetic as the general path, so the same result.

    ``packed``: W_0, b_0, W_1, b_1, ... flattened; ``widths``: each layer's outputs (the widths
    chain, checked by the caller). Returns (status, regions, pieces, snapped, out) with out =
    breakpoints, knots, piece slopes, state (as in _Pieces), one array (a single array to box).
    status COUNTED: counted; TOO_LARGE: a layer would exceed ``chunk`` (the caller runs the general
    path); -1: a weight is not finite.
    """
    for v in packed:
        if not np.isfinite(v):
            return NOT_FINITE, 0, 0, 0, packed
    at = snapped = 0
    for layer in range(widths.size - 1):
        width, n_in = widths[layer], values.shape[1]
        w = packed[at:at + width * n_in].reshape((width, n_in))  # views: leading-axis slices
        at += width * n_in                                         # of C arrays stay C
        b = packed[at:at + width]
        at += width
        m = points.size
        if m > chunk:
            return TOO_LARGE, 0, 0, 0, packed
        z = np.empty((m, width))
        removed, crossings = _preactivations(values, w, b, zero_tol, z)
        size = m + crossings
        out_points, out_values = np.empty(size), np.empty((size, width))
        out_slopes = np.empty((size - 1, width))
        n, merged = _refine(points, z, slopes, w, merge_tol, out_points, out_values, out_slopes)
        snapped += removed + merged
        points, values, slopes = out_points[:n], out_values[:n], out_slopes[:n - 1]
    w_out = packed[at:at + values.shape[1]]
    n = slopes.shape[0]  # regions
    out = np.empty(3 * n + STATE_SIZE)  # n - 1 breakpoints, <= n - 1 knots, <= n slopes, state
    out[:n - 1] = points[1:-1]
    state = _new_state()
    knots, piece_slopes = np.empty(n), np.empty(n)
    k = _chunk_pieces(points, slopes, w_out, slope_tol, True, state, knots, piece_slopes)
    out[n - 1:n - 1 + k] = knots[:k]
    out[n - 1 + k:n + 2 * k] = piece_slopes[:k + 1]
    out[n + 2 * k:n + 2 * k + STATE_SIZE] = state
    return COUNTED, n, k + 1, snapped, out[:n + 2 * k + STATE_SIZE].copy()
