"""The block-diagonal layer (relu_regions.blockdiag): dense equivalence, conversions, gradients,
counts, the construction initialization as a per-block width-4 construction, bad input."""

import importlib.util
import io
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from relu_regions import InputError
from relu_regions.nets.blockdiag import (
    BlockDiagonalLinear,
    construction_blocks,
    construction_chain_init_,
    construction_init_,
    kaiming_init_,
)
from relu_regions.nets.construction import derived_forward, raw_weights, thm31_scales

F64 = torch.float64
ROOT = Path(__file__).resolve().parents[2]


def gen(seed):
    return torch.Generator().manual_seed(seed)


def manual_dense(layer: BlockDiagonalLinear) -> torch.Tensor:
    """The block-diagonal matrix written out entry by entry (independent of dense_weight)."""
    w = torch.zeros(layer.out_features, layer.in_features, dtype=layer.weight.dtype)
    bo, bi = layer.block_out, layer.block_in
    for j in range(layer.n_blocks):
        w[j * bo:(j + 1) * bo, j * bi:(j + 1) * bi] = layer.weight[j].detach()
    return w


def dense_twin(layer: BlockDiagonalLinear) -> nn.Linear:
    lin = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None, dtype=F64)
    with torch.no_grad():
        lin.weight.copy_(manual_dense(layer))
        if layer.bias is not None:
            lin.bias.copy_(layer.bias)
    return lin


layers = st.builds(
    lambda n, bi, bo, bias, seed: BlockDiagonalLinear(n * bi, n * bo, block=bi, bias=bias,
                                                      dtype=F64, generator=gen(seed)),
    st.integers(1, 6), st.integers(1, 5), st.integers(1, 5), st.booleans(), st.integers(0, 2**31))
batch_shapes = st.lists(st.integers(0, 3), min_size=0, max_size=3).map(tuple)


@settings(max_examples=60, deadline=None)
@given(layers, batch_shapes, st.integers(0, 2**31))
def test_equals_dense_linear_with_the_same_block_diagonal_weight(layer, shape, seed):
    x = torch.randn(*shape, layer.in_features, generator=gen(seed), dtype=F64)
    twin = dense_twin(layer)
    y = layer(x)
    assert y.shape == shape + (layer.out_features,)
    assert torch.allclose(y, twin(x), rtol=0, atol=1e-12)
    assert torch.equal(layer.dense_weight(), manual_dense(layer))
    assert torch.allclose(layer.to_dense()(x), y, rtol=0, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(layers, st.integers(0, 2**31))
def test_to_dense_from_dense_round_trip(layer, seed):
    back = BlockDiagonalLinear.from_dense(layer.to_dense(), block=layer.block_in)
    assert torch.equal(back.weight, layer.weight)
    assert (back.bias is None) == (layer.bias is None)
    if layer.bias is not None:
        assert torch.equal(back.bias, layer.bias)
    # From an arbitrary dense layer: exactly its diagonal blocks are kept, the rest dropped.
    dense = nn.Linear(layer.in_features, layer.out_features, dtype=F64)
    with torch.no_grad():
        dense.weight.copy_(torch.randn(dense.weight.shape, generator=gen(seed), dtype=F64))
    kept = BlockDiagonalLinear.from_dense(dense, block=layer.block_in)
    bo, bi = kept.block_out, kept.block_in
    for j in range(kept.n_blocks):
        assert torch.equal(kept.weight[j], dense.weight[j * bo:(j + 1) * bo, j * bi:(j + 1) * bi])
    mask = manual_dense(kept) != 0
    assert torch.equal(kept.dense_weight()[mask], dense.weight[mask])
    assert torch.equal(kept.bias, dense.bias)


def test_conversions_do_not_touch_the_global_random_stream():
    layer = BlockDiagonalLinear(8, 8, dtype=F64, generator=gen(0))
    state = torch.random.get_rng_state()
    BlockDiagonalLinear.from_dense(layer.to_dense())
    assert torch.equal(state, torch.random.get_rng_state())


@settings(max_examples=30, deadline=None)
@given(layers, st.integers(0, 2**31))
def test_gradients_are_the_dense_gradients_restricted_to_the_blocks(layer, seed):
    g = gen(seed)
    x = torch.randn(7, layer.in_features, generator=g, dtype=F64)
    target = torch.randn(7, layer.out_features, generator=g, dtype=F64)
    twin = dense_twin(layer)
    for m in (layer, twin):
        (torch.relu(m(x)) - target).pow(2).sum().backward()
    bo, bi = layer.block_out, layer.block_in
    for j in range(layer.n_blocks):
        dense_block = twin.weight.grad[j * bo:(j + 1) * bo, j * bi:(j + 1) * bi]
        assert torch.allclose(layer.weight.grad[j], dense_block, rtol=0, atol=1e-10)
    if layer.bias is not None:
        assert torch.allclose(layer.bias.grad, twin.bias.grad, rtol=0, atol=1e-10)
    # Structural zeros: the only parameters are the blocks (and bias), so a training step
    # cannot move an off-block entry, however large the dense gradient there.
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    opt.step()
    off = manual_dense(BlockDiagonalLinear(layer.in_features, layer.out_features,
                                           block=bi, dtype=F64, generator=gen(1))) == 0
    assert torch.all(layer.dense_weight()[off] == 0)
    assert sum(p.numel() for p in layer.parameters()) == layer.n_params


def test_state_dict_round_trip():
    a = BlockDiagonalLinear(12, 24, block=4, dtype=F64, generator=gen(1))
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf, weights_only=True)
    assert set(sd) == {"weight", "bias"} and sd["weight"].shape == (3, 8, 4)
    b = BlockDiagonalLinear(12, 24, block=4, dtype=F64, generator=gen(2))
    b.load_state_dict(sd)
    x = torch.randn(5, 12, generator=gen(3), dtype=F64)
    assert torch.equal(a(x), b(x))
    # A dense state dict does not fit (different shape): PyTorch says so.
    with pytest.raises(RuntimeError):
        b.load_state_dict(a.to_dense().state_dict())


