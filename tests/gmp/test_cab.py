"""Characteristic activation analysis (relu_regions.cab) and the GmP studies (smoke + data)."""

import copy
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from relu_regions import InputError
from relu_regions.gmp.cab import (
    CABHistory,
    CABTracker,
    angle_between,
    characteristic_activation,
    effective_affine,
    stability,
)
from relu_regions.gmp.layers import GmPLinear, GmPLinearReLU
from relu_regions.gmp.studies import (
    KerasAdam,
    StudyData,
    banana_data,
    build_model,
    keel_banana_data,
    levy_data,
    levy_function,
    load_keel_banana,
    run_banana,
    run_levy,
    train_run,
)

D = torch.float64


def _gen(seed):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- CAB geometry
@settings(max_examples=60, deadline=None)
@given(d=st.integers(1, 16), seed=st.integers(0, 2**31 - 1))
def test_location_is_nearest_point_of_the_boundary(d, seed):
    g = _gen(seed)
    w, b = torch.randn(5, d, generator=g, dtype=D), torch.randn(5, generator=g, dtype=D)
    cab = characteristic_activation(w, b)
    phi = cab.location
    assert torch.allclose((w * phi).sum(-1) + b, torch.zeros(5, dtype=D), atol=1e-12)  # on the CAB
    # parallel to w, hence the nearest point to the origin
    assert torch.allclose(phi, ((phi * w).sum(-1) / (w * w).sum(-1)).unsqueeze(-1) * w, atol=1e-12)
    if d == 1:
        assert torch.allclose(phi[:, 0], -b / w[:, 0])
    if d == 2:
        assert torch.allclose(cab.angle, torch.atan2(w[:, 1], w[:, 0]))
    else:
        assert cab.angle is None


def test_angle_between_is_accurate():
    a = torch.tensor([1.0, 0.0], dtype=D)
    for t in (1e-9, 0.5, math.pi - 1e-9):
        b = torch.tensor([math.cos(t), math.sin(t)], dtype=D)
        assert abs(float(angle_between(a, 3 * b)) - t) < 1e-14
    assert float(angle_between(a, -a)) == pytest.approx(math.pi, abs=1e-15)


def test_effective_affine_sp_wn_gmp():
    x = torch.randn(10, 3, generator=_gen(0), dtype=D)
    lin = nn.Linear(3, 4, dtype=D)
    w, b = effective_affine(lin)
    assert torch.equal(w, lin.weight.detach()) and torch.equal(b, lin.bias.detach())
    wn = weight_norm(copy.deepcopy(lin), name="weight", dim=0)
    w2, b2 = effective_affine(wn)
    assert torch.allclose(w2, lin.weight, atol=1e-15) and torch.equal(b2, b)
    gmp = GmPLinear.from_linear(lin)
    w3, b3 = effective_affine(gmp)
    assert torch.allclose(w3, w, atol=1e-14) and torch.allclose(b3, b, atol=1e-14)
    fused = GmPLinearReLU.from_linear(lin)
    with torch.no_grad():
        fused.r[0] *= -1
    w4, b4 = effective_affine(fused)  # the true CAB: direction u(theta) whatever the sign of r
    assert torch.allclose(w4, w, atol=1e-14) and torch.allclose(b4, b, atol=1e-14)
    assert torch.allclose(fused(x), fused.output_sign * torch.relu(x @ w4.T + b4), atol=1e-13)
    conv = nn.Conv2d(2, 3, 2, dtype=D)
    wc, bc = effective_affine(conv)
    assert wc.shape == (3, 8) and torch.equal(bc, conv.bias.detach())


