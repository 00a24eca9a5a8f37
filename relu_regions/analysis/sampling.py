"""The sampling estimator: region and piece counts seen on a uniform grid, what a sampling
method finds. It never over-counts, so it is the baseline the exact counter
(:mod:`relu_regions.analysis.regions`) is compared against."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import ArrayLike
from torch import nn

from ..errors import InputError
from ..nets.operators import check_dense
from ..nets.reader import lower, region_keys
from ..validation import check_int, check_interval, check_point
from .regions import MERGE_ULPS, ZERO_TOL, rows_times


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
    inside the ends, where the exact counter merges switches into the ends. Linear pieces: 1 +
    consecutive clean cells where some output's slope differs by more than ``slope_tol`` times
    the magnitude |W_out| |h'| it is summed from (looser than the exact counter's 1e-11, so
    rounding never adds a piece). Each counted event has its own interval (cells, shared points)
    containing a true boundary, so no count exceeds the truth. Leaky units switch like ReLUs;
    units with negative slope 1 never switch.

    A model with max windows (max-pooling, ``torch.maximum``) compares region keys
    (:func:`~relu_regions.nets.reader.region_keys`) instead of patterns, as the exact counter
    does: a cell is crossed for regions when the keys of the signs just inside its two ends
    differ, and two losers of a window swapping order is no change.
    """
    lowered = lower(model)
    layers = lowered.layers
    if layers[0][0].shape[1] != 1:
        raise InputError(f"the model takes {layers[0][0].shape[1]} inputs; sample it along a "
                         "segment with sample_regions_segment(model, x0, x1)")
    lo, hi = check_interval((lo, hi), "(lo, hi)")
    samples = check_int(samples, "samples", low=3)
    x = np.linspace(lo, hi, samples)
    return _sample(layers, lowered.leaks, x, x[:, None], np.ones(1), slope_tol, zero_tol, chunk,
                   max_nodes=lowered.max_nodes)


def sample_regions_segment(model: nn.Module, x0: ArrayLike, x1: ArrayLike,
                           samples: int = 100_001, slope_tol: float = 1e-9,
                           zero_tol: float = ZERO_TOL, chunk: int = 1 << 16) -> SampledCount:
    """:func:`sample_regions` along the segment x0 + t (x1 - x0), a uniform grid of t in
    [0, 1]: at most the counts of :func:`count_regions_segment`."""
    lowered = lower(model)
    layers = lowered.layers
    n_in = layers[0][0].shape[1]
    x0, x1 = check_point(x0, n_in, "x0"), check_point(x1, n_in, "x1")
    if np.array_equal(x0, x1):
        raise InputError("the segment is empty: x0 equals x1")
    samples = check_int(samples, "samples", low=3)
    t = np.linspace(0.0, 1.0, samples)
    return _sample(layers, lowered.leaks, t, None, x1 - x0, slope_tol, zero_tol, chunk, x0=x0,
                   max_nodes=lowered.max_nodes)