@settings(max_examples=40, deadline=None)
@given(layers, st.integers(1, 50))
def test_parameter_and_flop_counts(layer, batch):
    with torch.no_grad():  # no accidental zeros in the blocks, so nonzeros = stored weights
        layer.weight.copy_(layer.weight.sign() * (layer.weight.abs() + 0.5))
    nnz = int((layer.dense_weight() != 0).sum())
    has_bias = layer.bias is not None
    assert layer.n_params == nnz + has_bias * layer.out_features
    assert layer.n_params == sum(p.numel() for p in layer.parameters())
    assert layer.flops(batch) == batch * nnz
    assert layer.flops(batch) * layer.n_blocks == layer.dense_flops(batch)
    assert layer.dense_n_params == layer.to_dense().weight.numel() + has_bias * layer.out_features


def test_default_init_matches_nn_linear_rule_and_is_seeded():
    a = BlockDiagonalLinear(400, 400, block=4, dtype=F64, generator=gen(5))
    b = BlockDiagonalLinear(400, 400, block=4, dtype=F64, generator=gen(5))
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    assert a.weight.abs().max() <= 0.5 and a.weight.abs().max() > 0.49  # U(-1/sqrt(4), 1/sqrt(4))


def test_kaiming_init():
    layer = kaiming_init_(BlockDiagonalLinear(4000, 4000, block=4, dtype=F64), gen(0))
    assert torch.all(layer.bias == 0)
    assert abs(layer.weight.std().item() - math.sqrt(2 / 4)) < 0.01
    again = kaiming_init_(BlockDiagonalLinear(4000, 4000, block=4, dtype=F64), gen(0))
    assert torch.equal(layer.weight, again.weight)


# ---------------------------------------------------------------------------------------------
# Construction initialization

