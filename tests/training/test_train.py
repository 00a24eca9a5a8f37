"""The trainer: batched seeds equal solo seeds, the phase switch keeps the function, methods run."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from relu_regions import InputError
from relu_regions.nets import construction
from relu_regions.nets.parametrize import ConstructionNet
from relu_regions.training import config
from relu_regions.training.auto import describe_training
from relu_regions.training.config import Phase
from relu_regions.training.fitting import fit
from relu_regions.training.functional import (
    flatten_layers,
    mlp_forward,
    mlp_jacobian,
    raw_shapes,
    unflatten_layers,
)

QUICK = dict(phase1=Phase("lm", 8), phase2=Phase("lm", 12), optimum=False)


def _construction_theta(depth, peaks):
    """A construction (c1 = 1) and its raw weights as a one-seed flat Theta (1, P)."""
    net = ConstructionNet.build(depth, peaks=peaks, c1=1.0)
    layers = [(w.detach()[None], b.detach()[None]) for w, b in net.construction.weights()]
    return net, flatten_layers(layers)


@pytest.mark.parametrize("optimizer", ["lm", "adam"])
def test_batched_seeds_equal_solo_runs(optimizer):
    phases = dict(phase1=Phase(optimizer, 15, 1e-2), phase2=Phase(optimizer, 15, 1e-3))
    many = fit("x**3", depth=4, seeds=[0, 1, 2, 3], count=False, optimum=False, **phases)
    for i, s in enumerate([0, 1, 2, 3]):
        solo = fit("x**3", depth=4, seeds=[s], count=False, optimum=False, **phases)
        assert abs(solo.mse[0] - many.mse[i]) <= 1e-10 * max(1.0, solo.mse[0])
        assert np.allclose(solo.history["loss"][0], many.history["loss"][i], rtol=1e-10, atol=0)
        # Weights may drift further along flat directions of the loss, where rounding-level
        # differences (batched reductions sum in position-dependent order) cost nothing.
        for p, q in zip(solo.models[0].parameters(), many.models[i].parameters(), strict=True):
            assert torch.allclose(p, q, rtol=1e-6, atol=1e-9)


def test_flat_layout_round_trips_and_matches_the_parametrized_net():
    net, theta = _construction_theta(5, [0.3, 0.6, 0.4, 0.5, 0.55, 0.45])
    x = torch.linspace(0, 1, 101, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(mlp_forward(unflatten_layers(theta, raw_shapes(5)), x)[0],
                              net(x.unsqueeze(1))[:, 0], rtol=0, atol=1e-14)


def test_analytic_jacobian_equals_autodiff():
    shapes = raw_shapes(3, 5)
    n_params = sum(w[0] * w[1] + b[0] for w, b in shapes)
    theta = torch.randn(3, n_params, generator=torch.Generator().manual_seed(1),
                        dtype=torch.float64)
    x = torch.linspace(-1, 1, 40, dtype=torch.float64)
    J = mlp_jacobian(unflatten_layers(theta, shapes), x)

    def one_net(t):
        return mlp_forward(unflatten_layers(t[None], shapes), x)[0]

    for s in range(3):
        ref = torch.func.jacfwd(one_net)(theta[s])
        assert torch.allclose(J[s], ref, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("method", ["kaiming", "raai", "skip", "pretrain", "pretrain-thm31"])
def test_every_method_trains_and_reports(method):
    r = fit("x**3", depth=3, seeds=3, method=method, **QUICK)
    assert r.mse.shape == (3,) and np.isfinite(r.mse).all()
    assert r.history["loss"].shape == (3, 20)
    if method.startswith("pretrain"):
        assert r.history["phase_boundary"] == 8
    assert all(p >= 1 for p in r.pieces)
    # Training never makes a seed worse than where it started (LM only accepts improvements).
    assert (np.diff(r.history["loss"][:, r.history["phase_boundary"]:], axis=1) <= 0).all()


def test_two_phase_beats_kaiming_and_keeps_pieces():
    phases = dict(phase1=Phase("lm", 40), phase2=Phase("lm", 60))
    ours = fit("x**3", depth=4, seeds=4, method="pretrain-thm31", **phases)
    base = fit("x**3", depth=4, seeds=4, method="kaiming", **phases)
    assert ours.mse.mean() < 1e-2 * base.mse.mean()
    assert ours.pieces.min() >= 12
    # The 2^d-piece optimum bounds only nets with at most 2^d pieces; phase 2 may add pieces.
    np.testing.assert_allclose(ours.efficiency, ours.optimal_mse / ours.mse, rtol=1e-12, atol=0)
    within = ours.pieces <= ours.optimal_pieces
    assert (ours.efficiency[within] <= 1.0 + 1e-9).all()


def test_phase_one_output_is_exactly_the_released_start_of_phase_two():
    r = fit("x**2", depth=4, seeds=2, phase1=Phase("lm", 10), phase2=Phase("adam", 1, 1e-12),
            optimum=False)
    b = r.history["phase_boundary"]
    # One Adam step of size 1e-12 barely moves: the loss right after release equals phase 1's end.
    assert np.allclose(r.history["loss"][:, b], r.history["loss"][:, b - 1], rtol=1e-6)


def test_concave_target_picks_the_concave_construction():
    r = fit("sin(x)", depth=3, seeds=2, **QUICK)
    assert r.shape == r.phases["shape"] == "concave" and r.mse.max() < 1e-4


def test_sparse_data_reports_test_mse():
    r = fit("x**3", depth=3, seeds=2, sparse=10, **QUICK)
    assert not np.allclose(r.mse, r.train_mse) and r.optimal_mse is None


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(depth=0), "depth"), (dict(seeds=0), "seeds"), (dict(method="sgd"), "method"),
    (dict(phase1=Phase("newton", 3)), "optimizer"), (dict(phase2=Phase("lm", -1)), "steps"),
    (dict(interval=(1, 0)), "interval"), (dict(width=8, method="pretrain"), "width 4"),
])
def test_bad_fit_arguments(kwargs, fragment):
    with pytest.raises(InputError, match=fragment):
        fit("x**3", **{**QUICK, **kwargs})


def test_gmp_coordinates_round_trip_and_chain_rule():
    from relu_regions.training.coordinates import GmPLayout
    from relu_regions.training.jacobians import jvp_jacobian

    shapes = raw_shapes(3)
    _, theta = _construction_theta(3, [0.3, 0.6, 0.45, 0.5])  # has a zero-weight unit
    theta = torch.cat([theta, theta + 0.05 * torch.randn(theta.shape, dtype=torch.float64,
                                                         generator=torch.Generator().manual_seed(0))])
    layout = GmPLayout(shapes)
    coords, offsets = layout.from_raw(theta)
    assert torch.allclose(layout.to_raw(coords, offsets), theta, rtol=0, atol=1e-14)
    x = torch.linspace(0, 1, 30, dtype=torch.float64)
    expanded = offsets.repeat_interleave(coords.shape[1], dim=0)
    J = torch.bmm(mlp_jacobian(unflatten_layers(layout.to_raw(coords, offsets), shapes), x),
                  jvp_jacobian(lambda c: layout.to_raw(c, expanded), coords))

    def seed_net(c, s):  # seed s's outputs as a function of its GmP coordinates c
        return mlp_forward(unflatten_layers(layout.to_raw(c[None], offsets[s:s + 1]), shapes), x)[0]

    for s in range(2):
        assert torch.allclose(J[s], torch.func.jacfwd(seed_net)(coords[s], s), rtol=1e-10,
                              atol=1e-12)


def test_gmp_phase_two_trains():
    r = fit("x**3", depth=3, seeds=2, parameterization="gmp", **QUICK)
    assert np.isfinite(r.mse).all() and r.phases["parameterization"] == "gmp"
    with pytest.raises(InputError, match="parameterization"):
        fit("x**3", parameterization="wn", **QUICK)


@pytest.mark.parametrize("kwargs", [
    dict(depth=4, phase1=Phase("lm", 20), phase2=Phase("lm", 30)),
    dict(depth=3, phase1=Phase("adam", 20, 1e-2), phase2=Phase("adam", 30, 1e-3), starts=2),
    dict(depth=5, grow_from=3, phase1=Phase("lm", 10), phase2=Phase("lm", 40), starts=2),
    # Saved and interrupted in a warp stage (one row per seed; the paths part after it):
    dict(depth=6, grow_from=3, phase1=Phase("lm", 2), phase2=Phase("lm", 40), starts=1),
    # ... and in the polish (steps 15-26: each seed's 3 best paths):
    dict(depth=6, grow_from=3, phase1=Phase("lm", 2), phase2=Phase("lm", 12), starts=1),
    dict(depth=3, method="kaiming", parameterization="gmp", phase1=Phase("lm", 10),
         phase2=Phase("lm", 20)),
    # Interrupted after the pick, while the kept starts continue their runs:
    dict(depth=3, phase1=Phase("lm", 5), phase2=Phase("lm", 40), starts=3),
    dict(depth=3, phase1=Phase("adam", 5, 1e-2), phase2=Phase("adam", 40, 1e-3), starts=2),
    dict(depth=3, phase1=Phase("lm", 5), phase2=Phase("lm", 40), starts=2, parameterization="gmp"),
])
def test_resume_after_interruption_is_bit_identical(kwargs, tmp_path, monkeypatch,
                                                    interrupt_after):
    from relu_regions.training.stages import load_train_state

    run = dict(seeds=3, optimum=False, count=False, **kwargs)
    full = fit("x**3", **run)
    state = tmp_path / "state.pt"
    interrupt_after(23)
    with pytest.raises(KeyboardInterrupt):
        fit("x**3", checkpoint=state, checkpoint_every=5, **run)
    monkeypatch.undo()
    resumed = fit("x**3", resume=load_train_state(state), **run)
    assert np.array_equal(resumed.mse, full.mse)
    assert np.array_equal(resumed.history["loss"], full.history["loss"])
    assert resumed.history["phase_boundary"] == full.history["phase_boundary"]
    for p, q in zip(resumed.models[0].parameters(), full.models[0].parameters(), strict=True):
        assert torch.equal(p, q)


def test_a_state_from_another_version_is_refused_with_the_reason(tmp_path):
    from relu_regions.training.stages import load_train_state

    old = tmp_path / "old.pt"
    torch.save({"format": "relu-regions-train-state/1", "stage": 0}, old)
    with pytest.raises(InputError, match="another version.*start the run again"):
        load_train_state(old)
    other = tmp_path / "other.pt"
    torch.save({"format": "something else"}, other)
    with pytest.raises(InputError, match="not a relu-regions training state"):
        load_train_state(other)


@pytest.mark.parametrize("runner", ["lm", "adam"])
def test_a_diverging_seed_does_not_poison_the_others(runner):
    from relu_regions.training.optim import run_adam, run_lm

    x = torch.linspace(0, 1, 50, dtype=torch.float64)
    y = x**2
    shapes = raw_shapes(2)
    n_params = sum(w[0] * w[1] + b[0] for w, b in shapes)
    theta = torch.randn(2, n_params, generator=torch.Generator().manual_seed(3),
                        dtype=torch.float64)
    calls = {"n": 0}

    def predict(th, poison=True):
        out = mlp_forward(unflatten_layers(th, shapes), x)
        calls["n"] += 1
        if poison and th.shape[0] == 2 and calls["n"] > 4:  # seed 1 blows up mid-run
            out = torch.cat([out[:1], out[1:] * float("nan")])
        return out

    def jac(th):
        return mlp_jacobian(unflatten_layers(th, shapes), x)

    run = run_lm if runner == "lm" else run_adam
    phase = Phase(runner, 12, 1e-3)
    both = run(predict, jac, theta, y, phase, [])
    alone = run(lambda th: predict(th, poison=False), jac, theta[:1], y, phase, [])
    assert torch.isfinite(both[0]).all()
    assert torch.allclose(both[0], alone[0], rtol=1e-10, atol=1e-12)


def test_diverged_seeds_are_reported_not_raised():
    """A seed whose weights blow up gets NaN efficiency and null in JSON (which has no NaN)."""
    import json

    r = fit("x**3", depth=2, seeds=[0, 1], method="kaiming", phase1=Phase("adam", 1),
            phase2=Phase("adam", 5, 1e300))
    assert r.diverged == [0, 1] and np.isnan(r.efficiency).all()
    d = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    assert d["mse"] == [None, None] and d["efficiency_mean"] is None


def _assert_same_normal_equations(J, rows, project, g):
    """The compact pair (rows = Q'J, project = Q') gives J's J'J and J'r (random r) to 1e-12 per
    seed, and each seed's padding rows are zero."""
    r = torch.randn(J.shape[0], J.shape[1], generator=g, dtype=torch.float64)
    compact_r = project(r)
    assert compact_r.shape == rows.shape[:2]
    for s in range(J.shape[0]):
        own = int(project.rows[s])
        assert (rows[s, own:] == 0).all() and (compact_r[s, own:] == 0).all()  # padding
        JJ, CC = J[s].T @ J[s], rows[s].T @ rows[s]
        Jr, Cr = J[s].T @ r[s], rows[s].T @ compact_r[s]
        assert torch.allclose(CC, JJ, rtol=0, atol=1e-12 * JJ.abs().max())
        assert torch.allclose(Cr, Jr, rtol=0, atol=1e-12 * Jr.abs().max().clamp_min(1e-300))


