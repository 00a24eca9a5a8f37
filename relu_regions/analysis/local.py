"""Local complexity: the activation regions and the neurons near each point of a data set.

Humayun, Balestriero & Baraniuk (arXiv:2402.15555, Fig. 4; arXiv:2310.12977) measure how
finely a net partitions its input around a point by the neurons whose zero set passes through a
small neighbourhood of it. Here the neighbourhood is the disc of radius r around the point in a
plane through it: the model's input plane when it has two inputs, else ``n_planes`` random planes
(two orthonormal directions each, drawn from a seeded generator). Two measures:

  * :func:`local_complexity`, exact in float64: the activation regions that meet the disc and the
    hidden neurons whose pre-activation changes sign on it. The square [-r, r]^2 around the point
    is partitioned by the plane counter (:mod:`relu_regions.analysis.plane`; docs/regions2d.md),
    the cells (convex polygons) at distance <= r from the centre are kept, and a neuron counts
    when its pattern bit differs between two kept cells: a neuron keeps one sign on each cell,
    and the disc is connected, so its bit varies among the cells exactly when it changes sign in
    the disc.
  * :func:`sampled_local_complexity`, the papers' sampled proxy: the pre-activations at the 2
    ``dims`` vertices x +- r d_k of a cross-polytope, d_1, d_2 the same plane's directions; a
    neuron counts when it has strictly opposite signs at two vertices. With ``dims=2`` the
    vertices lie on the disc's rim, so both numbers are at most the exact ones.

Pass-through units (negative-side slope 1, e.g. the carriers of a skip connection) never switch
and are not neurons here.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from ..errors import InputError
from ..nets.operators import check_dense, is_operator
from ..nets.reader import lower
from ..validation import check_float, check_int
from .plane import _propagate
from .regions import ZERO_TOL

if TYPE_CHECKING:
    from torch import nn

# Squares per call of the plane kernel. Every square's corners have the same plane coordinates
# (+-r, +-r), so the kernel's vertex table probes through all of them: cost ~ BATCH^2 per layer.
BATCH = 128
SAMPLE_ROWS = 1 << 14  # sample points per forward pass of the sampled measure
ID_BYTES = 4  # trailing pattern bytes that carry each square's index through the kernel


@dataclass
class LocalComplexity:
    """Local complexity of a model around each of ``points``, on discs of radius ``radius``.

    ``activation_regions`` and ``neurons`` are (points, n_planes) int arrays: the activation
    regions meeting the disc and the hidden neurons whose pre-activation changes sign on it
    (``method="exact"``), or what the cross-polytope's ``samples`` vertices show of them
    (``method="sampled"``: distinct activation patterns among the vertices, and neurons with
    strictly opposite signs at two of them). ``neurons_per_layer`` (points, n_planes, hidden
    layers) splits ``neurons`` by the layers of the lowered model. ``planes`` (points, n_planes,
    2, inputs) are the two orthonormal directions of each disc's plane, flattened inputs.
    ``hidden_neurons``: the units that can switch (pass-through units excluded). ``snapped``: the
    crossings the plane counter's exactness rules snapped in all squares counted (exact method).
    """

    method: str
    radius: float
    activation_regions: np.ndarray = field(repr=False)
    neurons: np.ndarray = field(repr=False)
    neurons_per_layer: np.ndarray = field(repr=False)
    planes: np.ndarray = field(repr=False)
    hidden_neurons: int
    samples: int | None = None
    snapped: int = 0
    notes: list = field(default_factory=list)  # what reading the model changed

    @property
    def mean_activation_regions(self) -> float:
        """Mean over points and planes of ``activation_regions``."""
        return float(self.activation_regions.mean())

    @property
    def mean_neurons(self) -> float:
        """Mean over points and planes of ``neurons``."""
        return float(self.neurons.mean())

    def to_dict(self, arrays: bool = False) -> dict:
        """JSON-ready summary (means, maxima, sizes); ``arrays=True`` adds the per-point arrays
        and the planes."""
        points, n_planes = self.neurons.shape
        d = dict(method=self.method, radius=self.radius, points=points, n_planes=n_planes,
                 samples=self.samples, hidden_neurons=self.hidden_neurons,
                 mean_activation_regions=self.mean_activation_regions,
                 mean_neurons=self.mean_neurons,
                 max_activation_regions=int(self.activation_regions.max()),
                 max_neurons=int(self.neurons.max()),
                 mean_neurons_per_layer=self.neurons_per_layer.mean((0, 1)).tolist(),
                 snapped=self.snapped, notes=list(self.notes))
        if arrays:
            d.update(activation_regions=self.activation_regions.tolist(),
                     neurons=self.neurons.tolist(),
                     neurons_per_layer=self.neurons_per_layer.tolist(),
                     planes=self.planes.tolist())
        return d


# ---------------------------------------------------------------------------------------------
# Public entry points

def local_complexity(model: nn.Module, points: ArrayLike, radius: float, n_planes: int = 1,
                     seed: int = 0, *, input_shape: Sequence[int] | None = None,
                     workers: int | None = None) -> LocalComplexity:
    """Exact local complexity: for each point, the activation regions and the hidden neurons
    whose zero set meets the disc of ``radius`` around it, in float64.

    ``points``: (m, inputs), or (m, *input_shape) for a shaped model (a conv net: then
    ``input_shape`` is read from them), or one point (inputs,). A model with two inputs: the disc
    lies in its input plane (``n_planes`` 1, ``seed`` 0). More inputs: in ``n_planes`` random
    planes through each point, seeded by ``seed`` (the same as :func:`sampled_local_complexity`
    draws). Each disc is the square [-r, r]^2 counted by the plane counter, of which the cells
    meeting the disc are kept; many squares are counted in one pass, on ``workers`` threads (by
    default one per core; the result does not depend on it). Returns a :class:`LocalComplexity`
    with ``method="exact"``.
    """
    lowered, pts, radius, planes = _setup(model, points, radius, n_planes, seed, input_shape)
    workers = (os.cpu_count() or 1) if workers is None else check_int(workers, "workers", low=1)
    regions, bits, snapped = _exact(lowered.layers, lowered.leaks, pts, planes, radius, workers)
    return _result("exact", lowered, radius, planes, regions, bits, None, snapped)


def sampled_local_complexity(model: nn.Module, points: ArrayLike, radius: float,
                             n_planes: int = 1, seed: int = 0, *, dims: int = 2,
                             input_shape: Sequence[int] | None = None) -> LocalComplexity:
    """The sampled measure of arXiv:2402.15555 (Fig. 4): the pre-activations at the 2 ``dims``
    vertices x +- r d_k of a cross-polytope around each point; ``neurons`` counts those with
    strictly opposite signs at two vertices, ``activation_regions`` the distinct activation
    patterns (z > 0 per unit) among the vertices, where a unit without opposite signs has one
    bit on all of them (a vertex where it is 0 touches its zero set, as in the exact count).

    d_1, d_2 are the directions of the disc's plane of :func:`local_complexity` with the same
    ``n_planes`` and ``seed``, so with ``dims=2`` (the default) the vertices lie on that disc and
    both counts are at most the exact ones. ``dims`` > 2 adds random directions orthonormal to
    them (the papers' full-dimensional cross-polytope; its vertices leave the disc, so it is not
    bounded by the exact count). Pre-activations within rounding of 0 (the counters' zero rule)
    are 0. Points and the other arguments as in :func:`local_complexity`.
    """
    lowered, pts, radius, planes = _setup(model, points, radius, n_planes, seed, input_shape)
    n_in = pts.shape[1]
    dims = check_int(dims, "dims", low=2, high=n_in,
                     hint="the cross-polytope's directions: 2 (the disc's plane) up to the "
                          "model's input size")
    directions = _directions(planes, dims, seed)
    regions, bits = _sampled(lowered.layers, lowered.leaks, pts, directions, radius)
    return _result("sampled", lowered, radius, planes, regions, bits, 2 * dims, 0)


# ---------------------------------------------------------------------------------------------
# Checks, planes, result

def _setup(model, points, radius, n_planes, seed, input_shape):
    """(lowered model, points (m, inputs), radius, planes (m, n_planes, 2, inputs))."""
    radius = check_float(radius, "radius", low=0.0, low_open=True,
                         hint="the radius of the disc around each point")
    n_planes = check_int(n_planes, "n_planes", low=1)
    seed = check_int(seed, "seed", low=0)
    if hasattr(points, "detach"):  # a torch tensor, perhaps with a gradient or on a GPU
        points = points.detach().cpu()
    try:
        pts = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError("points must be an array of numbers, (points, inputs) or (points, "
                         "*input_shape)") from None
    if input_shape is None and pts.ndim > 2:
        input_shape = pts.shape[1:]
    lowered = lower(model, input_shape)
    if lowered.max_nodes is not None:
        # its regions merge cells (nets.reader.region_keys) and its tournament units are no
        # neurons of the model's own: not defined here yet
        raise InputError("local complexity of a model with max-pooling (or torch.maximum) is "
                         "not supported: count its planes with count_regions_plane")
    n_in = lowered.layers[0][0].shape[1]
    if pts.ndim == 1 and pts.size == n_in:
        pts = pts[None]  # one point
    if pts.ndim < 2 or math.prod(pts.shape[1:]) != n_in or pts.shape[0] == 0:
        raise InputError(f"points must be (points, {n_in}) for a model with {n_in} inputs (or "
                         f"(points, *input_shape)), got shape {pts.shape}; one point may be a "
                         f"vector of {n_in}")
    pts = pts.reshape(pts.shape[0], n_in)
    if not np.isfinite(pts).all():
        bad = int(np.flatnonzero(~np.isfinite(pts).all(1))[0])
        raise InputError(f"points must be finite; point {bad} is not")
    if n_in < 2:
        raise InputError("local complexity needs a model with at least 2 inputs (a disc in a "
                         "plane); with one input count along the line with count_regions")
    if n_in == 2:
        if n_planes != 1:
            raise InputError(f"a model with two inputs has one plane, its input plane: n_planes "
                             f"must be 1, got {n_planes}")
        if seed != 0:
            raise InputError(f"seed draws random planes, and a model with two inputs has one "
                             f"plane, its input plane: seed must be 0, got {seed}")
    return lowered, pts, radius, _planes(pts.shape[0], n_in, n_planes, seed)


def _planes(m, n_in, n_planes, seed):
    """(m, n_planes, 2, n_in) orthonormal direction pairs: the input plane's axes for two inputs,
    else Gaussian pairs from ``np.random.default_rng(seed)`` made orthonormal (Gram-Schmidt, twice
    for the second). One draw in point order, so a point's planes do not depend on the points
    after it."""
    if n_in == 2:
        return np.broadcast_to(np.eye(2), (m, n_planes, 2, 2)).copy()
    g = np.random.default_rng(seed).standard_normal((m, n_planes, 2, n_in))
    e1 = g[:, :, 0] / np.linalg.norm(g[:, :, 0], axis=-1, keepdims=True)
    e2 = g[:, :, 1]
    for _ in range(2):
        e2 = e2 - (e2 * e1).sum(-1, keepdims=True) * e1
    e2 = e2 / np.linalg.norm(e2, axis=-1, keepdims=True)
    return np.stack([e1, e2], axis=2)


def _directions(planes, dims, seed):
    """(m, n_planes, dims, n_in): each plane's two directions, then dims - 2 more orthonormal to
    them and each other, from a generator of their own (``[seed, 1]``)."""
    if dims == 2:
        return planes
    m, n_planes, _, n_in = planes.shape
    g = np.random.default_rng([seed, 1]).standard_normal((m, n_planes, dims - 2, n_in))
    out = np.concatenate([planes, g], axis=2)
    for k in range(2, dims):
        v = out[:, :, k]
        for _ in range(2):
            v = v - np.einsum("pqj,pqjn->pqn", np.einsum("pqjn,pqn->pqj", out[:, :, :k], v),
                              out[:, :, :k])
        out[:, :, k] = v / np.linalg.norm(v, axis=-1, keepdims=True)
    return out


def _result(method, lowered, radius, planes, regions, bits, samples, snapped):
    """The result from each disc's (regions, bits of the neurons that switch on it)."""
    m, n_planes = planes.shape[:2]
    real = np.concatenate([np.zeros(0, bool)] + [leak != 1.0 for leak in lowered.leaks])
    bits = bits & real
    bit0 = np.cumsum([0] + [leak.size for leak in lowered.leaks])
    counts = bits.astype(np.int64)
    per_layer = np.add.reduceat(counts, bit0[:-1], axis=1) if bit0.size > 1 else counts[:, :0]
    return LocalComplexity(
        method=method, radius=radius,
        activation_regions=regions.reshape(m, n_planes).astype(np.int64),
        neurons=bits.sum(1).reshape(m, n_planes).astype(np.int64),
        neurons_per_layer=per_layer.reshape(m, n_planes, -1).astype(np.int64),
        planes=planes, hidden_neurons=int(real.sum()), samples=samples, snapped=int(snapped),
        notes=list(lowered.notes))


# ---------------------------------------------------------------------------------------------
# Exact: squares through the plane kernel, cells meeting the disc

def _exact(layers, leaks, pts, planes, r, workers):
    """(regions per disc, (discs, hidden) bool of the neurons whose bit varies among the cells
    meeting the disc, snapped crossings). Discs are (point, plane) pairs in C order.

    A batch of squares enters the plane kernel as separate initial cells: each its corners
    (+-r, +-r) in its own plane coordinates, its first-layer inputs x + U c there and its
    Jacobian U (the plane's directions). Cells refine independently, so each square is
    partitioned as if counted alone; its index rides in trailing pattern bytes the kernel copies
    and never sets. Batches run on ``workers`` threads (the kernels release the GIL), each into
    its own tallies, merged at the end: sums, ORs and ANDs, so the result is the same for any
    number of threads.
    """
    layers = [(w if is_operator(w) else np.ascontiguousarray(w), np.ascontiguousarray(b))
              for w, b in layers]
    leaks = [np.ascontiguousarray(leak, np.float64) for leak in leaks]
    widths = [w.shape[0] for w, _ in layers[:-1]]
    n_hidden = sum(widths)
    n_bytes = max(1, (n_hidden + 7) // 8)
    bit0 = np.cumsum([0] + widths)
    n_in = pts.shape[1]
    origins = np.repeat(pts, planes.shape[1], axis=0)
    bases = planes.reshape(-1, 2, n_in)
    n = origins.shape[0]
    corners = np.array([[-r, -r], [r, -r], [r, r], [-r, r]])
    box = np.array([-r, r, -r, r])

    def run(starts):
        disc = _Disc(n, n_bytes, r)
        stats = np.zeros(1, np.int64)  # snapped
        for s in starts:
            e = min(n, s + BATCH)
            b = e - s
            ring = np.empty((4 * b, 2 + n_in))
            ring[:, :2] = np.tile(corners, (b, 1))
            ring[:, 2:] = (origins[s:e, None, :] + corners @ bases[s:e]).reshape(4 * b, n_in)
            pat = np.zeros((b, n_bytes + ID_BYTES), np.uint8)
            pat[:, n_bytes:] = np.arange(s, e, dtype="<u4").view(np.uint8).reshape(b, ID_BYTES)
            chunk = (np.arange(0, 4 * b + 1, 4), ring, np.ascontiguousarray(bases[s:e]), pat)
            _propagate(layers, leaks, bit0, chunk, box, ZERO_TOL, stats, disc)
        return disc, int(stats[0])

    starts = list(range(0, n, BATCH))
    workers = min(workers, len(starts))
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            parts = list(pool.map(run, [starts[i::workers] for i in range(workers)]))
    else:
        parts = [run(starts)]
    disc = parts[0][0]
    for other, _ in parts[1:]:
        disc.regions += other.regions
        disc.any_on |= other.any_on
        disc.all_on &= other.all_on
    varying = disc.any_on & ~disc.all_on
    bits = np.unpackbits(varying, axis=1, count=n_hidden).astype(bool)
    return disc.regions, bits, sum(p[1] for p in parts)


class _Disc:
    """Takes the final cells from the kernel (as plane._Accumulator does) and keeps, per square,
    the count of cells meeting its disc and the OR and AND of their patterns."""

    def __init__(self, n, n_bytes, r):
        self.n_bytes, self.r = n_bytes, r
        self.regions = np.zeros(n, np.int64)
        self.any_on = np.zeros((n, n_bytes), np.uint8)
        self.all_on = np.full((n, n_bytes), 255, np.uint8)

    def add(self, off, ring, jac, pat):
        keep = meets_disc(off - off[0], ring[:, :2], self.r)
        ids = np.ascontiguousarray(pat[keep, self.n_bytes:]).view("<u4").ravel()
        bits = pat[keep, :self.n_bytes]
        self.regions += np.bincount(ids, minlength=self.regions.size)
        np.bitwise_or.at(self.any_on, ids, bits)
        np.bitwise_and.at(self.all_on, ids, bits)


def meets_disc(off: np.ndarray, uv: np.ndarray, r: float) -> np.ndarray:
    """Per convex polygon (counter-clockwise rings ``uv[off[i]:off[i + 1]]``): whether it meets
    the closed disc of radius r around the origin, i.e. holds the origin (no edge has it on its
    right) or has an edge within distance r of it (closest point of the segment)."""
    a = uv
    nxt = np.arange(1, a.shape[0] + 1)
    nxt[off[1:] - 1] = off[:-1]
    d = a[nxt] - a
    cross = a[:, 0] * d[:, 1] - a[:, 1] * d[:, 0]  # a x (b - a) = a x b: >= 0, origin on the left
    inside = np.logical_and.reduceat(cross >= 0, off[:-1])
    dd = (d * d).sum(1)
    t = np.clip(-(a * d).sum(1) / np.where(dd > 0, dd, 1.0), 0.0, 1.0)
    dist = np.hypot(a[:, 0] + t * d[:, 0], a[:, 1] + t * d[:, 1])
    return inside | (np.minimum.reduceat(dist, off[:-1]) <= r)


# ---------------------------------------------------------------------------------------------
# Sampled: the cross-polytope's vertices through the net

def _sampled(layers, leaks, pts, directions, r):
    """(distinct patterns per disc, (discs, hidden) bool of the neurons with strictly opposite
    signs at two of its 2 dims vertices)."""
    check_dense(layers, "sampled local complexity", "use local_complexity (exact, by the "
                "plane counter), or lower it with operators=False if its dense matrices fit")
    n_planes, dims, n_in = directions.shape[1:]
    n = pts.shape[0] * n_planes
    k = 2 * dims
    offsets = r * directions.reshape(n, dims, n_in)
    origins = np.repeat(pts, n_planes, axis=0)
    n_hidden = sum(leak.size for leak in leaks)
    regions = np.empty(n, np.int64)
    bits = np.empty((n, n_hidden), bool)
    step = max(1, SAMPLE_ROWS // k)
    for s in range(0, n, step):
        e = min(n, s + step)
        h = np.concatenate([origins[s:e, None] + offsets[s:e], origins[s:e, None]
                            - offsets[s:e]], axis=1).reshape((e - s) * k, n_in)
        switched, patterns = [np.zeros((e - s, 0), bool)], [np.zeros((e - s, k, 0), bool)]
        for (w, b), leak in zip(layers[:-1], leaks, strict=True):
            z = h @ w.T + b
            small = np.abs(z) <= ZERO_TOL * (np.abs(h) @ np.abs(w).T + np.abs(b))
            z[small & (leak != 1.0)] = 0.0  # the counters' zero rule: touching is not crossing
            zs = z.reshape(e - s, k, -1)
            on = zs > 0
            switches = on.any(1) & (zs < 0).any(1)
            switched.append(switches)
            # a unit that does not switch keeps one bit on all vertices (a zero is touching)
            patterns.append(on & switches[:, None, :])
            h = np.where(z > 0, z, leak * z)
        bits[s:e] = np.concatenate(switched, axis=1)
        regions[s:e] = _distinct(np.concatenate(patterns, axis=2))
    return regions, bits


def _distinct(patterns):
    """Distinct rows per group of (groups, k, bits) booleans."""
    groups, k = patterns.shape[:2]
    packed = np.packbits(patterns, axis=2)
    if packed.shape[2] == 0:
        return np.ones(groups, np.int64)
    rows = np.concatenate([np.repeat(np.arange(groups, dtype="<u4"), k).view(np.uint8)
                           .reshape(groups * k, ID_BYTES), packed.reshape(groups * k, -1)], 1)
    unique = np.unique(rows, axis=0)
    return np.bincount(np.ascontiguousarray(unique[:, :ID_BYTES]).view("<u4").ravel(),
                       minlength=groups)
