"""GmP layers, hyperspherical coordinates, IMN and conversions (relu_regions.gmp)."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from relu_regions import InputError
from relu_regions.gmp.cab import angle_between
from relu_regions.gmp.layers import (
    GmPConv2d,
    GmPLinear,
    GmPLinearReLU,
    InputMeanNorm,
    angles_from_direction,
    direction_from_angles,
    from_gmp,
    from_hyperspherical,
    to_gmp,
    to_hyperspherical,
)

D = torch.float64


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _linear(i, o, seed, bias=True):
    g = _gen(seed)
    lin = nn.Linear(i, o, bias=bias, dtype=D)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(o, i, generator=g, dtype=D))
        if bias:
            lin.bias.copy_(torch.randn(o, generator=g, dtype=D))
    return lin


# ---------------------------------------------------------------- hyperspherical coordinates
@settings(max_examples=150, deadline=None)
@given(d=st.integers(1, 64), seed=st.integers(0, 2**31 - 1), log_scale=st.floats(-6, 6))
def test_hyperspherical_round_trip(d, seed, log_scale):
    w = torch.randn(3, d, generator=_gen(seed), dtype=D) * 10**log_scale
    r, theta = to_hyperspherical(w)
    assert theta.shape == (3, d - 1)
    back = from_hyperspherical(r, theta)
    assert torch.allclose(back, w, rtol=0, atol=1e-12 * float(w.abs().max()))
    if d >= 2:
        assert torch.all(r >= 0)
        # angle ranges of the coordinate chart: [0, pi] except the last in (-pi, pi]
        assert torch.all((theta[:, :-1] >= 0) & (theta[:, :-1] <= math.pi))
        assert torch.all(theta[:, -1].abs() <= math.pi)
        u = direction_from_angles(angles_from_direction(w))
        assert torch.allclose(torch.linalg.vector_norm(u, dim=-1), torch.ones(3, dtype=D),
                              atol=1e-13)


@settings(max_examples=100, deadline=None)
@given(d=st.integers(2, 64), seed=st.integers(0, 2**31 - 1))
def test_angles_to_direction_to_angles(d, seed):
    g = _gen(seed)
    theta = torch.rand(4, d - 1, generator=g, dtype=D) * math.pi
    theta[:, -1] = theta[:, -1] * 2 - math.pi  # last angle spans (-pi, pi]
    u = direction_from_angles(theta)
    assert torch.allclose(torch.linalg.vector_norm(u, dim=-1), torch.ones(4, dtype=D), atol=1e-13)
    assert torch.allclose(angles_from_direction(u), theta, atol=1e-9)


def test_direction_formula_small_case():
    t1, t2 = 0.3, -1.1
    u = direction_from_angles(torch.tensor([t1, t2], dtype=D))
    want = [math.cos(t1), math.sin(t1) * math.cos(t2), math.sin(t1) * math.sin(t2)]
    assert torch.allclose(u, torch.tensor(want, dtype=D), atol=1e-15)


@settings(max_examples=100, deadline=None)
@given(d=st.integers(2, 64), seed=st.integers(0, 2**31 - 1), eps=st.floats(1e-6, 1.0))
def test_direction_is_1_lipschitz_in_theta(d, seed, eps):
    """The GmP side of Chen & Ge's stability argument: |angle(u(t), u(t + delta))| <= ||delta||."""
    g = _gen(seed)
    theta = torch.randn(d - 1, generator=g, dtype=D) * 2
    delta = torch.randn(d - 1, generator=g, dtype=D)
    delta = delta / torch.linalg.vector_norm(delta) * eps
    turn = angle_between(direction_from_angles(theta), direction_from_angles(theta + delta))
    assert float(turn) <= eps * (1 + 1e-9) + 1e-12


# ---------------------------------------------------------------- layers and conversions
@pytest.mark.parametrize("i,o,bias", [(1, 5, True), (2, 3, True), (7, 4, False), (64, 9, True)])
def test_linear_conversion_exact(i, o, bias):
    lin = _linear(i, o, seed=i * 100 + o, bias=bias)
    gmp = GmPLinear.from_linear(lin)
    x = torch.randn(20, i, generator=_gen(1), dtype=D)
    assert (gmp(x) - lin(x)).abs().max() <= 1e-12
    back = gmp.to_linear()
    assert (back(x) - lin(x)).abs().max() <= 1e-12
    assert torch.allclose(back.weight, lin.weight, atol=1e-13)
    if bias:
        # lambda = b / r
        assert torch.allclose(gmp.lam, lin.bias / torch.linalg.vector_norm(lin.weight, dim=1),
                              atol=1e-14)


def test_one_dimensional_input_keeps_sign_fixed():
    lin = _linear(1, 6, seed=3)
    gmp = GmPLinear.from_linear(lin)
    assert gmp.theta.shape == (6, 0)
    names = {n for n, _ in gmp.named_parameters()}
    assert names == {"theta", "r", "lam"} and "sign" in dict(gmp.named_buffers())
    assert torch.equal(gmp.sign[:, 0], torch.sign(lin.weight[:, 0]))
    x = torch.linspace(-3, 3, 11, dtype=D).unsqueeze(1)
    gmp(x).sum().backward()
    assert gmp.r.grad is not None and gmp.lam.grad is not None
    assert torch.equal(gmp.flat_direction()[:, 0], torch.sign(lin.weight[:, 0]))


