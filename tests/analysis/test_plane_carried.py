"""The plane counter on layers with carried values (units of slope 1: a skip connection's x):
the products that skip the zero weights of carried units and the carried-first form of a
residual block (plane._Dense) against full rows and against the exact rational reference;
output arrays that fill up; reading the model on one torch thread for threads=1."""

import dataclasses

import numpy as np
import pytest
import torch
from exact_plane import exact_plane
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from relu_regions.analysis import plane
from relu_regions.analysis.plane import count_regions_2d, count_regions_plane
from relu_regions.analysis.regions import _times
from relu_regions.nets.reader import LoweredNet, layer_stack, lower

ARRAYS = ("polygons", "offsets", "patterns", "areas", "gradients", "values", "pieces", "regions",
          "decision_segments")


class ResidualNet(nn.Module):
    """2 -> width, ReLU, ``blocks`` x (x + W2 relu(W1 x + b1)), -> ``outputs``: seeded."""

    def __init__(self, width, blocks, seed, outputs=1):
        super().__init__()
        g = torch.Generator().manual_seed(seed)

        def linear(a, b):
            lin = nn.Linear(a, b, dtype=torch.float64)
            with torch.no_grad():
                lin.weight.copy_(torch.randn(b, a, generator=g, dtype=torch.float64)
                                 * (2.0 / a) ** 0.5)
                lin.bias.copy_(torch.rand(b, generator=g, dtype=torch.float64) * 1.6 - 0.8)
            return lin

        self.stem = linear(2, width)
        self.blocks = nn.ModuleList(nn.ModuleList([linear(width, width), linear(width, width)])
                                    for _ in range(blocks))
        self.head = linear(width, outputs)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        for inner, outer in self.blocks:
            x = x + outer(torch.relu(inner(x)))
        return self.head(x)


SPARSE_ROWS = plane._dense


def full_rows(w, b, leak):
    """plane._Dense with every input's full row: the plain products."""
    d = SPARSE_ROWS(w, b, np.zeros_like(leak))
    assert (d.hi == w.shape[0]).all() and (d.ex == -1).all() and d.at is None
    return d


def spans_only(w, b, leak):
    """plane._Dense without the carried-first form."""
    return dataclasses.replace(SPARSE_ROWS(w, b, leak), at=None)


def assert_same_counts(a, b):
    for name in ARRAYS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.shape == y.shape and np.array_equal(x, y), name
    assert (a.activation_regions, a.linear_pieces, a.vertices, a.snapped) == \
        (b.activation_regions, b.linear_pieces, b.vertices, b.snapped)


def test_carried_units_make_sparse_rows():
    """A residual block's lowered layers: each carried unit is fed by one input with weight 1,
    which the products reach as ``ex`` past the block of the ReLU units' weights."""
    lowered = lower(ResidualNet(6, 2, seed=0))
    (w1, b1), (w2, b2) = lowered.layers[1:3]
    leak1, leak2 = lowered.leaks[1:3]
    assert w1.shape == (12, 6) and (leak1 == 1.0).sum() == 6
    d1, d2 = plane._dense(w1, b1, leak1), plane._dense(w2, b2, leak2)
    for d, w in ((d1, w1), (d2, w2)):  # every nonzero weight is reached
        for j in range(w.shape[1]):
            reached = set(range(d.hi[j])) | ({d.ex[j]} if d.ex[j] >= 0 else set())
            assert set(np.flatnonzero(w[:, j])) <= reached
    # [W1; I]: input 0's 1 is next to its block, the others' stand apart
    assert list(d1.hi) == [7, 6, 6, 6, 6, 6] and list(d1.ex) == [-1, 7, 8, 9, 10, 11]
    assert (d2.hi[:6] == 12).all() and (d2.ex[:6] == -1).all()  # the ReLU units: W1 W2 and W2
    assert list(d2.hi[6:]) == [7, 6, 6, 6, 6, 6]  # x: W1 and I
    assert list(d2.ex[6:]) == [-1, 7, 8, 9, 10, 11]
    # the second block's W1 (x + W2 h): carried first, A = W1 read off the identity columns
    assert d1.at is None and d2.at is not None
    assert np.array_equal(d2.at.T, w2[:6, 6:]) and np.array_equal(d2.ct.T, w2[6:])
    assert np.allclose(d2.at.T @ d2.b_c + d2.b_r, b2[:6], rtol=1e-12, atol=1e-14)
    # no carried units: full rows, whatever the zeros
    w = w1.copy()
    w[:, 3] = 0.0
    d = plane._dense(w, b1, np.zeros(12))
    assert (d.hi == 12).all() and (d.ex == -1).all() and d.at is None
    # a ReLU unit that is not a map of the carried values: no carried-first form
    w = w2.copy()
    w[0, 0] += 1e-3
    assert plane._dense(w, b2, leak2).at is None


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10**6), n_in=st.integers(1, 9), width=st.integers(2, 12),
       density=st.sampled_from([0.1, 0.4, 1.0]), zero_rows=st.booleans())
