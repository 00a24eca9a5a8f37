"""The reference limit: the best continuous piecewise-linear (PL) fit with a given number of pieces.

The reference limit (not from the paper; docs/limits.md): no function with n linear pieces fits
the samples better than the optimal n-piece free-knot PL fit, so while a net keeps 2^d pieces,
optimum / achieved MSE is an efficiency in (0, 1].

Three quantities, from the cheapest bound to the fit itself:

* `asymptotic_mse`   the large-n formula  (1 / (720 n^4 L)) (integral |f''|^(2/5))^5.
* `segmented_lower_bound`  exact optimum over *discontinuous* n-piece fits (dynamic programming);
  every continuous n-piece PL function is one of those, so this certifies a lower bound.
* `optimal_pwl`      the continuous free-knot fit itself (variable projection + restarts); its MSE
  is an upper bound on the true optimum, and `lower_bound` brackets it from below.

Derivation of the formula (the normalization usually stated without proof). On a piece of
length h where f'' ~ c, the best linear L2 fit to c x^2 / 2 leaves c/2 times the Legendre-P2
part of x^2, whose squared norm on [-h/2, h/2] is h^5/180; so the integrated squared error is
c^2 h^5 / 720. For a quadratic the per-piece best fits (shifted secants) meet continuously, so
continuity costs nothing to leading order. Minimizing sum c_i^2 h_i^5 / 720 subject to
sum h_i = L gives h_i ~ |f''|^(-2/5) (curvature equidistribution) and the integrated error
(1/(720 n^4)) (integral |f''|^(2/5))^5. The *mean* squared error over evenly spread points on an
interval of length L is that divided by L. For f = x^2 (f'' = 2) on [0, 1]: 4/720/n^4 = 1/(180 n^4),
exact for every n (uniform knots). On [0, L] the MSE of x^2 scales as L^4.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike
from scipy import integrate, linalg, optimize

from ..errors import InputError
from ..validation import check_int, check_interval

if TYPE_CHECKING:  # torch is imported where a net is evaluated
    from torch import nn

DP_MAX_POINTS = 2000  # the exact segmented bound costs O(pieces * points^2)
CERTIFY_RTOL = 1e-6  # a fit this close to the lower bound is optimal; stop searching


# --------------------------------------------------------------------------------------------
# Result type


@dataclass
class PWLFit:
    """A continuous piecewise-linear function on [lo, hi]: values at nodes (lo, *knots, hi).

    `mse` is the mean squared residual on the samples it was fitted to; `lower_bound` is the
    exact optimum over discontinuous fits with the same number of pieces (None if not computed),
    so the true continuous optimum lies in [lower_bound, mse].
    """

    knots: np.ndarray  # interior knots, sorted, pieces_used - 1 of them
    values: np.ndarray  # fitted values at (lo, *knots, hi)
    interval: tuple[float, float]
    mse: float
    pieces: int  # pieces requested
    pieces_used: int  # <= pieces; smaller when fewer suffice to interpolate the data
    lower_bound: float | None = None
    seconds: float = 0.0
    note: str = ""

    @property
    def nodes(self) -> np.ndarray:
        return np.concatenate([[self.interval[0]], self.knots, [self.interval[1]]])

    def predict(self, x: ArrayLike) -> np.ndarray:
        """Evaluate the PL function at x; the end pieces extend linearly outside [lo, hi]."""
        x = np.asarray(x, dtype=np.float64)
        j, u, _ = _locate(x, self.nodes)
        return self.values[j] + u * (self.values[j + 1] - self.values[j])

    __call__ = predict

    def to_dict(self) -> dict:
        return {"pieces": self.pieces, "pieces_used": self.pieces_used, "mse": self.mse,
                "lower_bound": self.lower_bound, "interval": list(self.interval),
                "knots": self.knots.tolist(), "values": self.values.tolist(),
                "seconds": self.seconds, "note": self.note}


# --------------------------------------------------------------------------------------------
# Boundary checks


def _samples(x, y) -> tuple[np.ndarray, np.ndarray]:
    try:
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError("x and y must be numeric arrays") from None
    if x.ndim != 1 or y.shape != x.shape:
        raise InputError(f"x and y must be 1D arrays of equal length, got shapes {x.shape} "
                         f"and {y.shape}")
    if x.size < 2:
        raise InputError(f"need at least 2 samples, got {x.size}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise InputError("x and y must be finite (no NaN or inf)")
    if np.ptp(x) == 0:
        raise InputError(f"all x equal {float(x[0])!r}; need at least 2 distinct x")
    order = np.argsort(x, kind="stable")
    return x[order], y[order]



# --------------------------------------------------------------------------------------------
# The asymptotic formula and the efficiency


def asymptotic_mse(f2: Callable[[np.ndarray], ArrayLike] | float,
                   interval: Sequence[float] = (0.0, 1.0),
                   pieces: int | ArrayLike = 1) -> float | np.ndarray:
    """Large-n optimal MSE of an n-piece continuous PL fit (docs/limits.md).

    (1 / (720 n^4 L)) * (integral_lo^hi |f''(x)|^(2/5) dx)^5, with L = hi - lo: the integrated
    squared error of the module docstring divided by L, i.e. the mean squared error over evenly
    spread points. `f2` is the second derivative, a callable on float64 arrays (or a number for a
    constant f''). `pieces` may be an array; the result has its shape.
    """
    lo, hi = check_interval(interval)
    n = np.asarray(pieces)
    if n.dtype.kind not in "iu" or (n < 1).any():
        raise InputError(f"pieces={pieces!r} is not allowed; need integers >= 1")
    if callable(f2):
        def density(t: float) -> float:
            try:
                v = abs(np.asarray(f2(np.float64(t)), dtype=np.float64).item())
            except (TypeError, ValueError):
                raise InputError(f"f2 must return one number per point; got something else "
                                 f"at x={t!r}") from None
            if not math.isfinite(v):
                raise InputError(f"second derivative is not finite at x={t!r}")
            return v ** 0.4

        total, _ = integrate.quad(density, lo, hi, limit=500, epsabs=0.0, epsrel=1e-10)
    else:
        try:
            c = abs(float(f2))
        except (TypeError, ValueError):
            raise InputError(f"f2={f2!r} must be a callable or a number") from None
        total = c ** 0.4 * (hi - lo)
    out = total ** 5 / (720.0 * n.astype(np.float64) ** 4 * (hi - lo))
    return float(out) if out.ndim == 0 else out


def efficiency(optimal_mse: ArrayLike, achieved_mse: ArrayLike) -> float | np.ndarray:
    """optimal / achieved MSE (vectorized) — in (0, 1] while the net has at most that many pieces.

    A value above 1 means the reference is not the optimum for the net's piece count (the net
    has more pieces, or the reference fit is only a local optimum). 0/0 counts as 1.
    """
    opt = np.asarray(optimal_mse, dtype=np.float64)
    ach = np.asarray(achieved_mse, dtype=np.float64)
    for name, v in (("optimal_mse", opt), ("achieved_mse", ach)):
        if not np.isfinite(v).all() or (v < 0).any():
            raise InputError(f"{name} must be finite and >= 0, got {v.tolist()!r}")
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(ach > 0, opt / np.where(ach > 0, ach, 1.0), np.where(opt > 0, np.inf, 1.0))
    return float(out) if out.ndim == 0 else out


# --------------------------------------------------------------------------------------------
# Exact lower bound: best discontinuous n-piece linear fit by dynamic programming


def _segment_costs(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """S[i, j] = residual sum of squares of the LS line through samples i..j-1 (inf if j <= i).

    Welford-style running moments for all starts i at once: stable even when the residual is
    ~1e-12 of the spread of y.
    """
    m = x.size
    S = np.full((m + 1, m + 1), np.inf)
    count = np.zeros(m)
    mx, my, sxx, sxy, syy = (np.zeros(m) for _ in range(5))
    for j in range(m):  # add sample j to every segment starting at i <= j
        live = slice(0, j + 1)
        count[live] += 1.0
        dx, dy = x[j] - mx[live], y[j] - my[live]
        mx[live] += dx / count[live]
        my[live] += dy / count[live]
        sxx[live] += dx * (x[j] - mx[live])
        sxy[live] += dx * (y[j] - my[live])
        syy[live] += dy * (y[j] - my[live])
        with np.errstate(divide="ignore", invalid="ignore"):
            rss = np.where(sxx[live] > 0, syy[live] - sxy[live] ** 2 / sxx[live], syy[live])
        rss = np.maximum(rss, 0.0)
        rss[(count[live] <= 2) & (sxx[live] > 0)] = 0.0  # a line through 2 points is exact
        S[live, j + 1] = rss
    return S


def _segmented_dp(x: np.ndarray, y: np.ndarray, pieces: int) -> tuple[float, list[int]]:
    """Exact min RSS over partitions of the sorted samples into <= pieces runs, and the cuts."""
    m = x.size
    S = _segment_costs(x, y)  # inf on and below the diagonal: each run holds >= 1 sample
    best = S[0].copy()  # best[j]: first j samples with 1 run
    choice = []
    for _ in range(pieces - 1):
        total = best[:, None] + S
        arg = np.argmin(total, axis=0)
        new = total[arg, np.arange(m + 1)]
        keep = best <= new  # fewer runs already as good
        choice.append(np.where(keep, -1, arg))
        best = np.where(keep, best, new)
        if best[m] == 0.0:
            break
    cuts, j = [], m
    for arg in reversed(choice):
        if arg[j] >= 0:
            j = int(arg[j])
            cuts.append(j)
    return float(best[m]), sorted(cuts)


def segmented_lower_bound(x: ArrayLike, y: ArrayLike, pieces: int) -> float:
    """Exact optimal MSE over *discontinuous* fits with `pieces` linear pieces.

    Every continuous n-piece PL function restricted to the samples is such a fit, so this is a
    certified lower bound on the free-knot optimum. Cost O(pieces * points^2); points <= 2000.
    """
    x, y = _samples(x, y)
    pieces = check_int(pieces, "pieces", low=1)
    if x.size > DP_MAX_POINTS:
        raise InputError(f"{x.size} samples is too many for the exact bound; at most "
                         f"{DP_MAX_POINTS} allowed")
    return _segmented_dp(x, y, pieces)[0] / x.size


# --------------------------------------------------------------------------------------------
# Variable projection for fixed knots, and its Jacobian in the knots


class _Projection:
    """r(knots) = B(knots) c*(knots) - y with c* the least-squares node values (Golub-Pereyra).

    B^T B is tridiagonal, and so is the knots' part of the problem (:meth:`joint_normal_equations`,
    :func:`_refine`): everything uses banded solves and scatters, no dense factorization (those
    are slow, and thread-starved when the machine is busy).
    A ridge of 1e-14 * max diag on first differences of c fixes node values that no sample
    sees (they interpolate their neighbours) and changes the fit by ~1e-14 relative.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.x, self.y = x, y
        self._key = None

    def _scatter(self, values: np.ndarray, j: np.ndarray, u: np.ndarray, size: int) -> np.ndarray:
        """B^T @ values (values of shape m or m x k)."""
        out = np.zeros((size,) + values.shape[1:])
        w0 = (1.0 - u).reshape((-1,) + (1,) * (values.ndim - 1))
        np.add.at(out, j, w0 * values)
        np.add.at(out, j + 1, (1.0 - w0) * values)
        return out

    def solve(self, nodes: np.ndarray):
        key = nodes.tobytes()
        if key == self._key:
            return self._cache
        n1 = nodes.size  # number of node values
        B_j, u, h = _locate(self.x, nodes)
        diag = np.bincount(B_j, (1.0 - u) ** 2, n1) + np.bincount(B_j + 1, u ** 2, n1)
        off = np.bincount(B_j, (1.0 - u) * u, n1)[:-1]  # (k, k+1) entries
        lam = 1e-14 * max(diag.max(), 1.0)
        diag = diag + lam * np.r_[1.0, np.full(n1 - 2, 2.0), 1.0]
        off = off - lam
        ab = np.zeros((2, n1))  # lower banded form for solveh_banded
        ab[0], ab[1, :-1] = diag, off
        c = linalg.solveh_banded(ab, self._scatter(self.y, B_j, u, n1), lower=True)
        r = (1.0 - u) * c[B_j] + u * c[B_j + 1] - self.y
        self._key, self._cache = key, (c, r, ab, B_j, u, h)
        return self._cache

    def residual(self, nodes: np.ndarray) -> np.ndarray:
        return self.solve(nodes)[1]

    def joint_normal_equations(self, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """J'J (lower banded form, 4 rows) and -J'r of the residual in the joint variables
        (c_0, t_0, c_1, t_1, ...) at the least-squares c of these nodes, with the ridge of
        ``solve`` on c; the end nodes' rows and columns are those of the identity (fixed).

        Sample i between nodes j and j + 1 has the row (1 - u, -(1 - u) p', u, -u p') at
        (c_j, t_j, c_{j+1}, t_{j+1}), p' the piece's slope; everything else in it is 0.
        """
        c, r, _, j, u, h = self.solve(nodes)
        size = 2 * nodes.size
        slope = np.divide(c[j + 1] - c[j], h, out=np.zeros_like(h), where=h > 0)
        row = (1.0 - u, -(1.0 - u) * slope, u, -u * slope)
        row[1][j == 0] = 0.0  # the end nodes do not move
        row[3][j + 1 == nodes.size - 1] = 0.0
        ab = np.zeros((4, size))
        for k in range(4):
            for m in range(k + 1):  # A[2j + k, 2j + m] lives at ab[k - m, 2j + m]
                ab[k - m] += np.bincount(2 * j + m, row[k] * row[m], size)
        rhs = -sum(np.bincount(2 * j + k, row[k] * r, size) for k in range(4))
        lam = 1e-14 * max(ab[0, 0::2].max(), 1.0)  # solve()'s ridge on c's first differences
        ab[0, 0::2] += lam * np.r_[1.0, np.full(nodes.size - 2, 2.0), 1.0]
        ab[2, 0:-2:2] -= lam
        ab[0, 1], ab[0, -1] = 1.0, 1.0
        return ab, rhs


def _locate(x: np.ndarray, nodes: np.ndarray):
    """Interval index j (sample between nodes j and j+1), local coordinate u and width h."""
    j = np.clip(np.searchsorted(nodes, x, side="right") - 1, 0, nodes.size - 2)
    h = nodes[j + 1] - nodes[j]
    u = np.divide(x - nodes[j], h, out=np.zeros_like(x), where=h > 0)
    return j, u, h


# --------------------------------------------------------------------------------------------
# Knot parametrization: softmax of free log-gaps keeps knots sorted inside (lo, hi)


def _knots_from_logits(z: np.ndarray, lo: float, hi: float) -> np.ndarray:
    w = np.exp(np.concatenate([[0.0], z]) - max(0.0, z.max(initial=0.0)))
    w /= w.sum()
    return lo + (hi - lo) * np.cumsum(w)[:-1]


def _logits_from_knots(knots: np.ndarray, lo: float, hi: float) -> np.ndarray:
    gaps = np.diff(np.concatenate([[lo], knots, [hi]]))
    gaps = np.maximum(gaps, 1e-12 * (hi - lo))
    logw = np.log(gaps)
    return logw[1:] - logw[0]


def _refine(proj: _Projection, knots: np.ndarray, lo: float, hi: float, max_nfev: int):
    """Levenberg-Marquardt on the knots by variable projection with Kaufman's Jacobian (Kaufman,
    BIT 15, 1975), every step a banded solve: O(samples + pieces) work.

    The node values c are always the least-squares ones for the knots (``_Projection.solve``).
    Kaufman's step for the knots is the knot part of the damped Gauss-Newton step in the joint
    variables (c, t), whose Jacobian is banded: sample i between nodes j and j + 1 depends on
    c_j, c_{j+1}, t_j, t_{j+1} only (moving a node drags the PL function with its slope), so
    with the variables interleaved (c_0, t_0, c_1, t_1, ...) J'J has 3 subdiagonals. The damping
    (Marquardt's, mu diag(J'J)) is on the knots only; eliminating c from the joint system gives
    the reduced step of projected Kaufman-VarPro. A step is kept if it lowers the error and
    keeps the knots in order (else mu x 4); at most ``max_nfev`` trial steps. It stops at the
    first kink it cannot cross: the projected residual has kinks where a knot passes a sample.
    """
    if knots.size == 0:
        return knots
    nodes = np.concatenate([[lo], knots, [hi]])
    if not (np.diff(nodes) > 0).all():  # coinciding start knots: spread them apart a little
        nodes = np.concatenate([[lo], _knots_from_logits(_logits_from_knots(knots, lo, hi),
                                                         lo, hi), [hi]])
    r = proj.residual(nodes)
    sse, mu = float(r @ r), 1e-3
    for _ in range(max_nfev):
        ab, rhs = proj.joint_normal_equations(nodes)
        t_diag = ab[0, 3:-2:2].copy()  # the interior knots' diagonal
        ab[0, 3:-2:2] += mu * (t_diag + 1e-12 * max(t_diag.max(), 1e-300))
        try:
            step = linalg.solveh_banded(ab, rhs, lower=True, check_finite=False)[3:-2:2]
        except linalg.LinAlgError:
            step = None
        trial = None if step is None else nodes + np.concatenate([[0.0], step, [0.0]])
        if trial is not None and np.isfinite(trial).all() and (np.diff(trial) > 0).all():
            r = proj.residual(trial)
            value = float(r @ r)
            if value < sse:
                nodes, sse, mu = trial, value, max(mu / 3, 1e-15)
                continue
        if mu >= 1e15:  # a step as short as that changes nothing: converged, or at a kink
            break
        mu = min(mu * 4, 1e15)
    return nodes[1:-1]


# --------------------------------------------------------------------------------------------
# Initial knots


def curvature_knots(x: np.ndarray, y: np.ndarray, pieces: int) -> np.ndarray:
    """Knots equidistributing |f''|^(2/5) (module docstring), f'' by finite differences."""
    with np.errstate(all="ignore"):
        d2 = np.nan_to_num(np.abs(np.gradient(np.gradient(y, x), x)), posinf=0.0)
    # Smooth the noisy estimate a little and floor it so flat stretches still get knots.
    k = max(1, x.size // (4 * pieces))
    d2 = np.convolve(d2, np.ones(2 * k + 1) / (2 * k + 1), mode="same")
    dens = d2 ** 0.4
    dens = dens + 0.05 * dens.mean() if dens.mean() > 0 else np.ones_like(dens)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(x))])
    return np.interp(np.arange(1, pieces) / pieces * cdf[-1], cdf, x)