def _sample(layers, leaks, x, inputs, direction, slope_tol, zero_tol, chunk, x0=None,
            max_nodes=None):
    """The grid estimate at positions ``x``: the rows of ``inputs`` (a view of x, so the inset
    below moves them too), or x0 + x * direction. ``max_nodes`` (a model with max windows):
    regions are counted where region keys change (:func:`_end_signs`)."""
    check_dense(layers, "the sampling estimator")
    lo, hi, samples = float(x[0]), float(x[-1]), x.size
    # The exact counter drops a switch within MERGE_ULPS of the ends (a sliver float64 cannot
    # place); sampling just inside the ends ignores those too.
    inset = 2 * MERGE_ULPS * np.spacing(max(abs(lo), abs(hi), hi - lo))
    if inset < (hi - lo) / (samples - 1) / 4:
        x[0], x[-1] = lo + inset, hi - inset
    if inputs is None:
        inputs = x0 + x[:, None] * direction
    w_out = layers[-1][0]
    regions = pieces = 1
    last = None  # the previous chunk's last cell: (clean, pattern) and the last clean slope
    last_slope = None  # (slopes, magnitudes) of the outputs on the last clean cell seen
    for s in range(0, samples - 1, chunk):
        h = inputs[s:s + chunk + 1]  # chunks share their end point: every cell is in one chunk
        cell_slopes = np.broadcast_to(direction, (h.shape[0] - 1, direction.size))
        crossed = np.zeros(h.shape[0] - 1, dtype=bool)
        patterns = []
        ends = []  # with max windows: each cell's signs at its left and right end
        for (w, b), leak in zip(layers[:-1], leaks, strict=True):
            z = rows_times(h, w) + b
            switches = leak != 1.0  # pass-through units are never snapped, never switch
            small = np.abs(z) <= zero_tol * (rows_times(np.abs(h), np.abs(w)) + np.abs(b))
            z[small & switches] = 0.0
            crossed |= np.any((z[:-1] * z[1:] < 0)[:, switches], axis=1)
            on = z[:-1] + z[1:] > 0
            if max_nodes is None:
                patterns.append(on[:, switches])
            else:
                ends.append(_end_signs(z, switches))
            cell_slopes = rows_times(cell_slopes, w) * np.where(on, 1.0, leak)
            h = np.where(z > 0, z, leak * z)
        clean = ~crossed
        if max_nodes is None:
            pattern, region_clean = np.concatenate(patterns, axis=1), clean
        else:  # for regions, a cell is crossed where the region key changes inside it
            widths = [w.shape[0] for w, _ in layers[:-1]]
            pattern, right = (region_keys(np.concatenate([e[i] for e in ends], axis=1),
                                          max_nodes, widths) for i in (0, 1))
            region_clean = np.all(pattern == right, axis=1)
        regions += int(region_clean.size - region_clean.sum())
        # Adjacent clean cells with different patterns, including across the chunk boundary.
        if last is not None:
            clean_prev = np.concatenate([[last[0]], region_clean[:-1]])
            pattern_prev = np.vstack([last[1], pattern[:-1]])
        else:
            clean_prev, pattern_prev = np.concatenate([[False], region_clean[:-1]]), np.vstack(
                [pattern[:1], pattern[:-1]])
        regions += int((region_clean & clean_prev & np.any(pattern != pattern_prev, axis=1)).sum())
        last = (bool(region_clean[-1]), pattern[-1:])
        # Consecutive clean cells (crossed ones between them skipped) where an output's slope
        # differs.
        slope = rows_times(cell_slopes, w_out)[clean]
        mag = rows_times(np.abs(cell_slopes), np.abs(w_out))[clean]
        if last_slope is not None:
            slope, mag = np.vstack([last_slope[0], slope]), np.vstack([last_slope[1], mag])
        if slope.shape[0]:
            differ = np.abs(np.diff(slope, axis=0)) > slope_tol * np.maximum(mag[:-1], mag[1:])
            pieces += int(differ.any(axis=1).sum())
            last_slope = (slope[-1:], mag[-1:])
    return SampledCount(samples=int(samples), linear_pieces=pieces, activation_regions=regions)


def _end_signs(z, switches):
    """(left, right): each grid cell's on-signs just inside its left and right end, from the
    snapped pre-activations ``z`` at the grid points. A unit at exactly 0 at one end takes the
    sign of the other end (the cell's side of a touching zero), so a unit that does not change
    sign strictly inside the cell has the pattern z_i + z_i+1 > 0 at both ends; pass-through
    units are on. Region keys of the two ends differ iff a region boundary lies inside the cell
    (a unit changing sign there moves a window's winner, not just two losers)."""
    z0, z1 = z[:-1], z[1:]
    fixed = ~switches
    left = (z0 > 0) | ((z0 == 0) & (z1 > 0)) | fixed
    right = (z1 > 0) | ((z1 == 0) & (z0 > 0)) | fixed
    return left, right