@pytest.mark.parametrize("points", ["sorted", "unsorted", "repeated"])
@pytest.mark.parametrize("width, depth", [(4, 5), (5, 3)])
def test_compact_jacobian_gives_the_same_normal_equations(points, width, depth):
    from relu_regions.training.jacobians import mlp_jacobian_runs

    g = torch.Generator().manual_seed(width * depth)
    x = {"sorted": torch.linspace(-1, 2, 300, dtype=torch.float64),
         "unsorted": 3 * torch.rand(300, generator=g, dtype=torch.float64) - 1,
         "repeated": torch.tensor([0.5, 0.5, 0.1, 0.9, 0.9, 0.1, 0.3], dtype=torch.float64)}[points]
    shapes = raw_shapes(depth, width)
    n_params = sum(w[0] * w[1] + b[0] for w, b in shapes)
    theta = torch.randn(5, n_params, generator=g, dtype=torch.float64)
    layers = unflatten_layers(theta, shapes)
    J = mlp_jacobian(layers, x)
    rows, project = mlp_jacobian_runs(layers, x)
    assert rows.shape[1] <= 2 * x.shape[0]
    _assert_same_normal_equations(J, rows, project, g)
    # Sorted dense data: the runs are the activation regions, far fewer than the points.
    if points == "sorted":
        assert int(project.rows.max()) < x.shape[0] // 2


