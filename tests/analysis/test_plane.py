"""The plane counter against an exact rational reference, known answers and the model itself."""

import numpy as np
import pytest
import torch
from exact_plane import exact_plane
from hypothesis import given, settings
from hypothesis import strategies as st
from random_nets import random_net
from torch import nn

from relu_regions import InputError
from relu_regions.analysis.plane import count_regions_2d, count_regions_plane
from relu_regions.analysis.regions import count_regions_segment
from relu_regions.gmp import from_gmp, to_gmp
from relu_regions.nets.blockdiag import BlockDiagonalLinear
from relu_regions.nets.composite import side_by_side
from relu_regions.nets.construction import Construction
from relu_regions.nets.reader import layer_stack


def construction_layers(depth, seed, directions, intervals=None):
    """Constructions with random peaks in [0.3, 0.7], side by side along ``directions``."""
    g = torch.Generator().manual_seed(seed)
    nets = []
    for k in range(len(directions)):
        peaks = 0.3 + 0.4 * torch.rand(depth, generator=g, dtype=torch.float64)
        interval = intervals[k] if intervals else (0.0, 1.0)
        c = Construction(depth, peaks=peaks, thm31=False, interval=interval)
        nets.append([(w.detach().unsqueeze(0), b.detach().unsqueeze(0)) for w, b in c.weights()])
    dirs = [torch.tensor(d, dtype=torch.float64) for d in directions]
    return [(w[0], b[0]) for w, b in side_by_side(nets, dirs)]


def model_at(model, pts):
    with torch.no_grad():
        return model(torch.as_tensor(pts, dtype=torch.float64)).reshape(-1).numpy()


def centroids(r):
    idx = np.repeat(np.arange(r.activation_regions), np.diff(r.offsets))
    n = np.diff(r.offsets)[:, None]
    return np.stack([np.bincount(idx, r.polygons[:, k]) for k in range(2)], 1) / n


# ---------------------------------------------------------------------------------------------
# Against the exact reference

@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6), width=st.integers(3, 5), depth=st.integers(2, 3),
       leak=st.sampled_from([0.0, 0.0, 0.1]))
def test_matches_exact_rational_reference(seed, width, depth, leak):
    net = random_net([width] * depth, seed, leak=leak)
    box = (-1.0, 1.0, -1.0, 1.0)
    layers, leaks = layer_stack(net)
    regions, pieces, vertices, cells = exact_plane(layers, box, leaks)
    r = count_regions_2d(net, box)
    assert (r.activation_regions, r.linear_pieces, r.vertices) == (regions, pieces, vertices)
    assert r.resolved and r.unmatched_edges == 0
    assert r.edges == r.vertices + r.activation_regions - 1
    # The same cells: exact areas, sorted, agree to rounding.
    exact_areas = sorted(float(sum(p[0] * q[1] - q[0] * p[1]
                                   for p, q in zip(poly, poly[1:] + poly[:1], strict=True))) / 2
                         for poly, _, _ in cells)
    assert np.allclose(np.sort(r.areas), exact_areas, rtol=1e-9, atol=1e-14)


def test_cells_carry_the_models_gradient_value_and_pattern():
    """At each cell's centroid the model's gradient (autograd) and activation pattern are the
    cell's; areas tile the box."""
    net = random_net([12, 12, 12], seed=3)
    r = count_regions_2d(net, (-2.0, 1.0, -1.0, 1.5))
    assert r.activation_regions > 100
    assert np.isclose(r.areas.sum(), 3.0 * 2.5, rtol=1e-12)
    assert (r.areas > 0).all()
    c = torch.tensor(centroids(r), requires_grad=True)
    y = net(c).sum()
    (grad,) = torch.autograd.grad(y, c)
    scale = np.abs(r.gradients).max()
    assert np.abs(grad.numpy() - r.gradients).max() <= 1e-12 * scale
    # Values: the output at the vertex mean (= centroid of the vertices, where the map is affine).
    assert np.allclose(model_at(net, centroids(r)), r.values, rtol=1e-12, atol=1e-12)
    # Patterns at the centroids.
    h, bits = c.detach(), []
    for m in net:
        h = m(h)
        if isinstance(m, nn.Linear) and m is not net[-1]:
            bits.append((h > 0).numpy())
    assert np.array_equal(np.concatenate(bits, 1), r.pattern_bits())


