"""Exact region counters: the construction's 2^d, and agreement with an exact rational reference."""

import numpy as np
import pytest
import torch
from exact_reference import exact_count
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn

from relu_regions import InputError
from relu_regions.analysis import regions
from relu_regions.analysis.pieces import PIECE_COLUMNS, pieces_table
from relu_regions.analysis.regions import count_regions, count_regions_segment
from relu_regions.analysis.sampling import sample_regions
from relu_regions.nets.mlp import mlp, raai_
from relu_regions.nets.parametrize import ConstructionNet
from relu_regions.nets.reader import relu_layers


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 20), st.booleans(), st.booleans(), st.integers(0, 2**32 - 1))
def test_construction_has_exactly_2_to_the_d_pieces(d, thm31, concave, seed):
    peaks = np.random.default_rng(seed).uniform(0.25, 0.75, d + 1).tolist()
    net = ConstructionNet.build(d, peaks=peaks if thm31 else peaks[:d], thm31=thm31,
                                concave=concave, c1=0.7)
    r = count_regions(net, 0, 1)
    # Activation regions: only t2 of layer k switches inside (0, 1), once per monotone piece of
    # W_{k-1}: sum_k 2^k = 2^d - 1 breakpoints. Every one bends F, so pieces = regions.
    assert r.breakpoints.size == 2**d - 1
    assert r.activation_regions == 2**d
    assert r.linear_pieces == 2**d
    assert r.resolved
    if thm31:  # Theorem 3.1 scales make F convex (concave with the sign flipped).
        rep = r.convexity()
        assert rep.is_concave if concave else rep.is_convex


def test_construction_breakpoints_with_half_peaks_are_the_dyadics():
    d = 12
    r = count_regions(ConstructionNet.build(d, peaks=0.5), 0, 1)
    expected = np.arange(1, 2**d) / 2**d
    assert np.allclose(r.breakpoints, expected, rtol=0, atol=1e-15)
    assert r.min_piece_width == pytest.approx(2.0**-d, rel=1e-12)


def test_construction_on_a_shifted_interval():
    r = count_regions(ConstructionNet.build(8, peaks=0.3, interval=(-3, 5)), -3, 5)
    assert r.linear_pieces == 256 and r.breakpoints.min() > -3 and r.breakpoints.max() < 5


def seeded_init_(model, init, g):
    """Weights and biases of ``model`` from the generator ``g`` only, so hypothesis replays them.

    "kaiming+bias" adds U(-1, 1) biases to He-normal weights (plain Kaiming zeroes every bias:
    such a net is positively homogeneous, with at most one breakpoint, at 0); "raai" draws its
    own biases; "uniform" is PyTorch's default init (U(+-1/sqrt(fan_in))) drawn from ``g``.
    """
    if init == "raai":
        return raai_(model, g)
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.Linear):
                if init == "kaiming+bias":
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu", generator=g)
                    m.bias.uniform_(-1, 1, generator=g)
                else:
                    bound = m.weight.shape[1] ** -0.5
                    m.weight.uniform_(-bound, bound, generator=g)
                    m.bias.uniform_(-bound, bound, generator=g)
    return model


@st.composite
def random_mlps(draw, max_width=8, max_depth=5, min_regions=4):
    """Nets worth counting: width >= 3, depth >= 2, non-zero biases, seeded; the interval is
    redrawn around the breakpoints when too few fall inside (``assume`` at least
    ``min_regions`` exact activation regions)."""
    width, depth = draw(st.integers(3, max_width)), draw(st.integers(2, max_depth))
    seed = draw(st.integers(0, 2**31 - 1))
    init = draw(st.sampled_from(["kaiming+bias", "raai", "uniform"]))
    model = seeded_init_(mlp(width, depth), init, torch.Generator().manual_seed(seed))
    lo = draw(st.floats(-4, 1))
    hi = lo + draw(st.floats(0.5, 5))
    exact = exact_count(model, lo, hi)
    assume(exact[1] >= min_regions)
    return model, lo, hi, exact