def _points(n, order, g):
    """n points on [-1, 1]: evenly spaced, shuffled, or drawn with repeats."""
    x = torch.linspace(-1, 1, n, dtype=torch.float64)
    if order == "shuffled":
        return x[torch.randperm(n, generator=g)]
    if order == "repeated":
        return x[torch.randint(0, n, (n,), generator=g)]
    return x


@settings(max_examples=25, deadline=None)
@given(width=st.integers(1, 5), depth=st.integers(1, 6), n=st.integers(2, 300),
       order=st.sampled_from(["sorted", "shuffled", "repeated"]), seed=st.integers(0, 2**16))
def test_raw_compact_jacobian_from_run_ends_gives_the_same_normal_equations(width, depth, n,
                                                                          order, seed):
    """The raw per-run rows built from each run's two end points (activations affine in x within
    a run, deltas at its first point) have the per-point Jacobian's J'J and J'r (1e-12), for any
    width, depth, point order and repeats, seeds with different run counts in one batch."""
    from relu_regions.training.jacobians import mlp_jacobian_runs

    g = torch.Generator().manual_seed(seed)
    x = _points(n, order, g)
    shapes = raw_shapes(depth, width)
    n_params = sum(w[0] * w[1] + b[0] for w, b in shapes)
    theta = torch.randn(4, n_params, generator=g, dtype=torch.float64)
    theta[0] *= 3.0  # larger weights: more runs than its neighbours
    layers = unflatten_layers(theta, shapes)
    rows, project = mlp_jacobian_runs(layers, x)
    _assert_same_normal_equations(mlp_jacobian(layers, x), rows, project, g)


