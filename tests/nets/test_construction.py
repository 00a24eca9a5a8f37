"""The construction, its width-4 realization and release(): identities to 1e-12 in float64."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import parametrize

from relu_regions import InputError
from relu_regions.nets.construction import Construction, sum_offset, thm31_scales, triangle
from relu_regions.nets.parametrize import ConstructionNet


@st.composite
def constructions(draw, a_lo=0.1, a_hi=0.9, max_depth=20):
    d = draw(st.integers(1, max_depth))
    thm31 = draw(st.booleans())
    n = d + 1 if thm31 else d
    peaks = draw(st.lists(st.floats(a_lo, a_hi), min_size=n, max_size=n))
    lo = draw(st.floats(-10, 10))
    length = draw(st.floats(0.01, 20))
    kwargs = dict(peaks=peaks, thm31=thm31, interval=(lo, lo + length),
                  concave=draw(st.booleans()), c0=draw(st.floats(-3, 3)), c1=draw(st.floats(-3, 3)))
    if thm31:
        kwargs["s0"] = draw(st.floats(0.05, 1.0))
    else:
        factors = draw(st.lists(st.floats(0.5, 2.0), min_size=d, max_size=d))
        kwargs["scales"] = [f * 4.0 ** -(i + 1) for i, f in enumerate(factors)]
    return ConstructionNet.build(d, **kwargs)


def grid(net, n=513):
    c = net.construction
    return torch.linspace(float(c.lo), float(c.hi), n, dtype=torch.float64).unsqueeze(1)


@settings(max_examples=60, deadline=None)
@given(constructions())
def test_raw_net_and_released_equal_derived_form(net):
    x = grid(net)
    with torch.no_grad():
        derived, raw, released = net.derived(x), net(x), net.release()(x)
    # The raw first layer computes s0 x / L - s0 lo / L and so cancels |x|/L times the result
    # (the derived form subtracts lo first): the tolerance scales with that conditioning.
    # The "sum" neuron carries C + F and the output bias removes C, so rounding is relative to
    # the size of C and of F as well. And a rounding of u is carried through the triangle maps:
    # T_a is Lipschitz with L = max(1/a, 1/(1-a)), so it reaches F as sum_i s_i prod_{k<=i} L_k
    # (small peaks with slowly falling scales: 2^i per layer).
    c = net.construction
    conditioning = max(1.0, float(max(abs(c.lo), abs(c.hi)) / (c.hi - c.lo)))
    size = max(1.0, float(derived.abs().max()),
               float(sum_offset(c.scales(), c.c1).detach()))
    with torch.no_grad():
        peaks = c.peaks()[:c.depth]
        lipschitz = torch.maximum(1 / peaks, 1 / (1 - peaks))
        amplification = float((c.scales() * torch.cumprod(lipschitz, 0)).sum())
    eps = torch.finfo(torch.float64).eps
    atol = conditioning * (1e-12 * size + 16 * eps * amplification)
    assert torch.allclose(raw, derived, rtol=0, atol=atol)
    assert torch.equal(released, raw)


def test_triangle_map_on_unit_interval():
    u = torch.linspace(0, 1, 1001, dtype=torch.float64)
    for a in (0.1, 0.37, 0.5, 0.9):
        expected = torch.where(u <= a, u / a, (1 - u) / (1 - a))
        # The ReLU form cancels 1/a against (1-a)/(a(1-a)) past the peak: error ~ eps/(a(1-a)).
        assert torch.allclose(triangle(u, torch.tensor(a, dtype=torch.float64)), expected,
                              rtol=0, atol=1e-14)


def test_yarotsky_square_is_exact_at_the_knots():
    """a_i = 1/2, s_i = 4^-(i+1), c1 = 1: F = x^2 at the 2^d + 1 knots k/2^d."""
    for d in (1, 4, 10):
        net = ConstructionNet.build(d, peaks=0.5, thm31=False, c1=1.0)
        x = torch.arange(2**d + 1, dtype=torch.float64).unsqueeze(1) / 2**d
        with torch.no_grad():
            assert torch.allclose(net(x), x**2, rtol=0, atol=1e-15)


@given(st.integers(1, 20), st.lists(st.floats(0.1, 0.9), min_size=21, max_size=21),
       st.floats(0.05, 1.0))
def test_thm31_coupling(d, peaks, s0):
    a = torch.tensor(peaks[: d + 1], dtype=torch.float64)
    s = thm31_scales(torch.tensor(s0, dtype=torch.float64), a, d)
    assert s.shape == (d,) and s[0] == s0
    for i in range(d - 1):
        assert abs(float(s[i + 1] - s[i] * (1 - a[i + 1]) * a[i + 2])) <= 1e-15 * float(s[i])


def test_thm31_with_half_peaks_is_quarter_steps():
    c = Construction(8, peaks=0.5, s0=0.3)
    expected = 0.3 * 4.0 ** -torch.arange(8, dtype=torch.float64)
    assert torch.allclose(c.scales(), expected, rtol=1e-15, atol=0)


def test_peaks_stay_inside_margin_whatever_the_logits():
    c = Construction(5, margin=0.05)
    with torch.no_grad():
        c.peak_logits.copy_(torch.tensor([-1e3, -30.0, 0.0, 30.0, 1e3, 7.0]))
    a = c.peaks()
    assert torch.all(a >= 0.05) and torch.all(a <= 0.95 + 1e-15)


def test_gradients_reach_derived_parameters_through_raw_layers():
    net = ConstructionNet.build(4, peaks=[0.3, 0.6, 0.4, 0.55], c1=0.5)
    # Off the kinks: at a point where a ReLU's input is exactly 0 the raw and derived forms may
    # take different one-sided derivatives (whether rounding lands on 0 or 1e-17 decides it).
    x = grid(net, 101) * (1 - 2**-0.5 * 1e-3) + 2**-0.5 * 1e-3
    (net(x) ** 2).sum().backward()
    c = net.construction
    for p in (c.peak_logits, c.log_s0, c.c0, c.c1):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    # PyTorch keeps the ignored originals as frozen tensors: nothing trains them.
    assert [n for n, p in net.named_parameters() if p.requires_grad] == [
        "construction.peak_logits", "construction.log_s0", "construction.c0", "construction.c1"]
    # The derived form gives the same gradients.
    grads = [p.grad.clone() for p in (c.peak_logits, c.log_s0, c.c1)]
    net.zero_grad()
    (net.derived(x) ** 2).sum().backward()
    for g, p in zip(grads, (c.peak_logits, c.log_s0, c.c1), strict=True):
        assert torch.allclose(g, p.grad, rtol=1e-9, atol=1e-12)


def test_release_gives_a_plain_trainable_sequential():
    net = ConstructionNet.build(6, peaks=0.4, thm31=False)
    plain = net.release()
    assert isinstance(plain, nn.Sequential)
    assert not any(parametrize.is_parametrized(m) for m in plain)
    assert all(p.requires_grad for p in plain.parameters())
    assert sum(p.numel() for p in plain.parameters()) == 8 + 5 * 20 + 5  # 1->4, 5 of 4->4, 4->1
    # state_dict round trip into a fresh plain MLP of the same shape.
    from relu_regions.nets.mlp import mlp
    other = mlp(4, 6)
    other.load_state_dict(plain.state_dict())
    x = grid(net, 33)
    with torch.no_grad():
        assert torch.equal(other(x), net(x))
    # Training the released copy leaves the construction untouched.
    before = net(x).detach()
    with torch.no_grad():
        for p in plain.parameters():
            p.add_(0.1)
    assert torch.equal(net(x).detach(), before)


def test_state_dict_round_trip_of_the_parametrized_net():
    a = ConstructionNet.build(5, peaks=[0.3, 0.4, 0.5, 0.6, 0.7, 0.35], s0=0.2, c0=1.0)
    b = ConstructionNet.build(5)
    b.load_state_dict(a.state_dict())
    x = grid(a, 65)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


@pytest.mark.parametrize("kwargs, message", [
    (dict(depth=0), "depth"),
    (dict(depth=3, peaks=1.2), "outside (0, 1)"),
    (dict(depth=3, peaks=0.0), "outside (0, 1)"),
    (dict(depth=3, peaks=0.02), "margin"),
    (dict(depth=3, peaks=[0.5, 0.5]), "peak values"),
    (dict(depth=3, interval=(1, 1)), "lo < hi"),
    (dict(depth=3, s0=-1.0), "s0"),
    (dict(depth=3, thm31=False, scales=[1.0, -1.0, 1.0]), "scales"),
])
def test_bad_construction_arguments(kwargs, message):
    depth = kwargs.pop("depth")
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Construction(depth, **kwargs)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 9), st.sampled_from([(), (3,)]), st.booleans(), st.integers(0, 2**31 - 1))
def test_raw_weights_builds_all_hidden_layers_in_one_call_with_the_per_layer_values(
        d, batch, concave, seed):
    """All hidden matrices come from one batched hidden_matrix call (a count of a small net
    spent most of its time in per-layer torch calls), bit for bit the per-layer formula."""
    from relu_regions.nets import construction

    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.rand(batch + shape, generator=g, dtype=torch.float64)

    peaks, scales, c0, c1 = 0.1 + 0.8 * rand(d + 1), 0.01 + rand(d), rand(), rand()
    sign = (-torch.ones(batch, dtype=torch.float64) if concave
            else torch.tensor(1.0, dtype=torch.float64))
    calls = []
    real = construction.hidden_matrix
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(construction, "hidden_matrix", lambda *a: calls.append(1) or real(*a))
        layers = construction.raw_weights(peaks, scales, c0, c1,
                                          torch.tensor(-0.5, dtype=torch.float64),
                                          torch.tensor(1.5, dtype=torch.float64), sign)
    assert len(calls) == (d > 1) and len(layers) == d + 1
    for k in range(d - 1):  # the per-layer formula, as raw_weights computed it before
        w = real(peaks[..., k], peaks[..., k + 1], scales[..., k + 1] / scales[..., k], sign)
        assert torch.equal(layers[k + 1][0], w) and layers[k + 1][0].shape == batch + (4, 4)
        assert torch.equal(layers[k + 1][1], torch.zeros(batch + (4,), dtype=torch.float64))