def test_batchnorm_folding_batch_and_running_stats():
    g = _gen(1)
    lin = nn.Linear(2, 5, dtype=D)
    bn = nn.BatchNorm1d(5, dtype=D)
    with torch.no_grad():
        bn.weight.copy_(torch.randn(5, generator=g, dtype=D))
        bn.bias.copy_(torch.randn(5, generator=g, dtype=D))
    x = torch.randn(40, 2, generator=g, dtype=D) * 3 + 1
    w, b = effective_affine(lin, bn, x)  # batch statistics of x
    train_bn = copy.deepcopy(bn).train()
    assert torch.allclose(train_bn(lin(x)), x @ w.T + b, atol=1e-12)
    for _ in range(3):
        bn(lin(x))  # move the running statistics away from their init
    before = bn.running_mean.clone()
    w, b = effective_affine(lin, bn)  # running statistics: the eval-mode function
    assert torch.equal(bn.running_mean, before)  # folding never updates BN
    assert torch.allclose(bn.eval()(lin(x)), x @ w.T + b, atol=1e-12)
    with pytest.raises(InputError):
        effective_affine(lin, nn.BatchNorm1d(3, dtype=D), x)


# ---------------------------------------------------------------- Propositions (perturbations)
def _turn(layer_before, layer_after, bn=None, x=None):
    w0, _ = effective_affine(layer_before, bn, x)
    w1, _ = effective_affine(layer_after, bn, x)
    return angle_between(w0, w1)


@pytest.mark.parametrize("eps", [1e-1, 1e-4, 1e-8])
def test_sp_direction_turn_is_unbounded_in_the_step(eps):
    """Prop. 2.3 (SP): with ||w|| = eps, a step of size eps turns the CAB by pi/4 whatever eps,
    so turn / step = pi / (4 eps) grows without bound; a step of 2 eps turns it by pi."""
    lin = nn.Linear(2, 1, dtype=D)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[eps, 0.0]], dtype=D))
    moved = copy.deepcopy(lin)
    with torch.no_grad():
        moved.weight += torch.tensor([[0.0, eps]], dtype=D)
    turn = float(_turn(lin, moved))
    assert turn == pytest.approx(math.pi / 4, abs=1e-12)
    assert turn / eps >= math.pi / 4 / 1e-1 * 0.999
    with torch.no_grad():
        moved.weight.copy_(lin.weight - 2 * lin.weight)
    assert float(_turn(lin, moved)) == pytest.approx(math.pi, abs=1e-12)


@pytest.mark.parametrize("eps", [1e-1, 1e-4, 1e-8])
def test_wn_direction_turn_is_unbounded_in_the_step(eps):
    """Prop. 2.4 (WN): w = g v / ||v||; with ||v|| = eps a step of eps in v turns by pi/4."""
    lin = nn.Linear(2, 1, dtype=D)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[eps, 0.0]], dtype=D))
    wn = weight_norm(lin, name="weight", dim=0)
    moved = copy.deepcopy(wn)
    with torch.no_grad():
        moved.parametrizations.weight.original1 += torch.tensor([[0.0, eps]], dtype=D)
    assert float(_turn(wn, moved)) == pytest.approx(math.pi / 4, abs=1e-12)


