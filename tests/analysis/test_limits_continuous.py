"""The continuous (integral) sense of the limits: Gauss-Legendre errors, the free-knot L2 fit,
the parameter-matched piece count, and a net's exact error on its own pieces."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from relu_regions.analysis.limits import (
    _knot_gradient,
    _l2_projection,
    continuous_optimal_pwl,
    matched_pieces,
    net_l2_mse,
    pwl_l2_mse,
)
from relu_regions.errors import InputError
from relu_regions.nets.parametrize import linear_relu_stack


def _exact_mse(coeffs, nodes, values):
    """(1/L) integral (f - p)^2 in exact rational arithmetic: on each piece, in t = x - a, the
    integrand's coefficients are Fractions and the integral over [0, b - a] is summed exactly
    (a float antiderivative cancels badly on short pieces: 4e-10 relative on a 0.0017 piece)."""
    from fractions import Fraction

    def shifted(c, a):  # coefficients of f(t + a) in t, exactly
        out = [Fraction(0)] * len(c)
        for k, ck in enumerate(c):  # (t + a)^k by the binomial theorem
            binom = 1
            for j in range(k + 1):
                out[j] += ck * binom * a ** (k - j)
                binom = binom * (k - j) // (j + 1)
        return out

    c = [Fraction(float(v)) for v in coeffs]
    total = Fraction(0)
    for a, b, va, vb in zip(*(map(lambda v: [Fraction(float(u)) for u in v],
                                  (nodes[:-1], nodes[1:], values[:-1], values[1:]))), strict=True):
        d = shifted(c, a)  # f(t + a) - (va + slope t), squared and integrated over [0, h]
        d[0] -= va
        if len(d) < 2:
            d.append(Fraction(0))
        d[1] -= (vb - va) / (b - a)
        h = b - a
        total += sum(di * dj * h ** (i + j + 1) / (i + j + 1)
                     for i, di in enumerate(d) for j, dj in enumerate(d))
    return float(total / (Fraction(float(nodes[-1])) - Fraction(float(nodes[0]))))


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 12), st.integers(0, 15))
def test_gauss_error_is_exact_for_polynomials(seed, pieces, degree):
    rng = np.random.default_rng(seed)
    nodes = np.sort(np.concatenate([[-0.5, 1.5], rng.uniform(-0.5, 1.5, pieces - 1)]))
    values = rng.normal(size=nodes.size)
    coeffs = rng.normal(size=degree + 1)
    got = pwl_l2_mse(np.polynomial.Polynomial(coeffs), nodes, values)
    assert got == pytest.approx(_exact_mse(coeffs, nodes, values), rel=1e-12, abs=1e-15)


def test_projection_is_the_least_squares_optimum():
    # Any change of the node values away from the projection can only raise the error.
    f = np.exp
    nodes = np.array([0.0, 0.1, 0.35, 0.6, 1.0])
    c = _l2_projection(f, nodes, 16)[0]
    best = pwl_l2_mse(f, nodes, c)
    rng = np.random.default_rng(1)
    for _ in range(20):
        assert pwl_l2_mse(f, nodes, c + 1e-4 * rng.normal(size=c.size)) > best


def test_knot_gradient_matches_finite_differences():
    def f(x):
        return np.exp(2 * x) / 8

    nodes = np.array([0.0, 0.13, 0.4, 0.55, 0.8, 1.0])

    def err(n):
        c = _l2_projection(f, n, 16)[0]
        return pwl_l2_mse(f, n, c)  # (1/L) integral; L = 1

    c, r, _, w, u = _l2_projection(f, nodes, 16)
    grad = _knot_gradient(nodes, c, r, w, u)
    for k in range(1, nodes.size - 1):
        h = 1e-6
        up, down = nodes.copy(), nodes.copy()
        up[k] += h
        down[k] -= h
        assert grad[k - 1] == pytest.approx((err(up) - err(down)) / (2 * h), rel=1e-5)


@pytest.mark.parametrize("pieces", [1, 3, 8, 40])
def test_x_squared_optimum_from_perturbed_knots(pieces):
    # For x^2 on [0, 1] equal spacing is optimal for every n with MSE 1/(180 n^4) (limits module
    # docstring); start from knots far from it.
    rng = np.random.default_rng(pieces)
    even = np.linspace(0, 1, pieces + 1)[1:-1]
    start = np.sort(np.clip(even + rng.uniform(-0.3, 0.3, even.size) / pieces, 1e-3, 1 - 1e-3))
    fit = continuous_optimal_pwl(lambda x: x**2, pieces, knots=start)
    assert fit.mse == pytest.approx(1 / (180 * pieces**4), rel=1e-8)
    assert np.abs(fit.knots - even).max(initial=0.0) < 1e-4 / pieces


def test_piecewise_linear_target_is_fitted_exactly():
    truth = np.array([0.0, 0.2, 0.45, 0.7, 1.0])
    heights = np.array([0.0, 1.0, -0.5, 0.3, 2.0])

    def f(x):
        return np.interp(x, truth, heights)

    fit = continuous_optimal_pwl(f, 4, knots=[0.15, 0.5, 0.65], order=4)
    assert fit.mse < 1e-20
    np.testing.assert_allclose(fit.knots, truth[1:-1], atol=1e-8)


def test_more_pieces_never_worse_and_near_the_formula():
    mses = [continuous_optimal_pwl(lambda x: x**3, n).mse for n in (16, 32, 64, 128)]
    assert all(b < a for a, b in zip(mses, mses[1:], strict=False))
    # the large-n formula (integral (6x)^(2/5))^5 / (720 n^4) for n = 128, to 1%
    formula = (6**0.4 / 1.4) ** 5 / (720 * 128**4)
    assert mses[-1] == pytest.approx(formula, rel=0.01)


def test_sqrt_near_its_singularity_fits_without_collapsing_knots():
    """sqrt(x) with 116 pieces: L-BFGS tried steps so long that the knots' gaps underflowed to 0
    (a singular mass matrix, LinAlgError); such a trial now counts as far worse, the search
    steps back, and the fit ends near the large-n formula (integral (x^(-3/2)/4)^(2/5))^5 /
    (720 n^4), to 5%."""
    fit = continuous_optimal_pwl(np.sqrt, 116)
    assert (np.diff(fit.nodes) > 0).all() and fit.iterations > 0
    formula = (4**-0.4 / 0.4) ** 5 / (720 * 116**4)
    assert fit.mse == pytest.approx(formula, rel=0.05)


def test_matched_pieces():
    assert matched_pieces(193) == 96  # width 4, depth 10
    assert matched_pieces(2) == 1
    with pytest.raises(InputError):
        matched_pieces(0)


def test_net_error_on_its_own_pieces_equals_a_dense_grid():
    net = linear_relu_stack([1, 4, 4, 4, 1]).double()
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))

    def f(x):
        return np.sin(3 * x)

    mse, pieces = net_l2_mse(net, f, (0.0, 1.0))
    x = np.linspace(0, 1, 400_001)
    with torch.no_grad():
        y = net(torch.tensor(x).unsqueeze(-1)).squeeze(-1).numpy()
    r2 = (f(x) - y) ** 2
    dense = np.sum(0.5 * (r2[1:] + r2[:-1])) * (x[1] - x[0])  # trapezoid
    assert pieces >= 1
    assert mse == pytest.approx(dense, rel=1e-6)


def test_bad_input():
    with pytest.raises(InputError):
        pwl_l2_mse(np.exp, [0.0, 1.0], [1.0])
    with pytest.raises(InputError):
        continuous_optimal_pwl(np.exp, 3, knots=[0.5])
    with pytest.raises(InputError):
        continuous_optimal_pwl(lambda x: x * np.nan, 3)
