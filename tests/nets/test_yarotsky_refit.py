"""The difference-of-squares x^3 nets (width 5 side by side, width 4 one after the other) and the
exact L2 refit of an accumulator: formulas, proved bounds, normal equations."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from relu_regions.analysis.limits import net_l2_mse
from relu_regions.analysis.refit import refit_accumulator
from relu_regions.analysis.regions import count_regions
from relu_regions.errors import InputError
from relu_regions.nets.yarotsky import cube_net, cube_net4, cube_net_diff, diff_reference


def cube(x):
    return x**3


def values(net, x):
    with torch.no_grad():
        return net(torch.tensor(x).unsqueeze(-1)).squeeze(-1).numpy()


X = np.linspace(0.0, 1.0, 20_001)


@pytest.mark.parametrize("m1,m2", [(1, 1), (2, 4), (3, 3), (5, 2)])
def test_width5_difference_net_is_the_formula_and_within_the_bound(m1, m2):
    net = cube_net_diff(m1, m2)
    assert len(net) == 2 * (m1 + m2) + 1
    assert all(lin.out_features == 5 for lin in net[:-1:2])
    y = values(net, X)
    np.testing.assert_allclose(y, diff_reference(X, m1, m2, m2), rtol=0, atol=1e-13)
    assert np.abs(y - X**3).max() <= 4.0 ** -(m1 + 1) + 4.0 ** -(m2 + 1) + 4.0 ** -(m2 + 4)


@pytest.mark.parametrize("m1,m2,m3", [(1, 1, 1), (2, 3, 1), (3, 3, 2), (4, 2, 3)])
def test_width4_net_is_the_formula_and_within_the_bound(m1, m2, m3):
    net = cube_net4(m1, m2, m3)
    assert len(net) == 2 * (m1 + m2 + m3) + 1
    assert all(lin.out_features == 4 for lin in net[:-1:2])
    y = values(net, X)
    np.testing.assert_allclose(y, diff_reference(X, m1, m2, m3), rtol=0, atol=1e-13)
    assert np.abs(y - X**3).max() <= 4.0 ** -(m1 + 1) + 4.0 ** -(m2 + 1) + 4.0 ** -(m3 + 4)


def test_width4_falls_by_a_constant_factor_per_three_layers():
    # one more level in each of the three stages: every term of the bound shrinks 4x
    sup = [np.abs(diff_reference(X, m, m, m) - X**3).max() for m in range(1, 6)]
    assert all(b <= a / 3 for a, b in zip(sup, sup[1:], strict=False))


def test_difference_of_squares_is_the_product():
    # with exact squares (many levels) the formula is x S, S = f_m1(x): at m1 = 1, S interpolates
    # x^2 at 0, 1/2, 1, so the net is x^3 there
    assert diff_reference(np.array([0.0, 0.5, 1.0]), 1, 25, 25) == pytest.approx(
        [0.0, 0.125, 1.0], abs=1e-14)


def _features(net, unit, first, x):
    """Independent re-derivation of what feeds the accumulator (and the constant)."""
    lin = [m for m in net if isinstance(m, torch.nn.Linear)]
    h = torch.tensor(x).unsqueeze(-1)
    cols = []
    with torch.no_grad():
        for k, layer in enumerate(lin):
            if k == first:
                cols.append(h)
            elif k > first:
                cols.append(torch.cat([h[:, :unit], h[:, unit + 1:]], dim=1))
            if k < len(lin) - 1:
                h = torch.relu(layer(h))
    return np.concatenate([c.numpy() for c in cols] + [np.ones((len(x), 1))], axis=1)


def _gauss(net, order=8):
    nodes = np.concatenate([[0.0], count_regions(net, 0.0, 1.0).breakpoints, [1.0]])
    xi, wi = np.polynomial.legendre.leggauss(order)
    h = np.diff(nodes)
    return ((nodes[:-1, None] + h[:, None] * (xi + 1) / 2).ravel(),
            (h[:, None] * wi / 2).ravel())


CASES = [(cube_net, (2, 3), 4), (cube_net_diff, (3, 3), 4), (cube_net4, (2, 3, 2), 2)]


@pytest.mark.parametrize("build,split,unit", CASES)
def test_refit_solves_the_normal_equations_and_never_rises(build, split, unit):
    net = build(*split)
    r = refit_accumulator(net, cube, unit=unit, first=split[0])
    # the input net is untouched, and its error is the exact one
    assert r.mse_before == net_l2_mse(net, cube)[0]
    assert r.mse_after == net_l2_mse(r.net, cube)[0]
    # the constructions' errors are one-signed per square, so their mean is not 0: shifting the
    # output bias by it alone lowers the MSE by mean^2, and the refit family contains that shift
    gx, gw = _gauss(net)
    mean = float(np.sum(gw * (values(net, gx) - gx**3)))
    assert r.mse_after <= r.mse_before - mean**2 * (1 - 1e-9)
    # normal equations: the residual is L2-orthogonal to every feature (the refit net's features
    # are the input's: only weights into the accumulator changed)
    gx, gw = _gauss(r.net)
    phi = _features(net, unit, split[0], gx)
    np.testing.assert_allclose(_features(r.net, unit, split[0], gx)[:, :-1].sum(),
                               phi[:, :-1].sum(), rtol=1e-12)
    resid = values(r.net, gx) - gx**3
    scale = np.sqrt(np.sum(gw[:, None] * phi**2, axis=0)) * np.sqrt(np.sum(gw * resid**2))
    inner = np.sum(gw[:, None] * phi * resid[:, None], axis=0)
    assert np.all(np.abs(inner) <= 1e-10 * scale)  # measured ~1e-12: rounding of the solve
    # the accumulator stays positive, so it carries its sum (weight 1) through every layer
    lin = [m for m in r.net if isinstance(m, torch.nn.Linear)]
    for layer in lin[split[0] + 1:-1]:
        assert layer.weight[unit, unit].item() == 1.0


@settings(max_examples=6, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_refit_does_not_depend_on_the_weights_it_replaces(seed):
    # perturb every weight into the accumulator (features unchanged): the least-squares optimum
    # is the same, so the refit error is the refit of the construction's, and no worse than the
    # construction itself
    g = torch.Generator().manual_seed(seed)
    net = cube_net4(2, 2, 1)
    base = refit_accumulator(net, cube, unit=2, first=2)
    lin = [m for m in net if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for layer in lin[3:-1]:
            noise = 0.1 * torch.randn(layer.weight.shape[1], generator=g, dtype=torch.float64)
            noise[2] = 0.0
            layer.weight[2] += noise
    r = refit_accumulator(net, cube, unit=2, first=2)
    assert r.mse_after == pytest.approx(base.mse_after, rel=1e-8)
    assert r.mse_after <= base.mse_before


def test_refit_bad_input():
    net = cube_net(2, 2)
    with pytest.raises(InputError):
        refit_accumulator(net, cube, unit=5, first=2)
    with pytest.raises(InputError):
        refit_accumulator(net, cube, unit=4, first=4)
    with pytest.raises(InputError):
        refit_accumulator(net, cube, unit=4, first=-1)
    with pytest.raises(InputError):
        cube_net4(2, 0, 1)
    with pytest.raises(InputError):
        cube_net_diff(True, 2)
