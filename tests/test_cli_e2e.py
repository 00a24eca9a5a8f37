"""Every command end to end, on tiny settings, asserting the values it prints and writes against
an independent computation; and the error paths: one line, exit 2, nothing written."""

import json
import os

import numpy as np
import pytest
import torch

from relu_regions import checkpoint, targets
from relu_regions.analysis.limits import optimal_pwl
from relu_regions.analysis.regions import count_regions
from relu_regions.cli import main
from relu_regions.nets.mlp import mlp
from relu_regions.training.config import Phase
from relu_regions.training.fitting import fit


def run(capsys, *argv):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse's own usage errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, fragment):
    assert code == 2, err
    assert fragment in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


# ---------------------------------------------------------------------------------------------
# sweep

SWEEP_TOML = """
targets = ["x**2"]
depths = [2]
methods = ["kaiming", "raai"]
seeds = 2
points = 30
phase1 = "lm:2"
phase2 = "lm:3"
"""


def test_sweep_command_rows_are_the_cells_fits_and_failures_are_counted(capsys, tmp_path,
                                                                       monkeypatch):
    from relu_regions.training import fitting

    def flaky(*args, **kwargs):  # one cell crashes at run time; the sweep goes on
        config = kwargs["config"]
        if config.method == "raai" and config.seeds == [1]:
            raise RuntimeError("simulated crash")
        return fit(*args, **kwargs)

    monkeypatch.setattr(fitting, "fit", flaky)
    (tmp_path / "grid.toml").write_text(SWEEP_TOML)
    out = tmp_path / "out"
    code, stdout, _ = run(capsys, "sweep", tmp_path / "grid.toml", "--out", out, "--workers", 0,
                          "--json")
    assert code == 0
    printed = json.loads(stdout)
    assert printed["failed"] == 1
    assert "4 cells on this process" in printed["report"] and "3 ok, 0 diverged, 1 failed" in \
        printed["report"]
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [(r["method"], r["seed"], r["status"]) for r in rows] == [
        ("kaiming", 0, "ok"), ("kaiming", 1, "ok"), ("raai", 0, "ok"), ("raai", 1, "failed")]
    for r in rows[:3]:  # each row is fit() of that seed alone
        alone = fit("x**2", depth=2, seeds=[r["seed"]], method=r["method"], points=30,
                    phase1=Phase("lm", 2), phase2=Phase("lm", 3), optimum=False)
        assert r["mse"] == pytest.approx(float(alone.mse[0]), rel=1e-12)
        assert r["pieces"] == int(alone.pieces[0])
    assert rows[3]["error"] == "RuntimeError: simulated crash"
    summary = (out / "summary.csv").read_text().splitlines()
    assert len(summary) == 3  # header + kaiming + raai
    assert (out / "sweep.png").stat().st_size > 1000


@pytest.mark.parametrize("text, fragment", [
    ("targets = [\"x**2\"\n", "TOML"),
    (SWEEP_TOML + "bogus = 1\n", "unknown key 'bogus'"),
    (SWEEP_TOML.replace("depths = [2]", "depths = [0]"), "got 0"),
])
def test_sweep_command_refuses_a_malformed_config(capsys, tmp_path, text, fragment):
    (tmp_path / "grid.toml").write_text(text)
    code, _, err = run(capsys, "sweep", tmp_path / "grid.toml", "--out", tmp_path / "out")
    assert_one_line_error(code, err, fragment)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# demo

def test_demo_command_values(capsys, tmp_path):
    d, nets, seed = 3, 3, 4
    code, stdout, _ = run(capsys, "demo", "--depth", d, "--nets", nets, "--seed", seed,
                          "--no-train", "--out", tmp_path / "demo", "--json")
    assert code == 0
    out = json.loads(stdout)
    assert out["max_pieces"] == 2**d and out["fit"] is None
    # Yarotsky's f_d misses x^2 by exactly 4^-(d+1), at the midpoints of the dyadic knots (on
    # the demo's 4097-point grid).
    assert out["yarotsky_bound"] == 4.0 ** -(d + 1)
    assert out["yarotsky_square_max_error"] == pytest.approx(4.0 ** -(d + 1), rel=1e-12)
    c = out["construction"]
    assert c["linear_pieces"] == c["activation_regions"] == 2**d and c["convexity"]["is_convex"]
    assert out["construction_sampled"]["linear_pieces"] == 2**d
    # Zero biases make a Kaiming net positively homogeneous: one piece on [0, 1].
    assert out["kaiming_pieces"] == [1] * nets
    torch.manual_seed(seed)  # the demo draws PyTorch's default init from the global generator
    assert out["default_init_pieces"] == [count_regions(mlp(4, d), 0, 1).linear_pieces
                                          for _ in range(nets)]
    assert all(os.path.getsize(p) > 1000 for p in out["plots"])