@settings(max_examples=25, deadline=None)
@given(shape=st.sampled_from(["convex", "concave", "dc"]), depth=st.integers(1, 6),
       n=st.integers(2, 300), order=st.sampled_from(["sorted", "shuffled", "repeated"]),
       noise=st.floats(0.0, 1.0), seed=st.integers(0, 2**16))
def test_phase_one_compact_jacobian_gives_the_same_normal_equations(shape, depth, n, order,
                                                                    noise, seed):
    """Phase 1's Jacobian from two points per run of the derived form's activation pattern has
    the J'J and J'r of forward mode at every point (1e-12), for any point order and repeats."""
    from relu_regions.nets import composite
    from relu_regions.training.jacobians import derived_jacobian_runs, jvp_jacobian

    g = torch.Generator().manual_seed(seed)
    x = _points(n, order, g)
    y = x**3 - x
    box = [(-1.0, 1.0)]
    layout, _, q = composite.build_layout(shape, x.numpy(), y.numpy(), box, depth, thm31=True)
    theta = composite.initial_theta(layout, [seed, seed + 1, seed + 2], x.numpy(), y.numpy(), q)
    theta = theta + noise * torch.randn(theta.shape, generator=g, dtype=torch.float64)
    J = jvp_jacobian(lambda th: layout.predict(th, x.unsqueeze(-1)), theta)
    rows, project = derived_jacobian_runs(layout, theta, x)
    _assert_same_normal_equations(J, rows, project, g)


def _reference_lm(predict, jacobian, theta, y, steps, mu0=1e-3):
    """The textbook loop: dense J, every step, every seed, LU solve, no shortcuts."""
    mu = torch.full((theta.shape[0],), mu0, dtype=theta.dtype)
    mse = ((predict(theta) - y) ** 2).mean(dim=1)
    history = []
    for _ in range(steps):
        r = predict(theta) - y
        J = jacobian(theta)
        H, g = J.transpose(1, 2) @ J, (J.transpose(1, 2) @ r.unsqueeze(-1)).squeeze(-1)
        d = torch.diagonal(H, dim1=1, dim2=2)
        floor = 1e-12 * d.mean(dim=1, keepdim=True).clamp_min(1e-300)
        A = H + mu[:, None, None] * torch.diag_embed(d + floor)
        trial = theta + torch.linalg.solve(A, -g.unsqueeze(-1)).squeeze(-1)
        trial_mse = ((predict(trial) - y) ** 2).mean(dim=1)
        better = torch.isfinite(trial_mse) & (trial_mse < mse)
        theta = torch.where(better[:, None], trial, theta)
        mse = torch.where(better, trial_mse, mse)
        mu = torch.where(better, mu / 3, mu * 4).clamp(1e-15, 1e15)
        history.append(mse)
    return theta, torch.stack(history, dim=1)


