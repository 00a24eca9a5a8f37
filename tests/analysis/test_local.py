"""Local complexity, exact and sampled: closed forms, the plane counter, sampled <= exact."""

import itertools
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from random_nets import random_net
from torch import nn

import relu_regions
from relu_regions import InputError
from relu_regions.analysis import local
from relu_regions.analysis.local import (
    LocalComplexity,
    local_complexity,
    meets_disc,
    sampled_local_complexity,
)
from relu_regions.analysis.plane import count_regions_plane
from relu_regions.nets.reader import LoweredNet, lower


def lines_net(w, b):
    """One hidden layer with 2 inputs: hidden unit i's zero set is the line w_i . x + b_i = 0."""
    net = nn.Sequential(nn.Linear(2, len(b), dtype=torch.float64), nn.ReLU(),
                        nn.Linear(len(b), 1, dtype=torch.float64))
    with torch.no_grad():
        net[0].weight.copy_(torch.as_tensor(w))
        net[0].bias.copy_(torch.as_tensor(b))
    return net


def closed_form(w, b, x, r, margin=1e-6):
    """(regions, neurons) of an arrangement of lines on the open disc |y - x| < r, or None when a
    line or a crossing lies within ``margin`` of the rim: neurons are the lines within distance r
    of x; regions 1 + those lines + the pairwise crossings inside (lines in general position)."""
    dist = np.abs(w @ x + b) / np.linalg.norm(w, axis=1)
    if np.any(np.abs(dist - r) < margin):
        return None
    crossings = 0
    for i, j in itertools.combinations(range(len(b)), 2):
        p = np.linalg.solve(w[[i, j]], -b[[i, j]])
        d = np.linalg.norm(p - x)
        if abs(d - r) < margin:
            return None
        crossings += d < r
    lines = int((dist < r).sum())
    return 1 + lines + crossings, lines


def cross_polytope(w, b, x, r):
    """(distinct patterns, neurons with strictly opposite signs) at x +- r e1, x +- r e2."""
    s = np.array([x + [r, 0], x + [0, r], x - [r, 0], x - [0, r]])
    z = s @ w.T + b
    patterns = {tuple(row) for row in (z > 0)}
    return len(patterns), int(((z > 0).any(0) & (z < 0).any(0)).sum())


# ---------------------------------------------------------------------------------------------
# Closed forms

@pytest.mark.parametrize("seed", range(6))
def test_one_hidden_layer_closed_form(seed):
    rng = np.random.default_rng(seed)
    n_lines, r = 12, 0.7
    w = rng.standard_normal((n_lines, 2))
    pts = rng.uniform(-0.5, 0.5, (4, 2))
    # lines through points spread around the data, so that some meet each disc and some do not
    b = -(w * rng.uniform(-1.2, 1.2, (n_lines, 2))).sum(1)
    want = [closed_form(w, b, x, r) for x in pts]
    assert all(v is not None for v in want), "a line grazes a rim: pick another seed"
    net = lines_net(w, b)
    exact = local_complexity(net, pts, r)
    sampled = sampled_local_complexity(net, pts, r)
    assert exact.activation_regions[:, 0].tolist() == [v[0] for v in want]
    assert exact.neurons[:, 0].tolist() == [v[1] for v in want]
    assert exact.neurons_per_layer[:, 0, 0].tolist() == [v[1] for v in want]
    assert max(v[1] for v in want) >= 3 and min(v[1] for v in want) < n_lines
    assert sampled.activation_regions[:, 0].tolist() == [cross_polytope(w, b, x, r)[0]
                                                         for x in pts]
    assert sampled.neurons[:, 0].tolist() == [cross_polytope(w, b, x, r)[1] for x in pts]
    np.testing.assert_array_equal(exact.planes, np.broadcast_to(np.eye(2), (4, 1, 2, 2)))


def test_pass_through_units_are_not_neurons():
    """A slope-1 unit's line crosses the disc and splits nothing; the others are the lines."""
    w = np.array([[1.0, 0.3], [-0.2, 1.0], [0.7, 0.7]])
    b = np.array([0.1, -0.05, 0.02])  # all three lines pass within 0.1 of the origin
    layers = [(w, b), (np.ones((1, 3)), np.zeros(1))]
    net = LoweredNet.from_layers(layers, [np.array([0.0, 1.0, 0.0])])
    r = 0.5
    want = closed_form(w[[0, 2]], b[[0, 2]], np.zeros(2), r)
    res = local_complexity(net, [[0.0, 0.0]], r)
    assert (res.activation_regions[0, 0], res.neurons[0, 0]) == want == (4, 2)
    assert res.hidden_neurons == 2
    sampled = sampled_local_complexity(net, [[0.0, 0.0]], r)
    assert sampled.hidden_neurons == 2 and sampled.neurons[0, 0] <= 2