def test_demo_refuses_bad_input_before_writing(capsys, tmp_path):
    for argv, fragment in ((["--nets", "0"], "--nets must be >= 1"),
                           (["--device", "nonsense"], "--device 'nonsense'")):
        code, _, err = run(capsys, "demo", "--depth", 2, "--out", tmp_path / "demo", *argv)
        assert_one_line_error(code, err, fragment)
        assert not (tmp_path / "demo").exists()


# ---------------------------------------------------------------------------------------------
# gmp

def test_gmp_command_equals_the_study(capsys, tmp_path):
    from relu_regions.gmp.studies import run_levy

    code, stdout, _ = run(capsys, "gmp", "levy", "--seeds", 1, "--epochs", 3, "--out",
                          tmp_path / "figs", "--json")
    assert code == 0
    out = json.loads(stdout)
    direct = run_levy(seeds=1, epochs=3).to_dict()
    assert out["study"] == "levy" and set(out["methods"]) == {"SP", "WN", "BN", "GmP"}
    for m, summary in direct["methods"].items():
        assert out["methods"][m]["metric_values"] == summary["metric_values"]
        assert out["methods"][m]["lr"] == summary["lr"]
    assert len(os.listdir(tmp_path / "figs")) == 3


def test_gmp_command_bad_input(capsys, tmp_path):
    for argv, fragment in ((["--seeds", "0"], "--seeds must be >= 1"),
                           (["--device", "nonsense"], "--device 'nonsense'")):
        code, _, err = run(capsys, "gmp", "levy", "--epochs", 1, "--out", tmp_path / "f", *argv)
        assert_one_line_error(code, err, fragment)
        assert not (tmp_path / "f").exists()


# ---------------------------------------------------------------------------------------------
# train + report

TRAIN = ["--depth", "2", "--seeds", "2", "--points", "40", "--method", "pretrain-thm31",
         "--starts", "1", "--phase1", "lm:3", "--phase2", "lm:4"]


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    assert main(["train", "--target", "x**2", *TRAIN, "--out", str(out), "--json"]) == 0
    return out


def test_report_command_values_are_the_runs(capsys, run_folder):
    (run_folder / "fit.png").unlink()  # report draws the plots again
    code, stdout, _ = run(capsys, "report", run_folder, "--json")
    assert code == 0
    rep = json.loads(stdout)
    metrics = json.loads((run_folder / "metrics.json").read_text())
    for key in ("method", "target", "depth", "seeds", "mse_min", "mse_mean", "mse_median",
                "pieces_mean", "optimal_mse", "optimal_pieces", "efficiency_mean",
                "data_sha256"):
        assert rep[key] == metrics[key], key
    # The command is the one given to main(), not the test runner's sys.argv.
    assert rep["command"] == ["relu-regions", "train", "--target", "x**2", *TRAIN, "--out",
                              str(run_folder), "--json"]
    assert rep["versions"]["torch"].startswith("2.13")
    # The values themselves, from the checkpoints and the saved data.
    train = targets.from_csv(run_folder / "train.csv")
    models = [checkpoint.load(run_folder / "checkpoints" / f"seed-{s:04d}.pt")[0] for s in (0, 1)]
    with torch.no_grad():
        mse = [float(((m(torch.tensor(train.x).unsqueeze(1))[:, 0].numpy() - train.y) ** 2).mean())
               for m in models]
    assert rep["mse_min"] == pytest.approx(min(mse), rel=1e-12)
    assert rep["mse_mean"] == pytest.approx(np.mean(mse), rel=1e-12)
    assert rep["pieces_mean"] == np.mean([count_regions(m, 0, 1).linear_pieces for m in models])
    assert rep["optimal_mse"] == pytest.approx(optimal_pwl(train.x, train.y, 4).mse, rel=1e-12)
    assert (run_folder / "fit.png").stat().st_size > 1000
    assert str(run_folder / "fit.png") in rep["plots"]
    code, text, _ = run(capsys, "report", run_folder)
    assert code == 0 and f"MSE  min {rep['mse_min']:.3e}" in text