def test_never_fewer_regions_than_patterns_on_a_grid():
    net = random_net([10, 10, 10], seed=11)
    r = count_regions_2d(net, (-1.0, 1.0, -1.0, 1.0))
    g = np.linspace(-1, 1, 402)[1:-1]
    pts = torch.tensor(np.stack(np.meshgrid(g, g), -1).reshape(-1, 2))
    h, bits = pts, []
    for m in net:
        h = m(h)
        if isinstance(m, nn.Linear) and m is not net[-1]:
            bits.append((h > 0).numpy())
    patterns = {row.tobytes() for row in np.packbits(np.concatenate(bits, 1), axis=1)}
    assert r.activation_regions >= len(patterns)
    assert len(patterns) > 0.8 * r.activation_regions  # the grid sees most cells of this net


# ---------------------------------------------------------------------------------------------
# Known answers

@pytest.mark.parametrize("depth", [1, 3, 6])
def test_separable_construction_is_a_grid(depth):
    """F(x) + G(y): 2^d x 2^d cells, each its own piece; (2^d + 1)^2 vertices."""
    layers = construction_layers(depth, seed=depth, directions=[(1.0, 0.0), (0.0, 1.0)])
    r = count_regions_2d(layers, (0.0, 1.0, 0.0, 1.0))
    assert r.activation_regions == 4 ** depth
    assert r.linear_pieces == 4 ** depth
    assert r.vertices == (2 ** depth + 1) ** 2
    assert r.resolved


@pytest.mark.parametrize("depth", [2, 5])
def test_one_construction_along_a_direction_makes_strips(depth):
    p = (0.6, 0.8)  # p . x runs over [0, 1.4] on the unit box
    layers = construction_layers(depth, seed=7, directions=[p], intervals=[(0.0, 1.4)])
    r = count_regions_2d(layers, (0.0, 1.0, 0.0, 1.0))
    assert r.activation_regions == 2 ** depth
    assert r.linear_pieces == 2 ** depth
    # Every strip boundary is a segment of the line p . x = knot: one gradient direction, p.
    g = r.gradients / np.linalg.norm(r.gradients, axis=1, keepdims=True)
    assert np.allclose(np.abs(g @ np.array(p)), 1.0, atol=1e-12)


def test_affine_net_is_one_region():
    net = nn.Sequential(nn.Linear(2, 1, dtype=torch.float64))
    r = count_regions_2d(net)
    assert (r.activation_regions, r.linear_pieces, r.vertices, r.edges) == (1, 1, 4, 4)
    # A dead hidden layer (all units off) is affine too.
    dead = random_net([4, 4], seed=0)
    with torch.no_grad():
        dead[0].bias.fill_(-100.0)
    r = count_regions_2d(dead)
    assert (r.activation_regions, r.linear_pieces) == (1, 1)


def test_bias_free_lines_meet_in_one_vertex():
    """Lines through the origin: 2 k sectors, every line through one vertex (no slivers)."""
    k = 7
    angles = np.pi * (np.arange(k) + 0.37) / k
    w = np.stack([np.cos(angles), np.sin(angles)], 1)
    layers = [(w, np.zeros(k)), (np.ones((1, k)), np.zeros(1))]
    r = count_regions_2d(layers, (-1.0, 1.0, -1.0, 1.0))
    assert r.activation_regions == 2 * k
    assert r.vertices == 1 + 2 * k + 4  # origin, line ends on the boundary, corners
    assert r.resolved


# ---------------------------------------------------------------------------------------------
# Planes and model kinds

def test_plane_matches_the_2d_count_and_the_segment_count():
    net = random_net([8, 8], seed=5, n_in=2)
    p0, p1, p2 = np.array([0.0, 0.0]), np.array([1.0, 0.0]), np.array([0.0, 1.0])
    a = count_regions_2d(net, (-0.5, 1.5, -0.5, 1.5))
    b = count_regions_plane(net, p0, p1, p2, extent=(-0.5, 1.5, -0.5, 1.5))
    assert (a.activation_regions, a.linear_pieces, a.vertices) == (
        b.activation_regions, b.linear_pieces, b.vertices)
    # In 5D, the plane's region count along its u axis is the segment count.
    net5 = random_net([8, 8, 8], seed=9, n_in=5)
    g = np.random.default_rng(0)
    q0, q2 = g.normal(size=(2, 5))
    q1 = -q0  # through the origin, where the biases put the switches
    r = count_regions_plane(net5, q0, q1, q2, extent=(0.0, np.linalg.norm(q1 - q0), 0.0, 1.0))
    seg = count_regions_segment(net5, q0, q1)
    on_axis = sum(  # cells with an edge on v = 0, the segment q0 -> q1
        bool(np.any((ring[:, 1] == 0.0) & (np.roll(ring[:, 1], -1) == 0.0)))
        for ring in np.split(r.polygons, r.offsets[1:-1]))
    assert seg.activation_regions == on_axis > 1
    assert np.allclose(r.plane["points"][1], [np.linalg.norm(q1 - q0), 0.0])
    # The cells' gradients are the model's directional derivatives along the plane's basis.
    c = centroids(r)
    x = torch.tensor(r.plane["origin"] + c @ r.plane["basis"], requires_grad=True)
    (grad,) = torch.autograd.grad(net5(x).sum(), x)
    assert np.allclose(grad.numpy() @ r.plane["basis"].T, r.gradients, rtol=1e-10, atol=1e-12)


