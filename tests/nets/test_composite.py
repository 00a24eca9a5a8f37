"""Sums and compositions of constructions (arXiv:2311.18022, extensions): the raw MLP equals the
derived form, a dc layout is a difference of two constructions, a composition is the composed
function."""

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from relu_regions import InputError, targets
from relu_regions.cli import main
from relu_regions.nets import composite, construction
from relu_regions.training.config import Phase
from relu_regions.training.fitting import fit
from relu_regions.training.functional import mlp_forward, shapes_of, unflatten_layers


def raw_forward(layout, theta, x):
    return mlp_forward(unflatten_layers(_flat(layout.raw(theta)), shapes_of(layout.widths)), x)


def _flat(layers):
    from relu_regions.training.functional import flatten_layers

    return flatten_layers(layers)


def random_theta(layout, n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, layout.n_params, generator=g, dtype=torch.float64)


def term_forward(x, peaks, scales, lo, hi, sign):
    """One construction without its affine part, by construction.derived_forward."""
    zero = torch.zeros(peaks.shape[0], dtype=torch.float64)
    lo, hi = (torch.tensor(float(v), dtype=torch.float64) for v in (lo, hi))
    return construction.derived_forward(x, peaks, scales, zero, zero, lo, hi, sign)


@settings(max_examples=40, deadline=None)
@given(shape=st.sampled_from(["convex", "concave", "dc"]), depth=st.integers(1, 8),
       lo=st.floats(-5, 5), width=st.floats(0.1, 10), thm31=st.booleans(),
       seed=st.integers(0, 2**16))
def test_1d_raw_net_equals_derived_sum(shape, depth, lo, width, thm31, seed):
    hi = lo + width
    x = torch.linspace(lo, hi, 257, dtype=torch.float64)
    layout, _, _ = composite.build_layout(shape, x.numpy(), x.numpy() ** 2, [(lo, hi)], depth,
                                          thm31)
    theta = random_theta(layout, 3, seed)
    derived = layout.predict(theta, x.unsqueeze(-1))
    # As for the single construction (test_construction): the raw first layer cancels terms of
    # size |x| / width; the sum neuron carries C + F; and a rounding of u reaches F through the
    # triangle maps amplified by sum_i s_i prod_{k<=i} max(1/a_k, 1/(1-a_k)), per term.
    conditioning = max(1.0, abs(lo) / width, abs(hi) / width)
    size, amplification = max(1.0, float(derived.abs().max())), 0.0
    with torch.no_grad():
        parts, _, c = layout.split(theta)
        for peaks, scales in parts:
            lipschitz = torch.maximum(1 / peaks[:, :depth], 1 / (1 - peaks[:, :depth]))
            amplification += float((scales * torch.cumprod(lipschitz, 1)).sum(1).max())
            size = max(size, float(construction.sum_offset(scales, c[:, 0].abs()).max()))
    eps = torch.finfo(torch.float64).eps
    tol = conditioning * (1e-12 * size + 16 * eps * amplification)
    assert torch.allclose(raw_forward(layout, theta, x), derived, rtol=0, atol=tol)


@settings(max_examples=25, deadline=None)
@given(depth=st.integers(1, 8), lo=st.floats(-3, 3), width=st.floats(0.2, 6),
       seed=st.integers(0, 2**16))
def test_dc_is_the_difference_of_two_constructions(depth, lo, width, seed):
    hi = lo + width
    x = torch.linspace(lo, hi, 201, dtype=torch.float64)
    layout, _, _ = composite.build_layout("dc", x.numpy(), x.numpy(), [(lo, hi)], depth, True)
    theta = random_theta(layout, 2, seed)
    (pk_a, sc_a), (pk_b, sc_b) = layout.split(theta)[0]
    c0, c = layout.split(theta)[1:]
    affine = c0[:, None] + c[:, :1] * (x - lo) / width
    expected = (affine + term_forward(x, pk_a, sc_a, lo, hi, 1.0)
                - term_forward(x, pk_b, sc_b, lo, hi, 1.0))  # convex minus convex
    got = layout.predict(theta, x.unsqueeze(-1))
    assert torch.allclose(got, expected, rtol=0, atol=1e-12 * max(1.0, float(expected.abs().max())))