def test_touching_zero_is_not_switching():
    """Lines tangent to the disc at a cross-polytope vertex: zero there, one sign elsewhere."""
    r = 0.25
    w = np.array([[1.0, 0.0], [0.0, -1.0], [1.0, 1.0]])
    b = np.array([r, r, 0.0])  # u = -r and v = r touch the disc; u + v = 0 crosses it
    net = lines_net(w, b)
    for fn in (local_complexity, sampled_local_complexity):
        res = fn(net, [[0.0, 0.0]], r)
        assert res.neurons[0, 0] == 1 and res.activation_regions[0, 0] == 2


def test_equals_the_plane_counter_on_the_square():
    """Each disc's numbers from a count_regions_plane of its square, filtered here."""
    net = random_net([6, 6, 5], seed=3, n_in=4)
    pts = np.random.default_rng(1).uniform(-1, 1, (5, 4))
    r = 0.4
    res = local_complexity(net, pts, r, n_planes=2, seed=7)
    for i, j in itertools.product(range(5), range(2)):
        u, v = res.planes[i, j]
        count = count_regions_plane(net, pts[i], pts[i] + u, pts[i] + v, extent=(-r, r, -r, r))
        keep = meets_disc(count.offsets, count.polygons, r)
        bits = count.pattern_bits()[keep]
        assert res.activation_regions[i, j] == keep.sum()
        assert res.neurons[i, j] == (bits.any(0) & ~bits.all(0)).sum()
    assert res.activation_regions.max() > 3  # the discs hold something to count


def test_batches_are_counted_as_alone(monkeypatch):
    net = random_net([8, 8], seed=5, n_in=3)
    pts = np.random.default_rng(2).uniform(-1, 1, (7, 3))
    together = local_complexity(net, pts, 0.5, n_planes=3)
    monkeypatch.setattr(local, "BATCH", 1)
    alone = local_complexity(net, pts, 0.5, n_planes=3, workers=1)
    threads = local_complexity(net, pts, 0.5, n_planes=3, workers=3)
    for other in (alone, threads):
        for name in ("activation_regions", "neurons", "neurons_per_layer"):
            np.testing.assert_array_equal(getattr(together, name), getattr(other, name))
        assert together.snapped == other.snapped
    assert together.neurons.max() > 0


def test_meets_disc_geometry():
    square = np.array([[1.0, 1.0], [2.0, 1.0], [2.0, 2.0], [1.0, 2.0]])
    off = np.array([0, 4])
    assert meets_disc(off, square, 1.5)  # the corner (1, 1) at distance sqrt(2)
    assert not meets_disc(off, square, 1.4)
    assert meets_disc(off, square - 1.5, 0.1)  # holds the centre
    edge = square - [0.0, 1.5]  # the edge x = 1 passes at distance 1
    assert meets_disc(off, edge, 1.0) and not meets_disc(off, edge, 0.999)


# ---------------------------------------------------------------------------------------------
# Sampled <= exact

@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n_in=st.integers(2, 5),
       widths=st.lists(st.integers(2, 8), min_size=1, max_size=3),
       radius=st.floats(0.05, 2.0), leak=st.sampled_from([0.0, 0.1]))
def test_sampled_at_most_exact(seed, n_in, widths, radius, leak):
    net = random_net(widths, seed, n_in=n_in, leak=leak)
    pts = np.random.default_rng(seed).uniform(-1, 1, (3, n_in))
    planes = {} if n_in == 2 else {"n_planes": 2, "seed": seed}  # two inputs: the input plane
    exact = local_complexity(net, pts, radius, **planes)
    sampled = sampled_local_complexity(net, pts, radius, **planes)
    np.testing.assert_array_equal(sampled.planes, exact.planes)
    assert (sampled.neurons <= exact.neurons).all()
    assert (sampled.neurons_per_layer <= exact.neurons_per_layer).all()
    assert (sampled.activation_regions <= exact.activation_regions).all()
    assert (exact.activation_regions >= 1).all() and (sampled.activation_regions >= 1).all()
    assert (exact.neurons <= exact.hidden_neurons).all()


