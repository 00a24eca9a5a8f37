"""The line counter on leaky and pass-through units and on k outputs: pieces of the vector map,
each output's own pieces, and decision points, against the exact rational reference and the
model itself."""

import numpy as np
import pytest
import torch
from exact_reference import exact_stack
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn

from relu_regions import InputError
from relu_regions.analysis import regions
from relu_regions.analysis.pieces import pieces_table, write_pieces_csv
from relu_regions.analysis.regions import count_regions, count_regions_segment
from relu_regions.analysis.sampling import sample_regions, sample_regions_segment
from relu_regions.nets.reader import Affine, ReLU, layer_stack


class Stack(nn.Module):
    """Linear layers with per-unit negative slopes between them, read through region_ops."""

    def __init__(self, layers, leaks):
        super().__init__()
        self.layers = [(torch.tensor(w), torch.tensor(b)) for w, b in layers]
        self.leaks = [torch.tensor(a) for a in leaks]

    def region_ops(self):
        ops = []
        for i, (w, b) in enumerate(self.layers):
            ops.append(Affine(w, b))
            if i < len(self.leaks):
                ops.append(ReLU(self.leaks[i].numpy()))
        return ops

    def forward(self, x):
        for i, (w, b) in enumerate(self.layers):
            x = x @ w.T + b
            if i < len(self.leaks):
                x = torch.where(x > 0, x, self.leaks[i] * x)
        return x


@st.composite
def leaky_stacks(draw, n_in=1, max_outputs=4):
    """Random (W, b) layers, 2-4 hidden layers of width 2-6, 1-``max_outputs`` outputs, each
    hidden unit a ReLU, a leaky ReLU or a pass-through (slope 1)."""
    g = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    depth, k = draw(st.integers(2, 4)), draw(st.integers(1, max_outputs))
    widths = [n_in] + [draw(st.integers(2, 6)) for _ in range(depth)] + [k]
    layers = [(g.normal(size=(o, i)) / np.sqrt(i), g.uniform(-1, 1, o))
              for i, o in zip(widths[:-1], widths[1:], strict=True)]
    kinds = draw(st.sampled_from(["relu", "leaky", "mixed"]))
    leaks = []
    for width in widths[1:-1]:
        if kinds == "relu":
            leaks.append(np.zeros(width))
        elif kinds == "leaky":
            leaks.append(np.full(width, g.uniform(0.01, 0.5)))
        else:
            leaks.append(g.choice([0.0, 0.2, 1.0], width))
    return layers, leaks


def _assume_resolvable(exact, lo, hi):
    """float64 places features of the exact count only when they are not within ~1e-9 of each
    other or of the ends (slivers: see test_regions)."""
    pts = sorted(float(p) for p in exact["breakpoints"] + exact["decision_points"])
    assume(np.diff(np.array([lo] + pts + [hi])).min() > 1e-8 * (hi - lo))


@settings(max_examples=80, deadline=None)
@given(leaky_stacks(), st.floats(-3, 1), st.floats(0.5, 4), st.floats(-0.5, 0.5))
def test_leaky_and_k_output_counts_agree_with_exact_rational_reference(case, lo, width, level):
    layers, leaks = case
    hi = lo + width
    k = layers[-1][0].shape[0]
    exact = exact_stack(layers, leaks, lo, hi, level=level if k == 1 else 0.0)
    _assume_resolvable(exact, lo, hi)
    r = count_regions(Stack(layers, leaks), lo, hi, per_output=True,
                      level=level if k == 1 else None)
    assert r.outputs == k
    assert r.activation_regions == len(exact["breakpoints"]) + 1
    np.testing.assert_allclose(r.breakpoints, np.array(exact["breakpoints"], float), rtol=0,
                               atol=1e-12 * (hi - lo))
    assert r.linear_pieces == len(exact["slopes"])
    np.testing.assert_allclose(r.knots, np.array(exact["knots"], float), rtol=0,
                               atol=1e-12 * (hi - lo))
    exact_slopes = np.array(exact["slopes"], float)
    assert r.slopes.shape == ((r.linear_pieces,) if k == 1 else (r.linear_pieces, k))
    np.testing.assert_allclose(r.slopes.reshape(exact_slopes.shape), exact_slopes, rtol=1e-9,
                               atol=1e-12 * np.abs(exact_slopes).max())
    assert r.pieces_per_output == exact["pieces_per_output"]
    np.testing.assert_allclose(r.decision_points, np.array(exact["decision_points"], float),
                               rtol=0, atol=1e-9 * (hi - lo))