@settings(max_examples=30, deadline=None)
@given(st.integers(1, 5), st.integers(1, 6), st.sampled_from([1.0, -1.0]), st.integers(0, 2**31))
def test_chain_blocks_are_the_constructions_hidden_layers(n_blocks, n_layers, sign, seed):
    chain = [BlockDiagonalLinear(4 * n_blocks, 4 * n_blocks, dtype=F64) for _ in range(n_layers)]
    peaks = construction_chain_init_(chain, gen(seed), sign=sign)
    assert peaks.shape == (n_blocks, n_layers + 2)
    assert torch.all((peaks >= 0.25) & (peaks <= 0.75))
    depth = n_layers + 1  # the input layer is hidden layer 0, the chain layers 1..n_layers
    scales = thm31_scales(torch.full((n_blocks,), 0.3, dtype=F64), peaks, depth)
    zero = torch.zeros(n_blocks, dtype=F64)
    raw = raw_weights(peaks, scales, zero, zero, 0.0, 1.0, sign)
    for k, layer in enumerate(chain):
        assert torch.allclose(layer.weight, raw[k + 1][0], rtol=0, atol=1e-12)
        assert torch.all(layer.bias == 0) and torch.all(raw[k + 1][1] == 0)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 4), st.integers(1, 6), st.sampled_from([1.0, -1.0]), st.integers(0, 2**31))
def test_chain_computes_one_construction_per_block(n_blocks, n_layers, sign, seed):
    """Input layer (block 1 -> 4) + chain of 4x4 block layers + read-out (block 4 -> 1), all
    BlockDiagonalLinear with ReLUs between: block j computes F_j(u_j), the derived-form function of
    a depth-(n_layers + 1) construction with block j's peaks, on its own input u_j in [0, 1]."""
    g = gen(seed)
    chain = [BlockDiagonalLinear(4 * n_blocks, 4 * n_blocks, dtype=F64) for _ in range(n_layers)]
    peaks = construction_chain_init_(chain, g, sign=sign)
    depth = n_layers + 1
    s0 = 0.1 + torch.rand(n_blocks, generator=g, dtype=F64)
    c0, c1 = torch.randn(2, n_blocks, generator=g, dtype=F64)
    raw = raw_weights(peaks, thm31_scales(s0, peaks, depth), c0, c1, 0.0, 1.0, sign)
    embed = BlockDiagonalLinear(n_blocks, 4 * n_blocks, block=1, dtype=F64)
    read = BlockDiagonalLinear(4 * n_blocks, n_blocks, block=4, dtype=F64)
    with torch.no_grad():
        embed.weight.copy_(raw[0][0]), embed.bias.copy_(raw[0][1].reshape(-1))
        read.weight.copy_(raw[-1][0]), read.bias.copy_(raw[-1][1].reshape(-1))
    net = nn.Sequential(embed, nn.ReLU(), *[m for c in chain for m in (c, nn.ReLU())], read)
    u = torch.rand(200, n_blocks, generator=g, dtype=F64)
    u[:2] = torch.tensor([0.0, 1.0], dtype=F64).unsqueeze(1)  # the interval's end points
    expected = derived_forward(u.T, peaks, thm31_scales(s0, peaks, depth), c0, c1,
                               0.0, 1.0, sign).T
    scale = 1 + expected.abs().max()
    assert torch.allclose(net(u), expected, rtol=0, atol=1e-12 * scale)


def test_construction_init_single_layer_and_explicit_peaks():
    layer = BlockDiagonalLinear(8, 8, dtype=F64)
    p = torch.tensor([[0.3, 0.6, 0.4], [0.5, 0.5, 0.5]], dtype=F64)
    assert torch.equal(construction_init_(layer, peaks=p), p)
    # a = 1/2 everywhere: Yarotsky's sawtooth, S = 1/4.
    expected = torch.tensor([[1, -2, 4, 0], [0, 0.5, -1, 0], [0, 0.5, -1, -0.125], [0, 0, 0, 0.25]],
                            dtype=F64)
    assert torch.allclose(layer.weight[1], expected, rtol=0, atol=1e-15)
    assert torch.allclose(layer.weight[0], construction_blocks(p[0, 0], p[0, 1], 0.4 * 0.4),
                          rtol=0, atol=1e-15)
    a = construction_init_(BlockDiagonalLinear(8, 8, dtype=F64), gen(3))
    b = construction_init_(BlockDiagonalLinear(8, 8, dtype=F64), gen(3))
    assert torch.equal(a, b) and a.shape == (2, 3)


