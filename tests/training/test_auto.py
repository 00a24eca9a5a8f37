"""The depth-dependent defaults (training/auto.py) and that fit applies them when left unset."""

import pytest
import torch

from relu_regions.training.auto import (
    GROW_ABOVE,
    GROW_FROM,
    POINTS_PER_PIECE,
    auto_points,
    auto_settings,
)
from relu_regions.training.config import Phase
from relu_regions.training.fitting import fit


def test_points_never_let_all_pieces_interpolate():
    for d in range(1, 16):
        # n pieces interpolate at most ~2n samples of a convex function
        assert auto_points(d) >= 2 * 2 * 2**d
        assert auto_points(d) >= 500
    assert auto_points(10) == POINTS_PER_PIECE * 1024


def test_growth_only_deep_two_phase_single_1d():
    assert "grow_from" not in auto_settings(GROW_ABOVE)
    assert auto_settings(GROW_ABOVE + 1)["grow_from"] == GROW_FROM
    assert GROW_FROM <= GROW_ABOVE
    for kw in ({"method": "kaiming"}, {"method": "skip"}, {"single": False}, {"dims": 2}):
        assert "grow_from" not in auto_settings(10, **kw)
    assert "points" not in auto_settings(10, dims=2)


@pytest.mark.parametrize("explicit", [False, True])
def test_fit_uses_the_depth_default_unless_told(explicit):
    depth = GROW_ABOVE + 1
    tiny = dict(phase1=Phase("lm", 2), phase2=Phase("lm", 8), seeds=1, count=False,
                optimum=False)
    r = fit("x**3", depth=depth, grow_from=depth if explicit else None, **tiny)
    assert r.phases["grow_from"] == (depth if explicit else GROW_FROM)
    assert r.phases["starts"] == (8 if explicit else 16)
    assert r.models[0][-1].weight.shape == (1, 4) and len(r.models[0]) == 2 * depth + 1
    assert len(r.data.x) == auto_points(depth)  # dense data made by fit: the depth's points
    given = fit("x**3", depth=depth, points=300, grow_from=depth, **tiny)
    assert len(given.data.x) == 300


def test_giving_starts_keeps_the_depth_default_growth():
    """Only grow_from decides whether a fit grows: a user who sets starts still gets growth."""
    depth = GROW_ABOVE + 1
    r = fit("x**3", depth=depth, starts=1, seeds=1, phase1=Phase("lm", 2), phase2=Phase("lm", 8),
            count=False, optimum=False)
    assert r.phases["grow_from"] == GROW_FROM and r.phases["starts"] == 1


def test_the_warp_layer_only_for_long_1d_growths():
    from relu_regions.training.auto import WARP_MIN_ADDED, use_warp

    assert use_warp(GROW_FROM + WARP_MIN_ADDED, GROW_FROM)
    assert not use_warp(GROW_FROM + WARP_MIN_ADDED - 1, GROW_FROM)
    assert not use_warp(GROW_FROM + WARP_MIN_ADDED, GROW_FROM, warp=False)
    assert not use_warp(GROW_FROM + WARP_MIN_ADDED, GROW_FROM, dims=2)


@pytest.mark.parametrize("warp", [True, False])
def test_fit_grows_with_the_warp_layer_first_unless_told(warp):
    """With the warp, the grown net's first layer is the warp's: unit weights 1, biases -lo and
    minus its three hinges; without it, the first layer is the depth-d0 net's (a construction's
    first layer, not all ones)."""
    from relu_regions.training.auto import WARP_MIN_ADDED

    d0 = 1
    r = fit("x**3", depth=d0 + WARP_MIN_ADDED, grow_from=d0, warp=warp, seeds=1, starts=1,
            phase1=Phase("lm", 2), phase2=Phase("lm", 0), count=False, optimum=False)
    assert r.phases["warp"] is warp
    first = r.models[0][0]
    is_warp = bool((first.weight == 1).all() and (first.bias[1:] < 0).all())
    assert is_warp is warp
    if warp:  # the hinges come from the training data's curvature (phase 2 had no steps)
        from relu_regions.training.growth import curvature_hinges

        x, y = (torch.as_tensor(v, dtype=torch.float64) for v in (r.data.x, r.data.y))
        assert torch.allclose(-first.bias[1:].detach(), torch.tensor(curvature_hinges(x, y),
                                                                      dtype=first.bias.dtype))


@pytest.mark.parametrize("depth", [7, 8])
def test_fit_optimum_is_quick_from_256_pieces(depth, monkeypatch):
    # The DP start and the restarts cost minutes from 256 pieces on; below, the full search.
    from relu_regions.analysis import limits
    from relu_regions.training.auto import QUICK_OPTIMUM_PIECES

    seen = {}
    real = limits.optimal_pwl

    def spy(x, y, pieces, **kw):
        seen.update(kw, pieces=pieces)
        return real(x, y, 4, **kw)  # the value is not under test: keep it cheap

    monkeypatch.setattr(limits, "optimal_pwl", spy)
    fit("x**2", depth=depth, seeds=1, starts=1, grow_from=depth, phase1=Phase("lm", 1),
        phase2=Phase("lm", 2), count=False, points=1200)
    quick = 2**depth >= QUICK_OPTIMUM_PIECES
    assert QUICK_OPTIMUM_PIECES == 256
    assert seen == {"pieces": 2**depth, "dp": not quick, "restarts": 0 if quick else 3}


@pytest.mark.parametrize("limit", [4, 8])
def test_fit_skips_the_optimum_above_max_optimum_pieces_and_says_so(limit, monkeypatch, capsys):
    from relu_regions.analysis import limits
    from relu_regions.cli import main
    from relu_regions.training import fitting

    calls = []
    real = limits.optimal_pwl
    monkeypatch.setattr(limits, "optimal_pwl", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    monkeypatch.setattr(fitting, "MAX_OPTIMUM_PIECES", limit)
    r = fit("x**2", depth=3, seeds=1, starts=1, phase1=Phase("lm", 1), phase2=Phase("lm", 2),
            count=False, points=100)
    skipped = 2**3 > limit
    assert (r.optimal_mse is None) is skipped and calls == ([] if skipped else [8])
    assert ("optimum not computed: 8 pieces" in (r.phases["optimum_note"] or "")) is skipped
    code = main(["train", "--target", "x**2", "--depth", "3", "--seeds", "1", "--starts", "1",
                 "--phase1", "lm:1", "--phase2", "lm:2", "--points", "100", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0 and ("optimum not computed" in out) is skipped