def test_sparse_products_equal_full_rows_bit_for_bit(seed, n_in, width, density, zero_rows):
    """W J and the vertices' z by the sparse rows equal the full rows' sums bit for bit, and
    W J equals the line counter's row product; on random sparse layers with carried units."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((width, n_in)) * (rng.random((width, n_in)) < density)
    leak = np.where(rng.random(width) < 0.5, 1.0, 0.0)
    for c in np.flatnonzero(leak == 1.0):  # one-hot carried rows, as the reader writes them
        w[c] = 0.0
        w[c, rng.integers(n_in)] = rng.choice([1.0, 0.5])
    b = rng.standard_normal(width) * (rng.random(width) < 0.7)
    sparse, full = plane._dense(w, b, leak), full_rows(w, b, leak)
    rows = rng.standard_normal((6, n_in)) * (rng.random((6, n_in)) < 0.6)
    if zero_rows:
        rows[:2] = 0.0
    got = plane._pair_sums(rows, sparse.wt, sparse.hi, sparse.ex)
    want = np.empty_like(got)
    for i in range(rows.shape[0]):
        _times(rows[i], full.wt, want[i])
    assert np.array_equal(got.view(np.uint64), want.view(np.uint64))
    assert np.allclose(got, rows @ w.T, rtol=1e-12, atol=1e-12)
    ring = np.concatenate([rng.standard_normal((7, 2)),
                           rng.standard_normal((7, n_in)) * (rng.random((7, n_in)) < 0.6)], 1)
    ring = np.concatenate([ring, ring[2:3]])  # a vertex in two rings; 7 distinct: odd
    args = (plane.NO_FACTOR, plane.NO_BIAS, b, sparse.w_abs_sum, leak, 2.0 ** -40)
    uid, zs, sign = plane._vertex_preactivations(ring, w, sparse.wt, sparse.hi, sparse.ex, b,
                                                 *args)
    uid_f, zs_f, sign_f = plane._vertex_preactivations(ring, w, full.wt, full.hi, full.ex, b,
                                                       *args)
    assert np.array_equal(uid, uid_f) and np.array_equal(sign, sign_f)
    assert np.array_equal(zs, zs_f)
    assert np.allclose(zs[uid, plane.Z0:], ring[:, 2:] @ w.T + b, rtol=1e-12, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10**6), r=st.integers(1, 8), n_c=st.integers(1, 8),
       m=st.integers(0, 8), density=st.sampled_from([0.3, 1.0]))
def test_carried_first_products_equal_the_composed_ones(seed, r, n_c, m, density):
    """A layer [A C; C] with C = [M I] (a residual block's): W J and the vertices' z by the
    carried-first form equal the composed products to rounding, the carried units' bit for
    bit."""
    rng = np.random.default_rng(seed)
    c = np.concatenate([rng.standard_normal((n_c, m)) * (rng.random((n_c, m)) < density),
                        np.eye(n_c)], 1)
    a = rng.standard_normal((r, n_c))
    w = np.concatenate([a @ c, c])
    b = rng.standard_normal(r + n_c)
    leak = np.concatenate([np.zeros(r), np.ones(n_c)])
    d = plane._dense(w, b, leak)
    factors = plane._factors(w, b, leak, cost=10**9)
    assert factors is not None and np.array_equal(factors[0].T, a)
    d = dataclasses.replace(d, **dict(zip(("at", "ct", "hi_c", "ex_c", "b_c", "b_r"), factors,
                                          strict=True)))
    rows = rng.standard_normal((6, m + n_c)) * (rng.random((6, m + n_c)) < 0.7)
    got = plane._pair_times(rows, d.ct, d.hi_c, d.ex_c, d.at)
    want = plane._pair_sums(rows, d.wt, d.hi, d.ex)
    scale = np.abs(rows) @ np.abs(w).T
    assert np.all(np.abs(got - want) <= 1e-12 * scale + 1e-300)
    assert np.array_equal(got[:, r:], want[:, r:])
    ring = np.concatenate([rng.standard_normal((5, 2)), rows[:5]], 1)
    args = (b, d.w_abs_sum, leak, 2.0 ** -40)
    uid, zs, _ = plane._vertex_preactivations(ring, w, d.ct, d.hi_c, d.ex_c, d.b_c, d.at,
                                              d.b_r, *args)
    uid_w, zs_w, _ = plane._vertex_preactivations(ring, w, d.wt, d.hi, d.ex, b, plane.NO_FACTOR,
                                                  plane.NO_BIAS, *args)
    assert np.array_equal(uid, uid_w) and np.array_equal(zs[:, :plane.Z0], zs_w[:, :plane.Z0])
    scale = np.abs(ring[:, 2:]) @ np.abs(w).T + np.abs(b)
    assert np.all(np.abs(zs[uid, plane.Z0:] - zs_w[uid_w, plane.Z0:]) <= 1e-12 * scale)
    assert np.array_equal(zs[:, plane.Z0 + r:], zs_w[:, plane.Z0 + r:])


@pytest.mark.parametrize("outputs", [1, 3])
def test_residual_counts_equal_full_rows(monkeypatch, outputs):
    """A residual net counted with the sparse rows and the carried-first form, with the sparse
    rows only, and with full rows: the same regions, pieces, vertices and decision boundary;
    without the carried-first form the same cells bit for bit."""
    net = ResidualNet(24, 2, seed=5, outputs=outputs)
    box = (-2.0, 2.0, -2.0, 2.0)
    fast = count_regions_2d(net, box, threads=1)
    monkeypatch.setattr(plane, "_dense", spans_only)
    sparse = count_regions_2d(net, box, threads=1)
    monkeypatch.setattr(plane, "_dense", full_rows)
    full = count_regions_2d(net, box, threads=1)
    assert fast.activation_regions > 300
    assert_same_counts(sparse, full)
    assert (fast.activation_regions, fast.linear_pieces, fast.vertices) == \
        (full.activation_regions, full.linear_pieces, full.vertices)
    assert np.allclose(fast.polygons, full.polygons, rtol=1e-9, atol=1e-12)
    assert np.allclose(fast.values, full.values, rtol=1e-9, atol=1e-12)
    assert np.isclose(fast.decision_length, full.decision_length, rtol=1e-9)


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10**6), width=st.integers(2, 4), blocks=st.integers(1, 2))
def test_residual_matches_exact_rational_reference(seed, width, blocks):
    net = ResidualNet(width, blocks, seed)
    box = (-1.5, 1.5, -1.5, 1.5)
    layers, leaks = layer_stack(net)
    forms = [plane._dense(w, b, leak) for (w, b), leak in zip(layers, leaks, strict=False)]
    assert any((leak == 1.0).any() for leak in leaks)
    assert (blocks == 2) == any(d.at is not None for d in forms)  # the second block's W1
    regions, pieces, vertices, _ = exact_plane(layers, box, leaks)
    r = count_regions_2d(net, box, threads=1)
    assert (r.activation_regions, r.linear_pieces, r.vertices) == (regions, pieces, vertices)
    assert r.resolved


def test_skip_written_densely_counts_the_same():
    """The lowered residual net with its carried values mixed by an orthogonal Q (carried rows
    Q W, b Q b; the next layer's columns times Q^T): the same function with dense carried
    rows, counted by full rows, against the one-hot rows of the original."""
    net = ResidualNet(8, 2, seed=11)
    lowered = lower(net)
    layers = [(w.copy(), b.copy()) for w, b in lowered.layers]
    rng = np.random.default_rng(0)
    mixed = 0
    for i, leak in enumerate(lowered.leaks):
        carried = leak == 1.0
        if carried.any():
            q = np.linalg.qr(rng.standard_normal((carried.sum(),) * 2))[0]
            layers[i][0][carried] = q @ layers[i][0][carried]
            layers[i][1][carried] = q @ layers[i][1][carried]
            layers[i + 1][0][:, carried] = layers[i + 1][0][:, carried] @ q.T
            d = plane._dense(layers[i][0], layers[i][1], leak)
            assert (d.ex == -1).all() and (d.hi == leak.size).all()
            mixed += 1
    assert mixed == 2
    box = (-2.0, 2.0, -2.0, 2.0)
    want = count_regions_2d(net, box, threads=1)
    got = count_regions_2d(LoweredNet.from_layers(layers, lowered.leaks), box, threads=1)
    assert want.activation_regions > 100
    assert (got.activation_regions, got.linear_pieces, got.vertices) == \
        (want.activation_regions, want.linear_pieces, want.vertices)
    assert np.allclose(np.sort(got.areas), np.sort(want.areas), rtol=1e-9, atol=1e-14)
    assert np.allclose(np.sort(got.values), np.sort(want.values), rtol=1e-9, atol=1e-12)


def test_counts_do_not_depend_on_the_output_arrays_size(monkeypatch):
    """The first layer's one cell fills the smallest output arrays: its sub-cells, split once,
    go to larger ones, so ``snapped`` (bias-free lines through one point) counts each snap
    once, as when the arrays are large enough from the start."""
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(2, 48, bias=False), nn.ReLU(), nn.Linear(48, 48, bias=False),
                        nn.ReLU(), nn.Linear(48, 2)).double()
    small = count_regions_2d(net, threads=1)
    assert small.activation_regions > 2 * plane.MIN_CELLS and small.snapped > 0
    monkeypatch.setattr(plane, "MIN_CELLS", 1 << 12)
    large = count_regions_2d(net, threads=1)
    assert_same_counts(small, large)


def test_one_thread_count_reads_on_one_torch_thread(monkeypatch):
    """threads=1: the model is read on one torch thread, and torch's setting is restored."""
    seen = []
    read = plane.lower

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return read(*args, **kwargs)

    monkeypatch.setattr(plane, "lower", spy)
    before = torch.get_num_threads()
    net = ResidualNet(4, 1, seed=2)
    count_regions_2d(net, threads=1)
    count_regions_plane(net, np.zeros(2), np.array([1.0, 0.0]), np.array([0.0, 1.0]),
                        threads=1)
    count_regions_2d(net, threads=2)
    assert seen == [1, 1, before]
    assert torch.get_num_threads() == before
