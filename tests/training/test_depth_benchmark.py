"""The depth benchmark's helpers (experiments/depth.py): the data form trains on the points the
expression form does, effective pieces invert the free-knot optimum, the goal lines flip at the
acceptance thresholds, and the script's rows carry what the goals read (fit faked: no training).
"""

import argparse
import functools
import importlib.util
import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from relu_regions.training.config import FitConfig
from relu_regions.training.data import make_dataset

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("depth_benchmark",
                                               ROOT / "experiments" / "depth.py")
depth = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("depth_benchmark", depth)
_spec.loader.exec_module(depth)


@pytest.mark.parametrize("asked, d", [(3000, 10), ("default", 10), ("default", 4), (4096, 12)])
def test_data_form_trains_on_the_expression_forms_points(asked, d):
    expr = depth.fit_kwargs("x**3", "expr", asked, d)
    data = depth.fit_kwargs("x**3", "data", asked, d)
    assert ("points" in expr) == (asked != "default")  # default: fit picks the count itself
    mine = make_dataset(FitConfig(target="x**3", depth=d, points=expr.get("points")))
    theirs = make_dataset(FitConfig(depth=d), data=data["data"])
    assert len(mine.x) == depth.resolve_points(asked, d)
    np.testing.assert_array_equal(mine.x, theirs.x)
    np.testing.assert_array_equal(mine.y, theirs.y)
    assert tuple(mine.interval) == tuple(theirs.interval) == (0.0, 1.0)


def test_points_tokens():
    assert depth.points_token("default") == "default"
    assert depth.points_token("4096") == 4096
    for bad in ("1", "abc", "4096.5"):
        with pytest.raises(argparse.ArgumentTypeError, match="whole number >= 2"):
            depth.points_token(bad)
    assert depth.resolve_points("benchmark", 5) == 4096
    assert depth.resolve_points("benchmark", 12) == 16384
    assert depth.resolve_points("default", 5) == 500


@pytest.mark.parametrize("target, n", [("x**2", 5), ("x**3", 7), ("x**3", 12)])
def test_effective_pieces_inverts_the_optimum(target, n):
    optimum = functools.partial(depth.optimum_mse, target)
    assert depth.effective_pieces(optimum(n), optimum) == pytest.approx(n, rel=1e-9)


def test_effective_pieces_monotone_and_exact_between_integers():
    optimum = functools.partial(depth.optimum_mse, "x**3")
    errors = np.geomspace(optimum(3), optimum(10), 9)
    found = [depth.effective_pieces(e, optimum) for e in errors]
    assert all(a < b for a, b in zip(found, found[1:], strict=False))
    assert found[0] == pytest.approx(3) and found[-1] == pytest.approx(10)
    # log-log interpolation is exact on a power law, also between the integers
    law = functools.partial(lambda c, n: c / n**4, 9.3e-3)
    assert depth.effective_pieces(law(83.4), law) == pytest.approx(83.4, rel=1e-12)
    assert depth.effective_pieces(law(1), law) == 1.0
    assert depth.effective_pieces(2 * law(1), law) == 1.0
    assert depth.effective_pieces(law(300), law, most=256) == math.inf
    assert math.isnan(depth.effective_pieces(0.0, law))


def _row(target="x**3", form="expr", points=4096, d=10, mean=1e-10, asked=None, opt=1.0):
    return {"target": target, "form": form, "points": points, "depth": d, "method": "default",
            "width": 4, "mean": mean, "seeds": list(range(10)), "opt_matched": opt,
            "points_asked": points if asked is None else asked, "s_per_seed": 1.0}


def _goal(rows, number):
    hit = [line for line in depth.goals(rows) if line.startswith(f"goal {number},")]
    assert len(hit) == 1
    return hit[0]


