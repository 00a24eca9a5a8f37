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
The kernels are compiled once (~5 s) and cached in __pycache__
(cache=True); a process's first count still pays ~0.6-0.9 s to set up numba and load them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from numba import njit
from torch import nn
from torch.nn.utils import parametrize

from ..errors import InputError
from ..validation import check_int, check_interval

ZERO_TOL = 2.0**-40  # ~9e-13: about 4000 ulps of the magnitude a pre-activation is summed from
SLOPE_TOL = 1e-11
# Pieces narrower than this many ulps of the segment's scale cannot be placed reliably.
RESOLUTION_ULPS = 64
EPS = np.finfo(np.float64).eps
INTERP_ULPS = 64  # interpolated values within this many eps of their endpoints' size are 0
MERGE_ULPS = 16  # switch points closer than this many ulps of the segment's scale are one
CHUNK = 1 << 14  # points per layer before the rest of the net runs on halves


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

    def convexity(self) -> "Convexity":
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


PIECE_COLUMNS = ("start", "end", "slope", "value_start", "value_end")


def pieces_table(count: RegionCount, model: nn.Module, x0=None, x1=None) -> dict:
    """One row per linear piece of ``count`` (a count of ``model``): its ends, slope and the
    output at both ends, as float64 arrays under :data:`PIECE_COLUMNS`.

    For a segment count pass its ``x0``, ``x1``: positions are then t in [0, 1] along
    ``x0 + t (x1 - x0)`` and the slope is dy/dt. The values are the network evaluated at the
    ends in float64 (not slope times width summed up, which would accumulate rounding), so the
    pieces join: ``value_end[i] == value_start[i + 1]``.
    """
    edges = np.concatenate([[count.lo], count.knots, [count.hi]])
    if (x0 is None) != (x1 is None):
        raise InputError("give both x0 and x1 (a segment count) or neither")
    layers = relu_layers(model)
    if x0 is None:
        inputs = edges[:, None]
    else:
        n_in = layers[0][0].shape[1]
        x0, x1 = _check_point(x0, n_in, "x0"), _check_point(x1, n_in, "x1")
        inputs = x0 + edges[:, None] * (x1 - x0)
    if inputs.shape[1] != layers[0][0].shape[1]:
        raise InputError(f"the model takes {layers[0][0].shape[1]} inputs; pass the segment's "
                         "x0 and x1")
    values = np.concatenate([_forward(layers, inputs[i:i + CHUNK])
                             for i in range(0, len(inputs), CHUNK)])
    return {"start": edges[:-1], "end": edges[1:], "slope": np.asarray(count.slopes, float),
            "value_start": values[:-1], "value_end": values[1:]}


def _forward(layers, h):
    """The network's output at the rows of ``h``, float64 numpy (the counter's arithmetic)."""
    for w, b in layers[:-1]:
        h = np.maximum(_rows_times(h, w) + b, 0.0)
    w, b = layers[-1]
    return (_rows_times(h, w) + b)[:, 0]


def pieces_rows(table: dict) -> list[dict]:
    """The table as a list of ``{column: value}`` dicts (JSON)."""
    cols = [table[c].tolist() for c in PIECE_COLUMNS]
    return [dict(zip(PIECE_COLUMNS, row)) for row in zip(*cols)]


def write_pieces_csv(path, table: dict, rows_per_block: int = 1 << 16):
    """Write the table as CSV (header ``start,end,slope,value_start,value_end``, every float in
    17 significant digits, which round-trips float64), atomically."""
    from pathlib import Path

    from ..checkpoint import atomic_write

    columns = np.column_stack([table[c] for c in PIECE_COLUMNS])

    def write(f):
        f.write((",".join(PIECE_COLUMNS) + "\n").encode())
        for i in range(0, len(columns), rows_per_block):
            np.savetxt(f, columns[i:i + rows_per_block], fmt="%.17g", delimiter=",")

    atomic_write(Path(path), write)
    return Path(path)


# ---------------------------------------------------------------------------------------------
# Reading a model