def test_report_on_an_incomplete_folder(capsys, run_folder, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(run_folder, broken)
    (broken / "history.npz").unlink()
    code, _, err = run(capsys, "report", broken)
    assert_one_line_error(code, err, "not a complete run folder")


@pytest.mark.parametrize("device, fragment", [("nonsense", "--device 'nonsense'"),
                                              ("cuda:99", "--device cuda:99")])
def test_train_refuses_an_unusable_device_and_writes_nothing(capsys, tmp_path, device, fragment):
    if device == "cuda:99" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the message differs (no 99th device)")
    code, _, err = run(capsys, "train", "--target", "x**2", *TRAIN, "--device", device, "--out",
                       tmp_path / "run")
    assert_one_line_error(code, err, fragment)
    assert not (tmp_path / "run").exists()


def test_fit_device_argument():
    cpu = fit("x**2", depth=2, seeds=1, method="kaiming", points=20, device="cpu",
              phase1=Phase("lm", 1), phase2=Phase("lm", 1), optimum=False)
    default = fit("x**2", depth=2, seeds=1, method="kaiming", points=20,
                  phase1=Phase("lm", 1), phase2=Phase("lm", 1), optimum=False)
    assert cpu.mse[0] == default.mse[0]
    with pytest.raises(ValueError, match="'nonsense'"):  # InputError is a ValueError
        fit("x**2", depth=2, seeds=1, device="nonsense")


# ---------------------------------------------------------------------------------------------
# count: checkpoints and segments

def _checkpoint_variant(tmp_path, name, **changes):
    path = checkpoint.save(mlp(3, 2), tmp_path / "ok.pt")
    payload = torch.load(path, weights_only=True)
    payload.update(changes)
    torch.save(payload, tmp_path / name)
    return tmp_path / name


@pytest.mark.parametrize("changes, fragment", [
    (dict(format="relu-regions/0"), "format relu-regions/1 expected"),
    (dict(config="{not json"), "malformed config"),
    (dict(config=json.dumps({"note": "no model"})), "malformed config"),
    (dict(config=json.dumps({"model": {"kind": "resnet"}})), "unknown model kind 'resnet'"),
    (dict(config=json.dumps({"model": {"kind": "mlp", "widths": [1, "a", 1]}})),
     "malformed model config"),
    (dict(config=json.dumps({"model": {"kind": "mlp", "widths": [1, 5, 1]}})), "malformed config"),
    (dict(state_dict=None), "malformed config or weights"),
])
def test_count_refuses_a_bad_checkpoint(capsys, tmp_path, changes, fragment):
    path = _checkpoint_variant(tmp_path, "bad.pt", **changes)
    code, _, err = run(capsys, "count", "--checkpoint", path)
    assert_one_line_error(code, err, fragment)


def test_count_refuses_an_empty_segment_and_too_few_samples(capsys, tmp_path):
    path = checkpoint.save(mlp(3, 2, in_features=2), tmp_path / "m2.pt")
    code, _, err = run(capsys, "count", "--checkpoint", path, "--from", "0.5,1", "--to", "0.5,1")
    assert_one_line_error(code, err, "x0 equals x1")
    code, _, err = run(capsys, "count", "--depth", 3, "--sample", 2)
    assert_one_line_error(code, err, ">= 3, got 2")


# ---------------------------------------------------------------------------------------------
# Atomic writes under a crash

class Crash(Exception):
    pass


def test_a_crash_mid_write_leaves_the_old_checkpoint_and_no_debris(tmp_path, monkeypatch):
    old = mlp(3, 2)
    path = checkpoint.save(old, tmp_path / "m.pt")
    before = path.read_bytes()

    def half_then_crash(obj, f, *a, **k):
        f.write(b"\x80\x04 half a checkpoint")
        raise Crash

    monkeypatch.setattr(torch, "save", half_then_crash)
    with pytest.raises(Crash):
        checkpoint.save(mlp(3, 2), path)
    monkeypatch.undo()
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["m.pt"]
    loaded, _ = checkpoint.load(path)
    x = torch.linspace(0, 1, 7, dtype=torch.float64).unsqueeze(1)
    with torch.no_grad():
        assert torch.equal(loaded(x), old(x))


