"""Sweeps: strict config validation, a local process-pool run, failures kept per cell, and a Dask
LocalCluster run that gives the same numbers as the local one."""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from relu_regions import InputError
from relu_regions.sweep import config as sweep_config
from relu_regions.sweep import grid as sweep_grid
from relu_regions.training.config import Phase
from relu_regions.training.fitting import fit

ROOT = Path(__file__).resolve().parents[2]

SMALL = {"targets": ["x**3"], "depths": [2, 3], "methods": ["kaiming", "pretrain-thm31"],
         "seeds": 2, "points": 40, "phase1": "lm:4", "phase2": {"optimizer": "lm", "steps": 8}}


def small(**changes):
    return sweep_config.parse_config({**SMALL, **changes})


# ---------------------------------------------------------------------------------------------
# Config validation

BAD = [
    ({"bogus": 1}, "unknown key 'bogus'"),
    ({"targets": "x**3"}, "targets must be a list"),
    ({"targets": []}, "targets is empty"),
    ({"targets": [3]}, "is not target expressions"),
    ({"targets": ["x**3", "x**3"]}, "twice"),
    ({"targets": ["__import__('os')"]}, "not allowed"),
    ({"targets": ["log(x)"]}, "not finite"),          # log(0) on [0, 1]: rejected at load time
    ({"targets": ["1/(x-0.5)"], "points": 3}, "not finite"),
    ({"depths": [0]}, "depth must be an integer in [1, 26], got 0"),
    ({"depths": [99]}, "depth must be an integer in [1, 26], got 99"),
    ({"depths": [2.5]}, "depth must be an integer"),
    ({"depths": [True]}, "depth must be an integer"),
    ({"depths": []}, "depths is empty"),
    ({"methods": ["adam"]}, "method must be one of kaiming"),
    ({"methods": "kaiming"}, "methods must be a list"),
    ({"seeds": 0}, "seeds count 0"),
    ({"seeds": 5000}, "seeds count 5000"),
    ({"seeds": [-1]}, "seed -1 is not allowed"),
    ({"seeds": [1, 1]}, "twice"),
    ({"seeds": []}, "seeds is empty"),
    ({"seeds": "3"}, "seeds must be a count or a list"),
    ({"interval": [1, 0]}, "finite with lo < hi"),
    ({"interval": [0]}, "interval must be two numbers"),
    ({"interval": ["a", "b"]}, "interval must be two numbers"),
    ({"points": 1}, "points must be an integer >= 2"),
    ({"points": 10.0}, "points must be an integer >= 2"),
    ({"sparse": 10}, "not both"),
    ({"phase1": "lm"}, "OPTIMIZER:STEPS"),
    ({"phase1": "sgd:10"}, "optimizer must be one of lm, adam; got 'sgd'"),
    ({"phase1": "lm:-1"}, "steps must be"),
    ({"phase1": "lm:10:0"}, "learning rate"),
    ({"phase1": "lm:10:nan"}, "learning rate"),
    ({"phase2": {"optimizer": "lm"}}, "needs optimizer and steps"),
    ({"phase2": {"optimizer": "lm", "steps": 5, "momentum": 1}}, "unknown key 'momentum'"),
    ({"phase2": {"optimizer": "lm", "steps": "5"}}, "OPTIMIZER:STEPS"),
    ({"phase2": 5}, "OPTIMIZER:STEPS"),
    ({"parameterization": "ntk"}, "parameterization must be one of sp, gmp; got 'ntk'"),
]


@pytest.mark.parametrize("change, message", BAD)
def test_bad_config_is_one_line_input_error(change, message):
    with pytest.raises(InputError) as info:
        small(**change)
    text = str(info.value)
    assert message in text and "\n" not in text


@pytest.mark.parametrize("key", ["targets", "seeds"])
def test_grid_keys_are_required(key):
    raw = {k: v for k, v in SMALL.items() if k != key}
    with pytest.raises(InputError, match=f"missing key '{key}'"):
        sweep_config.parse_config(raw)


def test_load_config_reads_toml_and_rejects_bad_files(tmp_path):
    good = tmp_path / "ok.toml"
    good.write_text('targets = ["x**2", "sin(3*x)"]\ndepths = [2]\nmethods = ["raai"]\n'
                    'seeds = [4, 9]\nsparse = 10\ninterval = [-1, 1.5]\n'
                    'phase1 = "adam:10:0.01"\nphase2 = {optimizer = "lm", steps = 3}\n')
    cfg = sweep_config.load_config(good)
    assert cfg.targets == ("x**2", "sin(3*x)") and cfg.seeds == (4, 9) and len(cfg) == 4
    assert cfg.sparse == 10 and cfg.points is None and cfg.interval == (-1.0, 1.5)
    assert cfg.phase1 == {"optimizer": "adam", "steps": 10, "lr": 0.01}
    assert cfg.phase2 == {"optimizer": "lm", "steps": 3, "lr": 1e-3}
    assert [c["seed"] for c in cfg.cells()] == [4, 9, 4, 9]

    broken = tmp_path / "broken.toml"
    broken.write_text("targets = [\n")
    with pytest.raises(InputError, match="not valid TOML"):
        sweep_config.load_config(broken)
    with pytest.raises(InputError, match="does not exist"):
        sweep_config.load_config(tmp_path / "missing.toml")


