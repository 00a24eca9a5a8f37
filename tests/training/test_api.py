"""The Python API a user expects: best / predict on any float input, data as arrays, a callable
target, the run folder round trip, resume without argv; and the train command's reporting."""

import json
import shlex

import numpy as np
import pytest
import torch

from relu_regions import FitConfig, InputError, fit, load_run
from relu_regions.cli import main

QUICK = dict(depth=3, phase1="lm:5", phase2=("lm", 10), starts=1, optimum=False)


@pytest.fixture(scope="module")
def result():
    return fit("x**3", seeds=3, **QUICK)


def test_best_is_the_lowest_mse_seed_and_predict_takes_any_float_input(result):
    i = int(np.argmin(result.mse))
    assert result.best is result.models[i]
    x = np.linspace(0, 1, 7)
    with torch.no_grad():
        want = result.best(torch.tensor(x).unsqueeze(1)).numpy()[:, 0]
    for given in (x, x.tolist(), torch.tensor(x), x.reshape(-1, 1), x.astype(np.float32),
                  torch.tensor(x, dtype=torch.float32)):
        got = result.predict(given)
        assert got.dtype == np.float64 and got.shape == (7,)
        exact = np.asarray(given, dtype=np.float64).reshape(-1)  # float32 inputs round first
        assert np.array_equal(got, want) or np.array_equal(exact, x) is False
        with torch.no_grad():
            ref = result.best(torch.tensor(exact).unsqueeze(1)).numpy()[:, 0]
        assert np.array_equal(got, ref)
    with pytest.raises(InputError, match=r"shape \(n,\) or \(n, 1\)"):
        result.predict(np.zeros((3, 2)))
    assert np.array_equal(result.predict(0.5), result.predict([0.5]))  # one point
    with pytest.raises(InputError, match="points must be numbers"):
        result.predict(["a"])
    with pytest.raises(InputError, match=r"finite numbers: point 1 is \[nan\]"):
        result.predict([0.5, float("nan")])
    with pytest.raises(InputError, match="seed 99 is not in this run"):
        result.predict([0.5], seed=99)


def test_result_carries_its_config(result):
    assert isinstance(result.config, FitConfig)
    assert result.config.phase2.steps == 10 and result.config.seeds == 3


def test_data_as_arrays_equals_the_same_points_as_a_dataset():
    from relu_regions import targets

    x = np.linspace(-1, 2, 60)
    y = np.sin(x)
    a = fit(data=(x, y), seeds=1, **QUICK)
    b = fit(data=targets.Dataset(x, y, x, y, (-1.0, 2.0), "sin"), seeds=1, **QUICK)
    assert np.array_equal(a.mse, b.mse) and a.interval == (-1.0, 2.0)


def test_a_lambda_target_equals_its_expression():
    a = fit(lambda x: x**3, seeds=1, **QUICK)
    b = fit("x**3", seeds=1, **QUICK)
    assert np.array_equal(a.mse, b.mse)
    with pytest.raises(InputError, match="elementwise"):
        fit(lambda x: 1.0 + 0 * x[:3], seeds=1, **QUICK)


def test_interval_with_data_is_the_domain_and_points_outside_are_refused():
    x = np.linspace(0.2, 0.8, 40)
    a = fit(data=(x, x**2), seeds=1, **QUICK)
    b = fit(data=(x, x**2), seeds=1, interval=(0.0, 1.0), **QUICK)
    assert a.interval == (0.2, 0.8) and b.interval == (0.0, 1.0)
    assert not np.array_equal(a.mse, b.mse)  # the net is built on another domain
    with pytest.raises(InputError, match=f"{int((x > 0.6).sum())} of 40 data points lie outside"):
        fit(data=(x, x**2), seeds=1, interval=(0.0, 0.6), **QUICK)


