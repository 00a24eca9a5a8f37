"""Every field of ``fit``'s result against an independent computation from the public API.

Each test recomputes a field from what the result hands out (``models``, the data the target and
seed define) instead of bounding it: a pieces count that reports activation regions, a test MSE
measured on the training points, or a release that shifts the output would each fail one here.
"""

import json

import numpy as np
import pytest
import torch

from relu_regions import Phase, count_regions, fit, targets
from relu_regions.analysis.limits import efficiency, optimal_pwl

QUICK = dict(phase1=Phase("lm", 6), phase2=Phase("lm", 8), starts=1)
EPS = np.finfo(np.float64).eps


def predict(model, x):
    with torch.no_grad():
        return model(torch.as_tensor(x, dtype=torch.float64).reshape(len(x), -1)).numpy()[:, 0]


def mse_of(model, x, y):
    return float(np.mean((predict(model, x) - y) ** 2))


@pytest.fixture(scope="module")
def kaiming_run():
    # Kaiming nets keep switches that do not bend the output (seed 2 here: 7 activation regions,
    # 3 linear pieces), so pieces and regions differ.
    return fit("x**3", depth=4, seeds=4, method="kaiming", optimum=False, **QUICK)


def test_pieces_are_the_exact_linear_pieces_of_each_model(kaiming_run):
    r = kaiming_run
    counts = [count_regions(m, *r.interval) for m in r.models]
    assert r.pieces.tolist() == [c.linear_pieces for c in counts]
    # The check has teeth: some seed has a switch that does not bend its output.
    assert any(c.activation_regions != c.linear_pieces for c in counts)


def test_dense_mse_is_recomputed_from_the_models(kaiming_run):
    r = kaiming_run
    data = targets.dense(targets.parse_target("x**3"), r.interval)
    mine = np.array([mse_of(m, data.x, data.y) for m in r.models])
    np.testing.assert_allclose(r.train_mse, mine, rtol=1e-12, atol=0)
    np.testing.assert_array_equal(r.mse, r.train_mse)  # dense: the test set is the training set


def test_sparse_test_mse_is_on_the_test_points_from_the_models():
    r = fit("x**3", depth=3, seeds=2, sparse=12, seed=5, method="kaiming", optimum=False, **QUICK)
    data = targets.sparse(targets.parse_target("x**3"), (0.0, 1.0), 12, 12, seed=5)
    assert not np.array_equal(data.x, data.test_x)
    train = np.array([mse_of(m, data.x, data.y) for m in r.models])
    test = np.array([mse_of(m, data.test_x, data.test_y) for m in r.models])
    np.testing.assert_allclose(r.train_mse, train, rtol=1e-12, atol=0)
    np.testing.assert_allclose(r.mse, test, rtol=1e-12, atol=0)
    assert r.optimal_mse is None and r.efficiency is None


def _magnitude(model, x):
    """max over x of the absolute net: h_0 = |x|, h_k = |W_k| h_{k-1} + |b_k|. The float
    forward pass's error at x is at most gamma_{(n+1) L} times this (the standard bound for a
    dot product, carried through L layers of fan-in n: ReLU and |W| do not amplify it more)."""
    h = np.abs(np.asarray(x, dtype=np.float64))[:, None]
    for layer in model[::2]:
        h = h @ np.abs(layer.weight.detach().numpy()).T + np.abs(layer.bias.detach().numpy())
    return float(h.max())


def test_released_net_has_phase_ones_loss_to_rounding():
    """With no phase-2 step the models are the released phase-1 nets. Their MSE (train_mse) and
    phase 1's last loss (history, computed from the derived form) differ only by rounding.

    Bound: if both forms compute the function within delta of the exact one everywhere, then
    |sqrt(L_raw) - sqrt(L_derived)| <= 2 delta (the triangle inequality in the RMS norm), so
    |L_raw - L_derived| <= 4 delta sqrt(L) + 4 delta^2. delta = gamma_{5 (d+1)} A, A the absolute
    net's magnitude (see _magnitude), taken for both forms (the derived form sums the same
    terms). No absolute tolerance: a shifted output (1e-5 on a loss of 1e-7) is far outside.
    """
    depth = 4
    r = fit("x**2", depth=depth, seeds=2, phase1=Phase("lm", 10), phase2=Phase("lm", 0),
            starts=1, optimum=False)
    b = r.history["phase_boundary"]
    assert b == 10 and r.history["loss"].shape == (2, 10)
    derived = r.history["loss"][:, b - 1]
    x = targets.dense(targets.parse_target("x**2"), r.interval).x
    for s, model in enumerate(r.models):
        m = 5 * (depth + 1)
        delta = m * EPS / (1 - m * EPS) * _magnitude(model, x)
        bound = 4 * delta * np.sqrt(derived[s]) + 4 * delta**2
        assert abs(r.train_mse[s] - derived[s]) <= bound
        assert bound < 1e-6 * derived[s]  # the bound itself is tight enough to mean something


def test_history_efficiency_and_summary_fields():
    r = fit("x**2", depth=3, seeds=3, phase1=Phase("lm", 5), phase2=Phase("lm", 7), starts=1)
    assert r.history["loss"].shape == (3, 12) and r.history["phase_boundary"] == 5
    # LM keeps only improvements: each seed's last loss is its final training MSE.
    np.testing.assert_allclose(r.history["loss"][:, -1], r.train_mse, rtol=1e-12, atol=0)
    data = targets.dense(targets.parse_target("x**2"), r.interval)
    assert r.max_pieces == r.optimal_pieces == 2**3
    assert r.optimal_mse == pytest.approx(optimal_pwl(data.x, data.y, 2**3).mse, rel=1e-12)
    np.testing.assert_allclose(r.efficiency, efficiency(r.optimal_mse, r.mse), rtol=1e-12, atol=0)
    s = r.summary()
    assert s["seeds"] == 3 and s["depth"] == 3 and s["method"] == "pretrain-thm31"
    assert (s["mse_min"], s["mse_mean"], s["mse_median"]) == pytest.approx(
        (r.mse.min(), r.mse.mean(), np.median(r.mse)), rel=1e-15)
    assert s["pieces_mean"] == pytest.approx(r.pieces.mean(), rel=1e-15)
    assert s["efficiency_mean"] == pytest.approx(r.efficiency.mean(), rel=1e-15)
    d = json.loads(json.dumps(r.to_dict()))
    assert d["mse"] == pytest.approx(r.mse.tolist(), rel=1e-15)
    assert d["train_mse"] == pytest.approx(r.train_mse.tolist(), rel=1e-15)
    assert d["pieces"] == r.pieces.tolist() and d["seed_list"] == [0, 1, 2]
    assert d["phase_boundary"] == 5 and d["interval"] == [0.0, 1.0]


def test_seeds_and_models_line_up():
    """Seed s of a batch is the same net as seed s alone: the models are in seed order."""
    both = fit("x**3", depth=3, seeds=[7, 3], method="raai", optimum=False, count=False, **QUICK)
    alone = fit("x**3", depth=3, seeds=[3], method="raai", optimum=False, count=False, **QUICK)
    assert both.seeds == [7, 3] and (both.pieces == -1).all()
    x = np.linspace(0, 1, 50)
    np.testing.assert_allclose(predict(both.models[1], x), predict(alone.models[0], x),
                               rtol=1e-9, atol=1e-12)
    assert not np.allclose(predict(both.models[0], x), predict(alone.models[0], x))
