"""Activation regions of max-pooling models: cells of constant ReLU signs and window argmaxes,
checked against an explicit ReLU form written here, against the keys a fine grid sees and
against torch's own argmax (max_pool's return_indices)."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional

from relu_regions.analysis.plane import count_regions_2d, count_regions_plane
from relu_regions.analysis.regions import count_regions, count_regions_segment
from relu_regions.analysis.sampling import sample_regions, sample_regions_segment
from relu_regions.plots import plot_region_map, region_edges, subplots


def max_net(seed, hidden=5, length=8, kernel=4, stride=2, padding=0, inputs=2):
    """inputs -> hidden -> ReLU -> length -> MaxPool1d -> ReLU -> 1; the pooled values are
    affine in the hidden layer, so windows never tie."""
    torch.manual_seed(seed)
    pool = nn.MaxPool1d(kernel, stride, padding)
    n_out = (length + 2 * padding - kernel) // stride + 1
    return nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, length),
                         nn.Unflatten(1, (1, length)), pool, nn.Flatten(), nn.ReLU(),
                         nn.Linear(n_out, 1)).double()


def keys(model, x):
    """(signs of the first layer, each window's argmax, signs after the pooling) at rows x, from
    torch's max_pool1d with return_indices: written without the lowering."""
    pool = model[4]
    with torch.no_grad():
        z = model[0](torch.as_tensor(x))
        y = model[2](torch.relu(z))[:, None]
        pooled, index = functional.max_pool1d(y, pool.kernel_size, pool.stride, pool.padding,
                                              return_indices=True)
    return np.concatenate([(z > 0).numpy(), index[:, 0].numpy(), (pooled[:, 0] > 0).numpy()],
                          axis=1)


class Explicit(nn.Module):
    """max_net(seed, kernel=4, stride=4) written as b + relu(a - b) with nn.Linear layers: round
    one compares y0:y1, y2:y3, ..., round two the winners of (y0, y1):(y2, y3), ..."""

    def __init__(self, model):
        super().__init__()
        w, b = model[2].weight.detach(), model[2].bias.detach()
        self.first, self.out = model[0], model[7]
        self.diff, self.keep = nn.Linear(5, 4).double(), nn.Linear(5, 4).double()
        with torch.no_grad():
            self.diff.weight.copy_(w[0::2] - w[1::2])
            self.diff.bias.copy_(b[0::2] - b[1::2])
            self.keep.weight.copy_(w[1::2])
            self.keep.bias.copy_(b[1::2])

    def forward(self, x):
        h = torch.relu(self.first(x))
        m = torch.relu(self.diff(h)) + self.keep(h)  # max(y0, y1), max(y2, y3), ...
        p = torch.relu(m[:, 0::2] - m[:, 1::2]) + m[:, 1::2]
        return self.out(torch.relu(p))


def test_max_pooling_equals_its_explicit_relu_form_piece_for_piece():
    model = max_net(2, kernel=4, stride=4)
    explicit = Explicit(model)
    x = torch.randn(100, 2, dtype=torch.float64)
    np.testing.assert_allclose(explicit(x).detach(), model(x).detach(), rtol=0, atol=1e-14)
    x0, x1 = [-3.0, -2.0], [3.0, 2.5]
    ours, theirs = count_regions_segment(model, x0, x1), count_regions_segment(explicit, x0, x1)
    assert ours.linear_pieces == theirs.linear_pieces > 3
    np.testing.assert_allclose(ours.knots, theirs.knots, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours.slopes, theirs.slopes, rtol=1e-10, atol=1e-12)
    # the explicit form splits where two losers swap; ours keeps those points out
    assert ours.activation_regions < theirs.activation_regions
    assert np.isin(ours.breakpoints, theirs.breakpoints).all()
    box = (-3.0, 3.0, -3.0, 3.0)
    ours, theirs = count_regions_2d(model, box), count_regions_2d(explicit, box)
    assert ours.linear_pieces == theirs.linear_pieces and ours.resolved and theirs.resolved
    assert ours.cells == theirs.cells == theirs.activation_regions > ours.activation_regions
    np.testing.assert_allclose(np.sort(ours.areas), np.sort(theirs.areas), rtol=1e-9)
    # a region is inside one piece: its cells share their piece
    for region in range(ours.activation_regions):
        assert len(set(ours.pieces[ours.regions == region])) == 1


def test_plane_regions_are_the_distinct_keys_a_fine_grid_sees():
    model = max_net(11)
    r = count_regions_2d(model, (-1.0, 1.0, -1.0, 1.0))
    grid = np.linspace(-1.0, 1.0, 801)
    # a convex cell of thickness 2 area / perimeter > sqrt(2) spacing holds a grid point
    assert r.resolved and r.min_cell_width > 1.5 * (grid[1] - grid[0])
    u, v = np.meshgrid(grid, grid)
    seen = keys(model, np.stack([u.ravel(), v.ravel()], axis=1))
    assert len(np.unique(seen, axis=0)) == r.activation_regions
    assert r.cells > r.activation_regions  # merging did something
    bits = r.pattern_bits()  # one key per region, different across regions
    assert len(np.unique(bits, axis=0)) == r.activation_regions
    assert all(len(np.unique(bits[r.regions == i], axis=0)) == 1
               for i in range(r.activation_regions))


def test_region_map_draws_only_the_edges_between_regions():
    model = max_net(11)
    box = (-1.0, 1.0, -1.0, 1.0)
    r = count_regions_2d(model, box)
    assert r.resolved and r.cells > r.activation_regions
    every = region_edges(replace(r, regions=np.arange(r.cells)))  # as if nothing merged
    drawn = region_edges(r)
    assert len(every) == r.edges > len(drawn)
    kept = {s.tobytes() for s in drawn}
    assert kept < {s.tobytes() for s in every}
    dropped = np.array([s for s in every if s.tobytes() not in kept])

    def sides(segs):
        """The region keys just off both sides of each segment's midpoint."""
        mid, d = segs.mean(axis=1), segs[:, 1] - segs[:, 0]
        normal = np.stack([-d[:, 1], d[:, 0]], axis=1) / np.hypot(d[:, 0], d[:, 1])[:, None]
        return keys(model, mid + 1e-7 * normal), keys(model, mid - 1e-7 * normal)

    border = np.zeros(len(drawn), dtype=bool)
    for axis, bound in ((0, -1.0), (0, 1.0), (1, -1.0), (1, 1.0)):
        border |= (drawn[:, :, axis] == bound).all(axis=1)
    assert 0 < border.sum() < len(drawn)
    left, right = sides(drawn[~border])
    assert np.any(left != right, axis=1).all()  # each drawn inner edge separates two regions
    left, right = sides(dropped)
    assert (left == right).all()  # each left-out edge lies inside one region
    fig, ax = subplots()
    plot_region_map(r, None, ax=ax)
    assert [len(c.get_segments()) for c in ax.collections[1:]] == [len(drawn)]
    fig, ax = subplots()
    plot_region_map(count_regions_2d(Explicit(max_net(3, kernel=4, stride=4)), box), None, ax=ax)
    assert len(ax.collections) == 1  # no max windows: the cells' own edges, as before


def test_line_regions_are_the_key_changes_a_fine_sampling_sees():
    model = max_net(3)
    x0, x1 = np.array([-2.0, -1.5]), np.array([2.0, 1.8])
    r = count_regions_segment(model, x0, x1)
    t = np.linspace(0.0, 1.0, 200_001)
    assert r.resolved and r.min_region_width > 2 * (t[1] - t[0])
    seen = keys(model, x0 + t[:, None] * (x1 - x0))
    assert 1 + np.any(seen[1:] != seen[:-1], axis=1).sum() == r.activation_regions


def test_sampling_sees_the_exact_regions_on_a_grid_finer_than_every_region():
    model = max_net(3)
    x0, x1 = np.array([-2.0, -1.5]), np.array([2.0, 1.8])
    r = count_regions_segment(model, x0, x1)
    samples = 20_001
    assert r.resolved and r.min_region_width > 10 / (samples - 1)
    est = sample_regions_segment(model, x0, x1, samples=samples)
    assert (est.activation_regions, est.linear_pieces) == (r.activation_regions, r.linear_pieces)
    assert sample_regions_segment(model, x0, x1, samples=samples, chunk=7) == est
    # the unmerged sign patterns change more often: swaps of two losers are no region change
    bits = keys(model, x0 + np.linspace(0, 1, samples)[:, None] * (x1 - x0))
    signs = np.concatenate([bits[:, :5], bits[:, -3:]], axis=1)  # first layer, after the pool
    assert 1 + np.any(signs[1:] != signs[:-1], axis=1).sum() < r.activation_regions
    explicit = Explicit(max_net(3, kernel=4, stride=4))  # no max windows: every sign counts
    ours = sample_regions_segment(max_net(3, kernel=4, stride=4), x0, x1, samples=samples)
    theirs = sample_regions_segment(explicit, x0, x1, samples=samples)
    assert ours.activation_regions < theirs.activation_regions
    assert theirs.activation_regions == count_regions_segment(explicit, x0, x1).activation_regions


@st.composite
def sampled_max_nets(draw):
    """Small random 1-input max-pool nets on grids that may be coarse or fine."""
    kernel = draw(st.integers(2, 4))
    model = max_net(draw(st.integers(0, 10_000)), draw(st.integers(2, 6)), 7, kernel,
                    draw(st.integers(1, 3)), draw(st.integers(0, kernel // 2)), inputs=1)
    samples = draw(st.one_of(st.integers(3, 3000), st.integers(2, 13).map(lambda k: 2**k + 1)))
    return model, samples


@settings(max_examples=40, deadline=None)
@given(sampled_max_nets())
def test_sampling_a_max_pool_net_never_reports_more_than_exist(case):
    model, samples = case
    exact = count_regions(model, -3.0, 3.0)
    assume(exact.resolved and exact.min_region_width > 1e-9)
    est = sample_regions(model, -3.0, 3.0, samples=samples, chunk=257)  # chunk edges crossed
    assert 1 <= est.activation_regions <= exact.activation_regions
    assert 1 <= est.linear_pieces <= exact.linear_pieces


def test_max_pool_2d_on_a_conv_net_regions_follow_torchs_argmax():
    torch.manual_seed(4)
    conv, pool = nn.Conv2d(1, 2, 3, padding=1), nn.MaxPool2d(2)
    model = nn.Sequential(conv, nn.ReLU(), pool, nn.Flatten(), nn.Linear(18, 3)).double().eval()
    g = np.random.default_rng(0)
    a, b, c = (g.uniform(size=(1, 6, 6)) for _ in range(3))
    r = count_regions_segment(model, a, b)
    t = np.linspace(0.0, 1.0, 200_001)
    assert r.resolved and r.min_region_width > 2 * (t[1] - t[0]) and r.outputs == 3
    x = torch.as_tensor(a + t[:, None, None, None] * (b - a))
    with torch.no_grad():
        z = conv(x)
        _, index = functional.max_pool2d(torch.relu(z), 2, return_indices=True)
    seen = np.concatenate([(z > 0).reshape(len(t), -1).numpy(),
                           index.reshape(len(t), -1).numpy()], axis=1)
    # windows of ReLU outputs tie at 0; any fixed tie rule gives the same cells as the signs
    assert 1 + np.any(seen[1:] != seen[:-1], axis=1).sum() == r.activation_regions
    plane = count_regions_plane(model, a, b, c)
    assert plane.resolved and plane.outputs == 3
    assert plane.activation_regions < plane.cells and plane.decision_length > 0


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), hidden=st.integers(2, 6), kernel=st.integers(2, 4),
       stride=st.integers(1, 3), padding=st.integers(0, 1))
def test_random_max_pool_nets_regions_are_distinct_keys(seed, hidden, kernel, stride, padding):
    padding = min(padding, kernel // 2)
    model = max_net(seed, hidden, 7, kernel, stride, padding)
    x0, x1 = np.array([-2.0, 1.0]), np.array([2.5, -1.5])
    r = count_regions_segment(model, x0, x1)
    edges = np.concatenate([[0.0], r.breakpoints, [1.0]])
    mid = keys(model, x0 + (0.5 * (edges[:-1] + edges[1:]))[:, None] * (x1 - x0))
    assert np.any(mid[1:] != mid[:-1], axis=1).all()  # each kept breakpoint changes the key
    wide = np.diff(edges) > 1e-6
    for frac in (0.1, 0.9):  # and none is missed inside a region
        inner = keys(model, x0 + (edges[:-1] + frac * np.diff(edges))[:, None] * (x1 - x0))
        assert (inner[wide] == mid[wide]).all()
    p = count_regions_2d(model, (-2.0, 2.0, -2.0, 2.0))
    centre = np.add.reduceat(p.polygons, p.offsets[:-1], axis=0) / np.diff(p.offsets)[:, None]
    cell_keys = keys(model, centre)
    ok = p.areas > 1e-10
    for region in np.unique(p.regions[ok]):
        assert len(np.unique(cell_keys[ok & (p.regions == region)], axis=0)) == 1
    assert len(np.unique(cell_keys[ok], axis=0)) == len(np.unique(p.regions[ok]))


def test_a_tiled_count_of_a_max_pool_model_is_refused_with_the_fix():
    from relu_regions import InputError

    model = max_net(0)
    with pytest.raises(InputError, match="counted untiled: drop tiles="):
        count_regions_2d(model, (-1, 1, -1, 1), tiles=(2, 2))