def test_test_fraction_holds_out_a_seeded_share():
    r = fit("x**3", seeds=2, test_fraction=0.25, **QUICK)
    assert len(r.data.test_x) == 125 and len(r.data.x) == 375
    assert not set(r.data.test_x) & set(r.data.x)
    assert not np.array_equal(r.mse, r.train_mse)
    resid = r.predict(r.data.test_x, seed=r.seeds[0]) - r.data.test_y
    assert r.mse[0] == pytest.approx(np.mean(resid**2), rel=1e-12)
    assert r.errors["r2"][0] == pytest.approx(1 - np.mean(resid**2) / np.var(r.data.test_y),
                                              rel=1e-12)
    assert r.errors["max_abs_error"][0] == pytest.approx(np.abs(resid).max(), rel=1e-12)
    again = fit("x**3", seeds=2, test_fraction=0.25, **QUICK)
    assert np.array_equal(again.data.test_x, r.data.test_x)


def test_load_run_of_save_predicts_the_same_bits(result, tmp_path):
    folder = result.save(tmp_path / "run")
    back = load_run(folder)
    x = np.linspace(0, 1, 33)
    assert np.array_equal(back.predict(x), result.predict(x))
    assert np.array_equal(back.mse, result.mse) and back.config == result.config
    assert np.array_equal(back.history["loss"], result.history["loss"])
    rows = (folder / "pieces.csv").read_text().splitlines()
    assert rows[0] == "start,end,slope,value_start,value_end"
    assert len(rows) - 1 == result.pieces[result.best_index]
    first, last = rows[1].split(","), rows[-1].split(",")
    assert float(first[0]) == 0.0 and float(last[1]) == 1.0