def _small_raw_problem(x, n_seeds, seed):
    """Random raw weights of a depth-2 width-4 net, with its batched predict and Jacobian."""
    shapes = raw_shapes(2)
    n_params = sum(w[0] * w[1] + b[0] for w, b in shapes)
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(n_seeds, n_params, generator=g, dtype=torch.float64)

    def predict(th):
        return mlp_forward(unflatten_layers(th, shapes), x)

    def jac(th):
        return mlp_jacobian(unflatten_layers(th, shapes), x)

    return theta, predict, jac


def test_lm_shortcuts_follow_the_textbook_loop():
    """Compact Jacobian, J'J only after accepted steps, Cholesky, and stopping seeds at the
    damping ceiling give the plain loop's trajectory: the seeds converge and stop mid-run."""
    from relu_regions.training.optim import run_lm

    x = torch.linspace(0, 1, 200, dtype=torch.float64)
    y = torch.sin(3 * x)
    theta, predict, jac = _small_raw_problem(x, n_seeds=4, seed=5)
    history, states = [], []
    run_lm(predict, jac, theta, y, Phase("lm", 300), history,
           on_step=lambda step, th, state: states.append(state))
    _, ref_history = _reference_lm(predict, jac, theta, y, 300)
    assert states[-1]["frozen"].all()  # every seed reached its fixed point and stopped
    # Same algorithm, different rounding (J'J from runs, Cholesky): a rounding-level difference
    # can move a kink across a data point for a few steps, so the histories agree to 1e-6 on
    # the way and the end points to 1e-10.
    ours_history = torch.stack(history, dim=1)
    assert torch.allclose(ours_history, ref_history, rtol=1e-6, atol=0)
    assert torch.allclose(ours_history[:, -1], ref_history[:, -1], rtol=1e-10, atol=0)


def test_lm_batched_equals_solo_over_a_long_run():
    """The default protocol's 100 + 400 LM steps: no amplification of rounding differences."""
    seeds = [3, 7, 11]
    many = fit("x**3", depth=5, seeds=seeds, count=False, optimum=False)
    for i, s in enumerate(seeds):
        solo = fit("x**3", depth=5, seeds=[s], count=False, optimum=False)
        assert np.allclose(solo.history["loss"][0], many.history["loss"][i], rtol=1e-10, atol=0)
        assert abs(solo.mse[0] - many.mse[i]) <= 1e-10 * solo.mse[0]


QUICK_ODD = dict(points=301, starts=2, phase1="lm:5", phase2="lm:20", count=False, optimum=False)


@pytest.mark.parametrize("target,run", [
    ("x**3", dict(depth=8, grow_from=7)),  # LM's Cholesky (P = 153), the insertion's lstsq
    ("x**3", dict(depth=4, parameterization="gmp")),  # the chain rule's product per seed
    ("sin(6*x)", dict(depth=3, method="pretrain", shape="dc")),  # width 8: the output row
], ids=["growth", "gmp", "dc"])
def test_a_seed_trains_the_same_alone_as_in_any_batch_bit_for_bit(target, run):
    """Seed 1 alone, beside seed 0 and beside seed 2 ends with the same net and loss history, bit
    for bit, through phase 1, phase 2 (and an insertion and the polish). The cases catch batched
    MKL calls whose rounding depends on the batch: on a matrix's memory alignment (its position
    in the batch; LM's Cholesky from P ~ 150, the insertion's least squares with an odd number
    of points), on the padded row count (GmP's chain rule) or on the batch size (one output
    row from 8 units)."""
    alone = fit(target, seeds=[1], **run, **QUICK_ODD)
    for seeds in ([0, 1], [1, 2]):
        batch = fit(target, seeds=seeds, **run, **QUICK_ODD)
        i = seeds.index(1)
        assert batch.train_mse[i] == alone.train_mse[0]
        np.testing.assert_array_equal(batch.history["loss"][i], alone.history["loss"][0])
        for p, q in zip(batch.models[i].parameters(), alone.models[0].parameters(), strict=True):
            assert torch.equal(p, q)