def test_model_kinds_count_as_their_plain_equivalent():
    net = random_net([8, 8], seed=2)
    base = count_regions_2d(net)
    gmp = count_regions_2d(to_gmp(net))
    assert (gmp.activation_regions, gmp.linear_pieces) == (base.activation_regions,
                                                          base.linear_pieces)
    bd = nn.Sequential(nn.Linear(2, 8, dtype=torch.float64), nn.ReLU(),
                       BlockDiagonalLinear(8, 8, block=4, dtype=torch.float64), nn.ReLU(),
                       nn.Identity(), nn.Linear(8, 1, dtype=torch.float64))
    dense = nn.Sequential(bd[0], bd[1], bd[2].to_dense(), bd[3], bd[5])
    a, b = count_regions_2d(bd), count_regions_2d(dense)
    assert (a.activation_regions, a.vertices) == (b.activation_regions, b.vertices)
    assert count_regions_2d(from_gmp(to_gmp(net))).activation_regions == base.activation_regions


def test_gmp_fused_layer_with_negative_radius_is_folded():
    from relu_regions.gmp import GmPLinearReLU

    net = random_net([6, 6], seed=4)
    fused = GmPLinearReLU.from_linear(net[0])
    with torch.no_grad():
        fused.r[::2] *= -1  # flips those units' outputs
    model = nn.Sequential(fused, net[2], net[3], net[4])
    pts = np.random.default_rng(1).uniform(-1, 1, (500, 2))
    r = count_regions_2d(model)
    # Check the count through the model's own values: piecewise-affine with the cells' maps.
    c = centroids(r)
    assert np.allclose(model_at(model, c), r.values, rtol=1e-12, atol=1e-12)
    assert r.activation_regions >= 1 and pts.shape[0] == 500


def test_composite_layouts_count():
    from relu_regions.nets.composite import build_layout, initial_theta

    g = np.linspace(-1, 1, 21)
    x = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    y = (x ** 2).sum(1) ** 1.5
    for shape in ("ridge", "radial"):
        layout, _, q = build_layout(shape, x, y, [(-1.0, 1.0), (-1.0, 1.0)], depth=3,
                                    thm31=True)
        theta = initial_theta(layout, [0], x, y, q)
        raw = layout.raw(theta)
        r = count_regions_2d(raw, (-1.0, 1.0, -1.0, 1.0))
        assert r.resolved and r.activation_regions > 1
        pred = layout.predict(theta, torch.tensor(centroids(r)))[0].detach().numpy()
        assert np.allclose(pred, r.values, rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------------------------------------
# Bad input

@pytest.mark.parametrize("box", [(1, 0, 0, 1), (0, 1, 1, 1), (0, float("nan"), 0, 1),
                                 (0, float("inf"), 0, 1), (0, 1, 0), "abcd"])
def test_bad_box(box):
    with pytest.raises(InputError):
        count_regions_2d(random_net([3, 3], 0), box)


def test_bad_plane_and_models():
    net = random_net([4, 4], 0, n_in=3)
    with pytest.raises(InputError, match="collinear"):
        count_regions_plane(net, [0, 0, 0], [1, 1, 1], [2, 2, 2])
    with pytest.raises(InputError, match="same point"):
        count_regions_plane(net, [0, 0, 0], [0, 0, 0], [2, 2, 1])
    with pytest.raises(InputError, match="3"):
        count_regions_plane(net, [0, 0], [1, 0], [0, 1])
    with pytest.raises(InputError, match="3 inputs"):
        count_regions_2d(net)
    with pytest.raises(InputError, match="Tanh"):
        count_regions_2d(nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)))


