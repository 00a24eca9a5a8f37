"""The plane counter with per-unit negative slopes (pass-through units) and k outputs, against
the exact rational reference and the model itself."""

import numpy as np
import torch
from exact_plane import exact_plane
from exact_plane import pieces as exact_pieces
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from relu_regions.analysis.plane import count_regions_2d
from relu_regions.nets.reader import Affine, ReLU, layer_stack


class UnitSlopes(nn.Module):
    """A Linear (ReLU Linear)* net with a negative-side slope per unit, read by region_ops()."""

    def __init__(self, layers, leaks):
        super().__init__()
        self.layers, self.leaks = layers, leaks

    def region_ops(self):
        ops = []
        for (w, b), leak in zip(self.layers, self.leaks + [None], strict=True):
            ops.append(Affine(w, b))
            if leak is not None:
                ops.append(ReLU(np.asarray(leak, np.float64)))
        return ops

    def forward(self, x):
        h = x
        for (w, b), leak in zip(self.layers, self.leaks + [None], strict=True):
            h = h @ torch.as_tensor(w).T + torch.as_tensor(b)
            if leak is not None:
                h = torch.where(h > 0, h, torch.as_tensor(leak) * h)
        return h


def random_layers(widths, seed, n_out=1, n_in=2):
    g = np.random.default_rng(seed)
    layers, prev = [], n_in
    for w in list(widths) + [n_out]:
        layers.append((g.normal(size=(w, prev)) * np.sqrt(2 / prev), g.uniform(-0.8, 0.8, w)))
        prev = w
    return layers


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6), width=st.integers(3, 5), depth=st.integers(1, 3),
       choice=st.lists(st.sampled_from([0.0, 0.1, 1.0, -0.5]), min_size=15, max_size=15))
def test_per_unit_slopes_match_exact_reference(seed, width, depth, choice):
    layers = random_layers([width] * depth, seed)
    leaks = [np.array(choice[i * 5:i * 5 + width]) for i in range(depth)]
    net = UnitSlopes(layers, leaks)
    r = count_regions_2d(net)
    regions, pieces, vertices, cells = exact_plane(layers, (-1.0, 1.0, -1.0, 1.0), leaks)
    assert (r.activation_regions, r.linear_pieces, r.vertices) == (regions, pieces, vertices)
    assert r.resolved
    exact_areas = sorted(float(sum(p[0] * q[1] - q[0] * p[1]
                                   for p, q in zip(poly, poly[1:] + poly[:1], strict=True))) / 2
                         for poly, _, _ in cells)
    assert np.allclose(np.sort(r.areas), exact_areas, rtol=1e-9, atol=1e-14)


def test_pass_through_units_never_split_and_carry_their_value():
    """A layer of slope-1 units is affine: the net counts as the net with that layer folded into
    its neighbours, cell for cell; the carried units' pattern bits are 1."""
    layers = random_layers([6, 5, 6], seed=4)
    leaks = [np.zeros(6), np.ones(5), np.zeros(6)]
    r = count_regions_2d(UnitSlopes(layers, leaks))
    (w1, b1), (w2, b2) = layers[1:3]
    folded = [layers[0], (w2 @ w1, w2 @ b1 + b2), layers[3]]
    f = count_regions_2d(folded)
    assert (r.activation_regions, r.linear_pieces, r.vertices) == (
        f.activation_regions, f.linear_pieces, f.vertices)
    assert np.allclose(np.sort(r.areas), np.sort(f.areas), rtol=1e-12, atol=1e-15)
    bits = r.pattern_bits()
    assert bits[:, 6:11].all()
    assert r.activation_regions > 10


def test_uniform_leak_is_bit_identical_to_a_scalar_leaky_relu():
    net = nn.Sequential(nn.Linear(2, 7), nn.LeakyReLU(0.2), nn.Linear(7, 7), nn.LeakyReLU(0.2),
                        nn.Linear(7, 1)).double()
    layers, _ = layer_stack(net)
    a = count_regions_2d(net)
    b = count_regions_2d(UnitSlopes(layers, [np.full(7, 0.2), np.full(7, 0.2)]))
    assert np.array_equal(a.polygons, b.polygons) and np.array_equal(a.values, b.values)


# ---------------------------------------------------------------------------------------------
# k outputs

@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10**6), width=st.integers(3, 5), depth=st.integers(1, 2),
       k=st.integers(2, 4), kind=st.sampled_from(["dense", "shared", "blocks"]))
def test_k_outputs_pieces_match_exact_reference(seed, width, depth, k, kind):
    layers = random_layers([width] * depth, seed, n_out=k)
    w, b = layers[-1]
    if kind == "shared":  # outputs alike up to a constant: pieces are then the first output's
        layers[-1] = (np.repeat(w[:1], k, 0), b)
    elif kind == "blocks":  # output j reads units j, j + k, ...: each merges across the others
        layers[-1] = (w * (np.arange(width)[None] % k == np.arange(k)[:, None]), b)
    r = count_regions_2d(layers, per_output=True)
    regions, pieces, vertices, cells = exact_plane(layers, (-1.0, 1.0, -1.0, 1.0))
    assert (r.activation_regions, r.linear_pieces, r.vertices) == (regions, pieces, vertices)
    assert r.outputs == k and r.gradients.shape == (regions, k, 2)
    assert r.values.shape == (regions, k)
    assert list(r.pieces_per_output) == [exact_pieces(cells, j) for j in range(k)]


def test_k_outputs_cells_are_the_one_output_cells_and_carry_each_output():
    layers = random_layers([10, 10], seed=8, n_out=3)
    w, b = layers[-1]
    layers[-1] = (w * (np.arange(10)[None] % 3 == np.arange(3)[:, None]), b)
    r = count_regions_2d(layers, per_output=True)
    for j in range(3):
        one = count_regions_2d(layers[:-1] + [(layers[-1][0][j:j + 1], layers[-1][1][j:j + 1])])
        assert np.array_equal(one.polygons, r.polygons)
        assert one.linear_pieces == r.pieces_per_output[j] <= r.linear_pieces
        assert np.allclose(one.gradients, r.gradients[:, j], rtol=1e-12, atol=1e-13)
        assert np.allclose(one.values, r.values[:, j], rtol=1e-12, atol=1e-13)
    assert r.linear_pieces > max(r.pieces_per_output)


def test_one_output_keeps_its_fields():
    r = count_regions_2d(random_layers([6], seed=1))
    n = r.activation_regions
    assert r.outputs == 1 and r.gradients.shape == (n, 2) and r.values.shape == (n,)
    assert r.pieces_per_output is None and r.level == 0.0
    d = r.to_dict()
    assert d["outputs"] == 1 and d["decision_segment_count"] == len(r.decision_segments)
    assert "decision_segments" not in d
    assert len(r.to_dict(arrays=True)["decision_segments"]) == len(r.decision_segments)


def test_a_tiny_cell_far_from_the_origin_keeps_its_area():
    """The shoelace sums about the cell's first vertex: a triangle 1e-7 across at (11, 11) has
    area 5e-15, where products of coordinates near 11 would cancel it to about 0."""
    from relu_regions.analysis.plane import _shape

    h = 1e-7
    ring = np.array([[11.0, 11.0], [11.0 + h, 11.0], [11.0, 11.0 + h]])
    areas, widths = np.empty(1), np.empty(1)
    _shape(np.array([0, 3]), ring, areas, widths)
    assert abs(areas[0] - h * h / 2) <= 1e-6 * h * h
    assert widths[0] > 0.25 * h