def test_one_term_is_the_papers_construction():
    x = torch.linspace(-1, 2, 301, dtype=torch.float64)
    layout, _, _ = composite.build_layout("concave", x.numpy(), -x.numpy() ** 2, [(-1, 2)], 6, True)
    theta = random_theta(layout, 4, 0)
    [(peaks, scales)], c0, c = layout.split(theta)
    lo, hi = torch.tensor(-1.0, dtype=torch.float64), torch.tensor(2.0, dtype=torch.float64)
    expected = construction.derived_forward(x, peaks, scales, c0, c[:, 0], lo, hi, -1.0)
    assert torch.equal(layout.predict(theta, x.unsqueeze(-1)), expected)
    raw_layers = construction.raw_weights(peaks, scales, c0, c[:, 0], lo, hi, -1.0)
    raw = mlp_forward(unflatten_layers(_flat(raw_layers), shapes_of(layout.widths)), x)
    assert torch.allclose(raw_forward(layout, theta, x), raw, rtol=0, atol=1e-12)
    assert layout.widths == [1, 4, 4, 4, 4, 4, 4, 1] and layout.max_pieces == 64


def grid(n=15, lo=-1.0, hi=1.0):
    g = np.linspace(lo, hi, n)
    return np.stack(np.meshgrid(g, g, indexing="ij"), axis=-1).reshape(-1, 2)


@settings(max_examples=20, deadline=None)
@given(depth=st.integers(1, 5), seed=st.integers(0, 2**16), angle=st.floats(0, 3.1))
def test_2d_composition_identity(depth, seed, angle):
    """Raw net == outer(inner(x)), inner = affine + sum of 1D constructions along directions."""
    x = grid()
    # A rotated anisotropic target makes the eigen-directions generic.
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    u = x @ rot
    y = (u[:, 0] ** 2 + 3 * u[:, 1] ** 2) ** 1.5
    layout, shape, _ = composite.build_layout("radial", x, y, [(-1, 1), (-1, 1)], depth, True)
    assert shape == "radial"
    theta = random_theta(layout, 3, seed)
    xt = torch.tensor(x)
    t_in, t_out = theta[:, :layout.inner.n_params], theta[:, layout.inner.n_params:]
    parts, c0, c = layout.inner.split(t_in)
    q = c0[:, None] + ((xt + 1) / 2 * c[:, None, :]).sum(-1)
    for term, (peaks, scales) in zip(layout.inner.terms, parts, strict=True):
        t = xt @ torch.tensor(term.direction)
        q = q + term_forward(t, peaks, scales, *term.interval, term.sign)
    [(peaks, scales)], c0o, co = layout.outer.split(t_out)
    (qlo, qhi), = layout.outer.box
    zero = torch.zeros(3, dtype=torch.float64)
    u_q = (q - qlo) / (qhi - qlo)
    h = c0o[:, None] + co[:, :1] * u_q + construction.derived_forward(
        q, peaks, scales, zero, zero, torch.tensor(qlo, dtype=torch.float64),
        torch.tensor(qhi, dtype=torch.float64), layout.outer.terms[0].sign)
    scale = max(1.0, float(h.abs().max()), float(q.abs().max()))
    assert torch.allclose(layout.predict(theta, xt), h, rtol=0, atol=1e-12 * scale)
    raw = raw_forward(layout, theta, xt)
    # The outer construction sees q where its sum neuron stays positive only near [qlo, qhi]:
    # compare there (random inner parameters can push q far out).
    inside = (q >= qlo - 0.5 * (qhi - qlo)) & (q <= qhi + 0.5 * (qhi - qlo))
    assert torch.allclose(raw[inside], h[inside], rtol=0, atol=1e-11 * scale)


def test_2d_initial_nets_match_their_raw_weights_everywhere():
    x = grid(21)
    for text in ("r**3", "x**2 + y**2 + x*y", "x**2 - y**2"):
        y = targets.parse_target(text)(x)
        layout, shape, q = composite.build_layout("auto", x, y, [(-1, 1), (-1, 1)], 4, True)
        theta = composite.initial_theta(layout, [0, 1], x, y, q)
        xt = torch.tensor(x)
        d = layout.predict(theta, xt)
        assert torch.allclose(raw_forward(layout, theta, xt), d, rtol=0, atol=1e-12)
        assert float(((d - torch.tensor(y)) ** 2).mean()) < float(np.var(y))