def test_construction_exact_to_depth_9():
    """The issue's d = 9 check (4^9 cells), kept in one test as it takes about a second."""
    layers = construction_layers(9, seed=9, directions=[(1.0, 0.0), (0.0, 1.0)])
    r = count_regions_2d(layers, (0.0, 1.0, 0.0, 1.0))
    assert (r.activation_regions, r.linear_pieces) == (4 ** 9, 4 ** 9)
    assert r.vertices == (2 ** 9 + 1) ** 2 and r.resolved


def test_bias_free_wide_net_is_sectors_counted_on_the_boundary():
    """Without biases every zero set is a ray from the origin: the cells are sectors, one per ray,
    and the rays are the 1D counter's breakpoints around the box's boundary. Wide layers have
    nearly parallel lines, whose float intersections are ill-conditioned: they must still meet
    in the one vertex at the origin."""
    g = np.random.default_rng(0)  # two first-layer lines of this draw are 4.7e-4 rad apart
    layers, prev = [], 2
    for w in (128, 128, 1):
        layers.append((g.normal(size=(w, prev)) * np.sqrt(2 / prev), np.zeros(w)))
        prev = w
    net = nn.Sequential(*[m for w, _ in layers
                          for m in (nn.Linear(*w.shape[::-1]), nn.ReLU())][:-1])
    with torch.no_grad():
        for m, (w, _) in zip(net[::2], layers, strict=True):
            m.double().weight.copy_(torch.tensor(w))
            m.bias.zero_()
    r = count_regions_2d(net)
    corners = [(-1.0, -1.0), (1.0, -1.0), (1.0, 1.0), (-1.0, 1.0)]
    rays = sum(count_regions_segment(net, a, b).breakpoints.size
               for a, b in zip(corners, corners[1:] + corners[:1], strict=True))
    assert rays > 200
    assert r.activation_regions == rays
    assert r.vertices == rays + 1 + 4 and r.resolved


# ---------------------------------------------------------------------------------------------
# CLI

def _cli(argv, capsys):
    from relu_regions.cli import main

    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_counts_a_2d_checkpoint_on_its_domain_and_plots(tmp_path, capsys):
    import json

    from relu_regions import checkpoint

    net = random_net([8, 8], seed=1)
    ck = checkpoint.save(net, tmp_path / "m.pt", {"interval": [[-1.0, 1.0], [-2.0, 0.5]]})
    code, out, _ = _cli(["count", "--checkpoint", str(ck), "--json",
                         "--plot", str(tmp_path / "map.svg")], capsys)
    assert code == 0
    d = json.loads(out)
    r = count_regions_2d(net, (-1.0, 1.0, -2.0, 0.5))
    assert d["box"] == [-1.0, 1.0, -2.0, 0.5]
    assert (d["activation_regions"], d["linear_pieces"], d["vertices"]) == (
        r.activation_regions, r.linear_pieces, r.vertices)
    assert (tmp_path / "map.svg").read_text().lstrip().startswith("<?xml")


def test_cli_plane_through_csv_rows(tmp_path, capsys):
    import json

    from relu_regions import checkpoint

    net = random_net([8, 8], seed=2, n_in=4)
    ck = checkpoint.save(net, tmp_path / "m.pt")
    (tmp_path / "p.csv").write_text("a,b,c,d,label\n1,0,0,0,7\n0,1,0,0,3\n0,0,1,1,2\n")
    code, out, _ = _cli(["count", "--checkpoint", str(ck), "--through", "0", "1", "2",
                         "--data", str(tmp_path / "p.csv"), "--box=-1,2,-1,2", "--json"], capsys)
    assert code == 0
    r = count_regions_plane(net, [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 1], extent=(-1, 2, -1, 2))
    assert json.loads(out)["activation_regions"] == r.activation_regions


@pytest.mark.parametrize("extra", [["--box=1,0,0,1"], ["--box=0,1,0"], ["--plot", "{tmp}/m.xyz"],
                                   ["--pieces", "{tmp}/p.csv"],
                                   ["--through", "0,0", "1,1", "2,2"],
                                   ["--through", "0,0", "1,0", "0,1,2"],
                                   ["--through", "0", "1", "2"]])
def test_cli_bad_plane_input_is_one_error_line(tmp_path, capsys, extra):
    from relu_regions import checkpoint

    ck = checkpoint.save(random_net([4], seed=0), tmp_path / "m.pt")
    before = set(tmp_path.iterdir())
    code, out, err = _cli(["count", "--checkpoint", str(ck)]
                          + [e.format(tmp=tmp_path) for e in extra], capsys)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "error:" in err
    assert set(tmp_path.iterdir()) == before