def _dp_knots(x: np.ndarray, y: np.ndarray, cuts: list[int]) -> np.ndarray:
    """Knots from an optimal discontinuous segmentation: where adjacent LS lines cross, kept in
    the gap between the runs. On smooth data they (nearly) always cross there, and then the
    continuous fit equals the discontinuous optimum: certified."""
    bounds = [0, *cuts, x.size]
    lines = []  # (slope, mean x, mean y) of each run's LS line
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        mx, my = x[a:b].mean(), y[a:b].mean()
        dx = x[a:b] - mx
        sxx = float(dx @ dx)
        lines.append((float(dx @ (y[a:b] - my)) / sxx if sxx > 0 else 0.0, mx, my))
    knots = []
    for cut, (ls, lx, ly), (rs, rx, ry) in zip(cuts, lines[:-1], lines[1:], strict=True):
        gap_lo, gap_hi = x[cut - 1], x[cut]
        t = 0.5 * (gap_lo + gap_hi)
        if ls != rs:
            cross = ((ry - rs * rx) - (ly - ls * lx)) / (ls - rs)
            if math.isfinite(cross):
                t = min(max(cross, gap_lo), gap_hi)
        knots.append(t)
    return np.array(knots)


# --------------------------------------------------------------------------------------------
# The optimal continuous PL fit