@settings(max_examples=60, deadline=None)
@given(random_mlps())
def test_counter_agrees_with_exact_rational_reference(case):
    model, lo, hi, (breakpoints, regions, pieces, knots, slopes) = case
    widths = np.diff(np.array([lo] + [float(b) for b in breakpoints] + [hi]))
    assume(widths.min() > 1e-9 * (hi - lo))  # float64 cannot place narrower ones: see below
    r = count_regions(model, lo, hi)
    assert r.activation_regions == regions
    assert r.linear_pieces == pieces
    assert np.allclose(r.breakpoints, np.array(breakpoints, dtype=float), rtol=0, atol=1e-12)
    assert np.allclose(r.knots, np.array(knots, dtype=float), rtol=0, atol=1e-12)
    exact_slopes = np.array(slopes, dtype=float)
    assert np.allclose(r.slopes, exact_slopes, rtol=1e-9, atol=1e-12 * np.abs(exact_slopes).max())


@settings(max_examples=30, deadline=None)
@given(random_mlps(max_width=8, max_depth=4))
def test_pieces_and_slopes_rebuild_the_network(case):
    """Integrating the reported slopes from y(lo) reproduces the network everywhere."""
    model, lo, hi, _ = case
    r = count_regions(model, lo, hi)
    x = np.linspace(lo, hi, 2001)
    edges = np.concatenate([[lo], r.knots, [hi]])
    with torch.no_grad():
        y = model(torch.tensor(x).unsqueeze(1)).numpy()[:, 0]
    start = np.concatenate([[y[0]], y[0] + np.cumsum(np.diff(edges)[:-1] * r.slopes[:-1])])
    piece = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, r.slopes.size - 1)
    rebuilt = start[piece] + r.slopes[piece] * (x - edges[piece])
    assert np.allclose(rebuilt, y, rtol=1e-9, atol=1e-9 * max(1.0, np.abs(y).max()))


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 5), st.integers(3, 6), st.integers(2, 4), st.integers(0, 2**31 - 1),
       st.sampled_from(["kaiming+bias", "raai", "uniform"]))
def test_segment_count_equals_1d_count_of_the_restricted_net(n_in, width, depth, seed, init):
    """Counts, positions t and slopes dy/dt along a segment equal the exact 1D count of the net
    restricted to it (a wrong direction, e.g. doubled, doubles every slope)."""
    g = torch.Generator().manual_seed(seed)
    model = seeded_init_(mlp(width, depth, in_features=n_in), init, g)
    x0 = torch.randn(n_in, generator=g, dtype=torch.float64)
    x1 = torch.randn(n_in, generator=g, dtype=torch.float64)
    seg = count_regions_segment(model, x0, x1)
    breakpoints, regions, pieces, _, slopes = exact_count(_restricted(model, x0, x1), 0.0, 1.0)
    widths = np.diff(np.array([0.0] + [float(b) for b in breakpoints] + [1.0]))
    assume(widths.min() > 1e-9)
    assert (seg.activation_regions, seg.linear_pieces) == (regions, pieces)
    np.testing.assert_allclose(seg.breakpoints, np.array(breakpoints, dtype=float), rtol=0,
                               atol=1e-12)
    exact_slopes = np.array(slopes, dtype=float)
    np.testing.assert_allclose(seg.slopes, exact_slopes, rtol=1e-9,
                               atol=1e-12 * np.abs(exact_slopes).max())


@settings(max_examples=30, deadline=None)
@given(random_mlps(min_regions=8))
def test_counting_in_tiny_chunks_changes_nothing(case):
    """The depth-first chunking (and the arrays it reuses) is invisible in the result."""
    model, lo, hi, exact = case
    whole = count_regions(model, lo, hi)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(regions, "CHUNK", 4)
        chunked = count_regions(model, lo, hi)
    assert chunked.to_dict() == whole.to_dict()
    assert chunked.activation_regions == exact[1] >= 8  # more points than a chunk holds
    for name in ("breakpoints", "knots", "slopes"):
        assert np.array_equal(getattr(chunked, name), getattr(whole, name))