def test_lm_resume_with_stopped_seeds_is_bit_identical():
    from relu_regions.training.optim import run_lm

    x = torch.linspace(0, 1, 100, dtype=torch.float64)
    y = x**3
    theta, predict, jac = _small_raw_problem(x, n_seeds=3, seed=2)
    saved = {}
    full_history: list = []
    full = run_lm(predict, jac, theta, y, Phase("lm", 250), full_history,
                  on_step=lambda step, th, state: saved.setdefault(step, (th, dict(state))))
    # Resume where some seeds have stopped and some still train.
    at = next(k for k in sorted(saved)
              if saved[k][1]["frozen"].any() and not saved[k][1]["frozen"].all())
    for state in (saved[at][1], {k: v for k, v in saved[at][1].items() if k != "frozen"}):
        history = list(full_history[:at])
        resumed = run_lm(predict, jac, theta, y, Phase("lm", 250), history,
                         start=(at, saved[at][0], state))
        assert torch.equal(resumed, full)
        assert len(history) == len(full_history)
        assert all(torch.equal(a, b) for a, b in zip(history, full_history, strict=True))


def _hidden(theta, depth, x):
    """The last hidden layer's units of a batch of raw width-4 nets, shape (N, n, 4)."""
    h = x.reshape(1, -1, 1).expand(theta.shape[0], -1, 1)
    for w, b in unflatten_layers(theta, raw_shapes(depth))[:-1]:
        h = torch.relu(torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2)))
    return h


@pytest.mark.parametrize("a_new,S", [(0.5, 0.25), (0.3, 4.0), (0.7, 1.0)])
def test_insertion_into_a_construction_is_its_next_layer(a_new, S):
    """With the bias neuron's normalization, the inserted layer on an untrained construction is
    the construction's layer d: t1/a - t2/(a(1-a)) = S s_{d-1} T_a(W_{d-1}), bias' = S s_{d-1}."""
    from relu_regions.training.growth import insert_layer

    d, peaks = 4, [0.35, 0.6, 0.45, 0.55, 0.5]
    net, theta = _construction_theta(d, peaks)
    x = torch.linspace(0, 1, 301, dtype=torch.float64)
    w = x
    for a in peaks[:d]:
        w = construction.triangle(w, torch.tensor(a, dtype=torch.float64))
    s_last = float(net.construction.scales().detach()[d - 1])
    grown = insert_layer(theta, d, torch.tensor([peaks[d - 1]], dtype=torch.float64), x, x**3,
                         a_new=a_new, S=S, by_range=False)
    h = _hidden(grown, d + 1, x)[0]
    read = h[:, 1] / a_new - h[:, 2] / (a_new * (1 - a_new))
    expected = S * s_last * construction.triangle(w, torch.tensor(a_new, dtype=torch.float64))
    assert torch.allclose(read, expected, rtol=0, atol=1e-12 * max(1.0, S * s_last))
    assert torch.allclose(h[:, 3], torch.full_like(x, S * s_last), rtol=1e-13, atol=0)


def test_insertion_by_range_folds_the_readout_mapped_onto_the_unit_interval():
    """by_range: v = (g - min g) / (max g - min g) over the samples, and the new layer reads
    S A T_a(v), A = max g - min g, with bias' = S A, whatever the old bias neuron does."""
    from relu_regions.training.growth import insert_layer

    d, a_last, a_new, S = 3, 0.45, 0.3, 2.0
    _, theta = _construction_theta(d, [0.4, 0.6, a_last, 0.5])
    theta = theta + 0.01 * torch.randn(theta.shape, dtype=torch.float64,
                                       generator=torch.Generator().manual_seed(1))
    x = torch.linspace(0, 1, 211, dtype=torch.float64)
    h_old = _hidden(theta, d, x)[0]
    g = h_old[:, 1] / a_last - h_old[:, 2] / (a_last * (1 - a_last))
    amp = g.max() - g.min()
    v = (g - g.min()) / amp
    grown = insert_layer(theta, d, torch.tensor([a_last], dtype=torch.float64), x, x**3,
                         a_new=a_new, S=S, by_range=True)
    h = _hidden(grown, d + 1, x)[0]
    read = h[:, 1] / a_new - h[:, 2] / (a_new * (1 - a_new))
    expected = S * amp * construction.triangle(v, torch.tensor(a_new, dtype=torch.float64))
    assert torch.allclose(read, expected, rtol=0, atol=1e-12 * max(1.0, float(S * amp)))
    assert torch.allclose(h[:, 3], (S * amp).expand_as(x), rtol=1e-13, atol=0)


@settings(max_examples=30, deadline=None)
@given(a_new=st.floats(0.05, 0.95), S=st.floats(0.1, 10.0), by_range=st.booleans(),
       noise=st.floats(0.0, 0.2), seed=st.integers(0, 2**16))
