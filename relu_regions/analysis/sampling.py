"""The sampling estimator: region and piece counts seen on a uniform grid, what a sampling
method finds. It never over-counts, so it is the baseline the exact counter
(:mod:`relu_regions.analysis.regions`) is compared against."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from torch import nn

from ..errors import InputError
from ..nets.reader import relu_layers
from ..validation import check_int, check_interval
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
    consecutive clean cells whose slopes differ by more than ``slope_tol`` times the magnitude
    |W_out| |h'| they are summed from (looser than the exact counter's 1e-11, so rounding never
    adds a piece). Each counted event has its own interval (cells, shared points) containing a
    true boundary, so no count exceeds the truth.
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
            z = rows_times(h, w) + b
            z[np.abs(z) <= zero_tol * (rows_times(np.abs(h), np.abs(w)) + np.abs(b))] = 0.0
            crossed |= np.any(z[:-1] * z[1:] < 0, axis=1)
            on = z[:-1] + z[1:] > 0
            patterns.append(on)
            cell_slopes = rows_times(cell_slopes, w) * on
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