def optimal_pwl(x: ArrayLike, y: ArrayLike, pieces: int, restarts: int = 3, seed: int = 0,
                max_nfev: int = 200, dp: bool = True) -> PWLFit:
    """Best continuous PL fit with `pieces` pieces (pieces-1 free knots) to samples (x, y).

    Least squares on the samples (mse = mean squared residual); docs/limits.md.
    For fixed knots the best node values are linear least squares in the hat basis; the knots
    are then optimized on that projected residual (variable projection, Kaufman's Jacobian,
    Levenberg-Marquardt, banded: :func:`_refine`), a step kept only if the knots stay sorted
    inside (min x, max x); ``max_nfev`` bounds its trial steps per start.

    Starts, best kept:
      1. the exact optimal *discontinuous* segmentation (dynamic programming, when `dp`), with
         knots where adjacent lines cross. Its cost is also `lower_bound`; when the continuous
         fit reaches it (within 1e-6 relative) the fit is certified optimal and the search
         stops. With more than 2000 samples the DP runs on 2000 of them: a start, no bound.
      2. curvature-equidistributing knots, density |f''|^(2/5) (limits module docstring);
      3. `restarts` random perturbations (log-gap noise 0.3, seeded) of the best so far.

    If pieces >= (distinct x) - 1, interpolating the (per-x mean) data is optimal: the fit uses
    that many pieces and reports it in `pieces_used`.
    """
    x, y = _samples(x, y)
    pieces = check_int(pieces, "pieces", low=1)
    restarts = check_int(restarts, "restarts", low=0)
    seed = check_int(seed, "seed", low=0)
    max_nfev = check_int(max_nfev, "max_nfev", low=1)
    start = time.perf_counter()
    lo, hi = float(x[0]), float(x[-1])
    ux, inverse = np.unique(x, return_inverse=True)
    proj = _Projection(x, y)

    def sse(knots):
        r = proj.residual(np.concatenate([[lo], knots, [hi]]))
        return float(r @ r)

    def finish(knots, bound, note):
        c, r = proj.solve(np.concatenate([[lo], knots, [hi]]))[:2]
        return PWLFit(knots=knots, values=c, interval=(lo, hi), mse=float(np.mean(r * r)),
                      pieces=pieces, pieces_used=knots.size + 1, lower_bound=bound,
                      seconds=time.perf_counter() - start, note=note)

    if pieces >= ux.size - 1:
        mean_y = np.bincount(inverse, weights=y) / np.bincount(inverse)
        within = float(np.mean((y - mean_y[inverse]) ** 2))  # what no function can explain
        return finish(ux[1:-1], within, f"pieces >= distinct x - 1 = {ux.size - 1}: "
                      "interpolation is optimal")

    bound_sse, starts = None, []
    if dp:
        if x.size <= DP_MAX_POINTS:
            bound_sse, cuts = _segmented_dp(x, y, pieces)
            starts.append(_pad_knots(_dp_knots(x, y, cuts), pieces - 1, x))
        else:
            sub = np.unique(np.linspace(0, x.size - 1, DP_MAX_POINTS).round().astype(int))
            cuts = _segmented_dp(x[sub], y[sub], pieces)[1]
            starts.append(_pad_knots(_dp_knots(x[sub], y[sub], cuts), pieces - 1, x))
    starts.append(curvature_knots(x, y, pieces))
    # Residuals at rounding level (or the 1e-14 ridge) count as reaching the bound.
    slack = x.size * (1e-12 * float(np.abs(y).max())) ** 2

    def certified(value):
        return bound_sse is not None and value <= bound_sse * (1.0 + CERTIFY_RTOL) + slack

    best, best_sse = None, np.inf
    rng = np.random.default_rng(seed)
    for attempt in range(len(starts) + restarts):
        if attempt < len(starts):
            knots = starts[attempt]
        else:
            z = _logits_from_knots(best, lo, hi) + rng.normal(0.0, 0.3, pieces - 1)
            knots = _knots_from_logits(z, lo, hi)
        knots = _refine(proj, knots, lo, hi, max_nfev)
        value = sse(knots)
        if value < best_sse:
            best, best_sse = knots, value
        if certified(best_sse):
            break
    bound = None if bound_sse is None else bound_sse / x.size
    note = ""
    if certified(best_sse) and bound_sse > slack:
        gap = max(best_sse - bound_sse, 0.0) / bound_sse
        note = f"certified: within {gap:.1e} (relative) of the discontinuous lower bound"
    elif certified(best_sse):
        note = "certified: the samples are fitted exactly (to rounding)"
    return finish(best, bound, note)