def test_an_insertion_never_raises_the_training_error(a_new, S, by_range, noise, seed):
    """The output row is the least-squares fit over the new units, or the old function exactly."""
    from relu_regions.training.growth import insert_layer

    d = 3
    _, theta = _construction_theta(d, [0.4, 0.6, 0.45, 0.5])
    theta = theta + noise * torch.randn(theta.shape, dtype=torch.float64,
                                        generator=torch.Generator().manual_seed(seed))
    x = torch.linspace(0, 1, 97, dtype=torch.float64)
    y = x**3
    before = (mlp_forward(unflatten_layers(theta, raw_shapes(d)), x) - y).pow(2).mean()
    grown = insert_layer(theta, d, torch.tensor([0.45], dtype=torch.float64), x, y,
                         a_new=a_new, S=S, by_range=by_range)
    after = (mlp_forward(unflatten_layers(grown, raw_shapes(d + 1)), x) - y).pow(2).mean()
    assert after <= before * (1 + 1e-9) + 1e-28


def test_growth_keeps_each_seeds_best_path(monkeypatch):
    """grow() trains its paths as one batch and keeps, per seed, the lowest training MSE: each
    path run alone ends where its row of the batch did, so the kept MSE is the least of them
    (without the polish that follows, which test_the_kept_net_is_polished_after_a_growth
    covers)."""
    from relu_regions.training import fitting, growth

    monkeypatch.setattr(fitting, "POLISH_SHARE", 0.0)
    run = dict(depth=4, grow_from=3, seeds=2, starts=1, count=False, **QUICK)
    kept = fit("x**3", **run).train_mse
    alone = []
    for path in growth.INSERT_PATHS:
        monkeypatch.setattr(growth, "INSERT_PATHS", (path,))
        alone.append(fit("x**3", **run).train_mse)
    np.testing.assert_allclose(kept, np.min(alone, axis=0), rtol=1e-9, atol=0)


def test_a_warp_trains_once_per_seed_and_the_paths_part_after_it(monkeypatch):
    """With a warp first, every path starts from the same warped net, so that stage trains one
    row per seed and the paths part at the first fold; the kept net is still each seed's best
    path, its whole loss history that path's run alone, bit for bit."""
    from relu_regions.training import fitting, growth

    monkeypatch.setattr(fitting, "POLISH_SHARE", 0.0)
    paths = growth.INSERT_PATHS[:3]
    warped_rows = []
    real = growth.insert_warp
    monkeypatch.setattr(growth, "insert_warp",
                        lambda theta, *a, **k: warped_rows.append(theta.shape[0])
                        or real(theta, *a, **k))
    run = dict(depth=6, grow_from=3, seeds=[0, 1], starts=1, warp=True, count=False, **QUICK)
    monkeypatch.setattr(growth, "INSERT_PATHS", paths)
    kept = fit("x**3", **run)
    assert warped_rows == [2] and kept.training["warp"]
    alone = []
    for path in paths:
        monkeypatch.setattr(growth, "INSERT_PATHS", (path,))
        alone.append(fit("x**3", **run))
    mse = np.array([r.train_mse for r in alone])
    assert len(set(mse[:, 0])) > 1  # the paths end apart
    for s in range(2):
        best = alone[int(np.argmin(mse[:, s]))]
        assert kept.train_mse[s] == best.train_mse[s]
        np.testing.assert_array_equal(kept.history["loss"][s], best.history["loss"][s])


def test_with_a_warp_each_seed_keeps_the_start_that_is_best_after_the_warp_stage():
    """Start k of seed s trains as seed s + 100000 k with one start does, bit for bit; with a
    warp first the seed keeps the start with the lowest training MSE after the warp stage (not
    after the depth-3 share), and ends as that start grown alone."""
    run = dict(depth=6, grow_from=3, warp=True, count=False, optimum=False, phase1="lm:5",
               phase2="lm:20")
    kept = fit("x**3", seeds=[0], starts=3, **run)
    alone, share, warped = [], [], []

    def record(event):
        if event.when == "end" and event.stage in ("phase2:share", "grow:4"):
            with torch.no_grad():
                mse = float(((event.models()[0](x).squeeze(-1) - y) ** 2).mean())
            (share if event.stage == "phase2:share" else warped).append(mse)

    x = torch.as_tensor(kept.data.x).reshape(-1, 1)
    y = torch.as_tensor(kept.data.y)
    for k in range(3):
        alone.append(fit("x**3", seeds=[100_000 * k], starts=1, on_stage=record, **run))
    best = int(np.argmin(warped))
    assert best != int(np.argmin(share))  # the pick before the warp would keep another start
    assert kept.train_mse[0] == alone[best].train_mse[0]
    np.testing.assert_array_equal(kept.history["loss"], alone[best].history["loss"])