# ---------------------------------------------------------------------------------------------
# Bad input

@pytest.mark.parametrize("make, message", [
    (lambda: BlockDiagonalLinear(10, 8, block=4), "in_features=10 is not divisible by block=4"),
    (lambda: BlockDiagonalLinear(8, 7, block=4), "out_features=7 is not divisible"),
    (lambda: BlockDiagonalLinear(8, 8, block=0), "block must be an integer >= 1"),
    (lambda: BlockDiagonalLinear(0, 8), "in_features must be"),
    (lambda: BlockDiagonalLinear(8, 8.0), "out_features must be"),
    (lambda: BlockDiagonalLinear(True, 8, block=1), "in_features must be"),
    (lambda: BlockDiagonalLinear(8, 8, dtype=F64)(torch.zeros(3, 7, dtype=F64)), r"\(\.\.\., 8\)"),
    (lambda: BlockDiagonalLinear.from_dense(nn.Linear(10, 8)), "not divisible"),
    (lambda: BlockDiagonalLinear.from_dense(nn.Conv1d(1, 1, 1)), "needs an nn.Linear"),
    (lambda: BlockDiagonalLinear(8, 8).flops(0), "batch must be"),
    (lambda: construction_init_(BlockDiagonalLinear(8, 16)), "4x4 blocks"),
    (lambda: construction_init_(BlockDiagonalLinear(6, 6, block=3)), "4x4 blocks"),
    (lambda: construction_init_(nn.Linear(4, 4)), "expected a BlockDiagonalLinear"),
    (lambda: construction_init_(BlockDiagonalLinear(8, 8), peaks=[[0.5, 1.0, 0.5]] * 2),
     r"inside \(0, 1\)"),
    (lambda: construction_init_(BlockDiagonalLinear(8, 8), peaks=[0.5, 0.5]), r"\(n_blocks, 3\)"),
    (lambda: construction_init_(BlockDiagonalLinear(8, 8), sign=0), "sign must be"),
    (lambda: construction_init_(BlockDiagonalLinear(8, 8), peak_range=(0.5, 1.0)), "peak range"),
    (lambda: construction_chain_init_([]), "at least one layer"),
    (lambda: construction_chain_init_([BlockDiagonalLinear(8, 8), BlockDiagonalLinear(4, 4)]),
     "same number of blocks"),
    (lambda: kaiming_init_(nn.Linear(4, 4)), "expected a BlockDiagonalLinear"),
])
def test_bad_input_raises_input_error(make, message):
    with pytest.raises(InputError, match=message):
        make()


def test_smoke_digits_head(tmp_path, monkeypatch):
    """The experiment runs end to end (1 seed, 1 epoch). scikit-learn (its digits) is in the
    ``test`` extra, so CI runs this; skipped only where the package was installed without it."""
    pytest.importorskip("sklearn", reason="scikit-learn is missing: pip install -e '.[test]'")
    spec = importlib.util.spec_from_file_location("digits_head",
                                                  ROOT / "experiments" / "digits_head.py")
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "digits_head", mod)  # dataclasses look their module up
    spec.loader.exec_module(mod)
    out = tmp_path / "fig"
    assert mod.main(["--seeds", "1", "--epochs", "1", "--width", "8", "--out", str(out),
                     "--json", str(tmp_path / "r.json")]) == 0
    doc = json.loads((tmp_path / "r.json").read_text())
    assert set(doc["heads"]) == set(mod.HEADS)
    assert doc["heads"]["block-construction"]["params"] < doc["heads"]["dense"]["params"]
    assert (out / "digits_head.png").stat().st_size > 0