def relu_layers(model: nn.Module, *, finite: bool = True
                ) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (W, b) pairs, float64, of a Linear (ReLU Linear)* stack.

    Accepts what :func:`layer_stack` accepts, without leaky ReLUs.
    """
    layers, leaks = layer_stack(model, finite=finite)
    if any(leaks):
        raise InputError("nn.LeakyReLU is not supported by the 1D counter: only nn.ReLU")
    return layers


def layer_stack(model, *, finite: bool = True
                ) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[float]]:
    """(layers, leaks): the (W, b) pairs, float64, of a Linear (ReLU Linear)* stack, and each
    hidden layer's negative slope (0 for nn.ReLU, alpha for nn.LeakyReLU(alpha)).

    Accepts an ``nn.Sequential`` (nested ones are flattened; ``nn.Identity`` is skipped) or any
    module with ``as_sequential()`` (e.g. :class:`~relu_regions.parametrize.ConstructionNet`), whose
    layers are ``nn.Linear``, ``nn.ReLU``, ``nn.LeakyReLU``, ``BlockDiagonalLinear`` (as its dense
    matrix), ``GmPLinear`` and ``GmPLinearReLU`` (their exact plain form, a negative radius folded
    into the next layer); or a list of (W, b) pairs with ReLU between them (e.g. one seed of a
    composite layout's ``raw(theta)``). Non-finite weights raise InputError (``finite=False``:
    the caller checks them).
    """
    if isinstance(model, (list, tuple)):
        return _raw_layers(model, finite), [0.0] * (len(model) - 1)
    construction = getattr(model, "construction", None)
    if hasattr(model, "as_sequential") and hasattr(construction, "weights"):
        # A ConstructionNet's layers are construction.weights(): read them in one call. Through
        # the parametrized layers every tensor recomputes all of them (d = 12: 56 ms, not 0.2).
        with torch.no_grad():
            pairs = construction.weights()
        return _raw_layers(pairs, finite), [0.0] * (len(pairs) - 1)
    if hasattr(model, "as_sequential"):
        model = model.as_sequential()
    if not isinstance(model, nn.Sequential):
        raise InputError(f"expected an nn.Sequential of nn.Linear and nn.ReLU layers, "
                         f"got {type(model).__name__}")
    with parametrize.cached():  # derived weights are computed once, not once per tensor
        return _read_layers(list(_flatten(model)), finite)


def _raw_layers(pairs, finite=True):
    pairs = _tensors_to_numpy(pairs)
    layers = []
    for i, pair in enumerate(pairs):
        try:
            w, b = map(_float64, pair)
        except (TypeError, ValueError):
            raise InputError(f"layer {i} must be a (W, b) pair of arrays") from None
        if w.ndim == 3 and w.shape[0] == 1:
            w = np.squeeze(w, 0)
        if b.ndim != 1:
            b = b.reshape(-1)
        if w.ndim != 2 or b.size != w.shape[0]:
            raise InputError(f"layer {i}: W must be (out, in) and b (out,), got {w.shape}, "
                             f"{b.shape}")
        layers.append((w, b))
    if not layers:
        raise InputError("the model has no layers")
    return _check_layers(layers, finite)


def _float64(t):
    if type(t) is np.ndarray and t.dtype == np.float64:  # as it is: the common case
        return t
    if isinstance(t, torch.Tensor):
        return t.detach().cpu().double().numpy()
    return np.asarray(t, dtype=np.float64)


def _tensors_to_numpy(pairs):
    """(W, b) pairs of CPU tensors of one dtype as float64 numpy arrays, in one copy out of torch
    (per tensor, the calls cost more than counting a small net); anything else as given."""
    if (not pairs or type(pairs[0]) not in (list, tuple) or len(pairs[0]) != 2
            or type(pairs[0][0]) is np.ndarray):
        return pairs
    flat = [t for pair in pairs if isinstance(pair, (list, tuple)) and len(pair) == 2
            for t in pair]
    if (len(flat) != 2 * len(pairs)
            or not all(isinstance(t, torch.Tensor) and t.device.type == "cpu"
                       and t.dtype == flat[0].dtype for t in flat)):
        return pairs
    with torch.no_grad():
        joined = torch.cat([t.reshape(-1) for t in flat]).double().numpy()
    sizes = np.cumsum([t.numel() for t in flat])[:-1]
    arrays = [a.reshape(t.shape) for a, t in zip(np.split(joined, sizes), flat)]
    return list(zip(arrays[::2], arrays[1::2]))


def _read_layers(modules, finite=True):
    from ..nets.blockdiag import BlockDiagonalLinear
    from ..gmp.layers import GmPLinear, GmPLinearReLU

    layers, leaks, expect_linear, sign = [], [], True, None
    for i, m in enumerate(modules):
        if isinstance(m, nn.Identity):
            continue
        if expect_linear and isinstance(m, (nn.Linear, BlockDiagonalLinear, GmPLinear)):
            fused = isinstance(m, GmPLinearReLU)
            if fused:
                m, next_sign = m.split()
            elif isinstance(m, GmPLinear):
                m = m.to_linear()
            elif isinstance(m, BlockDiagonalLinear):
                m = m.to_dense()
            w = m.weight.detach().to(torch.float64).cpu().numpy()
            b = (m.bias.detach().to(torch.float64).cpu().numpy() if m.bias is not None
                 else np.zeros(w.shape[0]))
            if sign is not None:  # the previous fused unit's sign(r), folded into its readers
                w = w * sign[None, :w.shape[1]]
                sign = None
            layers.append((w, b))
            if fused:
                sign = next_sign.detach().to(torch.float64).cpu().numpy()
                leaks.append(0.0)
                continue  # its ReLU is inside
        elif not expect_linear and isinstance(m, nn.ReLU):
            leaks.append(0.0)
        elif not expect_linear and isinstance(m, nn.LeakyReLU):
            leaks.append(float(m.negative_slope))
        else:
            wanted = "nn.Linear" if expect_linear else "nn.ReLU or nn.LeakyReLU"
            raise InputError(f"layer {i} is {type(m).__name__}, expected {wanted}: only "
                             f"alternating linear / ReLU stacks can be counted")
        expect_linear = not expect_linear
    if not layers or expect_linear:
        raise InputError("the model must start and end with nn.Linear")
    if sign is not None:
        raise InputError("the model ends with a GmPLinearReLU: it must end with a linear layer")
    return _check_layers(layers, finite), leaks


def _check_layers(layers, finite=True):
    for (w1, _), (w2, _) in zip(layers, layers[1:]):
        if w2.shape[1] != w1.shape[0]:
            raise InputError(f"layer widths do not chain: {w1.shape[0]} outputs feed "
                             f"{w2.shape[1]} inputs")
    if layers[-1][0].shape[0] != 1:
        raise InputError(f"the model must have one output, has {layers[-1][0].shape[0]}")
    if finite:
        _check_finite(np.concatenate([a.reshape(-1) for pair in layers for a in pair]))
    return layers


def _check_finite(flat):
    """All weights at once: a call per array cost more than counting a small net."""
    if not np.isfinite(flat).all():
        raise InputError("the model has non-finite weights")


def _flatten(seq):
    for m in seq:
        if isinstance(m, nn.Sequential):
            yield from _flatten(m)
        else:
            yield m


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


def count_regions_segment(model: nn.Module, x0, x1, *, zero_tol: float = ZERO_TOL,
                          slope_tol: float = SLOPE_TOL) -> RegionCount:
    """Exact counts along the segment x0 + t (x1 - x0), t in [0, 1]; positions are t."""
    layers = relu_layers(model, finite=False)  # _count checks them, packed
    n_in = layers[0][0].shape[1]
    x0 = _check_point(x0, n_in, "x0")
    x1 = _check_point(x1, n_in, "x1")
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
    if status < 0:
        raise InputError("the model has non-finite weights")
    if status > 0:  # out: breakpoints, knots, slopes, state
        knots_at, slopes_at = n_regions - 1, n_regions + n_pieces - 2
        return _region_count(lo, hi, out[:knots_at], out[knots_at:slopes_at],
                             out[slopes_at:-5], out[-5:], snapped)
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


def _rows_times(rows, w):
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
        self.state = np.array([0.0, 0.0, 0.0, np.inf, np.inf])

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
    start, min_piece, min_region = state[2:].tolist()  # Python floats: cheaper to compare
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
def _chunk_pieces(points, slopes, w_out, slope_tol, first, state, knots, piece_slopes):
    """Write one chunk's knots and its new pieces' slopes; return the number of knots.

    The output slope jumps at a point when it changes by more than slope_tol times the magnitude
    |W_out| |h'| it is summed from, on either side. ``state`` (see _Pieces) links the chunks and
    is updated in place.
    """
    prev_slope, prev_mag, start = state[0], state[1], state[2]
    min_piece, min_region = state[3], state[4]
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
    state[0], state[1], state[2] = prev_slope, prev_mag, start
    state[3], state[4] = min_piece, min_region
    return k


@njit(cache=True)
def _count_small(packed, widths, points, values, slopes, zero_tol, merge_tol, slope_tol, chunk):
    """The whole count in one call while every layer stays within ``chunk`` points: the hidden
    layers as _relu_layer does them, then _chunk_pieces on the one final chunk; the same
    arithmetic as the general path, so the same result.

    ``packed``: W_0, b_0, W_1, b_1, ... flattened; ``widths``: each layer's outputs (the widths
    chain, checked by the caller). Returns (status, regions, pieces, snapped, out) with out =
    breakpoints, knots, piece slopes, state (as in _Pieces), one array (a single array to box).
    status 1: counted; 0: a layer would exceed ``chunk`` (the caller runs the general path);
    -1: a weight is not finite.
    """
    for v in packed:
        if not np.isfinite(v):
            return -1, 0, 0, 0, packed
    at = snapped = 0
    for layer in range(widths.size - 1):
        width, n_in = widths[layer], values.shape[1]
        w = packed[at:at + width * n_in].reshape((width, n_in))  # views: leading-axis slices
        at += width * n_in                                         # of C arrays stay C
        b = packed[at:at + width]
        at += width
        m = points.size
        if m > chunk:
            return 0, 0, 0, 0, packed
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
    out = np.empty(3 * n + 5)  # n - 1 breakpoints, <= n - 1 knots, <= n slopes, state
    out[:n - 1] = points[1:-1]
    state = np.array([0.0, 0.0, 0.0, np.inf, np.inf])
    knots, piece_slopes = np.empty(n), np.empty(n)
    k = _chunk_pieces(points, slopes, w_out, slope_tol, True, state, knots, piece_slopes)
    out[n - 1:n - 1 + k] = knots[:k]
    out[n - 1 + k:n + 2 * k] = piece_slopes[:k + 1]
    out[n + 2 * k:n + 2 * k + 5] = state
    return 1, n, k + 1, snapped, out[:n + 2 * k + 5].copy()


# ---------------------------------------------------------------------------------------------
# The sampling estimator, to compare against

@dataclass
class SampledCount:
    """Counts estimated on a uniform grid: what a sampling method sees."""

    samples: int
    linear_pieces: int
    activation_regions: int

    def to_dict(self) -> dict:
        return asdict(self)


def sample_regions(model: nn.Module, lo: float, hi: float, samples: int = 100_001,
                   slope_tol: float = 1e-9, zero_tol: float = ZERO_TOL,
                   chunk: int = 1 << 16) -> SampledCount:
    """Estimate linear pieces and activation regions from a uniform grid on [lo, hi]: what a
    sampling method sees. It only misses what lies between grid points, never adds: both counts
    are at most the exact ones of :func:`count_regions`.

    Pre-activations z at the grid points get the exact counter's zero rule (|z| <= zero_tol
    times the rounding bound |W| |h| + |b| is 0), so a neuron that only touches zero (computed
    as +-1e-17) switches nothing. Then every grid cell [x_i, x_i+1] is either

    * *crossed*: some neuron of some layer has strictly opposite signs at its ends, so a
      boundary lies strictly inside the cell (one region boundary counted per cell); or
    * *clean*: no neuron changes sign inside, so the net is affine on the cell with the
      pattern z_i + z_i+1 > 0 (the exact counter's rule) and its slope follows by the chain
      rule.

    Activation regions: 1 + crossed cells + adjacent clean cells whose patterns differ (the
    boundary is their shared grid point). The first and last grid points sit 2 * MERGE_ULPS ulps
    inside the ends, where the exact counter merges switches into the ends. Linear pieces: 1 + consecutive clean cells whose slopes
    differ by more than ``slope_tol`` times the magnitude |W_out| |h'| they are summed from
    (looser than the exact counter's 1e-11, so rounding never adds a piece). Each counted event
    has its own interval (cells, shared points) containing a true boundary, so no count exceeds
    the truth.
    """
    layers = relu_layers(model)
    if layers[0][0].shape[1] != 1:
        raise InputError("sample_regions takes a 1D-input model")
    lo, hi = check_interval((lo, hi), "(lo, hi)")
    samples = check_int(samples, "samples", low=3)
    x = np.linspace(lo, hi, samples)
    # The exact counter drops a switch within MERGE_ULPS of the ends (a sliver float64 cannot
    # place); sampling just inside the ends ignores those too.
    inset = 2 * MERGE_ULPS * np.spacing(max(abs(lo), abs(hi), hi - lo))
    if inset < (hi - lo) / (samples - 1) / 4:
        x[0], x[-1] = lo + inset, hi - inset
    w_out = layers[-1][0][0]
    regions = pieces = 1
    last = None  # the previous chunk's last cell: (clean, pattern) and the last clean slope
    last_slope = None  # (slope, magnitude) of the last clean cell seen
    for s in range(0, samples - 1, chunk):
        pts = x[s:s + chunk + 1]  # chunks share their end point: every cell is in one chunk
        h = pts[:, None]
        cell_slopes = np.ones((pts.size - 1, 1))
        crossed = np.zeros(pts.size - 1, dtype=bool)
        patterns = []
        for w, b in layers[:-1]:
            z = _rows_times(h, w) + b
            z[np.abs(z) <= zero_tol * (_rows_times(np.abs(h), np.abs(w)) + np.abs(b))] = 0.0
            crossed |= np.any(z[:-1] * z[1:] < 0, axis=1)
            on = z[:-1] + z[1:] > 0
            patterns.append(on)
            cell_slopes = _rows_times(cell_slopes, w) * on
            h = np.maximum(z, 0.0)
        pattern = np.concatenate(patterns, axis=1)
        clean = ~crossed
        regions += int(crossed.sum())
        # Adjacent clean cells with different patterns, including across the chunk boundary.
        if last is not None:
            clean_prev = np.concatenate([[last[0]], clean[:-1]])
            pattern_prev = np.vstack([last[1], pattern[:-1]])
        else:
            clean_prev, pattern_prev = np.concatenate([[False], clean[:-1]]), np.vstack(
                [pattern[:1], pattern[:-1]])
        regions += int((clean & clean_prev & np.any(pattern != pattern_prev, axis=1)).sum())
        last = (bool(clean[-1]), pattern[-1:])
        # Consecutive clean cells (crossed ones between them skipped) with different slopes.
        slope = (cell_slopes @ w_out)[clean]
        mag = (np.abs(cell_slopes) @ np.abs(w_out))[clean]
        if last_slope is not None:
            slope, mag = np.concatenate([[last_slope[0]], slope]), np.concatenate([[last_slope[1]],
                                                                                 mag])
        if slope.size:
            differ = np.abs(np.diff(slope)) > slope_tol * np.maximum(mag[:-1], mag[1:])
            pieces += int(differ.sum())
            last_slope = (slope[-1], mag[-1])
    return SampledCount(samples=int(samples), linear_pieces=pieces, activation_regions=regions)


def _check_point(x, n_in, name):
    try:
        x = np.asarray(x, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a vector of {n_in} numbers") from None
    if x.size != n_in or not np.isfinite(x).all():
        raise InputError(f"{name} must be {n_in} finite number{'s' if n_in != 1 else ''} (the "
                         f"model's input size), got {x.tolist()}")
    return x

