"""The plane counter's decision boundary (argmax of k outputs, level set of one), checked on the
model itself: segment ends are ties, and every crossing bisection finds lies on a segment."""

import numpy as np
import pytest
import torch
from torch import nn

from relu_regions import InputError
from relu_regions.analysis.plane import count_regions_2d, count_regions_plane
from relu_regions.plots import plot_region_map


def classifier(n_in, widths, k, seed):
    torch.manual_seed(seed)
    mods, prev = [], n_in
    for w in widths:
        mods += [nn.Linear(prev, w), nn.ReLU()]
        prev = w
    out = nn.Linear(prev, k)
    with torch.no_grad():
        out.bias.zero_()  # no class wins the whole box by its bias alone
    return nn.Sequential(*mods, out).double()


def outputs(model, r, uv):
    x = uv if r.plane is None else r.plane["origin"] + uv @ r.plane["basis"]
    with torch.no_grad():
        return model(torch.as_tensor(x, dtype=torch.float64)).numpy()


def crossings(model, r, n_lines, seed):
    """Points where the argmax changes along random chords of the box, by bisection on the
    model (100 samples per chord, then 60 halvings, all crossings at once)."""
    g = np.random.default_rng(seed)
    x0, x1, y0, y1 = r.box
    a, b = g.uniform((x0, y0), (x1, y1), (2, n_lines, 2))
    t = np.linspace(0, 1, 101)
    pts = a[:, None] + t[None, :, None] * (b - a)[:, None]
    win = outputs(model, r, pts.reshape(-1, 2)).argmax(1).reshape(n_lines, t.size)
    line, i = np.nonzero(win[:, 1:] != win[:, :-1])
    a, b, lo, hi, w_lo = a[line], b[line], t[i], t[i + 1], win[line, i]
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        same = outputs(model, r, a + mid[:, None] * (b - a)).argmax(1) == w_lo
        lo, hi = np.where(same, mid, lo), np.where(same, hi, mid)
    return a + lo[:, None] * (b - a)


def distance_to_segments(p, segs):
    a, b = segs[:, 0], segs[:, 1]
    ab = b - a
    t = np.clip(((p - a) * ab).sum(1) / np.maximum((ab * ab).sum(1), 1e-300), 0, 1)
    return np.hypot(*(a + t[:, None] * ab - p).T).min()


@pytest.mark.parametrize("k", [3, 10])
def test_decision_segments_are_the_models_argmax_boundary(k):
    model = classifier(2, [16, 16], k, seed=k)
    r = count_regions_2d(model, (-5.0, 5.0, -5.0, 5.0))
    segs = r.decision_segments
    assert segs.shape[1:] == (2, 2) and len(segs) > 10
    # Ends and midpoints are ties of the top two outputs, to rounding.
    for pts in (segs[:, 0], segs[:, 1], segs.mean(1)):
        top = np.sort(outputs(model, r, pts), 1)
        assert np.abs(top[:, -1] - top[:, -2]).max() <= 1e-12 * max(1.0, np.abs(top).max())
    # Every crossing found by bisection lies on a returned segment.
    found = crossings(model, r, 80, seed=k)
    assert len(found) > 20
    assert max(distance_to_segments(p, segs) for p in found) < 1e-9
    assert np.isclose(r.decision_length, np.hypot(*(segs[:, 1] - segs[:, 0]).T).sum())
    assert r.to_dict()["decision_segment_count"] == len(segs)


def test_decision_boundary_on_a_plane_is_in_input_units():
    model = classifier(6, [12, 12], 4, seed=2)
    p = np.random.default_rng(3).normal(size=(3, 6))
    r = count_regions_plane(model, *p)
    found = crossings(model, r, 30, seed=1)
    assert len(found) > 5 and len(r.decision_segments) > 5
    assert max(distance_to_segments(q, r.decision_segments) for q in found) < 1e-9
    # The basis is orthonormal: a segment's plane length is its input-space length.
    x = r.plane["origin"] + r.decision_segments @ r.plane["basis"]
    assert np.isclose(np.linalg.norm(x[:, 1] - x[:, 0], axis=1).sum(), r.decision_length,
                      rtol=1e-12)


def test_known_boundaries_and_level_sets():
    # Outputs (x, y): the argmax changes on the diagonal, 2 sqrt(2) long in [-1, 1]^2.
    r = count_regions_2d([(np.eye(2), np.zeros(2))])
    assert np.isclose(r.decision_length, 2 * np.sqrt(2), rtol=1e-14)
    # f = x + y at level 0.5: from (-0.5, 1) to (1, -0.5).
    r = count_regions_2d([(np.ones((1, 2)), np.zeros(1))], level=0.5)
    assert np.isclose(r.decision_length, 1.5 * np.sqrt(2), rtol=1e-14) and r.level == 0.5
    # One output of a ReLU net: its zero set, checked on the model.
    model = classifier(2, [10, 10], 1, seed=5)
    r = count_regions_2d(model, (-5.0, 5.0, -5.0, 5.0))
    ends = r.decision_segments.reshape(-1, 2)
    assert len(ends) > 4
    assert np.abs(outputs(model, r, ends)).max() <= 1e-12
    # Equal outputs never change the argmax: no boundary.
    r = count_regions_2d([(np.ones((3, 2)), np.zeros(3))])
    assert r.decision_length == 0.0 and r.decision_segments.shape == (0, 2, 2)


def test_level_is_refused_for_several_outputs_and_checked():
    with pytest.raises(InputError, match="level is for a model with one output; this one has 3"):
        count_regions_2d(classifier(2, [4], 3, seed=0), level=0.0)
    for bad in (float("nan"), "x"):
        with pytest.raises(InputError, match="level must be"):
            count_regions_2d(classifier(2, [4], 1, seed=0), level=bad)


def test_region_map_draws_the_decision_boundary(tmp_path):
    from matplotlib.collections import LineCollection

    from relu_regions.plots import subplots

    r = count_regions_2d(classifier(2, [8, 8], 5, seed=1), (-5.0, 5.0, -5.0, 5.0))
    for color in ("gradient", "output"):
        fig, ax = subplots()
        plot_region_map(r, None, color=color, ax=ax)
        lines = [c for c in ax.collections if isinstance(c, LineCollection)]
        assert len(lines) == 1 and len(lines[0].get_segments()) == len(r.decision_segments)
    assert plot_region_map(r, tmp_path / "map.png").stat().st_size > 1000
    one = count_regions_2d(classifier(2, [8], 1, seed=1), (-5.0, 5.0, -5.0, 5.0))
    fig, ax = subplots()
    plot_region_map(one, None, ax=ax)  # one output: no level set unless asked
    assert not any(isinstance(c, LineCollection) for c in ax.collections)
    plot_region_map(one, None, ax=ax, boundary=True)
    assert any(isinstance(c, LineCollection) for c in ax.collections)
