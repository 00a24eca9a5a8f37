"""Tests for relu_regions.limits: the optimal free-knot PL fit, its bounds and the formula."""

import itertools
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relu_regions.analysis import limits
from relu_regions.analysis.limits import (
    PWLFit,
    asymptotic_mse,
    efficiency,
    optimal_pwl,
    segmented_lower_bound,
)
from relu_regions.errors import InputError

X500 = np.linspace(0.0, 1.0, 500)


def _pl(knots, values, x):
    """Reference PL function through (nodes, values) with np.interp."""
    return np.interp(x, knots, values)


# ---------------------------------------------------------------------------------------------
# Exactness: PL data is recovered, the DP bound is the brute-force optimum


@settings(max_examples=15, deadline=None)
@given(st.integers(2, 7), st.integers(0, 2**32 - 1))
def test_pl_function_with_known_knots_is_recovered(pieces, seed):
    rng = np.random.default_rng(seed)
    x = np.linspace(-1.0, 2.0, 300)
    # Knots at least 10 samples apart, slopes changing by >= 0.5 so every knot is real.
    inner = np.sort(rng.choice(np.arange(10, 290, 10), pieces - 1, replace=False)) + 0.5
    nodes = np.r_[x[0], x[0] + inner * (x[1] - x[0]), x[-1]]
    slopes = np.cumsum(rng.choice([-1, 1], pieces) * rng.uniform(0.5, 2.0, pieces))
    values = np.r_[0.0, np.cumsum(slopes * np.diff(nodes))]
    y = _pl(nodes, values, x)
    fit = optimal_pwl(x, y, pieces)
    assert fit.mse < 1e-20
    assert fit.pieces_used == pieces
    np.testing.assert_allclose(fit.predict(x), y, atol=1e-9)
    # The kinks are found between the same neighbouring samples.
    np.testing.assert_allclose(fit.knots, nodes[1:-1], atol=x[1] - x[0])


def _brute_segmented(x, y, pieces):
    """Min RSS over all partitions into <= pieces consecutive runs, by enumeration."""
    m, best = x.size, np.inf
    for k in range(pieces):
        for cuts in itertools.combinations(range(1, m), k):
            bounds = [0, *cuts, m]
            rss = 0.0
            for a, b in zip(bounds[:-1], bounds[1:], strict=True):
                if b - a > 2:
                    coef = np.polyfit(x[a:b], y[a:b], 1)
                    rss += float(np.sum((np.polyval(coef, x[a:b]) - y[a:b]) ** 2))
            best = min(best, rss)
    return best


@settings(max_examples=25, deadline=None)
@given(st.integers(3, 9), st.integers(1, 4), st.integers(0, 2**32 - 1))
def test_segmented_bound_equals_brute_force(m, pieces, seed):
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(0, 1, m))
    y = rng.normal(size=m)
    expected = _brute_segmented(x, y, pieces) / m
    assert segmented_lower_bound(x, y, pieces) == pytest.approx(expected, rel=1e-9, abs=1e-15)


@settings(max_examples=20, deadline=None)
@given(st.integers(6, 40), st.integers(1, 8), st.integers(0, 2**32 - 1))
def test_lower_bound_below_fit_and_fit_is_consistent(m, pieces, seed):
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(-2, 3, m))
    y = np.sin(3 * x) + 0.1 * rng.normal(size=m)
    fit = optimal_pwl(x, y, pieces, restarts=1)
    assert fit.lower_bound <= fit.mse * (1 + 1e-9) + 1e-30
    assert fit.mse == pytest.approx(np.mean((fit.predict(x) - y) ** 2), rel=1e-9, abs=1e-20)
    assert fit.pieces_used <= pieces
    assert np.all(np.diff(fit.nodes) >= 0)


def test_two_pieces_matches_grid_search():
    # sin(12x) + x has several local optima for the single knot.
    y = np.sin(12 * X500) + X500
    proj = limits._Projection(X500, y)
    grid = np.linspace(0, 1, 4001)[1:-1]
    brute = min(float(np.mean(proj.residual(np.r_[0.0, t, 1.0]) ** 2)) for t in grid)
    fit = optimal_pwl(X500, y, 2)
    assert fit.mse <= brute * (1 + 1e-9)
    assert fit.mse >= brute * (1 - 1e-3)  # the grid is fine enough to be close


