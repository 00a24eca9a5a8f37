"""Conv stages kept as operators (nets/operators.py): equal to their dense matrices, counted on
a plane as the dense layers are, refused where a counter needs dense matrices."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from relu_regions import InputError
from relu_regions.analysis.plane import count_lowered_plane
from relu_regions.analysis.regions import count_regions_segment
from relu_regions.analysis.sampling import sample_regions_segment
from relu_regions.checkpoint import save
from relu_regions.nets import lowering
from relu_regions.nets.operators import AffineOperator
from relu_regions.nets.reader import LoweredNet, forward, lower


def _bn(channels, dims, rng):
    bn = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}[dims](channels).double()
    with torch.no_grad():
        bn.running_mean.copy_(torch.as_tensor(rng.uniform(-1, 1, channels)))
        bn.running_var.copy_(torch.as_tensor(rng.uniform(0.3, 2, channels)))
        bn.weight.copy_(torch.as_tensor(rng.uniform(-2, 2, channels)))  # negative scales too
        bn.bias.copy_(torch.as_tensor(rng.uniform(-1, 1, channels)))
    return bn.eval()


def _module_matrix(m, shape):
    """The dense matrix of a bias-free module, column by column through the module itself."""
    n = int(np.prod(shape))
    with torch.no_grad():
        out = m(torch.eye(n, dtype=torch.float64).reshape(n, *shape))
    return out.reshape(n, -1).T.numpy()


def _first_operator(model, shape):
    lowered = lower(model, shape, operators=True)
    op = lowered.layers[0][0]
    assert isinstance(op, AffineOperator)
    return op, lowered


def _check(op, dense, exact_abs):
    rng = np.random.default_rng(1)
    h = rng.normal(size=(5, dense.shape[1]))
    assert op.shape == dense.shape
    np.testing.assert_allclose(op.apply(h), h @ dense.T, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(op.linear(h), h @ dense.T, rtol=1e-12, atol=1e-12)
    bound = np.abs(h) @ np.abs(dense).T
    got = op.apply_abs(h)
    assert (got >= bound * (1 - 1e-12) - 1e-12).all()
    assert (op.row_abs_sum() >= np.abs(dense).sum(1) * (1 - 1e-12) - 1e-12).all()
    if exact_abs:
        np.testing.assert_allclose(got, bound, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(op.row_abs_sum(), np.abs(dense).sum(1), rtol=1e-12)
    np.testing.assert_allclose(op.dense(), dense, rtol=1e-12, atol=1e-12)


# exact: apply_abs is |W| |h| itself; a reflected border repeats an input within a window, whose
# kernel entries may cancel in W, so there it is an upper bound.
@pytest.mark.parametrize("conv, shape, exact", [
    (dict(in_channels=2, out_channels=4, kernel_size=3, stride=2, padding=1), (2, 7, 6), True),
    (dict(in_channels=4, out_channels=2, kernel_size=2, dilation=2, groups=2, padding=2),
     (4, 6, 5), True),
    (dict(in_channels=2, out_channels=3, kernel_size=3, padding=1, padding_mode="reflect"),
     (2, 5, 5), False),
    (dict(in_channels=2, out_channels=3, kernel_size=3, padding="same", bias=False),
     (2, 4, 6), True),
])
def test_conv_operator_equals_its_matrix(conv, shape, exact):
    torch.manual_seed(0)
    m = nn.Conv2d(**conv).double()
    bias_free = nn.Conv2d(**{**conv, "bias": False}).double()
    bias_free.weight.data.copy_(m.weight.data)
    out = int(np.prod(m(torch.zeros(1, *shape, dtype=torch.float64)).shape))
    model = nn.Sequential(m, nn.ReLU(), nn.Flatten(), nn.Linear(out, 1).double())
    op, lowered = _first_operator(model, shape)
    _check(op, _module_matrix(bias_free, shape), exact_abs=exact)
    with torch.no_grad():
        b = m(torch.zeros(1, *shape, dtype=torch.float64)).reshape(-1).numpy()
    np.testing.assert_array_equal(lowered.layers[0][1], b)


def test_conv1d_bn_pool_chain_is_bounded_by_its_factors():
    """conv -> BatchNorm (negative scales) -> average pooling -> conv: apply equals the product
    of the factors' matrices, written here independently; apply_abs is bounded below by
    |W| |h| and equal to the product of the absolute factors."""
    rng = np.random.default_rng(3)
    torch.manual_seed(3)
    c1, bn, pool = nn.Conv1d(2, 3, 3, padding=1).double(), _bn(3, 1, rng), nn.AvgPool1d(2)
    c2 = nn.Conv1d(3, 2, 2, stride=2).double()
    model = nn.Sequential(c1, bn, pool, c2, nn.ReLU(), nn.Flatten(), nn.Linear(8, 1).double())
    shape = (2, 16)
    op, _ = _first_operator(model, shape)
    scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().numpy()
    f1 = _module_matrix(lambda t: nn.functional.conv1d(t, c1.weight, None, padding=1), shape)
    f2 = np.diag(np.repeat(scale, 16))
    f3 = np.zeros((24, 48))
    for i in range(24):  # each output averages two neighbours of its channel
        f3[i, 2 * i:2 * i + 2] = 0.5
    f4 = _module_matrix(lambda t: nn.functional.conv1d(t, c2.weight, None, stride=2), (3, 8))
    factors = [f4, f3, f2, f1]
    dense = np.linalg.multi_dot(factors)
    _check(op, dense, exact_abs=False)
    h = rng.normal(size=(4, 32))
    np.testing.assert_allclose(op.apply_abs(h),
                               np.abs(h) @ np.linalg.multi_dot([np.abs(f) for f in factors]).T,
                               rtol=1e-12, atol=1e-12)


def test_operators_none_keeps_small_layers_dense_bit_for_bit():
    torch.manual_seed(1)
    model = _cnn(1, 3, 2, 6).double().eval()
    dense = lower(model, (1, 6, 6), operators=False)
    auto = lower(model, (1, 6, 6))
    assert not any(isinstance(w, AffineOperator) for w, _ in auto.layers)
    for (w1, b1), (w2, b2) in zip(dense.layers, auto.layers, strict=True):
        assert np.array_equal(w1, w2) and np.array_equal(b1, b2)


def test_large_stage_is_an_operator_by_default(monkeypatch):
    monkeypatch.setattr(lowering, "DENSE_ENTRIES", 100)
    model = _cnn(1, 3, 2, 6).double().eval()
    kinds = [isinstance(w, AffineOperator) for w, _ in lower(model, (1, 6, 6)).layers]
    assert kinds == [True, True, False]


def _cnn(c_in, c1, c2, size, stride=2, pool=True):
    out = (size + 2 - 3) // stride + 1
    if pool:
        out //= 2
    return nn.Sequential(
        nn.Conv2d(c_in, c1, 3, padding=1), nn.BatchNorm2d(c1), nn.ReLU(),
        nn.Conv2d(c1, c2, 3, padding=1, stride=stride), nn.LeakyReLU(0.1),
        *([nn.AvgPool2d(2)] if pool else []), nn.Flatten(), nn.Linear(c2 * out * out, 3))


def _same_counts(a, b):
    for key in ("activation_regions", "linear_pieces", "vertices", "edges", "cells"):
        assert getattr(a, key) == getattr(b, key), key
    assert a.resolved and b.resolved
    # region for region: the same patterns with the same areas; piece for piece: the same
    # grouping of patterns into pieces
    pa, pb = (np.array([bytes(p) for p in r.patterns]) for r in (a, b))
    ia, ib = np.argsort(pa), np.argsort(pb)
    assert np.array_equal(pa[ia], pb[ib])
    np.testing.assert_allclose(a.areas[ia], b.areas[ib], rtol=1e-9, atol=1e-14)
    _, first = np.unique(a.pieces[ia], return_inverse=True)
    _, second = np.unique(b.pieces[ib], return_inverse=True)
    pairs = set(zip(first.tolist(), second.tolist(), strict=True))
    assert len(pairs) == a.linear_pieces
    assert a.decision_length == pytest.approx(b.decision_length, rel=1e-9, abs=1e-12)


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10**6), c1=st.integers(1, 3), size=st.integers(4, 6),
       stride=st.integers(1, 2), pool=st.booleans())
def test_plane_count_with_operators_equals_dense(seed, c1, size, stride, pool):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = _cnn(2, c1, 2, size, stride, pool and size // stride >= 2).double()
    model[1] = _bn(c1, 2, rng)
    model.eval()
    shape = (2, size, size)
    pts = rng.uniform(0, 1, (3, *shape))
    dense = lower(model, shape, operators=False)
    ops = lower(model, shape, operators=True)
    assert [isinstance(w, AffineOperator) for w, _ in ops.layers] == [True, True, False]
    x = rng.uniform(0, 1, (4, int(np.prod(shape))))
    with torch.no_grad():
        want = model(torch.as_tensor(x).reshape(4, *shape)).numpy()
    np.testing.assert_allclose(forward(ops.layers, ops.leaks, x), want, rtol=1e-10, atol=1e-12)
    _same_counts(count_lowered_plane(dense, *pts), count_lowered_plane(ops, *pts))


def test_tiled_count_with_operators_equals_untiled():
    torch.manual_seed(5)
    model = _cnn(1, 2, 2, 6).double().eval()
    shape = (1, 6, 6)
    pts = np.random.default_rng(5).uniform(0, 1, (3, *shape))
    ops = lower(model, shape, operators=True)
    whole = count_lowered_plane(ops, *pts)
    tiled = count_lowered_plane(ops, *pts, max_memory="1GB", tiles=(2, 2))
    assert (tiled.activation_regions, tiled.linear_pieces, tiled.vertices) == \
        (whole.activation_regions, whole.linear_pieces, whole.vertices)
    planned = count_lowered_plane(ops, *pts, max_memory="1GB")  # the planner reads operators
    assert planned.activation_regions == whole.activation_regions


def test_counters_that_need_dense_layers_refuse_operators(monkeypatch):
    monkeypatch.setattr(lowering, "DENSE_ENTRIES", 10)  # every conv stage an operator
    torch.manual_seed(2)
    model = _cnn(1, 2, 2, 6).double().eval()
    model.input_shape = (1, 6, 6)
    x0, x1 = np.zeros((1, 6, 6)), np.ones((1, 6, 6))
    with pytest.raises(InputError, match="count it on a plane"):
        count_regions_segment(model, x0, x1)
    with pytest.raises(InputError, match="operators"):
        sample_regions_segment(model, x0.reshape(-1), x1.reshape(-1), samples=11)
    lowered = lower(model, (1, 6, 6), operators=True)
    with pytest.raises(InputError, match="dense layers"):
        LoweredNet.from_layers(lowered.layers, lowered.leaks, lowered.input_shape)


def test_saving_a_lowered_checkpoint_of_operators_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(lowering, "DENSE_ENTRIES", 10)
    model = _cnn(1, 2, 2, 6).double().eval()
    model.input_shape = (1, 6, 6)
    with pytest.raises(InputError, match="state_dict"):
        save(model, tmp_path / "m.pt")


def test_skip_connection_on_a_stage_too_wide_to_make_dense_is_refused(monkeypatch):
    class Skip(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3, padding=1)
            self.head = nn.Linear(36, 1)

        def forward(self, x):
            return self.head((x + torch.relu(self.conv(x))).flatten(1))

    model = Skip().double().eval()
    assert len(lower(model, (1, 6, 6), operators=True).layers) == 2  # small: made dense
    monkeypatch.setattr(lowering, "DENSE_CAP", 100)
    with pytest.raises(InputError, match="kept as operators"):
        lower(model, (1, 6, 6), operators=True)