def test_auto_shapes():
    x = np.linspace(0, 1, 500)
    assert composite.detect_shape(x, x**3) == "convex"
    assert composite.detect_shape(x, x**11) == "convex"
    assert composite.detect_shape(x, np.sin(x)) == "concave"
    assert composite.detect_shape(x, np.tanh(3 * x)) == "concave"
    xs = np.linspace(-1, 1, 500)
    assert composite.detect_shape(xs, xs**3 - xs) == "dc"
    x2 = np.linspace(0, 2 * np.pi, 500)
    assert composite.detect_shape(x2, np.sin(x2)) == "dc"
    sparse = targets.sparse("x**3", (0, 1), 10, 10, seed=3)
    assert composite.detect_shape(sparse.x, sparse.y) == "convex"
    g = grid()

    def shape_of(target):
        return composite.build_layout("auto", g, targets.parse_target(target)(g), [(-1, 1)] * 2,
                                      3, True)[1]

    assert shape_of("x**2+y**2+x*y") == "ridge"
    assert shape_of("r**3") == "radial"


def test_ridge_directions_are_the_quadratics_axes():
    g = grid()
    quad = composite.fit_quadratic(g, g[:, 0] ** 2 + g[:, 1] ** 2 + g[:, 0] * g[:, 1])
    assert np.allclose(quad.eigenvalues, [0.5, 1.5], atol=1e-12)
    assert np.allclose(np.abs(quad.eigenvectors), np.sqrt(0.5), atol=1e-12)
    assert quad.relative_error < 1e-12


def test_shapes_are_checked_against_the_input():
    x = np.linspace(0, 1, 50)
    with pytest.raises(InputError, match="2D inputs"):
        composite.build_layout("radial", x, x, [(0, 1)], 3, True)
    with pytest.raises(InputError, match="1D inputs"):
        composite.build_layout("dc", grid(), grid()[:, 0], [(-1, 1)] * 2, 3, True)
    with pytest.raises(InputError, match="not one of"):
        composite.build_layout("wavy", x, x, [(0, 1)], 3, True)
    with pytest.raises(InputError, match="one construction on a 1D target"):
        fit("x**3 - x", interval=(-1, 1), depth=3, seeds=1, grow_from=2, shape="dc")


QUICK = dict(phase1=Phase("lm", 6), phase2=Phase("lm", 6), optimum=False, starts=2)


def test_fit_dc_and_kaiming_share_the_net():
    ours = fit("x**3 - x", interval=(-1, 1), depth=3, seeds=2, **QUICK)
    base = fit("x**3 - x", interval=(-1, 1), depth=3, seeds=2, method="kaiming", shape="dc",
               **dict(QUICK, starts=None))  # a baseline has no starts
    assert ours.shape == base.shape == "dc"
    assert ours.widths == base.widths == [1, 8, 8, 8, 1]
    assert np.all(np.isfinite(ours.mse)) and np.all(ours.pieces >= 1)
    # A dc net has both curvatures: its slopes go down and up.
    from relu_regions.analysis.regions import count_regions
    slopes = count_regions(ours.models[0], -1, 1).slopes
    assert np.any(np.diff(slopes) > 0) and np.any(np.diff(slopes) < 0)


def test_fit_2d_radial_records_pieces_along_the_diagonal():
    r = fit("r**3", interval=(-1, 1), points=9, depth=2, seeds=2, **QUICK)
    assert r.shape == "radial" and r.widths == [2, 8, 8, 4, 4, 1]
    assert np.all(r.pieces > 1) and r.optimal_mse is None
    assert r.models[0](torch.zeros(1, 2, dtype=torch.float64)).shape == (1, 1)


def test_2d_targets_and_csv_round_trip(tmp_path):
    f = targets.parse_target("hypot(x, y)**3 - r**3 + x*y")
    assert f.dims == 2
    d = targets.dense(f, (-1, 1), points=5)
    assert d.x.shape == (25, 2) and d.box == [(-1.0, 1.0), (-1.0, 1.0)]
    assert np.allclose(d.y, d.x[:, 0] * d.x[:, 1], atol=1e-15)
    path = tmp_path / "s.csv"
    path.write_text(targets.to_csv_text(d.x, d.y))
    back = targets.from_csv(path)
    assert np.array_equal(back.x, d.x) and np.array_equal(back.y, d.y) and back.dims == 2
    assert targets.dense("x**2", (0, 1)).x.shape == (500,)
    path.write_text("x,y,z\n0,0,1\n0,0,2\n1,1,1\n")
    with pytest.raises(InputError, match="duplicate"):
        targets.from_csv(path)
    path.write_text("0,0,1\n1,2\n")
    with pytest.raises(InputError, match="3 like the first row"):
        targets.from_csv(path)