def test_convex_samples_are_interpolated_by_half_as_many_pieces():
    # Lines through consecutive pairs of convex samples cross between the pairs, so m/2 pieces
    # fit m convex samples exactly: on 500 points the 256-piece optimum is 0, not ~2e-12.
    x = np.linspace(0, 1, 40)
    fit = optimal_pwl(x, x**3, 20)
    assert fit.mse < 1e-28 and fit.lower_bound == 0.0
    assert optimal_pwl(x, x**3, 19).mse > 1e-12


def test_many_pieces_fall_back_to_interpolation():
    x = np.linspace(0, 1, 30)
    y = np.sin(7 * x)
    for pieces in (29, 64, 1024):
        fit = optimal_pwl(x, y, pieces)
        assert fit.pieces == pieces and fit.pieces_used == 29
        assert fit.mse < 1e-28 and "interpolation" in fit.note
    # Repeated x: interpolate the means; the spread at one x is what no function can fit.
    fit = optimal_pwl([0.0, 0.0, 1.0, 2.0], [1.0, 3.0, 0.0, 1.0], 5)
    assert fit.mse == pytest.approx(0.5) and fit.lower_bound == pytest.approx(0.5)


def test_joint_normal_equations_match_finite_differences():
    """The knot refinement's banded J'J and -J'r in the joint variables (c_0, t_0, c_1, ...) equal
    those of the Jacobian of r(c, t) = B(t) c - y by central differences at the projected c,
    with the end nodes fixed (their rows and columns the identity's)."""
    from scipy import linalg

    rng = np.random.default_rng(0)
    x = np.sort(rng.uniform(0, 1, 80))
    y = np.sin(5 * x) + 0.1 * rng.normal(size=80)
    proj = limits._Projection(x, y)
    nodes = np.r_[0.0, np.sort(rng.uniform(0.05, 0.95, 6)), 1.0]
    c = proj.solve(nodes)[0]

    def res(v):
        t, values = v[1::2].copy(), v[0::2]
        t[0], t[-1] = nodes[0], nodes[-1]  # the ends are fixed
        j, u, _ = limits._locate(x, t)
        return (1.0 - u) * values[j] + u * values[j + 1] - y

    v = np.empty(2 * nodes.size)
    v[0::2], v[1::2] = c, nodes
    eps = 1e-6
    J = np.array([(res(v + eps * e) - res(v - eps * e)) / (2 * eps) for e in np.eye(v.size)]).T
    ab, rhs = proj.joint_normal_equations(nodes)
    dense = np.zeros((v.size, v.size))
    for d in range(4):
        k = np.arange(v.size - d)
        dense[k + d, k] = dense[k, k + d] = ab[d, :v.size - d]
    want = J.T @ J
    want[[1, -1], [1, -1]] = 1.0
    np.testing.assert_allclose(dense, want, atol=1e-7 * np.abs(want).max())
    np.testing.assert_allclose(rhs, -J.T @ res(v), atol=1e-7 * np.abs(rhs).max())
    assert linalg.cholesky_banded(ab, lower=True).shape == ab.shape  # positive definite


def test_a_thousand_pieces_refine_quickly_to_the_known_optimum():
    """The refinement is banded (linear in pieces and points): 1024 pieces on 4096 samples of
    x^3 in well under a second (MINPACK on the dense Jacobian took 32 s there and stopped at
    6.263e-15), to the documented MSE."""
    x = np.linspace(0, 1, 4096)
    fit = optimal_pwl(x, x**3, 1024, dp=False, restarts=0)
    assert fit.mse == pytest.approx(6.2574e-15, rel=1e-4)
    assert fit.seconds < 5.0


# ---------------------------------------------------------------------------------------------
# Monotonicity and the reference numbers (docs/limits.md)