def _pad_knots(knots: np.ndarray, count: int, x: np.ndarray) -> np.ndarray:
    """Add knots (at midpoints of the widest gaps) until there are `count`; an extra knot inside
    a linear piece changes nothing, so the fit can only improve."""
    nodes = np.concatenate([[x[0]], knots, [x[-1]]])
    while nodes.size - 2 < count:
        k = int(np.argmax(np.diff(nodes)))
        nodes = np.insert(nodes, k + 1, 0.5 * (nodes[k] + nodes[k + 1]))
    return nodes[1:-1]


# --------------------------------------------------------------------------------------------
# The continuous L2 sense: integrals instead of samples (Gauss-Legendre on every piece)

# per piece: exact for (f - p)^2 of degree <= 31, so for polynomial f of degree <= 15
GAUSS_NODES = 16
# continuous_optimal_pwl's objective (scaled so the start is 1) where knots coincide
DEGENERATE_KNOTS_VALUE = 1e10


def gauss_points(nodes: np.ndarray, order: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gauss-Legendre points (pieces, order), weights (pieces, order) and local u in [0, 1]."""
    xi, w = np.polynomial.legendre.leggauss(order)
    h = np.diff(nodes)
    u = 0.5 * (xi + 1.0)
    return nodes[:-1, None] + h[:, None] * u, 0.5 * h[:, None] * w, u


def _target_values(f, x: np.ndarray) -> np.ndarray:
    try:
        v = np.asarray(f(x), dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError("the target must be a callable returning numbers for float64 "
                         "arrays") from None
    v = np.broadcast_to(v, x.shape) if v.ndim == 0 else v
    if v.shape != x.shape or not np.isfinite(v).all():
        raise InputError("the target must return one finite number per point on the interval")
    return v


def _check_nodes(nodes) -> np.ndarray:
    nodes = np.asarray(nodes, dtype=np.float64)
    if (nodes.ndim != 1 or nodes.size < 2 or not np.isfinite(nodes).all()
            or (np.diff(nodes) < 0).any()):
        raise InputError(f"nodes must be a sorted 1D array of >= 2 finite numbers, got shape "
                         f"{nodes.shape}")
    return nodes


def pwl_l2_mse(f: Callable[[np.ndarray], ArrayLike], nodes: ArrayLike, values: ArrayLike,
               order: int = GAUSS_NODES) -> float:
    """(1 / L) integral (f - p)^2 over [nodes[0], nodes[-1]] for the continuous PL p with these node
    values: the mean squared error over the whole interval (the limit of the MSE on ever denser
    even grids). Gauss-Legendre with ``order`` points on every piece, on which p is linear: exact
    to rounding when f is a polynomial of degree <= order - 1, and spectrally accurate for smooth f.
    The error is summed directly, never as integral f^2 - b'c (that would cancel catastrophically).
    """
    nodes = _check_nodes(nodes)
    values = np.asarray(values, dtype=np.float64)
    if values.shape != nodes.shape:
        raise InputError(f"values must match nodes, got shapes {values.shape} and {nodes.shape}")
    order = check_int(order, "order", low=1)
    x, w, u = gauss_points(nodes, order)
    p = values[:-1, None] * (1.0 - u) + values[1:, None] * u
    r = _target_values(f, x) - p
    return float(np.sum(w * r * r) / (nodes[-1] - nodes[0]))


def _l2_projection(f, nodes: np.ndarray, order: int):
    """Node values of the L2-best continuous PL function with these nodes: the tridiagonal P1
    mass matrix (h/3 on the diagonal per adjacent piece, h/6 off it) against b_j = integral f phi_j.
    Returns (values, residual f - p at the Gauss points, points, weights, u)."""
    x, w, u = gauss_points(nodes, order)
    fx = _target_values(f, x)
    h = np.diff(nodes)
    n1 = nodes.size
    b = np.zeros(n1)
    b[:-1] += np.sum(w * fx * (1.0 - u), axis=1)
    b[1:] += np.sum(w * fx * u, axis=1)
    ab = np.zeros((2, n1))
    ab[0, :-1] += h / 3.0
    ab[0, 1:] += h / 3.0
    ab[1, :-1] = h / 6.0
    c = linalg.solveh_banded(ab, b, lower=True)
    r = fx - (c[:-1, None] * (1.0 - u) + c[1:, None] * u)
    return c, r, x, w, u


def _knot_gradient(nodes, c, r, w, u) -> np.ndarray:
    """d/dt_k of integral (f - p)^2 at the projected values (envelope theorem: the values are
    optimal for the knots): 2 integral (f - p) p' phi_k, since moving node k with fixed values
    changes p by -p' phi_k on its two pieces."""
    h = np.diff(nodes)
    slope = np.diff(c) / np.where(h > 0, h, 1.0)
    a = 2.0 * slope[:, None] * r * w
    left = np.sum(a * u, axis=1)  # node k is the right end of piece k - 1 (phi_k = u)
    right = np.sum(a * (1.0 - u), axis=1)  # and the left end of piece k (phi_k = 1 - u)
    return left[:-1] + right[1:]


@dataclass
class ContinuousPWLFit:
    """The best continuous PL fit in the integral sense found from the start: ``mse`` is
    (1/L) integral (f - p)^2 (Gauss-Legendre, :func:`pwl_l2_mse`), an upper bound on the optimum
    over ``pieces`` pieces; ``asymptotic`` is the large-n formula for comparison."""

    knots: np.ndarray
    values: np.ndarray
    interval: tuple[float, float]
    mse: float
    pieces: int
    iterations: int
    seconds: float

    @property
    def nodes(self) -> np.ndarray:
        return np.concatenate([[self.interval[0]], self.knots, [self.interval[1]]])


def continuous_optimal_pwl(f: Callable[[np.ndarray], ArrayLike], pieces: int,
                           interval: Sequence[float] = (0.0, 1.0),
                           knots: ArrayLike | None = None,
                           order: int = GAUSS_NODES, max_iter: int = 3000,
                           grid: int = 200_001) -> ContinuousPWLFit:
    """Best continuous PL fit with ``pieces`` pieces to a function ``f`` on ``interval`` in L2
    (free knots; the reference limit of docs/limits.md, in the continuous sense of the limits module
    docstring, which the sampled ``optimal_pwl`` approaches as the samples get dense).

    For fixed knots the node values are the L2 projection (tridiagonal mass matrix, Gauss-Legendre
    right-hand side); the knots minimize the projected error by L-BFGS on softmax log-gaps with the
    exact gradient (:func:`_knot_gradient`). The start is ``knots`` or, by default, knots that
    equidistribute |f''|^(2/5) (f'' by finite differences on ``grid`` points), which the
    asymptotic argument says is optimal to leading order; so the result is an upper bound on the
    optimum that is, for smooth f, very close to it (for x^2 it is exact: equal spacing,
    MSE 1/(180 n^4) on [0, 1]).
    """
    lo, hi = check_interval(interval)
    pieces = check_int(pieces, "pieces", low=1)
    order = check_int(order, "order", low=1)
    max_iter = check_int(max_iter, "max_iter", low=0)
    start = time.perf_counter()
    if knots is None:
        gx = np.linspace(lo, hi, check_int(grid, "grid", low=5))
        knots = curvature_knots(gx, _target_values(f, gx), pieces) if pieces > 1 else np.zeros(0)
    knots = np.sort(np.asarray(knots, dtype=np.float64))
    if knots.shape != (pieces - 1,) or not np.isfinite(knots).all() or (knots <= lo).any() \
            or (knots >= hi).any():
        raise InputError(f"knots must be {pieces - 1} finite numbers strictly inside "
                         f"({lo}, {hi}), got shape {knots.shape}")
    length = hi - lo

    def nodes_of(z):
        return np.concatenate([[lo], _knots_from_logits(z, lo, hi), [hi]])

    scale = [None]

    def fun(z):
        nodes = nodes_of(z)
        if not (np.diff(nodes) > 0).all():
            # A line-search trial so far out that gaps underflow to 0 (knots collapse, the
            # mass matrix is singular): far worse than the start, so the search steps back.
            return DEGENERATE_KNOTS_VALUE, np.zeros_like(z)
        c, r, _, w, u = _l2_projection(f, nodes, order)
        e = float(np.sum(w * r * r))
        g_t = _knot_gradient(nodes, c, r, w, u)  # d e / d knots
        # knots_k = lo + L sum_{i <= k} w_i, w = softmax(0, z): chain rule in O(n).
        gaps = np.diff(nodes) / length
        g_w = length * np.concatenate([np.cumsum(g_t[::-1])[::-1], [0.0]])
        g_z = gaps * (g_w - gaps @ g_w)
        if scale[0] is None:
            scale[0] = e if e > 0 else 1.0
        return e / scale[0], g_z[1:] / scale[0]

    iterations = 0
    if pieces > 1 and max_iter > 0:
        res = optimize.minimize(fun, _logits_from_knots(knots, lo, hi), jac=True,
                                method="L-BFGS-B",
                                options={"maxiter": max_iter, "ftol": 1e-15, "gtol": 1e-12,
                                         "maxcor": 30})
        z_best = res.x if res.fun <= fun(_logits_from_knots(knots, lo, hi))[0] else \
            _logits_from_knots(knots, lo, hi)
        knots, iterations = _knots_from_logits(z_best, lo, hi), int(res.nit)
    nodes = np.concatenate([[lo], knots, [hi]])
    c = _l2_projection(f, nodes, order)[0]
    return ContinuousPWLFit(knots=knots, values=c, interval=(lo, hi),
                            mse=pwl_l2_mse(f, nodes, c, order), pieces=pieces,
                            iterations=iterations, seconds=time.perf_counter() - start)


def matched_pieces(params: int) -> int:
    """Pieces of the continuous PL fit with as many numbers as a net with ``params`` parameters:
    n pieces on a fixed interval take n + 1 node values and n - 1 free knots, 2n numbers, so
    n = floor(params / 2) (96 for the 193 parameters of a width-4 depth-10 net)."""
    return max(1, check_int(params, "params", low=1) // 2)


def net_l2_mse(model: nn.Module, f: Callable[[np.ndarray], ArrayLike],
               interval: Sequence[float] = (0.0, 1.0),
               order: int = GAUSS_NODES) -> tuple[float, int]:
    """(1/L) integral (f - net)^2 of a 1D ReLU net on ``interval``, exactly on the net's own linear
    pieces (the exact counter's knots, ``regions.count_regions``): on each piece the net is
    affine, so it is the continuous PL function with the net's values at the knots, and
    :func:`pwl_l2_mse` integrates the error piece by piece. Returns (mse, linear pieces)."""
    import torch

    from .regions import count_regions

    lo, hi = check_interval(interval)
    count = count_regions(model, lo, hi)
    nodes = np.concatenate([[lo], count.knots, [hi]])
    param = next(model.parameters())
    with torch.no_grad():
        values = model(torch.tensor(nodes, dtype=param.dtype).unsqueeze(-1)).squeeze(-1)
    return pwl_l2_mse(f, nodes, values.double().numpy(), order), count.linear_pieces
