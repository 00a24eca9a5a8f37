"""Optimizer objects (state_dict round trip continues bit-identically) and the named stages."""

import numpy as np
import pytest
import torch

from relu_regions import fit
from relu_regions.training.functional import mlp_forward, raw_shapes, unflatten_layers
from relu_regions.training.optim import LM, Adam, Functions
from relu_regions.training.stages import Stages, load_train_state


def _problem():
    shapes = raw_shapes(2)
    x = torch.linspace(0, 1, 40, dtype=torch.float64)
    n_params = sum(w[0] * w[1] + b[0] for w, b in shapes)
    theta = torch.randn(3, n_params, generator=torch.Generator().manual_seed(5),
                        dtype=torch.float64)

    def predict(th):
        return mlp_forward(unflatten_layers(th, shapes), x)

    def jac(th):
        return torch.func.vmap(torch.func.jacrev(
            lambda t: mlp_forward(unflatten_layers(t[None], shapes), x)[0]))(th)

    return Functions(predict, jac), theta, x**3


@pytest.mark.parametrize("kind", [LM, Adam])
def test_state_dict_round_trip_continues_exactly(kind):
    model, theta, y = _problem()
    whole = kind(model, theta, y, 1e-2)
    for _ in range(8):
        whole.step()
    first = kind(model, theta, y, 1e-2)
    for _ in range(3):
        first.step()
    # a fresh optimizer at the stored Theta, given the stored state, continues the same run
    second = kind(model, first.result.clone(), y, 1e-2, state=first.state_dict())
    for _ in range(5):
        second.step()
    assert torch.equal(second.result, whole.result)
    # without the state (fresh damping / moments) the run differs: the state carries something
    fresh = kind(model, first.result.clone(), y, 1e-2)
    for _ in range(5):
        fresh.step()
    assert not torch.equal(fresh.result, whole.result)


def test_stages_are_keyed_by_name(tmp_path, interrupt_after):
    run = dict(depth=2, seeds=1, phase1="lm:3", phase2="lm:20", starts=2, optimum=False,
               count=False)
    interrupt_after(12)  # 3 phase-1 steps, 5 of the phase-2 share, 4 of the rest
    with pytest.raises(KeyboardInterrupt):
        fit("x**3", checkpoint=tmp_path / "s.pt", checkpoint_every=1, **run)
    state = load_train_state(tmp_path / "s.pt")
    assert set(state["outputs"]) == {"phase1", "phase2:share"}
    assert state["stage"] == "phase2:rest" and state["step"] == 5 + 4
    assert state["config"]["phase2"]["steps"] == 20 and np.asarray(state["data"]["x"]).size == 500


def test_a_stage_name_runs_once_per_fit():
    stages = Stages()
    model, theta, y = _problem()
    from relu_regions.training.config import Phase

    stages.run("a", model.predict, model.jacobian, theta, y, Phase("lm", 1), [], None)
    with pytest.raises(AssertionError, match="ran twice"):
        stages.run("a", model.predict, model.jacobian, theta, y, Phase("lm", 1), [], None)


def test_lm_on_the_seeds_that_need_it_is_bit_identical():
    """A row-wise model lets LM form J only for the seeds whose step was kept and predict only
    the seeds still moving; every seed's trajectory is the one of the all-rows loop, bit for bit
    (through rejected steps and seeds that stop mid-run), with the compact per-run Jacobian."""
    from relu_regions.training.fitting import RawNet
    from relu_regions.training.jacobians import mlp_jacobian_runs
    from relu_regions.training.optim import row_wise

    shapes = raw_shapes(3)
    x = torch.linspace(0, 1, 120, dtype=torch.float64)
    n_params = sum(w[0] * w[1] + b[0] for w, b in shapes)
    theta = torch.randn(4, n_params, generator=torch.Generator().manual_seed(7),
                        dtype=torch.float64)
    calls = []

    def predict(th):
        calls.append(("predict", th.shape[0]))
        return mlp_forward(unflatten_layers(th, shapes), x)

    def jac(th):
        calls.append(("jacobian", th.shape[0]))
        return mlp_jacobian_runs(unflatten_layers(th, shapes), x)

    plain = LM(Functions(predict, jac), theta, x**3, 1e-3)
    subset = LM(Functions(row_wise(lambda th: predict(th)), row_wise(lambda th: jac(th))),
                theta, x**3, 1e-3)
    raw = RawNet(shapes, x)  # also reuses the masks of its last prediction in J
    reuse = LM(Functions(raw.predict, raw.jacobian), theta, x**3, 1e-3)
    for _ in range(400):
        mse = plain.step()
        assert torch.equal(mse, subset.step()) and torch.equal(mse, reuse.step())
        for other in (subset, reuse):
            assert torch.equal(plain.result, other.result)
            assert torch.equal(plain.mu, other.mu) and torch.equal(plain.frozen, other.frozen)
    assert plain.frozen.any()  # some seeds stopped: the subset path ran
    assert any(kind == "jacobian" and n < 4 for kind, n in calls)
    assert any(kind == "predict" and n < 4 for kind, n in calls)


@pytest.mark.parametrize("order", ["sorted", "shuffled"])
def test_raw_net_jacobian_with_its_prediction_masks_is_the_same(order):
    """RawNet's J from the masks its last prediction kept (rows matched by value, any subset and
    order of them) equals J computed afresh, and rows it did not see are computed afresh."""
    from relu_regions.training.fitting import RawNet
    from relu_regions.training.jacobians import mlp_jacobian_runs

    g = torch.Generator().manual_seed(3)
    shapes = raw_shapes(4)
    x = torch.linspace(0, 1, 200, dtype=torch.float64)
    if order == "shuffled":
        x = x[torch.randperm(200, generator=g)]
    n_params = sum(w[0] * w[1] + b[0] for w, b in shapes)
    theta = torch.randn(5, n_params, generator=g, dtype=torch.float64)
    raw = RawNet(shapes, x)
    raw.predict(theta)
    for rows in ([3, 1], [0, 1, 2, 3, 4], [4]):
        got, project = raw.jacobian(theta[rows])
        assert raw._masks_of(theta[rows]) is not None
        want, want_project = mlp_jacobian_runs(unflatten_layers(theta[rows], shapes), x)
        assert torch.equal(got, want) and torch.equal(project.rows, want_project.rows)
    unseen = theta[:2] + 1.0
    assert raw._masks_of(unseen) is None
    assert torch.equal(raw.jacobian(unseen)[0],
                       mlp_jacobian_runs(unflatten_layers(unseen, shapes), x)[0])