def test_goal_counts_flips_at_its_thresholds():
    def rows(means):
        return [_row(form=f, points=n, mean=means.get((f, n), 1e-10))
                for f in depth.FORMS for n in depth.GOAL1_COUNTS]
    assert _goal(rows({}), 1).endswith("-> MET")
    at_limit = {("data", 3000): depth.GOAL1_MEAN}
    assert _goal(rows(at_limit), 1).endswith("-> MET")
    over = {("data", 3000): depth.GOAL1_MEAN * 1.01}
    assert _goal(rows(over), 1).endswith("-> NOT MET")
    # every mean under the bound but the median above its own
    half = {k: depth.GOAL1_MEDIAN * 1.01 for k in
            [(f, n) for f in depth.FORMS for n in depth.GOAL1_COUNTS][:8]}
    assert _goal(rows(half), 1).endswith("-> NOT MET")
    assert _goal(rows({k: depth.GOAL1_MEDIAN for k in half}), 1).endswith("-> MET")
    # a missing setting: not judged, unless a present one already fails
    assert "NOT JUDGED" in _goal(rows({})[1:], 1)
    assert _goal(rows(over)[:-1], 1).endswith("-> NOT MET")
    assert all(not line.startswith("goal 1,") for line in depth.goals([_row(d=9)]))
    # depth 10 only at a count outside the list: nothing to judge, and no crash
    assert "NOT JUDGED (missing: expr 2048" in _goal([_row(points=16384)], 1)


def test_goal_deeper_flips_at_its_thresholds():
    def rows(m11=6e-11, m12=depth.GOAL2_D12, m10=6e-11):
        out = []
        for n in (4096, 8192):
            out += [_row(points=n, d=10, mean=m10), _row(points=n, d=11, mean=m11),
                    _row(points=n, d=12, mean=m12)]
        return out + [_row(points=4096, asked="default", d=10, mean=m10),
                      _row(points=8192, asked="default", d=11, mean=m11),
                      _row(points=16384, asked="default", d=12, mean=m12)]
    assert _goal(rows(), 2).endswith("-> MET")
    assert _goal(rows(m11=6.01e-11), 2).endswith("-> NOT MET")
    assert _goal(rows(m10=5e-11), 2).endswith("-> NOT MET")  # depth 12 above depth 10
    assert _goal(rows(m12=depth.GOAL2_D12 * 1.01), 2).endswith("-> NOT MET")
    assert "NOT JUDGED" in _goal(rows()[:-1], 2)


def test_goal_shapes_flip_at_their_factors():
    def rows(ratios=None):
        return [_row(target=t, mean=(ratios or {}).get(t, 1.0) * 2e-10, opt=2e-10)
                for t in depth.GOAL4_FACTORS]
    assert _goal(rows(), 4).endswith("-> MET")
    assert _goal(rows({"x**11": 10.0, "sqrt(x)": 3.0}), 4).endswith("-> MET")
    assert _goal(rows({"x**11": 10.01}), 4).endswith("-> NOT MET")
    assert _goal(rows({"sqrt(x)": 3.01}), 4).endswith("-> NOT MET")
    assert "NOT JUDGED (missing: 1/(1+x))" in _goal(rows()[:1] + rows()[2:], 4)
    # the same function spelled differently counts
    spelled = [dict(r, target=r["target"].replace("2*x", "x*2")) for r in rows()]
    assert _goal(spelled, 4).endswith("-> MET")


def test_main_rows_forms_and_default_points(tmp_path, monkeypatch):
    calls = []

    def fake_fit(target=None, data=None, **kw):
        calls.append({"target": target, "data": data, **kw})
        return SimpleNamespace(models=[torch.nn.Identity()] * len(kw["seeds"]), seconds=0.5,
                               train_mse=np.zeros(len(kw["seeds"])))
    monkeypatch.setattr(depth, "fit", fake_fit)
    monkeypatch.setattr(depth, "net_l2_mse", lambda net, f, interval: (1e-4, 7))
    out = tmp_path / "d.json"
    assert depth.main(["--targets", "x**2", "--depths", "2", "3", "--seeds", "2",
                       "--points", "600", "default", "--forms", "expr", "data",
                       "--out", str(tmp_path / "d.png"), "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert len(doc["rows"]) == 2 * 2 * 2 and len(calls) == 8
    assert (tmp_path / "d.png").stat().st_size > 0
    expr_default = [c for c in calls if c["target"] and "points" not in c]
    assert len(expr_default) == 2  # 'default' leaves points unset
    data_calls = [c for c in calls if c["data"] is not None]
    assert sorted(len(c["data"][0]) for c in data_calls) == [500, 500, 600, 600]
    row = doc["rows"][0]
    assert row["errors"] == [1e-4, 1e-4] and row["form"] == "expr" and row["points"] == 600
    assert row["effective_pieces"] == pytest.approx(
        depth.effective_pieces(1e-4, functools.partial(depth.optimum_mse, "x**2")))
    assert 1 < row["effective_pieces"] < 3  # x^2: 1/(180 n^4) = 1e-4 at n = 2.7