def test_cli_trains_2d_csv_and_reports(tmp_path, capsys):
    d = targets.dense("x**2 + y**2 + x*y", (-1, 1), points=7)
    csv = tmp_path / "bowl.csv"
    csv.write_text(targets.to_csv_text(d.x, d.y))
    out = tmp_path / "run"
    code = main(["train", "--data", str(csv), "--depth", "2", "--seeds", "2", "--phase1", "lm:4",
                 "--phase2", "lm:4", "--starts", "1", "--out", str(out), "--json"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["shape"] == "ridge" and metrics["interval"] == [[-1.0, 1.0], [-1.0, 1.0]]
    assert (out / "fit.png").stat().st_size > 0
    capsys.readouterr()
    assert main(["report", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["shape"] == "ridge"
    code = main(["train", "--target", "x**3", "--shape", "radial", "--depth", "2", "--seeds", "1"])
    assert code == 2


def test_release_survives_scales_that_underflowed():
    """Free scales driven to exp(-inf) = 0 in phase 1 must not release as 0/0 ratios."""
    x = torch.linspace(0, 1, 101, dtype=torch.float64)
    layout, _, _ = composite.build_layout("dc", x.numpy(), x.numpy(), [(0, 1)], 4, False)
    theta = random_theta(layout, 2, 0)
    per = layout.n_peaks + layout.n_scales
    theta[:, per + layout.n_peaks:per + layout.n_peaks + 2] = -1e4  # exp -> 0: two dead scales
    d = layout.predict(theta, x.unsqueeze(-1))
    r = raw_forward(layout, theta, x)
    assert torch.isfinite(r).all() and torch.allclose(r, d, rtol=0, atol=1e-12)


def test_cli_counts_a_2d_checkpoint_on_its_box_or_along_a_segment(tmp_path, capsys):
    from relu_regions import checkpoint
    from relu_regions.analysis.plane import count_regions_2d
    from relu_regions.nets.parametrize import linear_relu_stack

    torch.manual_seed(0)
    path = tmp_path / "m.pt"
    net = linear_relu_stack([2, 6, 6, 1])
    checkpoint.save(net, path, {"interval": [[-1, 1], [-0.5, 1]]})
    assert main(["count", "--checkpoint", str(path), "--json"]) == 0  # the region map of its box
    out = json.loads(capsys.readouterr().out)
    assert out["box"] == [-1, 1, -0.5, 1]
    assert out["activation_regions"] == count_regions_2d(net, (-1, 1, -0.5, 1)).activation_regions
    assert main(["count", "--checkpoint", str(path), "--from=-1,-1", "--to", "1,1", "--json"]) == 0
    from relu_regions.analysis.regions import count_regions_segment

    expected = count_regions_segment(checkpoint.load(path)[0], [-1, -1], [1, 1]).linear_pieces
    assert json.loads(capsys.readouterr().out)["linear_pieces"] == expected


def test_fit_uses_the_dense_default_grid_per_dimension(monkeypatch):
    """fit's points default is targets.dense's: 500 points in 1D, a 41 x 41 grid in 2D (not a
    500 x 500 grid, which took minutes per phase-1 Jacobian)."""
    sizes = []
    dense = targets.dense

    def recorded(*args, **kwargs):
        data = dense(*args, **kwargs)
        sizes.append(data.x.shape)
        return data

    monkeypatch.setattr(targets, "dense", recorded)
    fit("x**2 + y**2", interval=(-1, 1), depth=1, seeds=1, **QUICK)
    fit("x**3", depth=1, seeds=1, **QUICK)
    assert sizes == [(41 * 41, 2), (500,)]


def test_detect_shape_takes_repeated_x_without_dividing_by_zero():
    """Radii of a grid repeat; the curvature is read from one mean value per distinct x."""
    import warnings

    x = np.repeat(np.linspace(0, 1, 20), 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert composite.detect_shape(x, x**3) == "convex"
        assert composite.detect_shape(x, -(x**3)) == "concave"
        assert composite.detect_shape(x, (x - 0.5) ** 3) == "dc"
