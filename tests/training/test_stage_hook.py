"""Stage hooks: called at every stage's start and end in order, with the fit's steps so far and
each row's net; removable; a hook changes no result; a resumed fit calls them the same way."""

import numpy as np
import pytest
import torch

from relu_regions import InputError
from relu_regions.training.config import Phase
from relu_regions.training.fitting import fit
from relu_regions.training.stages import load_train_state, register_stage_hook

RUN = dict(seeds=3, optimum=False, count=False)
GROW = dict(depth=5, grow_from=3, phase1=Phase("lm", 5), phase2=Phase("lm", 20), starts=2)
# three added layers: the first is a warp, and the starts are picked after it
WARP = dict(GROW, depth=6, starts=3)


def _same_result(a, b):
    assert np.array_equal(a.history["loss"], b.history["loss"])
    assert np.array_equal(a.mse, b.mse)
    for m, n in zip(a.models, b.models, strict=True):
        for p, q in zip(m.parameters(), n.parameters(), strict=True):
            assert torch.equal(p, q)


def _stages(events):
    """[(stage, when)], with each stage's start followed by its own end."""
    return [(e.stage, e.when) for e in events]


@pytest.mark.parametrize("kwargs, names", [
    (GROW, ["phase1", "phase2:share", "pick", "grow:4", "grow:5", "polish", "pick:polish"]),
    (WARP, ["phase1", "phase2:share", "grow:4", "pick", "grow:5", "grow:6", "polish",
            "pick:polish"]),
    (dict(depth=3, phase1=Phase("lm", 5), phase2=Phase("lm", 20), starts=2,
          parameterization="gmp"), ["phase1", "phase2:share", "pick", "phase2:rest"]),
    (dict(depth=3, phase1=Phase("lm", 5), phase2=Phase("lm", 20), starts=1),
     ["phase1", "phase2"]),
    (dict(depth=3, method="kaiming", phase1=Phase("lm", 5), phase2=Phase("lm", 10)), ["raw"]),
])
def test_every_stage_starts_and_ends_in_order(kwargs, names):
    events = []
    r = fit("x**3", on_stage=events.append, **RUN, **kwargs)
    picks = ("pick", "pick:polish")
    expected = [(n, w) for n in names for w in (("end",) if n in picks else ("start", "end"))]
    assert _stages(events) == expected
    steps = [e.step for e in events]
    assert steps == sorted(steps) and steps[0] == 0
    # every optimizer step of the fit adds one entry to the loss history
    assert steps[-1] == r.history["loss"].shape[1]
    for start, end in zip(events, events[1:], strict=False):
        if start.when == "start":  # its end comes next, after the stage's steps
            assert end.stage == start.stage and end.seconds >= start.seconds
    assert all(e.seeds == (0, 1, 2) for e in events)
    # the last event's rows are the result's nets, one per seed, in the raw weights
    last = events[-1].models()
    assert len(last) == 3
    for m, n in zip(last, r.models, strict=True):
        for p, q in zip(m.parameters(), n.parameters(), strict=True):
            assert torch.equal(p, q)


def test_events_carry_each_rows_net():
    events = []
    fit("x**3", on_stage=events.append, **RUN, **GROW)
    by = {(e.stage, e.when): e for e in events}
    end1, share = by["phase1", "end"], by["phase2:share", "start"]
    assert end1.step == 5 and end1.theta.shape[0] == 6  # 3 seeds x 2 starts
    assert [end1.seed_of(r) for r in range(6)] == [0, 1, 2, 0, 1, 2]
    # phase 1's derived parameters, released, are the raw weights phase 2 starts from
    assert torch.equal(end1.raw(), share.theta)
    assert end1.widths == (1, 4, 4, 4, 1) and len(end1.models()) == 6
    assert by["pick", "end"].theta.shape[0] == 3
    assert by["grow:5", "end"].widths == (1, 4, 4, 4, 4, 4, 1)
    # events hold copies: keeping them does not depend on the fit leaving its tensors alone
    assert all(a.theta.data_ptr() != b.theta.data_ptr()
               for a, b in zip(events, events[1:], strict=False))