def test_a_growth_polishes_each_seeds_best_paths_and_keeps_the_best(monkeypatch):
    """After a growth each seed's POLISH_PATHS best paths (training MSE) train POLISH_SHARE of
    phase 2's steps more, and each seed keeps the best of them after that. With 4 paths and 2
    polished, the kept net is, bit for bit and with its whole loss history, the better of that
    seed's two best paths grown and polished alone. The case tells the rule apart from
    polishing only the best path (seed 1 keeps its second) and from polishing all (for both
    seeds another path would have polished better)."""
    from relu_regions.training import fitting, growth

    paths = growth.INSERT_PATHS[:4]
    monkeypatch.setattr(fitting, "POLISH_PATHS", 2)
    run = dict(depth=6, grow_from=3, seeds=[0, 1], starts=1, count=False, **QUICK)
    monkeypatch.setattr(growth, "INSERT_PATHS", paths)
    kept = fit("x**3", **run)
    polished, before = [], []
    for path in paths:
        monkeypatch.setattr(growth, "INSERT_PATHS", (path,))
        polished.append(fit("x**3", **run))
        with monkeypatch.context() as m:
            m.setattr(fitting, "POLISH_SHARE", 0.0)
            before.append(fit("x**3", **run).train_mse)
    before, after = np.array(before), np.array([r.train_mse for r in polished])
    winners = []
    for s in range(2):
        top = np.argsort(before[:, s], kind="stable")[:2]
        win = top[np.argmin(after[top, s])]
        winners.append((win == top[0], np.argmin(after[:, s]) in top))
        assert kept.train_mse[s] == after[win, s]
        np.testing.assert_array_equal(kept.history["loss"][s], polished[win].history["loss"][s])
    assert winners == [(True, False), (False, False)]
    steps = QUICK["phase1"].steps + QUICK["phase2"].steps
    polish = round(config.POLISH_SHARE * QUICK["phase2"].steps)
    assert polish > 0 and kept.phases["polish"] == polish == kept.training["polish"]
    assert kept.history["loss"].shape == (2, steps + polish)
    assert (np.diff(kept.history["loss"][:, -polish - 1:], axis=1) <= 0).all()  # LM's polish
    assert f"the best paths polished for {polish} steps" in describe_training(kept.training, 6)
    monkeypatch.undo()
    direct = fit("x**3", depth=3, seeds=1, count=False, **QUICK)
    assert direct.phases["polish"] == 0 and direct.history["loss"].shape[1] == steps


def test_default_starts_are_8_and_16_when_growing():
    plain = fit("x**3", depth=3, seeds=1, count=False, **QUICK)
    grown = fit("x**3", depth=4, grow_from=3, seeds=1, count=False, **QUICK)
    not_grown = fit("x**3", depth=3, grow_from=3, seeds=1, count=False, **QUICK)
    assert [r.phases["starts"] for r in (plain, grown, not_grown)] == [8, 16, 8]


@pytest.mark.parametrize("optimizer", ["lm", "adam"])
def test_each_seed_keeps_the_start_with_the_least_raw_mse_after_a_share_of_phase_two(optimizer):
    """With several starts, every start runs phase 1 and PICK_SHARE of phase 2 in one batch; each
    seed keeps the start whose raw MSE there is least, and that start's run continues (optimizer
    state and all). Start k of seed s is the one-start fit of seed s + 100000 k, so the kept
    seed's whole history and final MSE equal that start trained alone, bit for bit."""
    from relu_regions.training.config import PICK_SHARE

    seeds, starts = [0, 1], 3
    p1, p2 = Phase(optimizer, 6, 1e-2), Phase(optimizer, 8, 1e-2)
    share = round(PICK_SHARE * p2.steps)
    run = dict(depth=3, phase1=p1, count=False, optimum=False)
    kept = fit("x**3", seeds=seeds, starts=starts, phase2=p2, **run)
    for i, s in enumerate(seeds):
        cut = [fit("x**3", seeds=[s + 100_000 * k], starts=1, phase2=Phase(optimizer, share, 1e-2),
                   **run).train_mse[0] for k in range(starts)]
        assert len(set(cut)) > 1  # the starts differ
        best = int(np.argmin(cut))
        alone = fit("x**3", seeds=[s + 100_000 * best], starts=1, phase2=p2, **run)
        np.testing.assert_array_equal(kept.history["loss"][i], alone.history["loss"][0])
        assert kept.train_mse[i] == alone.train_mse[0]
    assert kept.history["loss"].shape[1] == p1.steps + p2.steps
    assert kept.history["phase_boundary"] == p1.steps