def test_save_with_force_replaces_the_whole_old_run(tmp_path):
    many = fit("x**3", seeds=3, **QUICK)
    folder = many.save(tmp_path / "run")
    (folder / "notes.txt").write_text("old")
    with pytest.raises(InputError, match="not empty"):
        fit("x**3", seeds=1, **QUICK).save(folder)
    fit("x**3", seeds=1, **QUICK).save(folder, force=True)
    assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == ["seed-0000.pt"]
    assert not (folder / "notes.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # nothing left beside it


def test_resume_from_python_needs_no_argv(tmp_path, monkeypatch, interrupt_after):
    run = dict(seeds=2, depth=3, phase1="lm:5", phase2="lm:30", starts=2, optimum=False)
    full = fit("x**3", **run)
    interrupt_after(17)
    with pytest.raises(KeyboardInterrupt):
        fit("x**3", checkpoint=tmp_path / "state.pt", checkpoint_every=4, **run)
    monkeypatch.undo()
    resumed = fit(resume=tmp_path)
    assert np.array_equal(resumed.mse, full.mse)
    assert np.array_equal(resumed.history["loss"], full.history["loss"])
    with pytest.raises(InputError, match="depth is 4 now and was 3"):
        fit("x**3", resume=tmp_path, **{**run, "depth": 4})


def _train(capsys, *argv):
    code = main(["train", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_train_json_reports_train_and_test_and_the_text_says_which(capsys):
    base = ["--target", "x**3", "--depth", "3", "--seeds", "2", "--phase1", "lm:3",
            "--phase2", "lm:5", "--starts", "1", "--quiet"]
    code, out, _ = _train(capsys, *base, "--test-fraction", "0.2", "--json")
    d = json.loads(out)
    assert code == 0 and d["held_out"] and d["inputs"] == 1
    assert "test_mse_mean" not in d and d["mse_mean"] != d["train_mse_mean"]
    assert 0.9 < d["r2_mean"] <= 1 and {"rel_rmse_mean", "max_abs_error_mean"} <= set(d)
    code, out, _ = _train(capsys, *base, "--sparse", "20")
    assert "test MSE (held-out points)" in out and "train MSE (fitted points)" in out


def test_a_target_in_y_says_it_is_a_2d_fit(capsys):
    code, out, _ = _train(capsys, "--target", "x*y", "--depth", "2", "--seeds", "1",
                          "--points", "6", "--phase1", "lm:2", "--phase2", "lm:2", "--starts",
                          "1", "--quiet", "--json")
    assert code == 0 and json.loads(out)["inputs"] == 2
    code, out, _ = _train(capsys, "--target", "x*y", "--depth", "2", "--seeds", "1",
                          "--points", "6", "--phase1", "lm:2", "--phase2", "lm:2", "--starts",
                          "1", "--quiet")
    assert "2D fit: the target uses y" in out


def test_a_2d_run_folder_lists_only_what_it_wrote(capsys, tmp_path):
    code, out, _ = _train(capsys, "--target", "x*y", "--depth", "2", "--seeds", "1",
                          "--points", "6", "--phase1", "lm:2", "--phase2", "lm:2", "--starts",
                          "1", "--quiet", "--out", str(tmp_path / "run"))
    wrote = next(line for line in out.splitlines() if line.startswith("wrote"))
    folder = tmp_path / "run"
    assert code == 0 and "pieces.csv" not in wrote and not (folder / "pieces.csv").exists()
    assert all((folder / name).exists() for name in ("metrics.json", "fit.png", "history.png"))
    listed = wrote.split(": ", 1)[1].split(", ")  # exactly the folder's entries
    assert sorted(listed) == sorted(p.name + "/" * p.is_dir() for p in folder.iterdir())
    assert {"train.csv", "history.npz", "checkpoints/"} <= set(listed)


def test_progress_lines_when_stderr_is_not_a_terminal_and_quiet(capsys, monkeypatch):
    from relu_regions.training import progress

    monkeypatch.setattr(progress, "LINE_EVERY", 0.0)
    argv = ["--target", "x**3", "--depth", "2", "--seeds", "1", "--phase1", "lm:2", "--phase2",
            "lm:3", "--starts", "1", "--no-count", "--no-optimum"]
    _, _, err = _train(capsys, *argv)
    assert err.count("training 1 seeds: step") == 5
    _, _, err = _train(capsys, *argv, "--quiet")
    assert err == ""


def test_report_prints_the_stored_command_shell_quoted(capsys, tmp_path):
    out_dir = tmp_path / "my run"
    code, _, _ = _train(capsys, "--target", "x**3 + 1", "--depth", "2", "--seeds", "1",
                        "--phase1", "lm:2", "--phase2", "lm:3", "--quiet", "--out", str(out_dir))
    assert code == 0
    code = main(["report", str(out_dir)])
    out = capsys.readouterr()[0]
    line = next(s for s in out.splitlines() if s.startswith("command: "))
    argv = shlex.split(line[len("command: "):])
    assert argv[-2:] == ["--out", str(out_dir)] and "x**3 + 1" in argv


def test_cli_resume_continues_from_the_folder(capsys, tmp_path, monkeypatch, interrupt_after):
    argv = ["--target", "x**3", "--depth", "2", "--seeds", "2", "--phase1", "lm:3",
            "--phase2", "lm:12", "--starts", "1", "--quiet", "--json"]
    code, out, _ = _train(capsys, *argv, "--out", str(tmp_path / "full"))
    full = json.loads(out)
    interrupt_after(9)
    code, _, _ = _train(capsys, *argv, "--out", str(tmp_path / "cut"), "--checkpoint-every", "2")
    assert code == 130 and (tmp_path / "cut" / "state.pt").is_file()
    monkeypatch.undo()
    code, out, _ = _train(capsys, "--resume", str(tmp_path / "cut"), "--json")
    assert code == 0 and json.loads(out)["mse_mean"] == full["mse_mean"]
    assert not (tmp_path / "cut" / "state.pt").exists()
    code, _, err = _train(capsys, "--resume", str(tmp_path / "cut"), "--depth", "3")
    assert code == 2 and "drop --depth" in err


def test_the_optimum_is_shown_only_with_fewer_pieces_than_half_the_points():
    from relu_regions.cli.train import show as show_train

    run = dict(depth=3, seeds=1, phase1="lm:2", phase2="lm:2", starts=1, count=False)
    assert fit("x**3", points=16, **run).optimal_mse is None       # 8 pieces, 16 points
    shown = fit("x**3", points=17, **run)                          # 8 pieces, 17 points
    assert shown.optimal_pieces == 8 and shown.optimal_mse > 0
    out = shown.summary()
    assert "not a bound" not in show_train({**out, "efficiency_mean": 0.5})
    assert "phase 2 can add pieces beyond" in show_train({**out, "efficiency_mean": 1.7})


def test_cli_data_outside_the_interval_is_refused_with_the_count(capsys, tmp_path):
    csv = tmp_path / "points.csv"
    csv.write_text("x,y\n" + "".join(f"{v},{v * v}\n" for v in np.linspace(-1, 1, 21)))
    code, _, err = _train(capsys, "--data", str(csv), "--interval=0,1", "--out",
                          str(tmp_path / "out"))
    assert code == 2 and "10 of 21 data points lie outside the interval [0, 1]" in err
    assert err.count("\n") == 1 and not (tmp_path / "out").exists()


def test_radial_says_depth_is_per_construction(capsys):
    code, out, _ = _train(capsys, "--target", "r**3", "--shape", "radial", "--interval=-1,1",
                          "--depth", "2", "--seeds", "1", "--points", "6", "--phase1", "lm:2",
                          "--phase2", "lm:2", "--starts", "1", "--quiet")
    assert code == 0 and "depth 2 per construction (4 hidden layers, radial)" in out.splitlines()[0]
    code, out, _ = _train(capsys, "--target", "x*y", "--shape", "ridge", "--depth", "2",
                          "--seeds", "1", "--points", "6", "--phase1", "lm:2", "--phase2",
                          "lm:2", "--starts", "1", "--quiet")
    assert code == 0 and "per construction" not in out


def test_a_2d_fit_reports_each_seeds_exact_regions_and_draws_the_map(capsys, tmp_path,
                                                                    monkeypatch):
    from relu_regions import plots
    from relu_regions.analysis.plane import count_regions_2d

    drawn = []
    real_map = plots.plot_region_map
    monkeypatch.setattr(plots, "plot_region_map",
                        lambda count, *a, **k: drawn.append(count) or real_map(count, *a, **k))
    out_dir = tmp_path / "run2d"
    argv = ["--target", "x*y + x**2", "--depth", "3", "--seeds", "2", "--points", "9",
            "--phase1", "lm:3", "--phase2", "lm:3", "--starts", "1", "--quiet"]
    code, out, _ = _train(capsys, *argv, "--json", "--out", str(out_dir))
    d = json.loads(out)
    assert code == 0 and d["inputs"] == 2 and len(d["regions"]) == len(d["plane_pieces"]) == 2
    run = load_run(out_dir)
    x0, x1, y0, y1 = (v for lo_hi in run.data.box for v in lo_hi)
    g = np.linspace(0, 1, 203)[1:-1]  # open box: no point on a cell edge of the box
    grid = torch.tensor(np.stack(np.meshgrid(x0 + g * (x1 - x0), y0 + g * (y1 - y0)), -1)
                        .reshape(-1, 2))
    for model, regions, pieces in zip(run.models, d["regions"], d["plane_pieces"], strict=True):
        exact = count_regions_2d(model, (x0, x1, y0, y1))
        assert (regions, pieces) == (exact.activation_regions, exact.linear_pieces)
        with torch.no_grad():  # distinct activation patterns seen on a grid: never more
            h, pats = grid, []
            for layer in model:
                h = layer(h)
                if isinstance(layer, torch.nn.Linear):
                    pats.append(h > 0)
        seen = len({r.tobytes() for r in torch.cat(pats[:-1], 1).numpy()})
        assert pieces <= regions and seen <= regions
    assert run.regions.tolist() == d["regions"] and run.plane_pieces.tolist() == d["plane_pieces"]
    best = run.best_index  # fit.png's map is the best seed's count
    assert [c.activation_regions for c in drawn] == [d["regions"][best]]
    assert json.loads((out_dir / "metrics.json").read_text())["regions"] == d["regions"]
    code, out, _ = _train(capsys, *argv)
    assert f"{d['regions'][0]}/{d['plane_pieces'][0]}" in out and "regions on the input box" in out
    code, out, _ = _train(capsys, "--target", "x**3", "--depth", "2", "--seeds", "1", "--phase1",
                          "lm:2", "--phase2", "lm:2", "--starts", "1", "--quiet", "--json")
    assert json.loads(out)["regions"] is None  # 1D: `pieces` is the exact count already
