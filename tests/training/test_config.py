"""FitConfig is the one source of fit settings: torch-free, its names checked, and every field
(even one added here) reachable from fit(), the train command and a sweep file."""

import dataclasses
import json
import subprocess
import sys

import pytest

from relu_regions import InputError
from relu_regions.training import config
from relu_regions.training.config import FitConfig, Phase, parse_phase


def test_config_imports_without_torch():
    code = ("import sys; from relu_regions.training.config import FitConfig; "
            "FitConfig().validate(); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("spec", ["adam:10:0.01", ("adam", 10, 0.01), ["adam", 10, 0.01],
                                  {"optimizer": "adam", "steps": 10, "lr": 0.01},
                                  Phase("adam", 10, 0.01)])
def test_every_phase_spelling_is_one_phase(spec):
    assert parse_phase(spec) == Phase("adam", 10, 0.01)


@pytest.mark.parametrize("spec, fragment", [("lm", "OPTIMIZER:STEPS"), ("sgd:3", "lm, adam"),
                                            ("lm:-1", "steps"), (("lm", 3, 0.0), "learning rate"),
                                            ({"optimizer": "lm"}, "needs optimizer and steps"),
                                            (3, "OPTIMIZER:STEPS")])
def test_bad_phase_specs_say_what_is_allowed(spec, fragment):
    with pytest.raises(InputError, match=fragment):
        parse_phase(spec)


def test_unknown_override_names_the_closest_field():
    from relu_regions import fit

    with pytest.raises(InputError, match="no setting 'dpeth' .*did you mean 'depth'"):
        fit("x**3", dpeth=3)


def test_to_dict_round_trips():
    c = FitConfig(target="x**2", depth=3, seeds=[1, 4], interval=(-1.0, 2.0),
                  phase1=Phase("adam", 7, 0.01), starts=2)
    back = FitConfig.from_dict(json.loads(json.dumps(c.to_dict())))
    assert back == c



def test_every_field_has_a_cli_option_and_a_sweep_key():
    from relu_regions.cli.parser import build_parser
    from relu_regions.sweep.config import parse_config

    train = build_parser()._subparsers._group_actions[0].choices["train"]
    dests = {a.dest for a in train._actions}
    for f in config.fields():
        assert f.name in dests, f.name  # target: the hand-written --target
        if f.name not in ("target", "seeds", "seed"):  # seeds: required; seed: the cells' own
            value = getattr(FitConfig(method="kaiming", depth=26), f.name)
            raw = {"targets": ["x"], "seeds": 1, f.name: value if value is not None else 2}
            if f.name in ("phase1", "phase2"):
                raw[f.name] = value.spec()
            if f.name == "interval":
                raw[f.name] = [0.0, 1.0]
            if f.name == "width":
                raw["methods"] = ["kaiming"]
            if f.name == "grow_from":
                raw[f.name] = 2
            parse_config(raw)


@pytest.fixture
def extended(monkeypatch):
    """FitConfig with one more field, as a contributor would add it (with only a default)."""
    Extended = dataclasses.make_dataclass(
        "FitConfig", [("fancy", int, dataclasses.field(default=3, metadata={"help": "new"}))],
        bases=(FitConfig,), frozen=True)
    monkeypatch.setattr(config, "FitConfig", Extended)
    import relu_regions.training.fitting as fitting
    seen = []
    monkeypatch.setattr(fitting, "fit", lambda *a, **k: seen.append((a, k)) or _stop())
    return seen


class _Stop(Exception):
    pass


def _stop():
    raise _Stop


def test_a_new_field_is_settable_from_the_cli(extended):
    from relu_regions.cli import main

    with pytest.raises(_Stop):
        main(["train", "--target", "x**3", "--fancy", "7"])
    assert extended[0][1]["fancy"] == 7


def test_a_new_field_is_settable_from_a_sweep_file(extended, tmp_path):
    from relu_regions.sweep.config import load_config

    path = tmp_path / "s.toml"
    path.write_text('targets = ["x**3"]\nseeds = 1\nfancy = [5, 6]\n')
    cfg = load_config(path)
    assert [c["fancy"] for c in cfg.cells()] == [5, 6] and cfg.varied == ["fancy"]
    assert config.FitConfig.from_dict({k: v for k, v in cfg.cells()[1].items()
                                  if k not in ("seed", "varied")}).fancy == 6


