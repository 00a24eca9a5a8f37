"""The width-5 x^3 net (Yarotsky's squares and products): same function as the formulas, the
proved error bound, and a constant factor per layer."""

import numpy as np
import pytest
import torch

from relu_regions.errors import InputError
from relu_regions.nets.yarotsky import WIDTH, cube_net, cube_reference


@pytest.mark.parametrize("m1,m2", [(1, 1), (2, 3), (3, 3), (4, 2), (5, 6)])
def test_net_is_the_formula_and_within_the_bound(m1, m2):
    net = cube_net(m1, m2)
    assert len(net) == 2 * (m1 + m2) + 1
    assert all(lin.out_features == WIDTH for lin in net[:-1:2])
    x = np.linspace(0.0, 1.0, 20_001)
    with torch.no_grad():
        y = net(torch.tensor(x).unsqueeze(-1)).squeeze(-1).numpy()
    np.testing.assert_allclose(y, cube_reference(x, m1, m2), rtol=0, atol=1e-13)
    bound = 4.0 ** -(m1 + 1) + 2.5 * 4.0 ** -(m2 + 1)
    assert np.abs(y - x**3).max() <= bound


def test_reference_square_interpolates_on_the_grid():
    # with m2 large the product stage is exact to rounding; x * S with S = f_1(x) interpolating
    # x^2 at 0, 1/2, 1: at x = 1/2 S = 1/4 exactly, so x S = 1/8 = x^3
    assert cube_reference(np.array([0.0, 0.5, 1.0]), 1, 25) == pytest.approx([0.0, 0.125, 1.0],
                                                                              abs=1e-14)


def test_error_falls_by_a_constant_factor_per_layer():
    x = np.linspace(0.0, 1.0, 20_001)
    sup = [np.abs(cube_reference(x, m, m) - x**3).max() for m in range(2, 8)]
    # each step adds two layers; the bound shrinks 4x per step
    assert all(b <= a / 3 for a, b in zip(sup, sup[1:], strict=False))


def test_bad_input():
    with pytest.raises(InputError):
        cube_net(0, 3)
    with pytest.raises(InputError):
        cube_net(2, True)