def test_counting_in_tiny_chunks_keeps_the_snapped_count():
    """A construction snaps its touching zeros; the halves' snapped counts add up."""
    net = ConstructionNet.build(5, peaks=[0.3, 0.6, 0.45, 0.5, 0.55, 0.4])
    whole = count_regions(net, 0, 1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(regions, "CHUNK", 4)
        chunked = count_regions(net, 0, 1)
    assert whole.snapped > 0 and chunked.to_dict() == whole.to_dict()


def test_sampling_estimator_matches_when_pieces_are_wide():
    net = ConstructionNet.build(5, peaks=[0.3, 0.6, 0.45, 0.5, 0.55, 0.4])
    exact = count_regions(net, 0, 1)
    est = sample_regions(net, 0, 1, samples=200_001)
    assert est.linear_pieces == exact.linear_pieces == 32


def test_sampling_estimator_undercounts_narrow_pieces():
    net = ConstructionNet.build(14, peaks=0.5)  # pieces 2^-14 wide, grid step 1e-3
    sampled = sample_regions(net, 0, 1, samples=1001)
    assert sampled.linear_pieces < count_regions(net, 0, 1).linear_pieces


def test_convexity_report_of_a_hand_built_net():
    model = mlp(2, 1)
    with torch.no_grad():  # relu(x) - 2 relu(x - 1): slopes 0, 1, -1 on [-1, 2]
        model[0].weight.copy_(torch.tensor([[1.0], [1.0]]))
        model[0].bias.copy_(torch.tensor([0.0, -1.0]))
        model[2].weight.copy_(torch.tensor([[1.0, -2.0]]))
        model[2].bias.zero_()
    r = count_regions(model, -1, 2)
    assert r.linear_pieces == 3
    assert np.allclose(r.slopes, [0, 1, -1]) and np.allclose(r.knots, [0, 1])
    rep = r.convexity()
    assert ((rep.convex_knots, rep.concave_knots, rep.is_convex, rep.is_concave)
            == (1, 1, False, False))


def test_dead_neuron_switch_is_a_region_but_not_a_piece():
    model = mlp(2, 1)
    with torch.no_grad():  # the second unit switches at x = 0.5 but its output weight is 0
        model[0].weight.copy_(torch.tensor([[1.0], [1.0]]))
        model[0].bias.copy_(torch.tensor([0.0, -0.5]))
        model[2].weight.copy_(torch.tensor([[1.0, 0.0]]))
    r = count_regions(model, 0, 1)
    assert (r.activation_regions, r.linear_pieces) == (2, 1)
    assert (r.min_region_width, r.min_piece_width) == (0.5, 1.0)  # regions 0.5, the piece 1
    # The grid (step 1/1000, off the switches at 0 and 1/2 on [-1/3, 1.67]) sees the same.
    est = sample_regions(model, -1 / 3, 1.67, samples=2001)
    assert (est.samples, est.activation_regions, est.linear_pieces) == (2001, 3, 2)


def test_unresolvable_sliver_is_reported_not_hidden():
    """Hypothesis found it: a switch at 0 seen from lo = -3.6e-205 bounds a region 1e-205 wide."""
    model = mlp(1, 1)
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[0].bias.zero_()
    r = count_regions(model, -3.5550768522204892e-205, 1.0)
    assert r.activation_regions == 1 and r.snapped == 1


def test_bad_models_and_bounds():
    with pytest.raises(InputError, match="segment"):
        count_regions(mlp(3, 2, in_features=2), 0, 1)
    with pytest.raises(InputError, match="Tanh"):
        count_regions(nn.Sequential(nn.Linear(1, 3), nn.Tanh(), nn.Linear(3, 1)), 0, 1)
    with pytest.raises(InputError, match="level is for a model with one output; this one has 2"):
        count_regions(mlp(3, 2, out_features=2), 0, 1, level=0.5)
    with pytest.raises(InputError, match="level must be a finite number, got nan"):
        count_regions(mlp(3, 2), 0, 1, level=float("nan"))
    with pytest.raises(InputError, match="convexity is defined for one output"):
        count_regions(mlp(3, 2, out_features=2), 0, 1).convexity()
    with pytest.raises(InputError, match="lo < hi"):
        count_regions(mlp(3, 2), 1, 1)
    with pytest.raises(InputError, match="x0 must be 2"):
        count_regions_segment(mlp(3, 2, in_features=2), [0, 0, 0], [1, 1])
    with pytest.raises(InputError, match="Bilinear cannot be read"):
        count_regions(nn.Bilinear(1, 1, 1), 0, 1)


# --------------------------------------------------------------------------------------------
# The sampling estimator never over-counts (issue: 18 sampled regions against 16 exact)

def test_sampling_does_not_count_a_touching_zero_as_a_switch():
    """The issue's case: the grid hits points where a neuron only touches zero (+-1e-17)."""
    net = ConstructionNet.build(4, peaks=[0.3, 0.6, 0.4, 0.5])
    exact = count_regions(net, 0, 1)
    est = sample_regions(net, 0, 1, samples=100_001)
    assert est.activation_regions <= exact.activation_regions == 16
    assert est.linear_pieces <= exact.linear_pieces == 16


@st.composite
def sampling_cases(draw):
    """Random nets, and constructions with dyadic or random peaks, on grids that may land on
    their breakpoints (2^k + 1 points on [0, 1] hit every dyadic point of level <= k)."""
    if draw(st.booleans()):
        model, lo, hi, _ = draw(random_mlps(max_width=8, max_depth=5))
    else:
        d = draw(st.integers(1, 8))
        peaks = draw(st.one_of(st.just(0.5), st.sampled_from([0.25, 0.375, 0.625]),
                               st.lists(st.floats(0.2, 0.8), min_size=d, max_size=d)))
        model = ConstructionNet.build(d, peaks=peaks, thm31=draw(st.booleans()))
        lo, hi = 0.0, 1.0
    samples = draw(st.one_of(st.integers(3, 3000), st.integers(2, 13).map(lambda k: 2**k + 1)))
    return model, lo, hi, samples


@settings(max_examples=80, deadline=None)
@given(sampling_cases())
def test_sampling_never_reports_more_than_exist(case):
    model, lo, hi, samples = case
    exact = count_regions(model, lo, hi)
    assume(exact.resolved and exact.min_region_width > 1e-9 * (hi - lo))
    est = sample_regions(model, lo, hi, samples=samples, chunk=257)  # chunk edges are crossed
    assert 1 <= est.activation_regions <= exact.activation_regions
    assert 1 <= est.linear_pieces <= exact.linear_pieces


def test_sampling_chunks_change_nothing():
    net = ConstructionNet.build(7, peaks=0.5, thm31=True)
    one = sample_regions(net, 0, 1, samples=4097, chunk=1 << 16)
    for chunk in (1, 2, 100, 4096):
        assert sample_regions(net, 0, 1, samples=4097, chunk=chunk) == one
    assert one.linear_pieces == one.activation_regions == 128  # every dyadic knot on the grid


# --------------------------------------------------------------------------------------------
# The pieces table

@settings(max_examples=25, deadline=None)
@given(random_mlps(max_width=6, max_depth=4))
def test_pieces_table_rows_are_the_network(case):
    model, lo, hi, _ = case
    r = count_regions(model, lo, hi)
    t = pieces_table(r, model)
    assert list(t) == list(PIECE_COLUMNS)
    assert all(t[c].shape == (r.linear_pieces,) for c in t)
    assert t["start"][0] == lo and t["end"][-1] == hi
    assert np.array_equal(t["end"][:-1], t["start"][1:])  # the pieces tile [lo, hi]
    assert np.array_equal(t["value_end"][:-1], t["value_start"][1:])  # and join
    with torch.no_grad():
        y = model(torch.tensor(np.concatenate([t["start"], t["end"][-1:]]))[:, None]).numpy()[:, 0]
    scale = max(1.0, np.abs(y).max())
    assert np.allclose(t["value_start"], y[:-1], rtol=0, atol=1e-12 * scale)
    # each row is one affine piece: the end value is the start value plus slope times width
    rise = t["slope"] * (t["end"] - t["start"])
    assert np.allclose(t["value_start"] + rise, t["value_end"], rtol=0,
                       atol=1e-9 * (scale + np.abs(rise).max()))


def test_pieces_table_one_piece_and_segment():
    net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        net[0].bias.fill_(5.0)  # all on over [-1, 1]^2: one piece
        net[2].weight.copy_(torch.tensor([[1.0, 2.0, -1.0]]))
        net[2].bias.fill_(0.5)
    r = count_regions_segment(net, [-1, -1], [1, 1])
    t = pieces_table(r, net, [-1, -1], [1, 1])
    # y = x + 2y - (x + y) + 0.5 + (5 + 10 - 5) = y + 10.5; along t: -1 + 2t + 10.5
    assert r.linear_pieces == 1
    assert np.allclose([t["start"][0], t["end"][0], t["slope"][0]], [0, 1, 2], rtol=0, atol=1e-15)
    assert np.allclose([t["value_start"][0], t["value_end"][0]], [9.5, 11.5], rtol=0, atol=1e-12)
    with pytest.raises(InputError, match="x0 and x1"):
        pieces_table(r, net)
    with pytest.raises(InputError, match="empty: x0 equals x1"):
        count_regions_segment(mlp(3, 2, in_features=2), [0.5, 1], [0.5, 1])
    for samples in (2, 0, 2.5, True):
        with pytest.raises(InputError, match="samples must be .* >= 3"):
            sample_regions(mlp(3, 2), 0, 1, samples=samples)
    assert sample_regions(mlp(3, 2), 0, 1, samples=3).samples == 3


def _assert_matches_exact_up_to_slivers(model, lo, hi, counted):
    """Counts and breakpoints against the exact reference, slivers merged.

    Constructions touch zero at their sawtooths' minima and switch at their intervals' ends; in
    the float net those are exact crossings within rounding of each other (slivers ~1e-16 wide),
    which float64 cannot place (the computed values may not even change sign there). Exact
    breakpoints closer than 1e-12 of the scale are one, those that close to lo or hi none; every
    other exact breakpoint must be found, where it is.
    """
    exact = np.array([float(b) for b in exact_count(model, lo, hi)[0]])
    tol = 1e-12 * max(abs(lo), abs(hi), hi - lo)
    kept = exact[(exact - lo > tol) & (hi - exact > tol)]
    clusters = np.split(kept, np.nonzero(np.diff(kept) > tol)[0] + 1) if kept.size else []
    centres = np.array([c.mean() for c in clusters])
    assert counted.activation_regions == centres.size + 1
    np.testing.assert_allclose(counted.breakpoints, centres, rtol=0, atol=tol)


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 5), st.booleans(), st.booleans(), st.integers(0, 2**32 - 1),
       st.floats(-3, 3), st.floats(0.5, 4))