@settings(max_examples=40, deadline=None)
@given(leaky_stacks(), st.floats(-3, 1), st.floats(0.5, 4))
def test_general_path_and_tiny_chunks_give_the_one_call_result(case, lo, width):
    """Leaks, k outputs and decision points come out the same from _count_small, the
    layer-by-layer path and chunks of 4 points (state carried across chunks)."""
    layers, leaks = case
    model, hi = Stack(layers, leaks), lo + width
    fast = count_regions(model, lo, hi, per_output=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(regions, "_count_small", lambda packed, *a: (0, 0, 0, 0, 0, packed))
        general = count_regions(model, lo, hi, per_output=True)
        mp.setattr(regions, "CHUNK", 4)
        chunked = count_regions(model, lo, hi, per_output=True)
    for other in (general, chunked):
        assert other.to_dict(arrays=True) == fast.to_dict(arrays=True)


def test_pass_through_units_never_switch():
    """x -> relu-free identity units carried beside one ReLU: one breakpoint, at the ReLU's."""
    w0 = np.array([[1.0], [1.0], [-1.0]])
    b0 = np.array([-0.25, 0.0, 0.0])  # unit 0 switches at 0.25; units 1, 2 pass x and -x on
    w1, b1 = np.array([[2.0, 1.0, 1.0]]), np.zeros(1)  # 2 relu(x - 1/4) + x - x
    r = count_regions(Stack([(w0, b0), (w1, b1)], [np.array([0.0, 1.0, 1.0])]), -1, 1)
    assert r.breakpoints.tolist() == [0.25] and r.snapped == 0
    np.testing.assert_array_equal(r.slopes, [0.0, 2.0])
    np.testing.assert_array_equal(r.decision_points, [])  # f >= 0: never crosses level 0
    r = count_regions(Stack([(w0, b0), (w1, b1 - 1)], [np.array([0.0, 1.0, 1.0])]), -1, 1)
    np.testing.assert_allclose(r.decision_points, [0.75], rtol=0, atol=1e-15)


def test_leaky_relu_sequential_along_a_line():
    model = nn.Sequential(nn.Linear(1, 2), nn.LeakyReLU(0.25), nn.Linear(2, 1)).double()
    with torch.no_grad():  # 0.25 x for x < 0, x between, x + 0.25 (x - 1) ... from x = 1
        model[0].weight.copy_(torch.tensor([[1.0], [1.0]]))
        model[0].bias.copy_(torch.tensor([0.0, -1.0]))
        model[2].weight.copy_(torch.tensor([[1.0, 1.0]]))
        model[2].bias.zero_()
    r = count_regions(model, -1, 2)
    np.testing.assert_array_equal(r.breakpoints, [0.0, 1.0])
    np.testing.assert_allclose(r.slopes, [0.5, 1.25, 2.0], rtol=0, atol=1e-15)


@settings(max_examples=40, deadline=None)
@given(leaky_stacks(n_in=3, max_outputs=5).filter(lambda c: c[0][-1][0].shape[0] > 1),
       st.integers(0, 2**32 - 1))
def test_decision_points_are_ties_and_none_is_missed(case, seed):
    """On the model itself (torch forward, float64): at each returned point the top two outputs
    tie to rounding; every argmax change a fine grid brackets, bisected, lies at a returned
    point."""
    layers, leaks = case
    model = Stack(layers, leaks)
    g = np.random.default_rng(seed)
    x0, x1 = g.normal(size=3) * 2, g.normal(size=3) * 2
    r = count_regions_segment(model, x0, x1)

    def outputs(t):
        with torch.no_grad():
            return model(torch.tensor(x0 + np.asarray(t)[:, None] * (x1 - x0))).numpy()

    if r.decision_points.size:
        y = outputs(r.decision_points)
        top = np.sort(y, axis=1)
        assert np.all(top[:, -1] - top[:, -2] <= 1e-9 * (1 + np.abs(y).max(axis=1)))
    t = np.linspace(0, 1, 2001)
    win = outputs(t).argmax(axis=1)
    for i in np.nonzero(win[1:] != win[:-1])[0]:
        a, b = t[i], t[i + 1]
        for _ in range(60):
            mid = (a + b) / 2
            if outputs([mid]).argmax() == win[i]:
                a = mid
            else:
                b = mid
        assert np.abs(r.decision_points - a).min() <= 1e-9


def test_k_outputs_to_dict_and_one_output_shapes():
    layers = [(np.array([[1.0], [-1.0]]), np.zeros(2)), (np.eye(2), np.zeros(2))]
    model = Stack(layers, [np.zeros(2)])
    r = count_regions(model, -1, 1, per_output=True)  # outputs relu(x), relu(-x): swap at 0
    d = r.to_dict(arrays=True)
    assert (d["outputs"], d["decision_points"], d["pieces_per_output"]) == (2, 1, [2, 2])
    assert d["decision_point_list"] == [0.0]
    assert r.slopes.shape == (2, 2) and d["slope_list"] == [[0.0, -1.0], [1.0, 0.0]]
    layers[-1] = (np.eye(2), np.array([0.0, 0.5]))  # relu(-x) + 0.5 wins until x = 0.5
    r = count_regions(Stack(layers, [np.zeros(2)]), -1, 1)
    np.testing.assert_allclose(r.decision_points, [0.5], rtol=0, atol=1e-15)
    one = count_regions(Stack([(np.ones((2, 1)), np.zeros(2)), (np.ones((1, 2)), -np.ones(1))],
                              [np.zeros(2)]), -1, 1)
    assert one.slopes.shape == (2,) and "pieces_per_output" not in one.to_dict()
    np.testing.assert_allclose(one.decision_points, [0.5])  # 2 relu(x) = 1
    np.testing.assert_allclose(count_regions(layer_stack(
        [(np.ones((2, 1)), np.zeros(2)), (np.ones((1, 2)), np.zeros(1))])[0], -1, 1,
        level=1.0).decision_points, [0.5])


@settings(max_examples=40, deadline=None)
@given(leaky_stacks(n_in=3), st.integers(0, 2**32 - 1), st.integers(3, 3000))
def test_sampling_along_a_segment_never_reports_more_than_exist(case, seed, samples):
    layers, leaks = case
    model = Stack(layers, leaks)
    g = np.random.default_rng(seed)
    x0, x1 = g.normal(size=3) * 2, g.normal(size=3) * 2
    exact = count_regions_segment(model, x0, x1)
    assume(exact.resolved and exact.min_region_width > 1e-9)
    est = sample_regions_segment(model, x0, x1, samples=samples, chunk=257)
    assert 1 <= est.activation_regions <= exact.activation_regions
    assert 1 <= est.linear_pieces <= exact.linear_pieces


@settings(max_examples=20, deadline=None)
@given(leaky_stacks(n_in=2), st.integers(0, 2**32 - 1))
def test_sampling_a_segment_finely_sees_the_exact_counts_when_they_are_wide(case, seed):
    """A grid far finer than the narrowest region and piece finds them all (a sampler that
    ignored the segment's direction, or the leaks, would not)."""
    layers, leaks = case
    model = Stack(layers, leaks)
    g = np.random.default_rng(seed)
    x0, x1 = g.normal(size=2) * 2, g.normal(size=2) * 2
    exact = count_regions_segment(model, x0, x1)
    assume(exact.min_region_width > 1e-3)
    est = sample_regions_segment(model, x0, x1, samples=20_001)
    assert (est.activation_regions, est.linear_pieces) == (exact.activation_regions,
                                                           exact.linear_pieces)


def test_sampling_refusals_name_the_segment_function():
    model = Stack([(np.ones((2, 2)), np.zeros(2)), (np.ones((1, 2)), np.zeros(1))],
                  [np.zeros(2)])
    with pytest.raises(InputError, match=r"takes 2 inputs; sample it along a segment"):
        sample_regions(model, 0, 1)
    with pytest.raises(InputError, match="empty: x0 equals x1"):
        sample_regions_segment(model, [1, 1], [1, 1])
    with pytest.raises(InputError, match="x1 must be 2"):
        sample_regions_segment(model, [0, 0], [1, 1, 1])


@settings(max_examples=20, deadline=None)
@given(leaky_stacks(max_outputs=3), st.floats(-3, 1), st.floats(0.5, 4))
def test_pieces_table_of_leaky_k_output_nets_is_the_network(case, lo, width):
    layers, leaks = case
    model, hi = Stack(layers, leaks), lo + width
    r = count_regions(model, lo, hi)
    t = pieces_table(r, model)
    k = r.outputs
    with torch.no_grad():
        y = model(torch.tensor(np.concatenate([t["start"], t["end"][-1:]]))[:, None]).numpy()
    y = y[:, 0] if k == 1 else y
    scale = max(1.0, np.abs(y).max())
    np.testing.assert_allclose(t["value_start"], y[:-1], rtol=0, atol=1e-12 * scale)
    assert t["slope"].shape == t["value_start"].shape == ((r.linear_pieces,) if k == 1
                                                          else (r.linear_pieces, k))
    widths = (t["end"] - t["start"]) if k == 1 else (t["end"] - t["start"])[:, None]
    rise = t["slope"] * widths
    np.testing.assert_allclose(t["value_start"] + rise, t["value_end"], rtol=0,
                               atol=1e-9 * (scale + np.abs(rise).max()))


def test_pieces_csv_of_k_outputs_names_each_column(tmp_path):
    layers = [(np.array([[1.0], [-1.0]]), np.zeros(2)), (np.eye(2), np.zeros(2))]
    model = Stack(layers, [np.zeros(2)])
    table = pieces_table(count_regions(model, -1, 1), model)
    text = write_pieces_csv(tmp_path / "p.csv", table).read_text().splitlines()
    assert text[0] == ("start,end,slope_0,slope_1,value_start_0,value_start_1,value_end_0,"
                       "value_end_1")
    assert [float(v) for v in text[1].split(",")] == [-1, 0, 0, -1, 0, 1, 0, 0]