def test_a_warp_growth_keeps_each_seeds_best_start_after_the_warp_stage():
    events = []
    r = fit("x**3", on_stage=events.append, **RUN, **WARP)
    by = {(e.stage, e.when): e for e in events}
    x = torch.as_tensor(r.data.x).reshape(-1, 1)
    y = torch.as_tensor(r.data.y)

    def mse(event):  # (starts, seeds) training MSE of every row's net
        with torch.no_grad():
            errs = [float(((m(x).squeeze(-1) - y) ** 2).mean()) for m in event.models()]
        return np.array(errs).reshape(-1, 3)

    warped, picked = by["grow:4", "end"], by["pick", "end"]
    assert warped.theta.shape[0] == 9 and warped.widths == (1, 4, 4, 4, 4, 1)
    best = mse(warped).argmin(axis=0)
    assert torch.equal(picked.theta, warped.theta.reshape(3, 3, -1)[best, [0, 1, 2]])
    # the best net before the warp stage is not the one that warps best, for some seed here
    assert (mse(by["phase2:share", "end"]).argmin(axis=0) != best).any()


def test_a_hook_changes_no_result():
    plain = fit("x**3", **RUN, **GROW)

    def busy(event):  # everything a tracker would do
        for m in event.models():
            m(torch.zeros(1, 1, dtype=torch.float64))

    _same_result(fit("x**3", on_stage=[busy, busy], **RUN, **GROW), plain)


def test_registered_hook_sees_every_fit_until_removed():
    seen, own = [], []
    handle = register_stage_hook(lambda e: seen.append(("global", e.stage, e.when)))
    try:
        fit("x**3", on_stage=lambda e: seen.append(("own", e.stage, e.when)), depth=3,
            method="kaiming", phase2=Phase("lm", 5), **RUN)
        fit("x**3", on_stage=own.append, depth=3, method="kaiming", phase2=Phase("lm", 5), **RUN)
    finally:
        handle.remove()
    # the fit's own hook first, then the registered ones; both fits seen by the registered hook
    assert seen == [("own", "raw", "start"), ("global", "raw", "start"),
                    ("own", "raw", "end"), ("global", "raw", "end"),
                    ("global", "raw", "start"), ("global", "raw", "end")]
    assert len(own) == 2
    fit("x**3", depth=3, method="kaiming", phase2=Phase("lm", 5), **RUN)
    assert len(seen) == 6  # removed: not called again


# GROW: inside the polish (steps 25-45); WARP: inside the warp stage (steps 13-17), where every
# start still has its row, and inside the polish
@pytest.mark.parametrize("kwargs, step", [(GROW, 30), (WARP, 15), (WARP, 30)])
def test_a_resumed_fit_calls_the_hooks_as_an_uninterrupted_one(tmp_path, monkeypatch,
                                                                interrupt_after, kwargs, step):
    full = []
    fit("x**3", on_stage=full.append, **RUN, **kwargs)
    state = tmp_path / "state.pt"
    interrupt_after(step)
    with pytest.raises(KeyboardInterrupt):
        fit("x**3", checkpoint=state, checkpoint_every=5, **RUN, **kwargs)
    monkeypatch.undo()
    resumed = []
    fit("x**3", resume=load_train_state(state), on_stage=resumed.append, **RUN, **kwargs)
    assert _stages(resumed) == _stages(full)
    assert [e.step for e in resumed] == [e.step for e in full]
    for a, b in zip(resumed, full, strict=True):
        assert torch.equal(a.theta, b.theta)


@pytest.mark.parametrize("bad", ["print", [print, 3]])
def test_a_hook_that_is_not_callable_is_refused(bad):
    with pytest.raises(InputError, match="on_stage must be a callable"):
        fit("x**3", on_stage=bad, depth=3, method="kaiming", **RUN)