def test_construction_nets_agree_with_exact_reference(d, thm31, concave, seed, lo, width):
    peaks = np.random.default_rng(seed).uniform(0.25, 0.75, d + 1).tolist()
    hi = lo + width
    net = ConstructionNet.build(d, peaks=peaks if thm31 else peaks[:d], thm31=thm31,
                                concave=concave, c1=0.7, interval=(lo, hi))
    r = count_regions(net, lo, hi)
    assert r.activation_regions == r.linear_pieces == 2**d
    _assert_matches_exact_up_to_slivers(net.release(), lo, hi, r)


def _random_theta(layout, seed):
    """Derived parameters N(0, 1) (peaks from logits, scales from logs): a generic member of the
    layout (a least-squares start can put scales on their 1e-12 bound: knots below SLOPE_TOL)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, layout.n_params, generator=g, dtype=torch.float64)


def _layout_net(layout, theta):
    from relu_regions.nets.parametrize import linear_relu_stack

    model = linear_relu_stack(layout.widths)
    with torch.no_grad():
        for (w, b), lin in zip(layout.raw(theta), model[::2], strict=True):
            lin.weight.copy_(w[0])
            lin.bias.copy_(b[0])
    return model


@settings(max_examples=10, deadline=None)
@given(st.sampled_from(["convex", "concave", "dc"]), st.integers(1, 4), st.integers(0, 2**16))
def test_composite_1d_layouts_agree_with_exact_reference(shape, depth, seed):
    """Sums of constructions (dc: convex minus convex, 2^(d+1) pieces) as the raw MLP."""
    from relu_regions.nets import composite

    x = np.linspace(-1.0, 2.0, 64)
    layout, _, _ = composite.build_layout(shape, x, np.sin(3 * x), [(-1.0, 2.0)], depth, thm31=True)
    model = _layout_net(layout, _random_theta(layout, seed))
    _assert_matches_exact_up_to_slivers(model, -1.0, 2.0, count_regions(model, -1.0, 2.0))


@settings(max_examples=10, deadline=None)
@given(st.sampled_from(["ridge", "radial"]), st.integers(1, 3), st.integers(0, 2**16))
def test_composite_2d_layouts_along_a_segment_agree_with_exact_reference(shape, depth, seed):
    """Ridge sums and radial compositions, counted along a segment: positions in t against the
    exact count of the net restricted to the segment."""
    from relu_regions.nets import composite

    g = np.random.default_rng(seed)
    x = g.uniform(-1, 1, (60, 2))
    y = x[:, 0] ** 2 + 0.5 * x[:, 1] ** 2 + 0.3 * x[:, 0] * x[:, 1] + 0.1 * g.standard_normal(60)
    layout, _, _ = composite.build_layout(shape, x, y, [(-1.0, 1.0), (-1.0, 1.0)], depth,
                                          thm31=True)
    model = _layout_net(layout, _random_theta(layout, seed))
    x0, x1 = torch.tensor([-1.0, -0.8], dtype=torch.float64), torch.tensor([1.0, 0.9],
                                                                          dtype=torch.float64)
    _assert_matches_exact_up_to_slivers(_restricted(model, x0, x1), 0.0, 1.0,
                                        count_regions_segment(model, x0, x1))


def _restricted(model, x0, x1):
    """The 1D net t -> model(x0 + t (x1 - x0))."""
    from copy import deepcopy

    restricted = deepcopy(model)
    first = model[0]
    new = nn.Linear(1, first.out_features, dtype=torch.float64)
    with torch.no_grad():
        new.weight.copy_(first.weight @ (x1 - x0).unsqueeze(1))
        new.bias.copy_(first.weight @ x0 + first.bias)
    restricted[0] = new
    return restricted


@settings(max_examples=40, deadline=None)
@given(random_mlps(), st.booleans())
def test_small_nets_count_in_one_compiled_call_with_the_layer_by_layer_result(case, segment):
    """A net whose layers stay within CHUNK points is counted by _count_small alone (no Python
    per layer: _relu_layer is never reached), with exactly the general path's arrays."""
    model, lo, hi, _ = case
    n_in = model[0].in_features

    def count():
        if segment:
            return count_regions_segment(model, [lo] * n_in, [hi] * n_in)
        return count_regions(model, lo, hi)

    def no_layer_loop(*args):
        raise AssertionError("a small net reached the layer-by-layer path")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(regions, "_relu_layer", no_layer_loop)
        fast = count()
    with pytest.MonkeyPatch.context() as mp:  # the general path: _count_small declines
        small = regions._count_small
        mp.setattr(regions, "_count_small", lambda packed, *a: (0, 0, 0, 0, 0, packed))
        general = count()
        mp.setattr(regions, "_count_small", small)
    assert fast.to_dict() == general.to_dict()
    for name in ("breakpoints", "knots", "slopes"):
        assert np.array_equal(getattr(fast, name), getattr(general, name))


def test_a_non_finite_weight_is_refused_by_the_one_call_path_too():
    for bad in (np.nan, np.inf, -np.inf):
        layers = [(np.array([[1.0], [2.0]]), np.array([0.0, bad])), (np.ones((1, 2)), np.zeros(1))]
        with pytest.raises(InputError, match="non-finite"):
            count_regions(layers, 0.0, 1.0)
        with pytest.raises(InputError, match="non-finite"):
            relu_layers(layers)