def test_optimum_non_increasing_in_pieces():
    for y in (X500**3, X500**11, np.sin(12 * X500) + X500):
        mses = [optimal_pwl(X500, y, n).mse for n in range(1, 21)]
        assert all(b <= a * (1 + 1e-9) for a, b in zip(mses, mses[1:], strict=False))
    # The exact bound is monotone on any data.
    rng = np.random.default_rng(3)
    x, y = np.sort(rng.uniform(0, 1, 60)), rng.normal(size=60)
    bounds = [segmented_lower_bound(x, y, n) for n in range(1, 31)]
    assert all(b <= a for a, b in zip(bounds, bounds[1:], strict=False)) and bounds[-1] == 0.0


@pytest.mark.parametrize("target,pieces,reported", [
    ("x**3", 32, 9e-9), ("x**11", 32, 8e-9), ("x**3", 64, 5.6e-10)])
def test_reference_numbers_reached(target, pieces, reported):
    y = X500 ** (3 if target == "x**3" else 11)
    fit = optimal_pwl(X500, y, pieces)
    assert fit.mse <= 1.2 * reported
    # Certified: the continuous fit equals the exact discontinuous lower bound.
    assert fit.mse <= fit.lower_bound * (1 + 1e-6)
    assert fit.note.startswith("certified")


def test_measured_values():
    # What this implementation gives (docs/limits.md); pins regressions.
    assert optimal_pwl(X500, X500**3, 32).mse == pytest.approx(8.829268e-9, rel=1e-5)
    assert optimal_pwl(X500, X500**11, 32).mse == pytest.approx(7.073758e-9, rel=1e-5)
    assert optimal_pwl(X500, X500**3, 64).mse == pytest.approx(5.122658e-10, rel=1e-5)


# ---------------------------------------------------------------------------------------------
# The asymptotic formula


def test_asymptotic_formula_closed_forms():
    n = np.array([1, 2, 8, 32, 1024])
    # x^2: f'' = 2, (2^(2/5))^5 / 720 = 1/180.
    np.testing.assert_allclose(asymptotic_mse(lambda x: 2.0 + 0 * x, (0, 1), n), 1 / (180 * n**4.0),
                               rtol=1e-12)
    np.testing.assert_allclose(asymptotic_mse(2.0, (0, 1), n), 1 / (180 * n**4.0), rtol=1e-15)
    # x^3: integral of (6x)^(2/5) on [0, 1] = 6^(2/5) / (7/5).
    assert asymptotic_mse(lambda x: 6 * x, (0, 1), 32) == pytest.approx(
        (6**0.4 / 1.4) ** 5 / (720 * 32**4), rel=1e-9)
    # x^11: f'' = 110 x^9, integral = 110^(2/5) / 4.6.
    assert asymptotic_mse(lambda x: 110 * x**9, (0, 1), 32) == pytest.approx(
        (110**0.4 / 4.6) ** 5 / (720 * 32**4), rel=1e-9)
    # Mean squared error on [0, L] of x^2 scales as L^4.
    assert asymptotic_mse(2.0, (3, 5), 7) == pytest.approx(16 * asymptotic_mse(2.0, (0, 1), 7))


@pytest.mark.parametrize("interval", [(0.0, 1.0), (-1.0, 3.0)])
def test_x_squared_optimum_matches_asymptotic_formula(interval):
    # For x^2 uniform knots with shifted secants are optimal for every n, so the formula is
    # exact for the integral; 500 samples instead of the integral cost < 1% (measured 0.3-0.8%).
    x = np.linspace(*interval, 500)
    for n in (4, 8, 16, 32):
        fit = optimal_pwl(x, x**2, n)
        assert fit.mse == pytest.approx(asymptotic_mse(2.0, interval, n), rel=0.01)


def test_cubic_approaches_asymptotic_formula():
    # Discrete effects grow as pieces approach the number of samples; on 2000 samples the
    # 8..32-piece optima of x^3 lie within 5% of the formula.
    x = np.linspace(0, 1, 2000)
    for n in (8, 16, 32):
        assert optimal_pwl(x, x**3, n).mse == pytest.approx(
            asymptotic_mse(lambda t: 6 * t, (0, 1), n), rel=0.05)


# ---------------------------------------------------------------------------------------------
# Efficiency, result type, validation