# ---------------------------------------------------------------------------------------------
# Planes, seeds, shapes

def test_planes_seeded_and_orthonormal():
    net = random_net([5], seed=0, n_in=6)
    pts = np.random.default_rng(0).uniform(-1, 1, (4, 6))
    a = local_complexity(net, pts, 0.3, n_planes=3, seed=11)
    b = local_complexity(net, pts, 0.3, n_planes=3, seed=11)
    c = local_complexity(net, pts, 0.3, n_planes=3, seed=12)
    first = local_complexity(net, pts[:2], 0.3, n_planes=3, seed=11)
    assert a.neurons.shape == a.activation_regions.shape == (4, 3)
    assert a.planes.shape == (4, 3, 2, 6) and a.neurons_per_layer.shape == (4, 3, 1)
    np.testing.assert_array_equal(a.planes, b.planes)
    np.testing.assert_array_equal(a.neurons, b.neurons)
    np.testing.assert_array_equal(first.planes, a.planes[:2])
    np.testing.assert_array_equal(first.neurons, a.neurons[:2])
    assert not np.allclose(a.planes, c.planes)
    gram = np.einsum("pqin,pqjn->pqij", a.planes, a.planes)
    np.testing.assert_allclose(gram, np.broadcast_to(np.eye(2), gram.shape), atol=1e-15)


def test_full_dimensional_cross_polytope():
    net = random_net([8, 8], seed=2, n_in=6)
    pts = np.random.default_rng(3).uniform(-1, 1, (5, 6))
    res = sampled_local_complexity(net, pts, 0.5, n_planes=2, seed=4, dims=6)
    again = sampled_local_complexity(net, pts, 0.5, n_planes=2, seed=4, dims=6)
    flat = sampled_local_complexity(net, pts, 0.5, n_planes=2, seed=4)
    assert res.samples == 12 and flat.samples == 4
    np.testing.assert_array_equal(res.neurons, again.neurons)
    # the first two directions are the plane's: the 6-direction polytope holds the 2D one
    assert (res.neurons >= flat.neurons).all() and (res.neurons > flat.neurons).any()
    directions = local._directions(res.planes, 6, 4)
    gram = np.einsum("pqin,pqjn->pqij", directions, directions)
    np.testing.assert_allclose(gram, np.broadcast_to(np.eye(6), gram.shape), atol=1e-14)


def test_conv_shaped_points():
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(32, 3)).double()
    imgs = np.random.default_rng(0).uniform(0, 1, (3, 1, 4, 4))
    flat = [(w, b) for w, b in lower(conv, (1, 4, 4)).layers]
    for fn in (local_complexity, sampled_local_complexity):
        a = fn(conv, imgs, 0.2, n_planes=2, seed=1)
        b = fn(flat, imgs.reshape(3, 16), 0.2, n_planes=2, seed=1)
        np.testing.assert_array_equal(a.neurons, b.neurons)
        np.testing.assert_array_equal(a.activation_regions, b.activation_regions)
        assert a.planes.shape == (3, 2, 2, 16) and a.hidden_neurons == 32
    assert local_complexity(conv, imgs, 0.2, n_planes=2, seed=1).neurons.max() > 0


def test_outputs_do_not_matter():
    """k outputs: the same hidden neurons, the same numbers as one output."""
    many = random_net([6, 6], seed=9, n_in=3, outputs=4)
    one = nn.Sequential(*list(many)[:-1], nn.Linear(6, 1, dtype=torch.float64))
    pts = np.random.default_rng(4).uniform(-1, 1, (4, 3))
    for fn in (local_complexity, sampled_local_complexity):
        a, b = fn(many, pts, 0.6, n_planes=2), fn(one, pts, 0.6, n_planes=2)
        np.testing.assert_array_equal(a.neurons, b.neurons)
        np.testing.assert_array_equal(a.activation_regions, b.activation_regions)