def test_example_config_is_a_cheap_grid_of_at_least_40_cells():
    cfg = sweep_config.load_config(ROOT / "experiments" / "sweep_example.toml")
    assert len(cfg) >= 40 and len(cfg.cells()) == len(cfg)
    assert cfg.phase1["steps"] + cfg.phase2["steps"] <= 100


# ---------------------------------------------------------------------------------------------
# Running

@pytest.fixture(scope="module")
def grid():
    """SMALL plus a method that passes no validation: it fails only inside fit, in the worker."""
    return small().with_values("method", ("kaiming", "no-such-method", "pretrain-thm31"))


@pytest.fixture(scope="module")
def local_run(grid, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "sweep"
    return sweep_grid.run_sweep(grid, out, workers=2), out


def _read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_local_sweep_writes_files_and_keeps_failed_cells(local_run, grid):
    res, out = local_run
    assert res.mode == "local" and res.workers == 2
    # nothing else, no temp files
    assert sorted(p.name for p in out.iterdir()) == sorted(sweep_grid.FILES)
    assert (out / "sweep.png").stat().st_size > 1000
    # rows in grid order, one per cell
    assert [(r["target"], r["depth"], r["method"], r["seed"]) for r in res.rows] == \
        [(c["target"], c["depth"], c["method"], c["seed"]) for c in grid.cells()]
    failed = [r for r in res.rows if r["method"] == "no-such-method"]
    assert len(failed) == 4 and all(r["status"] == "failed" for r in failed)
    assert all("no-such-method" in r["error"] and r["mse"] is None for r in failed)
    ok = [r for r in res.rows if r["method"] != "no-such-method"]
    assert len(ok) == 8 and all(r["status"] == "ok" and r["error"] == "" for r in ok)
    assert all(math.isfinite(r["mse"]) and r["pieces"] >= 1 for r in ok)

    # CSV and JSON hold the same rows (floats round-trip exactly through repr)
    rows_csv = _read_csv(out / "results.csv")
    assert list(rows_csv[0]) == list(sweep_grid.ROW_FIELDS)
    for r, c in zip(res.rows, rows_csv, strict=True):
        assert c["status"] == r["status"] and c["method"] == r["method"]
        assert (c["mse"] == "") if r["mse"] is None else float(c["mse"]) == r["mse"]
    doc = json.loads((out / "results.json").read_text())
    assert doc["rows"] == res.rows and doc["n_failed"] == 4 and doc["n_ok"] == 8
    assert doc["config"]["methods"] == list(grid.methods)


def test_summary_aggregates_per_target_depth_method(local_run):
    res, out = local_run
    summary = _read_csv(out / "summary.csv")
    assert len(summary) == len(res.summary) == 6
    for s, c in zip(res.summary, summary, strict=True):
        cell = [r for r in res.rows if (r["target"], r["depth"], r["method"])
                == (s["target"], s["depth"], s["method"])]
        assert s["n_cells"] == 2 == int(c["n_cells"])
        if s["method"] == "no-such-method":
            assert (s["n_ok"], s["n_failed"], s["mse_mean"]) == (0, 2, None)
            assert c["mse_mean"] == ""
            continue
        mse = np.array([r["mse"] for r in cell])
        assert (s["n_ok"], s["n_failed"]) == (2, 0)
        assert s["mse_mean"] == pytest.approx(mse.mean(), rel=1e-15)
        assert s["mse_min"] == mse.min() and float(c["mse_min"]) == mse.min()
        assert s["mse_median"] == pytest.approx(np.median(mse), rel=1e-15)


def test_a_cell_equals_the_same_seed_in_a_batch(local_run):
    res, _ = local_run
    batch = fit("x**3", depth=3, seeds=[0, 1], method="pretrain-thm31", points=40,
                phase1=Phase("lm", 4), phase2=Phase("lm", 8), optimum=False)
    cells = [r for r in res.rows if r["depth"] == 3 and r["method"] == "pretrain-thm31"]
    for r, mse in zip(cells, batch.mse, strict=True):
        assert r["mse"] == pytest.approx(float(mse), rel=1e-9)


def test_dask_cluster_gives_the_same_rows(local_run, grid, tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        res = sweep_grid.run_sweep(grid, tmp_path / "dask", scheduler=cluster.scheduler_address)
    assert res.mode == "dask"
    local = local_run[0]
    assert len(res.rows) == len(local.rows)
    for a, b in zip(res.rows, local.rows, strict=True):
        assert {k: a[k] for k in sweep_grid.ROW_FIELDS if k != "seconds"} == \
            {k: b[k] for k in sweep_grid.ROW_FIELDS if k != "seconds"}
    assert res.summary == local.summary


def test_inline_run_reports_a_runtime_failure_and_keeps_the_rest(tmp_path, monkeypatch):
    from relu_regions.training import fitting

    def flaky(*args, **kwargs):
        if kwargs["config"].seeds == [1]:
            raise RuntimeError("simulated crash\nsecond line")
        return fit(*args, **kwargs)

    monkeypatch.setattr(fitting, "fit", flaky)
    cfg = small(depths=[2], methods=["raai"])
    res = sweep_grid.run_sweep(cfg, tmp_path / "out", workers=0)
    assert res.mode == "inline"
    assert [r["status"] for r in res.rows] == ["ok", "failed"]
    assert res.rows[1]["error"] == "RuntimeError: simulated crash"
    assert res.summary[0]["n_ok"] == 1 and res.summary[0]["n_failed"] == 1
    assert "failed: target='x**3' depth=2 method=raai seed=1" in res.report()


def test_out_dir_and_arguments_are_checked(tmp_path):
    cfg = small(depths=[2], methods=["raai"], seeds=1)
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("keep")
    with pytest.raises(InputError, match="not empty"):
        sweep_grid.run_sweep(cfg, out, workers=0)
    sweep_grid.run_sweep(cfg, out, workers=0, force=True)
    assert (out / "old.txt").read_text() == "keep" and (out / "results.csv").is_file()
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="not a directory"):
        sweep_grid.run_sweep(cfg, tmp_path / "file", workers=0)
    with pytest.raises(InputError, match="workers must be"):
        sweep_grid.run_sweep(cfg, tmp_path / "w", workers=-1)
    with pytest.raises(InputError, match="workers applies to local runs"):
        sweep_grid.run_sweep(cfg, tmp_path / "w", workers=2, scheduler="tcp://127.0.0.1:1")
    with pytest.raises(InputError, match="scheduler must be an address"):
        sweep_grid.run_sweep(cfg, tmp_path / "w", scheduler=42)


CRASHY = '''
import os
from relu_regions.sweep import grid as sweep


def crashy(cell):
    if cell["seed"] == 1:
        os._exit(3)  # a worker dying like a segfault: no exception, the process is gone
    return sweep.run_cell(cell)
'''


def test_a_worker_that_dies_fails_only_its_cell(tmp_path, monkeypatch):
    (tmp_path / "sweep_crashy.py").write_text(CRASHY)
    monkeypatch.syspath_prepend(str(tmp_path))  # spawned workers get the parent's sys.path
    import sweep_crashy

    monkeypatch.setattr(sweep_grid, "run_cell", sweep_crashy.crashy)
    res = sweep_grid.run_sweep(small(depths=[2], methods=["raai"], seeds=3), tmp_path / "out",
                               workers=2)
    assert [r["status"] for r in res.rows] == ["ok", "failed", "ok"]
    assert res.rows[1]["error"] == sweep_grid.DIED


def test_the_trained_column_shows_what_fit_chose(tmp_path):
    """A warp axis: with 3 added layers the two rows differ in how they grew; with 1 added layer
    (no warp either way) they say the same, so a setting that changed nothing is visible."""
    cfg = sweep_config.parse_config({"target": "x**3", "depth": [2, 4], "seeds": 1, "points": 60,
                          "grow_from": 1, "starts": 1, "warp": [True, False],
                          "phase1": "lm:2", "phase2": "lm:4"})
    rows = sweep_grid.run_sweep(cfg, tmp_path / "out", workers=0).rows
    trained = {(r["depth"], r["warp"]): r["trained"] for r in rows}
    polish = "; the best paths polished for 4 steps)"  # phase 2's 4 steps once more
    assert trained[4, True] == ("1 start per seed; grown from depth 1 (a warp layer, then 2 folds"
                                + polish)
    assert trained[4, False] == "1 start per seed; grown from depth 1 (3 folds" + polish
    assert trained[2, True] == trained[2, False] == ("1 start per seed; grown from depth 1 (1 fold"
                                                     + polish)
    base = sweep_grid.run_cell({"target": "x**3", "depth": 2, "method": "kaiming", "seed": 0,
                       "points": 60, "phase1": "lm:2", "phase2": "lm:4", "varied": []})
    assert base["status"] == "ok" and base["trained"] == ""