def test_efficiency():
    assert efficiency(1e-8, 4e-8) == pytest.approx(0.25)
    np.testing.assert_allclose(efficiency([1.0, 2.0], [2.0, 8.0]), [0.5, 0.25])
    np.testing.assert_allclose(efficiency(1.0, np.array([1.0, 10.0, 100.0])), [1.0, 0.1, 0.01])
    assert efficiency(0.0, 0.0) == 1.0
    assert efficiency(1.0, 0.0) == np.inf  # beat the "optimum": flag, not crash
    assert efficiency(0.0, 1.0) == 0.0
    for bad in ([-1.0], [np.nan], [np.inf]):
        with pytest.raises(InputError):
            efficiency(bad, 1.0)
        with pytest.raises(InputError):
            efficiency(1.0, bad)


def test_fit_result_predicts_continuously_and_serializes():
    fit = optimal_pwl(X500, np.sin(6 * X500), 6)
    assert isinstance(fit, PWLFit)
    np.testing.assert_allclose(fit.predict(fit.nodes), fit.values, atol=1e-12)
    eps = 1e-9
    for t in fit.knots:  # continuous at every knot
        assert abs(fit(t - eps) - fit(t + eps)) < 1e-6
    # Linear extrapolation beyond the data range.
    s = (fit.values[-1] - fit.values[-2]) / (fit.nodes[-1] - fit.nodes[-2])
    assert fit(2.0) == pytest.approx(fit.values[-1] + s * 1.0)
    d = json.loads(json.dumps(fit.to_dict()))
    assert d["pieces"] == 6 and len(d["knots"]) == 5 and d["mse"] == fit.mse


def test_seeded_and_deterministic():
    rng = np.random.default_rng(5)
    x, y = np.sort(rng.uniform(0, 1, 100)), rng.normal(size=100)
    a = optimal_pwl(x, y, 6, restarts=2, seed=4)
    b = optimal_pwl(x, y, 6, restarts=2, seed=4)
    # Same answer up to rounding: numpy's SIMD sums may depend on memory alignment.
    np.testing.assert_allclose(a.knots, b.knots, rtol=1e-9)
    # Unsorted input is sorted first.
    perm = rng.permutation(100)
    c = optimal_pwl(x[perm], y[perm], 6, restarts=2, seed=4)
    assert c.mse == pytest.approx(a.mse, rel=1e-9)


@pytest.mark.parametrize("kwargs,fragment", [
    (dict(pieces=0), "pieces"), (dict(pieces=2.0), "pieces"), (dict(pieces=True), "pieces"),
    (dict(pieces=3, restarts=-1), "restarts"), (dict(pieces=3, seed=-2), "seed"),
    (dict(pieces=3, max_nfev=0), "max_nfev"),
])
def test_bad_arguments_rejected(kwargs, fragment):
    with pytest.raises(InputError, match=fragment):
        optimal_pwl(X500, X500**2, **kwargs)


@pytest.mark.parametrize("x,y", [
    ([0.0, 1.0], [0.0]), ([[0.0, 1.0]], [[0.0, 1.0]]), ([0.0], [0.0]), ([1.0, 1.0], [0.0, 1.0]),
    ([0.0, np.nan], [0.0, 1.0]), ([0.0, 1.0], [np.inf, 1.0]), (["a", "b"], [0.0, 1.0]),
])
def test_bad_samples_rejected(x, y):
    with pytest.raises(InputError):
        optimal_pwl(x, y, 2)


def test_asymptotic_bad_input_rejected():
    for kwargs in (dict(interval=(1, 0)), dict(interval=(0, np.inf)), dict(pieces=0),
                   dict(pieces=1.5), dict(f2="x")):
        args = dict(f2=2.0, interval=(0, 1), pieces=4) | kwargs
        with pytest.raises(InputError):
            asymptotic_mse(**args)
    with pytest.raises(InputError, match="not finite"):
        asymptotic_mse(lambda x: 1 / x * 0 + np.inf, (0, 1), 4)
    with pytest.raises(InputError, match="too many"):
        segmented_lower_bound(np.linspace(0, 1, 2001), np.zeros(2001), 3)