def test_init_from_standard_draw():
    a = GmPLinear(3, 5, generator=_gen(7))
    b = GmPLinear(3, 5, generator=_gen(7))
    assert torch.equal(a.weight, b.weight)
    assert torch.all(a.lam == 0) and torch.all(a.r > 0)
    bound = math.sqrt(6 / (3 + 5))  # Glorot uniform
    assert a.weight.abs().max() <= bound
    assert torch.allclose(a.r, torch.linalg.vector_norm(a.weight, dim=1))


def test_gmp_layer_trains_all_parameters():
    gmp = GmPLinear(4, 3, generator=_gen(0))
    x = torch.randn(8, 4, generator=_gen(1), dtype=D)
    torch.relu(gmp(x)).pow(2).sum().backward()
    for p in (gmp.theta, gmp.r, gmp.lam):
        assert p.grad is not None and torch.isfinite(p.grad).all()


@pytest.mark.parametrize("kw", [dict(), dict(stride=2, padding=1),
                                dict(groups=2, padding=(1, 0), dilation=2)])
def test_conv_conversion_exact(kw):
    g = _gen(5)
    conv = nn.Conv2d(4, 6, 3, dtype=D, **kw)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g, dtype=D))
        conv.bias.copy_(torch.randn(6, generator=g, dtype=D))
    gmp = GmPConv2d.from_conv(conv)
    x = torch.randn(2, 4, 9, 9, generator=g, dtype=D)
    assert (gmp(x) - conv(x)).abs().max() <= 1e-12
    assert (gmp.to_conv()(x) - conv(x)).abs().max() <= 1e-12
    assert gmp.theta.shape == (6, conv.weight[0].numel() - 1)


def test_fused_unit_is_the_papers_and_splits_exactly():
    lin = _linear(3, 5, seed=11)
    fused = GmPLinearReLU.from_linear(lin)
    x = torch.randn(30, 3, generator=_gen(2), dtype=D)
    assert (fused(x) - torch.relu(lin(x))).abs().max() <= 1e-12
    with torch.no_grad():
        fused.r[1] = -fused.r[1]  # a negative radius flips the output, not the active side
    u, lam, r = fused.flat_direction(), fused.lam, fused.r
    assert torch.allclose(fused(x), r * torch.relu(x @ u.T + lam), atol=1e-14)
    linear, sign = fused.split()
    assert (fused(x) - sign * torch.relu(linear(x))).abs().max() <= 1e-12
    with pytest.raises(InputError):
        from_gmp(fused)
    # the drop-in instead flips the active side: relu(r z) = |r| relu(-z)
    drop = GmPLinear.from_linear(lin)
    with torch.no_grad():
        drop.r[1] = -drop.r[1]
    z = x @ drop.flat_direction().T + drop.lam
    assert torch.allclose(torch.relu(drop(x))[:, 1], drop.r[1].abs() * torch.relu(-z[:, 1]),
                          atol=1e-13)


def test_module_conversion_both_ways():
    net = nn.Sequential(_linear(3, 8, 1), nn.ReLU(), nn.Sequential(_linear(8, 4, 2), nn.ReLU()),
                        _linear(4, 1, 3))
    g = to_gmp(net)
    assert isinstance(g[0], GmPLinear) and isinstance(g[2][0], GmPLinear)
    assert isinstance(net[0], nn.Linear)
    x = torch.randn(16, 3, generator=_gen(0), dtype=D)
    assert (g(x) - net(x)).abs().max() <= 1e-12
    back = from_gmp(g)
    assert type(back[0]) is nn.Linear and (back(x) - net(x)).abs().max() <= 1e-12


def test_zero_row_cannot_convert():
    lin = _linear(3, 2, 0)
    with torch.no_grad():
        lin.weight[1] = 0
    with pytest.raises(InputError, match="row 1"):
        GmPLinear.from_linear(lin)


@pytest.mark.parametrize("bad", [0, -2, 1.5])
def test_bad_sizes(bad):
    with pytest.raises(InputError):
        GmPLinear(bad, 3)
    with pytest.raises(InputError):
        InputMeanNorm(bad)


def test_wrong_type_conversion():
    with pytest.raises(InputError):
        GmPLinear.from_linear(nn.Conv2d(1, 1, 1))
    with pytest.raises(InputError):
        GmPConv2d.from_conv(nn.Linear(1, 1))


# ---------------------------------------------------------------- IMN
def test_input_mean_norm():
    imn = InputMeanNorm(3, momentum=0.5)
    x = torch.randn(50, 3, generator=_gen(0), dtype=D) + torch.tensor([1.0, -2.0, 5.0], dtype=D)
    y = imn(x)
    assert torch.allclose(y.mean(0), torch.zeros(3, dtype=D), atol=1e-13)
    assert torch.allclose(y.std(0), x.std(0))  # no variance scaling
    assert torch.allclose(imn.running_mean, 0.5 * x.mean(0))
    imn.eval()
    assert torch.allclose(imn(x), x - 0.5 * x.mean(0))
    # convolutional input: mean over batch and space per channel
    conv_in = torch.randn(4, 3, 5, 5, generator=_gen(1), dtype=D) + 2
    imn.train()
    assert torch.allclose(imn(conv_in).mean(dim=(0, 2, 3)), torch.zeros(3, dtype=D), atol=1e-13)
    with pytest.raises(InputError):
        imn(torch.randn(4, 2, dtype=D))