@pytest.mark.parametrize("eps", [1e-1, 1e-4, 1e-8])
def test_bn_direction_flips_when_gamma_is_small(eps):
    """Prop. 2.5 (BN): the effective w is gamma w / s; with gamma = eps / 2 a step of eps in gamma
    flips the CAB normal (turn pi)."""
    g = _gen(3)
    lin = nn.Linear(2, 1, dtype=D)
    bn = nn.BatchNorm1d(1, dtype=D)
    x = torch.randn(32, 2, generator=g, dtype=D)
    with torch.no_grad():
        bn.weight.fill_(eps / 2)
    w0, _ = effective_affine(lin, bn, x)
    with torch.no_grad():
        bn.weight -= eps
    w1, _ = effective_affine(lin, bn, x)
    assert float(angle_between(w0, w1)) == pytest.approx(math.pi, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(d=st.integers(2, 32), seed=st.integers(0, 2**31 - 1), eps=st.floats(1e-8, 0.5),
       log_r=st.floats(-8, 2))
def test_gmp_turn_is_bounded_by_the_theta_step(d, seed, eps, log_r):
    """GmP (Section 3): whatever the radius (even 1e-8), a step of norm eps in theta turns each
    unit's CAB by at most eps; steps in r or lambda do not turn it at all."""
    gmp = GmPLinear(d, 4, generator=_gen(seed))
    with torch.no_grad():
        gmp.r.fill_(10**log_r)
    moved = copy.deepcopy(gmp)
    delta = torch.randn(gmp.theta.shape, generator=_gen(seed + 1), dtype=D)
    delta = delta / torch.linalg.vector_norm(delta, dim=1, keepdim=True) * eps
    with torch.no_grad():
        moved.theta += delta
        moved.r.mul_(1.5)
        moved.lam.add_(eps)
    turn = _turn(gmp, moved)
    assert torch.all(turn <= eps * (1 + 1e-9) + 1e-12)


# ---------------------------------------------------------------- tracking and metrics
def test_stability_series():
    w = torch.tensor([[[1.0], [2.0]], [[1.0], [-2.0]], [[0.5], [-2.0]]], dtype=D)
    b = torch.tensor([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0]], dtype=D)
    st_ = stability(CABHistory(w, b))
    # phi: [-1, -1] -> [-1, 1] -> [-2, 1]
    assert st_.location_change.tolist() == [2.0, 1.0]
    assert st_.angle_change is None
    w2 = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]], dtype=D)
    st2 = stability(CABHistory(w2, torch.ones(2, 1, dtype=D)))
    assert float(st2.angle_change[0]) == pytest.approx(math.pi / 2)
    w3 = torch.tensor([[[1.0]], [[0.0]]], dtype=D)  # the CAB vanishes: infinite jump
    vanishing = stability(CABHistory(w3, torch.ones(2, 1, dtype=D)))
    assert math.isinf(float(vanishing.location_change[0]))
    json.dumps(st2.to_dict())
    with pytest.raises(InputError):
        stability(CABHistory(w[:1], b[:1]))


def test_tracker_records_without_touching_bn():
    model = build_model("BN", 2, 6, 1, seed=0)
    x = torch.randn(16, 2, generator=_gen(0), dtype=D)
    tracker = CABTracker(model[0], model[1], x)
    before = model[1].running_mean.clone()
    tracker.record()
    tracker.record()
    assert len(tracker) == 2 and torch.equal(model[1].running_mean, before)
    hist = tracker.history()
    assert hist.weight.shape == (2, 6, 2) and hist.cab.location.shape == (2, 6, 2)


def test_gmp_levy_training_moves_cabs_by_at_most_the_adam_step():
    """1D GmP: phi_i = -lambda_i sign_i, so a full-batch epoch moves each CAB by one Adam step on
    lambda, at most lr (1 - b1) / sqrt(1 - b2) ~ 3.16 lr (Kingma & Ba, Section 2.1), however small
    r is. SP at a 10x smaller rate jumps far more."""
    data = levy_data(0)
    out = {}
    for method, lr in (("GmP", 0.1), ("SP", 0.01)):
        model = build_model(method, 1, 100, 1, seed=10_000)
        _, _, hist = train_run(model, data, loss="mae", lr=lr, epochs=60, batch_size=None,
                               plateau_patience=500, early_stop_patience=1000, restore_best=True)
        out[method] = stability(hist).location_change
    assert float(out["GmP"].max()) <= 0.1 * 0.1 / math.sqrt(1 - 0.999) * (1 + 1e-9)
    assert float(out["SP"].max()) > 10 * float(out["GmP"].max())


# ---------------------------------------------------------------- data and studies
def test_levy_data_is_the_papers_draw():
    d = levy_data(0)
    rs = np.random.RandomState(0)
    x = rs.uniform(-10, 10, size=(50, 1))
    eps = rs.normal(0, 0.1, size=(50, 1))
    assert np.array_equal(d.x_train.numpy(), x)
    assert torch.allclose(d.y_train, levy_function(torch.from_numpy(x)) + torch.from_numpy(eps))
    assert d.x_test.shape == (201, 1) and float(d.x_test[0]) == -10 and float(d.x_test[-1]) == 10
    # the global minimum
    assert float(levy_function(torch.tensor(1.0, dtype=D))) == pytest.approx(0.0, abs=1e-15)


