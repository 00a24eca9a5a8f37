"""growth.insert_warp: a new first hidden layer that warps the input, inserted without changing
the net's function (docs/research-log.md, "The warp layer and its hinges")."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from relu_regions.training.functional import mlp_forward, raw_shapes, unflatten_layers
from relu_regions.training.growth import curvature_hinges, insert_warp


def _forward(theta, depth, x):
    return mlp_forward(unflatten_layers(theta, raw_shapes(depth)), x)


@settings(max_examples=25, deadline=None)
@given(depth=st.integers(1, 6), lo=st.floats(-3.0, 3.0), length=st.floats(0.01, 5.0),
       seed=st.integers(0, 2**16), rows=st.integers(1, 3))
def test_a_warp_insertion_is_function_preserving_on_the_samples_range(depth, lo, length, seed,
                                                                    rows):
    """Every row's net, one layer deeper, is the same function on [min x, max x] to rounding:
    u_0 = relu(x - lo) = x - lo there, and the hinge units enter with zero weights."""
    g = torch.Generator().manual_seed(seed)
    n_params = sum(o * i + o for (o, i), _ in raw_shapes(depth))
    theta = torch.randn(rows, n_params, dtype=torch.float64, generator=g)
    x = lo + length * torch.rand(301, dtype=torch.float64, generator=g)
    before = _forward(theta, depth, x)
    grown = insert_warp(theta, depth, x)
    after = _forward(grown, depth + 1, x)
    assert grown.shape == (rows, n_params + 20)  # one more 4 x 4 layer with its 4 biases
    scale = 1.0 + before.abs().max()
    assert torch.allclose(after, before, rtol=0, atol=1e-12 * scale)


def test_the_warp_layer_reads_the_input_and_its_hinges():
    """The new first layer computes relu(x - lo) and relu(x - k_j) at the given knots, and the
    hinges reach the old first layer only through weights that start at zero (so phase 2 can
    move every knot by one PL map of x): perturbing those weights changes the function."""
    x = torch.linspace(0.0, 2.0, 201, dtype=torch.float64)
    depth = 2
    n_params = sum(o * i + o for (o, i), _ in raw_shapes(depth))
    g = torch.Generator().manual_seed(3)
    theta = torch.randn(1, n_params, dtype=torch.float64, generator=g)
    knots = [0.3, 1.0, 1.7]
    grown = insert_warp(theta, depth, x, knots=knots)
    (w0, b0), (w1, _) = unflatten_layers(grown, raw_shapes(depth + 1))[:2]
    h0 = torch.relu(w0[0, :, 0, None] * x + b0[0, :, None])
    expected = torch.stack([x] + [torch.relu(x - k) for k in knots])
    assert torch.allclose(h0, expected, rtol=0, atol=1e-15)
    assert torch.all(w1[0, :, 1:] == 0)
    moved = grown.clone()
    unflatten_layers(moved, raw_shapes(depth + 1))[1][0][0, :, 1] = 0.5  # a view into moved
    assert not torch.allclose(_forward(moved, depth + 1, x), _forward(grown, depth + 1, x))


def test_curvature_hinges_follow_the_optimal_knot_density():
    # |f''|^(2/5) for x^3 on [0, 1]: the quantiles (j/4)^(5/7); inside the data's range and
    # increasing even on noise; the order of the samples does not matter.
    x = torch.linspace(0, 1, 4001, dtype=torch.float64)
    got = torch.tensor(curvature_hinges(x, x**3), dtype=torch.float64)
    want = torch.tensor([(j / 4) ** (5 / 7) for j in (1, 2, 3)], dtype=torch.float64)
    assert (got - want).abs().max() < 0.02
    noise = torch.randn(x.numel(), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    h = curvature_hinges(2 * x - 1, noise)
    assert -1 < h[0] < h[1] < h[2] < 1
    perm = torch.randperm(x.numel(), generator=torch.Generator().manual_seed(0))
    assert curvature_hinges(x[perm], (x**3)[perm]) == curvature_hinges(x, x**3)
    high = curvature_hinges(x, x**11)  # curvature near 1: hinges there
    assert high[0] > 0.6 and all(a < b for a, b in zip(high, high[1:], strict=False))