def test_a_sweep_over_shape_and_starts_runs_and_tabulates_both(tmp_path):
    import csv

    from relu_regions.sweep.config import parse_config
    from relu_regions.sweep.grid import run_sweep

    cfg = parse_config({"target": "sin(3*x)", "depth": 2, "seeds": 1, "points": 30,
                        "shape": ["convex", "dc"], "starts": [1, 2], "phase1": "lm:2",
                        "phase2": "lm:4"})
    res = run_sweep(cfg, tmp_path / "out", workers=0)
    rows = list(csv.DictReader(open(tmp_path / "out" / "results.csv")))
    assert [(r["shape"], r["starts"]) for r in rows] == [("convex", "1"), ("convex", "2"),
                                                         ("dc", "1"), ("dc", "2")]
    assert all(r["status"] == "ok" for r in rows)
    summary = list(csv.DictReader(open(tmp_path / "out" / "summary.csv")))
    assert {"shape", "starts"} <= set(summary[0]) and len(summary) == 4
    # Each cell is the fit with those settings: the numbers come from the varied fields.
    from relu_regions import fit

    one = fit("sin(3*x)", depth=2, seeds=[0], points=30, shape="dc", starts=2, phase1="lm:2",
              phase2="lm:4", optimum=False)
    assert float(rows[3]["mse"]) == pytest.approx(float(one.mse[0]), rel=1e-12)
    assert len({r["mse"] for r in rows}) > 1
    assert res.summary[0]["shape"] == "convex"


def test_old_plural_keys_and_singular_keys_give_the_same_grid():
    from relu_regions.sweep.config import parse_config

    a = parse_config({"targets": ["x**2"], "depths": [2, 3], "methods": ["raai"], "seeds": 1})
    b = parse_config({"target": "x**2", "depth": [2, 3], "method": "raai", "seeds": 1})
    assert a.cells() == b.cells() and len(a.cells()) == 2
    with pytest.raises(InputError, match="give depths or depth, not both"):
        parse_config({"targets": ["x**2"], "depths": [2], "depth": 3, "seeds": 1})
    with pytest.raises(InputError, match="did you mean 'shape'"):
        parse_config({"targets": ["x**2"], "shapes": ["dc"], "seeds": 1})


def test_depth_limit_is_the_same_for_count_train_and_sweep():
    from relu_regions.cli.count import MAX_COUNT_DEPTH
    from relu_regions.sweep.config import parse_config

    assert MAX_COUNT_DEPTH == config.MAX_DEPTH
    FitConfig(depth=config.MAX_DEPTH).validate()
    for bad in (FitConfig(depth=config.MAX_DEPTH + 1), FitConfig(depth=0)):
        with pytest.raises(InputError, match=f"in \\[1, {config.MAX_DEPTH}\\]"):
            bad.validate()
    with pytest.raises(InputError, match=f"in \\[1, {config.MAX_DEPTH}\\]"):
        parse_config({"targets": ["x"], "depths": [config.MAX_DEPTH + 1], "seeds": 1})


def test_phase_spellings_are_read_when_the_config_is_built():
    """FitConfig(phase1="lm:20") holds a Phase, as replace() and fit(phase1=...) do."""
    from relu_regions.training.config import FitConfig, Phase

    for spelling in ("lm:20", ("lm", 20), ("lm", 20, 1e-3), Phase("lm", 20)):
        assert FitConfig(phase1=spelling).phase1 == Phase("lm", 20, 1e-3)
        assert FitConfig().replace(phase2=spelling).phase2 == Phase("lm", 20, 1e-3)


@pytest.mark.parametrize("method", ["kaiming", "raai", "skip"])
def test_a_baseline_refuses_starts_and_growth_instead_of_ignoring_them(method):
    """Starts and growth act through phase 1; a one-phase method would silently drop them."""
    for inert in (dict(starts=1), dict(grow_from=3), dict()):  # what a baseline does anyway
        FitConfig(method=method, depth=3, **inert).validate()
    for name, value in (("starts", 2), ("grow_from", 2)):
        with pytest.raises(InputError, match=f"{name}={value} applies to the two-phase methods"):
            FitConfig(method=method, depth=3, **{name: value}).validate()
    FitConfig(method="pretrain", depth=3, starts=2, grow_from=2).validate()