def test_banana_data():
    d = banana_data(3)
    assert d.x_train.shape == (800, 2) and d.x_test.shape == (200, 2)
    assert torch.allclose(d.x_train.mean(0), torch.zeros(2, dtype=D), atol=1e-12)
    assert torch.allclose(d.x_train.std(0, unbiased=False), torch.ones(2, dtype=D))
    labels = torch.cat([d.y_train, d.y_test])
    assert float(labels.sum()) == 500
    assert torch.equal(banana_data(3).x_test, d.x_test)
    assert not torch.equal(banana_data(4).x_test, d.x_test)


def test_all_methods_start_from_the_same_function():
    x = torch.linspace(-3, 3, 50, dtype=D).unsqueeze(1)
    outs = {}
    for m in ("SP", "WN", "BN", "GmP"):
        model = build_model(m, 1, 20, 1, seed=5).eval()
        outs[m] = model(x)
    assert torch.allclose(outs["SP"], outs["WN"], atol=1e-12)
    assert torch.allclose(outs["SP"], outs["GmP"], atol=1e-12)
    # BN at init in eval mode is the identity up to sqrt(1 + eps)
    assert torch.allclose(outs["SP"], outs["BN"] * math.sqrt(1 + 1e-5), atol=1e-9)


def _check_summaries(res):
    """Each method's summary is its runs aggregated: mean and sample std of the metric, the
    stability values the per-run maxima of the CAB movement, their median torch's (lower) one."""
    for name, m in res.methods.items():
        runs = [r for r in res.runs if r.method == name]
        values = [r.metric for r in runs]
        assert m.metric_values == values and len(values) == len(set(r.seed for r in runs))
        assert m.metric_mean == pytest.approx(np.mean(values), rel=1e-12)
        std = np.std(values, ddof=1) if len(values) > 1 else 0.0
        assert m.metric_std == pytest.approx(std, rel=1e-9, abs=1e-15)
        series = [r.location_change if res.metric == "test_rmse" else r.angle_change for r in runs]
        assert m.stability_values == [float(v.max()) for v in series]
        assert m.stability_median == sorted(m.stability_values)[(len(values) - 1) // 2]


def test_smoke_run_levy(tmp_path):
    res = run_levy(seeds=2, epochs=15, out=tmp_path / "figs", units=12)
    d = json.loads(json.dumps(res.to_dict()))
    assert set(d["methods"]) == {"SP", "WN", "BN", "GmP"}
    _check_summaries(res)
    for m in d["methods"].values():
        assert len(m["metric_values"]) == 2 and m["metric_values"][0] != m["metric_values"][1]
    assert d["methods"]["GmP"]["lr"] == 0.1 and d["methods"]["SP"]["lr"] == 0.01
    assert len(res.figures) == 3
    assert all((tmp_path / "figs" / f.split("/")[-1]).stat().st_size > 1000 for f in res.figures)
    again = run_levy(seeds=2, epochs=15, units=12)  # seeded: identical numbers
    assert again.methods["GmP"].metric_values == res.methods["GmP"].metric_values


def test_smoke_run_banana(tmp_path):
    res = run_banana(seeds=[4], epochs=3, out=tmp_path, methods=["SP", "GmP"], units=4,
                     data="generated")
    assert list(res.methods) == ["SP", "GmP"] and res.metric == "test_accuracy"
    _check_summaries(res)
    # An accuracy on the 200 generated test points is a whole number of them.
    for m in res.methods.values():
        assert m.metric_mean * 200 == pytest.approx(round(m.metric_mean * 200), abs=1e-9)
    assert len(res.figures) == 3 and res.runs[0].angle_change is not None
    json.dumps(res.to_dict())


@pytest.mark.parametrize("kwargs", [dict(seeds=0), dict(seeds=[]), dict(epochs=0),
                                    dict(methods=["XX"]), dict(lrs={"GmP": -1}),
                                    dict(device="nonsense"), dict(data_seed=-1)])
def test_bad_study_input(kwargs):
    with pytest.raises(InputError):
        run_levy(**{"epochs": 1, **kwargs})


def test_out_must_be_a_directory(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(InputError):
        run_banana(seeds=1, epochs=1, out=f)
    with pytest.raises(InputError):
        run_banana(seeds=1, epochs=1, batch_size=1)


def test_batchnorm2d_folding_into_a_convolution():
    g = _gen(2)
    conv = nn.Conv2d(2, 3, 3, padding=1, dtype=D)
    bn = nn.BatchNorm2d(3, dtype=D)
    with torch.no_grad():
        bn.weight.copy_(torch.randn(3, generator=g, dtype=D))
    x = torch.randn(4, 2, 6, 6, generator=g, dtype=D)
    w, b = effective_affine(conv, bn, x)
    folded = torch.nn.functional.conv2d(x, w.reshape(conv.weight.shape), b, padding=1)
    assert torch.allclose(copy.deepcopy(bn).train()(conv(x)), folded, atol=1e-12)


# ---------------------------------------------------------------- Keras-faithful training
def test_keras_adam_matches_the_keras_update():
    """KerasAdam == var -= lr sqrt(1 - b2^t) / (1 - b1^t) m / (sqrt(v) + 1e-7) (TF 2.8 Adam)."""
    g = _gen(7)
    w0 = torch.randn(5, generator=g, dtype=D)
    # tiny grads: eps matters
    grads = [torch.randn(5, generator=g, dtype=D) * 10.0 ** -k for k in range(8)]
    p = nn.Parameter(w0.clone())
    opt = KerasAdam([p], lr=0.1)
    var, m, v = w0.numpy().copy(), np.zeros(5), np.zeros(5)
    for t, grad in enumerate(grads, start=1):
        p.grad = grad.clone()
        opt.step()
        gn = grad.numpy()
        m = m + (gn - m) * 0.1
        v = v + (gn * gn - v) * 0.001
        var = var - 0.1 * math.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t) * m / (np.sqrt(v) + 1e-7)
        np.testing.assert_allclose(p.detach().numpy(), var, rtol=1e-12, atol=1e-15)


def test_keras_early_stop_count():
    """Keras 2.8 EarlyStopping: training stops after `patience` epochs without improvement."""
    data = levy_data(0)
    model = build_model("SP", 1, 4, 1, seed=0)
    for prm in model.parameters():
        prm.requires_grad_(False)
    model[0].bias.requires_grad_(True)  # one trainable tensor, so Adam has something to hold
    with torch.no_grad():
        model[2].weight.zero_()  # output ignores the hidden layer: the loss never changes
    n_ep, best, hist = train_run(model, data, loss="mae", lr=0.1, epochs=50, batch_size=None,
                                 plateau_patience=3, early_stop_patience=7, restore_best=True)
    assert n_ep == 8 and len(hist.weight) == 9  # epoch 1 improves on inf, then 7 flat epochs


def test_early_stop_restores_only_when_stopping():
    data = levy_data(0)
    kw = dict(loss="mae", lr=0.1, batch_size=None, plateau_patience=500, early_stop_patience=1000,
              restore_best=True)
    a = build_model("GmP", 1, 10, 1, seed=3)
    train_run(a, data, epochs=20, **kw)  # budget runs out: last weights kept (Keras 2.8)
    b = build_model("GmP", 1, 10, 1, seed=3)
    train_run(b, data, epochs=20, **{**kw, "restore_best": False})
    assert all(torch.equal(x, y)
               for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def _write_keel(path, n=60, seed=0, header=True):
    rs = np.random.RandomState(seed)
    x = rs.normal(size=(n, 2)).round(4)
    y = np.where(rs.rand(n) < 0.5, -1.0, 1.0)
    if header:
        lines = ["@relation banana", "@attribute At1 real", "@attribute At2 real", "@data"]
    else:
        lines = ["At1,At2,Class"]
    lines += [f"{a},{b},{c}" for (a, b), c in zip(x, y, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return x, (y > 0).astype(float)


def test_keel_banana_loader_and_the_papers_split(tmp_path):
    f = tmp_path / "banana.dat"
    x, y = _write_keel(f)
    xs, ys = load_keel_banana(f)
    assert np.array_equal(xs, x) and np.array_equal(ys, y)
    c = tmp_path / "2d_banana.csv"
    _write_keel(c, header=False)
    assert np.array_equal(load_keel_banana(c)[0], x)
    d = keel_banana_data(5, path=f, n=40, n_train=30)
    assert isinstance(d, StudyData) and d.x_train.shape == (30, 2) and d.x_test.shape == (10, 2)
    assert torch.allclose(d.x_train.mean(0), torch.zeros(2, dtype=D), atol=1e-12)
    # the paper: RandomState(seed).choice, then train_test_split(test_size=0.2, random_state=seed)
    idx = np.random.RandomState(5).choice(60, 40, replace=False)
    perm = np.random.RandomState(5).permutation(40)
    xa = x[idx]
    mean, std = xa[perm[10:]].mean(0), xa[perm[10:]].std(0)
    np.testing.assert_allclose(d.x_test.numpy(), (xa[perm[:10]] - mean) / std, atol=1e-12)
    np.testing.assert_array_equal(d.y_test.numpy()[:, 0], y[idx][perm[:10]])
    sk = pytest.importorskip("sklearn.model_selection")
    xtr, xte = sk.train_test_split(xa, test_size=10, random_state=5)
    np.testing.assert_array_equal(xte, xa[perm[:10]])
    np.testing.assert_array_equal(xtr, xa[perm[10:]])


def test_keel_banana_bad_input(tmp_path):
    with pytest.raises(InputError):
        load_keel_banana(tmp_path / "missing.dat")
    bad = tmp_path / "bad.dat"
    bad.write_text("1,2\n3,4\n")
    with pytest.raises(InputError):
        load_keel_banana(bad)
    f = tmp_path / "banana.dat"
    _write_keel(f, n=20)
    with pytest.raises(InputError):
        keel_banana_data(0, path=f, n=30, n_train=20)
    with pytest.raises(InputError):
        run_banana(seeds=1, epochs=1, data=tmp_path / "nope.dat")
    with pytest.raises(InputError):
        run_banana(seeds=1, epochs=1, data=3)


def test_run_banana_on_a_keel_file(tmp_path):
    f = tmp_path / "banana.dat"
    _write_keel(f, n=1100)
    res = run_banana(seeds=[1], epochs=2, methods=["GmP"], units=3, data=f)
    assert res.config["data"] == f"keel:{f}"
    _check_summaries(res)
    n_test = 1000 - 800  # the protocol draws 1000 of the file's points, 800 for training
    acc = res.methods["GmP"].metric_mean
    assert acc * n_test == pytest.approx(round(acc * n_test), abs=1e-9)


def test_study_markdown_table():
    res = run_levy(seeds=2, epochs=5, units=6, methods=["SP", "GmP"])
    md = res.to_markdown("Levy smoke")
    lines = md.splitlines()
    assert lines[0] == "### Levy smoke"
    rows = [ln for ln in lines if ln.startswith("| SP ") or ln.startswith("| GmP ")]
    assert len(rows) == 2 and all(r.count("|") == 11 for r in rows)
    assert "1.104" in rows[0] and "0.496" in rows[1]  # the paper's numbers beside ours
    assert f"{res.methods['GmP'].metric_mean:.3f}" in rows[1]