def test_one_point_and_no_hidden_layer():
    net = random_net([4], seed=1, n_in=3)
    x = np.array([0.1, -0.2, 0.3])
    one = local_complexity(net, x, 0.5, n_planes=2)
    assert one.neurons.shape == (1, 2)
    np.testing.assert_array_equal(one.neurons, local_complexity(net, [x], 0.5, n_planes=2).neurons)
    tensor = torch.tensor(x[None], requires_grad=True)
    np.testing.assert_array_equal(one.neurons,
                                  local_complexity(net, tensor, 0.5, n_planes=2).neurons)
    linear = nn.Linear(3, 2, dtype=torch.float64)
    for fn in (local_complexity, sampled_local_complexity):
        res = fn(linear, [x, -x], 0.5)
        assert res.activation_regions.tolist() == [[1], [1]] and res.neurons.sum() == 0
        assert res.neurons_per_layer.shape == (2, 1, 0) and res.hidden_neurons == 0


def test_to_dict_and_export():
    net = random_net([6], seed=0, n_in=3)
    pts = np.random.default_rng(0).uniform(-1, 1, (3, 3))
    res = relu_regions.local_complexity(net, pts, 0.5, n_planes=2)
    assert isinstance(res, LocalComplexity)
    assert relu_regions.sampled_local_complexity is sampled_local_complexity
    d = json.loads(json.dumps(res.to_dict()))
    assert d["method"] == "exact" and d["points"] == 3 and d["n_planes"] == 2
    assert d["mean_neurons"] == res.neurons.mean() == res.mean_neurons
    assert d["mean_activation_regions"] == res.activation_regions.mean()
    assert d["max_neurons"] == res.neurons.max() and "neurons" not in d
    full = json.loads(json.dumps(res.to_dict(arrays=True)))
    assert np.array_equal(full["neurons"], res.neurons)
    assert np.array_equal(full["activation_regions"], res.activation_regions)
    assert np.array_equal(full["planes"], res.planes)
    d = sampled_local_complexity(net, pts, 0.5).to_dict()
    assert d["method"] == "sampled" and d["samples"] == 4


# ---------------------------------------------------------------------------------------------
# Bad input

@pytest.mark.parametrize("call, words", [
    (lambda n2, n3: local_complexity(n2, [[0, 0]], 0.0), "radius"),
    (lambda n2, n3: local_complexity(n2, [[0, 0]], -1.0), "radius"),
    (lambda n2, n3: local_complexity(n2, [[0, 0]], float("nan")), "radius"),
    (lambda n2, n3: sampled_local_complexity(n2, [[0, 0]], "0.1"), "radius"),
    (lambda n2, n3: local_complexity(n2, [[0, 0, 0]], 0.1), "points"),
    (lambda n2, n3: local_complexity(n2, np.zeros((0, 2)), 0.1), "points"),
    (lambda n2, n3: local_complexity(n2, [[0, np.inf]], 0.1), "finite"),
    (lambda n2, n3: local_complexity(n2, [["a", "b"]], 0.1), "points"),
    (lambda n2, n3: local_complexity(n3, [[0, 0, 0]], 0.1, n_planes=0), "n_planes"),
    (lambda n2, n3: local_complexity(n3, [[0, 0, 0]], 0.1, seed=-1), "seed"),
    (lambda n2, n3: local_complexity(n3, [[0, 0, 0]], 0.1, workers=0), "workers"),
    (lambda n2, n3: local_complexity(n2, [[0, 0]], 0.1, n_planes=2), "n_planes must be 1"),
    (lambda n2, n3: sampled_local_complexity(n2, [[0, 0]], 0.1, seed=3), "seed must be 0"),
    (lambda n2, n3: sampled_local_complexity(n3, [[0, 0, 0]], 0.1, dims=4), "dims"),
    (lambda n2, n3: sampled_local_complexity(n3, [[0, 0, 0]], 0.1, dims=1), "dims"),
    (lambda n2, n3: local_complexity(nn.Linear(1, 1), [[0.0]], 0.1), "at least 2 inputs"),
    (lambda n2, n3: local_complexity(nn.Sequential(nn.Linear(3, 4), nn.Unflatten(1, (1, 4)),
                                                   nn.MaxPool1d(2), nn.Flatten()),
                                     [[0, 0, 0]], 0.1), "max-pooling"),
])
def test_bad_input_one_line(call, words):
    n2, n3 = random_net([3], 0, n_in=2), random_net([3], 0, n_in=3)
    with pytest.raises(InputError) as err:
        call(n2, n3)
    assert words in str(err.value) and "\n" not in str(err.value)
