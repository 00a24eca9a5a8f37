"""The relu-regions command: outputs, JSON, checkpoints, and bad input (exit 2, one line)."""

import json
import math
import os
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from relu_regions import checkpoint
from relu_regions.analysis.regions import count_regions_segment
from relu_regions.cli import main
from relu_regions.nets.mlp import mlp
from relu_regions.nets.parametrize import ConstructionNet


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_count_construction_json(capsys):
    code, out, _ = run(capsys, "count", "--depth", "9", "--thm31", "--json")
    data = json.loads(out)
    assert code == 0
    assert data["linear_pieces"] == data["activation_regions"] == 512
    assert data["breakpoints"] == 511
    assert {"min_piece_width", "seconds"} <= data.keys() and data["convexity"]["is_convex"]


def test_count_with_given_peaks_and_plot(capsys, tmp_path):
    code, out, _ = run(capsys, "count", "--depth", "4", "--a", "0.3,0.6,0.4,0.5",
                       "--plot", str(tmp_path / "p.png"), "--sample", "20001")
    assert code == 0 and "linear pieces      16" in out
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_count_checkpoint_round_trip(capsys, tmp_path):
    net = ConstructionNet.build(6, peaks=0.35, interval=(-1, 2))
    path = checkpoint.save(net, tmp_path / "c.pt", {"note": "test"})
    model, config = checkpoint.load(path)
    x = torch.linspace(-1, 2, 101, dtype=torch.float64).unsqueeze(1)
    with torch.no_grad():
        assert torch.equal(model(x), net(x))
    assert config["note"] == "test"
    code, out, _ = run(capsys, "count", "--checkpoint", str(path), "--json")
    assert code == 0 and json.loads(out)["linear_pieces"] == 64
    plain = checkpoint.save(net.release(), tmp_path / "plain.pt")
    code, out, _ = run(capsys, "count", "--checkpoint", str(plain), "--interval=-1,2", "--json")
    assert json.loads(out)["linear_pieces"] == 64


def test_count_2d_checkpoint_along_a_segment(capsys, tmp_path):
    path = checkpoint.save(mlp(5, 3, in_features=3), tmp_path / "m3.pt")
    code, _, err = run(capsys, "count", "--checkpoint", str(path))
    assert code == 2 and "segment" in err and "--through" in err
    path = checkpoint.save(mlp(5, 3, in_features=2), tmp_path / "m.pt")
    code, out, _ = run(capsys, "count", "--checkpoint", str(path), "--from=-1,-1", "--to", "1,1",
                       "--json")
    model, _ = checkpoint.load(path)
    expected = count_regions_segment(model, [-1, -1], [1, 1])
    assert code == 0 and json.loads(out)["linear_pieces"] == expected.linear_pieces
    assert json.loads(out)["activation_regions"] == expected.activation_regions


def test_count_a_plane_in_tiles(capsys, tmp_path):
    torch.manual_seed(0)
    path = checkpoint.save(mlp(8, 3, in_features=2), tmp_path / "m.pt")
    code, out, _ = run(capsys, "count", "--checkpoint", str(path), "--box=-1,1,-1,1", "--json")
    whole = json.loads(out)
    code, out, _ = run(capsys, "count", "--checkpoint", str(path), "--box=-1,1,-1,1", "--tiles",
                       "3", "2", "--max-memory", "1GB", "--json")
    tiled = json.loads(out)
    assert code == 0 and tiled["tiles"] == [3, 2] and tiled["tile_pieces"] > 0
    for key in ("activation_regions", "linear_pieces", "vertices", "edges", "resolved"):
        assert tiled[key] == whole[key], key
    code, out, _ = run(capsys, "count", "--checkpoint", str(path), "--tiles", "2", "2")
    assert code == 0 and "2 x 2" in out
    for argv, fragment in (
            (["--max-memory", "lots"], "--max-memory must be"),
            (["--max-memory", "10kB"], "too small for one tile"),
            (["--workers", "0"], "--workers must be"),
            (["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "give one of them"),
            (["--tiles", "0", "2"], "tiles nx"),
            (["--from=-1,-1", "--to", "1,1", "--workers", "2"], "not tiled")):
        code, _, err = run(capsys, "count", "--checkpoint", str(path), *argv)
        assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1, argv
    code, _, err = run(capsys, "count", "--depth", "3", "--tiles", "2", "2")
    assert code == 2 and "not tiled" in err


def test_malicious_checkpoint_is_refused_without_running(tmp_path, capsys):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"format": "relu-regions/1", "x": Payload()}, f)
    code, _, err = run(capsys, "count", "--checkpoint", str(path))
    assert code == 2 and "not a readable relu-regions checkpoint" in err
    assert not marker.exists()


@pytest.mark.parametrize("argv, fragment", [
    (["count", "--depth", "3", "--a", "1.5"], "outside (0, 1)"),
    (["count", "--depth", "3", "--a", "0"], "outside (0, 1)"),
    (["count", "--depth", "0"], "between 1 and"),
    (["count", "--depth", "-2"], "between 1 and"),
    (["count", "--depth", "40"], "between 1 and"),
    (["count", "--depth", "3", "--a", "0.5,,0.3"], "comma-separated"),
    (["count", "--depth", "3", "--a", "nan"], "finite"),
    (["count", "--depth", "3", "--a", "0.5,0.4"], "1 or 3 values"),
    (["count", "--depth", "x"], "invalid int"),
    (["count"], "--depth D"),
    (["count", "--checkpoint", "/nonexistent/model.pt"], "not found"),
    (["count", "--depth", "3", "--interval", "1,0"], "LO < HI"),
    (["demo", "--depth", "0"], "between 1 and 20"),
    (["nosuch"], "invalid choice"),
])
def test_bad_input_is_one_line_and_exit_2(argv, fragment, capsys):
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own usage errors
        code = e.code
    _, err = capsys.readouterr()
    assert code == 2
    assert fragment in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_corrupt_checkpoint_via_subprocess(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x80\x04not really a checkpoint")
    r = subprocess.run([sys.executable, "-m", "relu_regions.cli", "count", "--checkpoint",
                        str(bad)], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def test_help_on_every_command(capsys):
    for argv in (["--help"], ["count", "--help"], ["demo", "--help"], ["train", "--help"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 0 and "usage: relu-regions" in capsys.readouterr().out
    # The installed entry point itself, once.
    r = subprocess.run([sys.executable, "-m", "relu_regions.cli", "--help"], capture_output=True,
                       text=True)
    assert r.returncode == 0 and "count" in r.stdout and "train" in r.stdout


def test_help_imports_neither_torch_nor_any_command():
    """--help stays fast: the parser is torch-free and a command's module loads only to run."""
    code = ("import sys; from relu_regions.cli import main\n"
            "for argv in (['--help'], ['count', '--help'], ['train', '--help']):\n"
            "    try: main(argv)\n"
            "    except SystemExit: pass\n"
            "print(sorted(m for m in sys.modules\n"
            "             if m == 'torch' or m.startswith('relu_regions.cli.')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = r.stdout.strip().splitlines()[-1]
    assert loaded == "['relu_regions.cli.common', 'relu_regions.cli.parser']"


QUICK_TRAIN = ["--depth", "3", "--seeds", "2", "--phase1", "lm:5", "--phase2", "lm:10"]


def test_train_writes_checkpoints_metrics_and_plots(capsys, tmp_path):
    out = tmp_path / "run"
    code, stdout, _ = run(capsys, "train", "--target", "x**3", *QUICK_TRAIN, "--out", str(out),
                          "--json")
    data = json.loads(stdout)
    assert code == 0
    assert {"mse_min", "mse_mean", "mse_median", "efficiency_mean", "seconds"} <= data.keys()
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["mse"]) == 2 and metrics["seed_list"] == [0, 1]
    assert metrics["mse_min"] == min(metrics["mse"]) and metrics["mse_mean"] == pytest.approx(
        sum(metrics["mse"]) / 2, rel=1e-15)
    assert data["mse_min"] == metrics["mse_min"]
    assert metrics["versions"]["torch"].startswith("2.13") and len(metrics["data_sha256"]) == 64
    assert (out / "fit.png").stat().st_size > 1000 and (out / "history.png").stat().st_size > 1000
    model, config = checkpoint.load(out / "checkpoints" / "seed-0001.pt")
    assert config["seed"] == 1 and config["method"] == "pretrain-thm31"
    # The checkpoint reproduces the reported MSE.
    x = torch.linspace(0, 1, 500, dtype=torch.float64).unsqueeze(1)
    with torch.no_grad():
        mse = float(((model(x) - x**3) ** 2).mean())
    assert mse == pytest.approx(metrics["mse"][1], rel=1e-9)
    # A second run into the same folder is refused unless --force.
    code, _, err = run(capsys, "train", "--target", "x**3", *QUICK_TRAIN, "--out", str(out))
    assert code == 2 and "--force" in err


def test_train_from_csv_on_a_negative_interval(capsys, tmp_path):
    xs = [i / 10 for i in range(-10, 11)]
    (tmp_path / "d.csv").write_text("x,y\n" + "".join(f"{x},{x**3 - x}\n" for x in xs))
    code, stdout, _ = run(capsys, "train", "--data", str(tmp_path / "d.csv"), *QUICK_TRAIN,
                          "--method", "kaiming", "--json")
    assert code == 0 and json.loads(stdout)["seeds"] == 2


@pytest.mark.parametrize("argv, fragment", [
    (["--target", "__import__('os').system('touch PWNED')"], "target"),
    (["--target", "x.real"], "target"),
    (["--target", "z**2"], "target"),
    (["--target", "lambda: 1"], "target"),
    (["--target", "open('f')"], "target"),
    (["--target", "[x for x in x]"], "target"),
    (["--target", "x**3", "--interval", "1,0"], "LO < HI"),
    (["--target", "x**3", "--interval", "1,1"], "LO < HI"),
    (["--target", "x**3", "--depth", "0"], "depth"),
    (["--target", "x**3", "--seeds", "0"], "seeds"),
    (["--target", "x**3", "--method", "sgd"], "invalid choice"),
    (["--target", "x**3", "--phase2", "lm:-3"], "OPTIMIZER:STEPS"),
    (["--target", "log(x)", "--interval=-1,1"], "not finite"),
    ([], "exactly one of"),
    # settings that would change nothing are refused, not ignored
    (["--target", "x**3", "--method", "kaiming", "--starts", "3"], "starts=3 applies to the two"),
    (["--target", "x**3", "--method", "raai", "--depth", "3", "--grow-from", "2"],
     "--grow-from=2 applies to the two"),
])
def test_train_bad_input_runs_nothing_and_writes_nothing(argv, fragment, capsys, tmp_path,
                                                         monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    try:
        code = main(["train", *argv, "--out", str(out)])
    except SystemExit as e:
        code = e.code
    _, err = capsys.readouterr()
    assert code == 2 and fragment in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists() and not (tmp_path / "PWNED").exists()


def test_train_bad_csv(capsys, tmp_path):
    (tmp_path / "nan.csv").write_text("x,y\n0,1\n0.5,nan\n1,2\n")
    code, _, err = run(capsys, "train", "--data", str(tmp_path / "nan.csv"), *QUICK_TRAIN)
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_kill_minus_9_then_resume_equals_an_uninterrupted_run(tmp_path):
    """A real process is killed with SIGKILL mid-run; --resume finishes with identical metrics."""
    import signal
    import time

    args = ["train", "--target", "x**3", "--depth", "4", "--seeds", "3", "--phase1", "lm:40",
            "--phase2", "lm:300", "--json"]
    cmd = [sys.executable, "-m", "relu_regions.cli"]
    whole = tmp_path / "whole"
    assert subprocess.run(cmd + args + ["--out", str(whole)], capture_output=True).returncode == 0
    cut = tmp_path / "cut"
    proc = subprocess.Popen(cmd + args + ["--out", str(cut), "--checkpoint-every", "10"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (cut / "state.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    if proc.poll() is not None:
        pytest.skip("the run finished before it could be killed (machine too fast)")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (cut / "metrics.json").exists()
    r = subprocess.run(cmd + ["train", "--resume", str(cut), "--json"], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    a = json.loads((whole / "metrics.json").read_text())
    b = json.loads((cut / "metrics.json").read_text())
    assert a["mse"] == b["mse"] and a["train_mse"] == b["train_mse"] and a["pieces"] == b["pieces"]
    assert not (cut / "state.pt").exists()


def test_resume_of_a_folder_without_state(capsys, tmp_path):
    code, _, err = run(capsys, "train", "--resume", str(tmp_path))
    assert code == 2 and "no training state" in err


def test_train_summary_states_the_constructions_piece_count():
    """max_pieces comes from the layout (2^d for one construction, 2 (2^d - 1) + 1 for dc)."""
    from relu_regions.cli.train import show as show_train
    from relu_regions.training.config import Phase
    from relu_regions.training.fitting import fit

    quick = dict(seeds=1, starts=1, optimum=False, phase1=Phase("lm", 3), phase2=Phase("lm", 3))
    convex = fit("x**3", depth=3, **quick).summary()
    dc = fit("x**3 - x", interval=(-1, 1), depth=2, shape="dc", **quick).summary()
    assert (convex["max_pieces"], dc["max_pieces"]) == (8, 7)
    assert "the construction has 8;" in show_train(convex)
    assert "two constructions: up to 7" in show_train(dc)
    old = {k: v for k, v in convex.items() if k != "max_pieces"}  # metrics from before the field
    assert "construction has" not in show_train(old)


def test_train_summary_says_how_the_fit_trained():
    """Points, starts and growth that fit chose are printed (and in --json as "training")."""
    from relu_regions.cli.train import show as show_train
    from relu_regions.training.config import Phase
    from relu_regions.training.fitting import fit

    quick = dict(seeds=1, optimum=False, count=False, phase1=Phase("lm", 2),
                 phase2=Phase("lm", 8))
    grown = fit("x**3", depth=4, grow_from=1, starts=2, points=300, **quick).summary()
    assert grown["training"] == {"points": 300, "starts": 2, "grow_from": 1, "warp": True,
                                 "polish": 8}
    assert ("300 training points; 2 starts per seed; grown from depth 1 (a warp layer, then 2 "
            "folds; the best paths polished for 8 steps)") in show_train(grown)
    folds = fit("x**3", depth=3, grow_from=2, starts=1, warp=False, **quick).summary()
    assert ("1 start per seed; grown from depth 2 (1 fold; the best paths polished"
            in show_train(folds))
    base = fit("x**3", depth=3, method="kaiming", **quick).summary()
    assert base["training"] == {"points": 500}
    text = show_train(base)
    assert "500 training points\n" in text and "a depth-3 construction has 8" in text


def test_a_small_efficiency_is_printed_with_its_digits():
    # depth 10: optimum ~6e-15 against ~5e-10 achieved; "0.000" said nothing
    from relu_regions.cli.train import show as show_train
    from relu_regions.training.config import Phase
    from relu_regions.training.fitting import fit

    out = fit("x**3", depth=3, seeds=1, starts=1, phase1=Phase("lm", 3),
              phase2=Phase("lm", 3)).summary()
    for eff, shown in ((1.234e-5, "mean) 1.23e-05"), (0.4717, "mean) 0.472")):
        assert shown in show_train(dict(out, efficiency_mean=eff))


# --------------------------------------------------------------------------------------------
# Issue 15: what a new user hits

def one_piece_net():
    """Kaiming-like: every unit on over [0, 1], so the output is one affine piece."""
    net = torch.nn.Sequential(torch.nn.Linear(1, 4), torch.nn.ReLU(), torch.nn.Linear(4, 4),
                              torch.nn.ReLU(), torch.nn.Linear(4, 1)).double()
    with torch.no_grad():
        for m in net:
            if isinstance(m, torch.nn.Linear):
                m.weight.fill_(0.5)
                m.bias.fill_(1.0)
    return net


def test_one_piece_model_counts_and_plots(capsys, tmp_path):
    path = checkpoint.save(one_piece_net(), tmp_path / "one.pt")
    code, out, err = run(capsys, "count", "--checkpoint", str(path), "--plot",
                         str(tmp_path / "k.png"), "--json")
    assert code == 0, err
    assert json.loads(out)["linear_pieces"] == 1
    assert (tmp_path / "k.png").stat().st_size > 1000


def test_demo_without_training_runs(capsys, tmp_path):
    code, out, err = run(capsys, "demo", "--nets", "2", "--no-train", "--out", str(tmp_path / "d"))
    assert code == 0, err
    assert (tmp_path / "d" / "construction.png").exists()


def test_negative_values_and_constants_in_options(capsys, tmp_path):
    spelled = []
    for interval in (["--interval", "-1,1"], ["--interval=-1,1"], ["--interval", "-1.0,1"]):
        code, out, err = run(capsys, "count", "--depth", "4", "--a", "0.4", *interval, "--json")
        assert code == 0, err
        data = json.loads(out)
        spelled.append({k: data[k] for k in ("lo", "hi", "linear_pieces", "min_piece_width")})
    assert spelled[0] == spelled[1] == spelled[2] and spelled[0]["lo"] == -1.0
    code, out, _ = run(capsys, "count", "--depth", "3", "--interval=-pi,pi/2", "--json")
    assert json.loads(out)["lo"] == -math.pi and json.loads(out)["hi"] == math.pi / 2
    code, out, _ = run(capsys, "count", "--depth", "3", "--interval", "-2*e,-pi", "--json")
    assert (json.loads(out)["lo"], json.loads(out)["hi"]) == (-2 * math.e, -math.pi)
    path = checkpoint.save(mlp(5, 3, in_features=2), tmp_path / "m.pt")
    code, out, err = run(capsys, "count", "--checkpoint", str(path), "--from", "-1,-1", "--to",
                         "1,1")
    assert code == 0, err
    assert "segment            (-1, -1) to (1, 1)" in out  # the end points, not "interval [0, 1]"


def test_every_option_that_takes_a_value_accepts_a_leading_minus():
    from relu_regions.cli.parser import build_parser

    args = build_parser().parse_args(["train", "--target", "-x**2", "--int", "-pi,0",
                                      "--seed", "3"])
    assert args.target == "-x**2" and args.interval == (-math.pi, 0.0)
    args = build_parser().parse_args(["count", "--depth", "2", "--from", "-.5", "--to", "-sqrt(2)"])
    assert args.segment_from == [-0.5] and args.segment_to == [-math.sqrt(2)]


def test_count_pieces_csv_and_json(capsys, tmp_path):
    from relu_regions.analysis.pieces import PIECE_COLUMNS

    csv_path = tmp_path / "p.csv"
    code, out, err = run(capsys, "count", "--depth", "3", "--a", "0.5", "--interval", "-1,1",
                         "--pieces", str(csv_path), "--json")
    assert code == 0, err
    data = json.loads(out)
    rows = np.loadtxt(csv_path, delimiter=",", skiprows=1)
    assert csv_path.read_text().splitlines()[0] == ",".join(PIECE_COLUMNS)
    assert rows.shape == (8, 5) and len(data["pieces"]) == 8
    assert rows.tolist() == [[p[c] for c in PIECE_COLUMNS] for p in data["pieces"]]  # 17 digits
    assert rows[0, 0] == -1 and rows[-1, 1] == 1 and np.array_equal(rows[1:, 0], rows[:-1, 1])
    net = ConstructionNet.build(3, peaks=0.5, interval=(-1, 1))
    with torch.no_grad():
        y = net(torch.tensor(rows[:, 0:1])).numpy()[:, 0]
    assert np.allclose(rows[:, 3], y, rtol=0, atol=1e-12)
    code, out, _ = run(capsys, "count", "--depth", "3", "--a", "0.5", "--pieces",
                       str(tmp_path / "q.csv"))
    assert "8 rows: start,end,slope,value_start,value_end" in out


def test_every_command_help_has_an_example_and_the_expression_language(capsys):
    from relu_regions.cli.parser import build_parser
    from relu_regions.targets import CONSTANTS, FUNCTIONS

    commands = build_parser()._subparsers._group_actions[0].choices
    assert {"count", "train", "sweep", "gmp", "report", "demo"} <= set(commands)
    for name in [None, *commands]:
        with pytest.raises(SystemExit):
            main(["--help"] if name is None else [name, "--help"])
        out = capsys.readouterr().out
        assert "example" in out and f"relu-regions {name or ''}".strip() + " " in out, name
        if name in (None, "count", "train"):
            assert all(f in out for f in [*FUNCTIONS, *CONSTANTS]), name
        if name == "sweep":
            assert "TOML keys" in out


def test_gmp_prints_a_table_and_json_only_with_json(capsys, monkeypatch):
    from relu_regions.gmp import studies

    seen = {}
    real = studies.run_levy

    def quick(**kw):
        seen.update(kw)
        return real(**{**kw, "epochs": 2})

    monkeypatch.setattr(studies, "run_levy", quick)
    code, out, err = run(capsys, "gmp", "levy", "--seeds", "1")
    assert code == 0, err
    assert out.startswith("GmP study levy: 1 seed,") and "test rmse mean ± std" in out
    for method in ("SP", "WN", "BN", "GmP"):
        assert any(line.startswith(method + " ") for line in out.splitlines())
    with pytest.raises(json.JSONDecodeError):
        json.loads(out)
    code, out, _ = run(capsys, "gmp", "levy", "--seeds", "1", "--json")
    assert json.loads(out)["study"] == "levy"


def test_through_points_are_comma_lists_or_csv_rows(tmp_path):
    from relu_regions import InputError
    from relu_regions.cli.count import parse_points

    csv_path = tmp_path / "pts.csv"
    csv_path.write_text("x,y,z,label\n# a comment\n1,2,3,a\n\n4,5,6,b\n7,oops,9,c\n")
    # rows count from the first data row: the header, '#' lines and blank lines do not count
    assert parse_points(["1", "0", "-1.5,0,2e-3"], 3, csv_path) == [[4, 5, 6], [1, 2, 3],
                                                                    [-1.5, 0, 0.002]]
    for specs, path, fragment in ((["0"], None, "is a row number: give the CSV file with --data"),
                                  (["3"], csv_path, "row 3 is not in the CSV file (3 data rows"),
                                  (["2"], csv_path, "CSV row 2 does not start with 3 numbers"),
                                  (["1,2"], None, "'1,2' must be 3 comma-separated numbers"),
                                  (["1,inf,2"], None, "'1,inf,2' must be 3 comma-separated")):
        with pytest.raises(InputError, match=re.escape(fragment)):
            parse_points(specs, 3, path)


@pytest.mark.parametrize("cached", [False, True])
def test_count_says_on_stderr_when_it_compiles_the_counter(capsys, monkeypatch, cached):
    from relu_regions.analysis import jit

    monkeypatch.setattr(jit, "is_cached", lambda module: cached)
    code, out, err = run(capsys, "count", "--depth", "3", "--json")
    assert code == 0 and json.loads(out)["linear_pieces"] == 8
    assert ("compiling the exact counter (regions) once" in err) is not cached


def test_count_through_points_of_a_saved_ten_class_conv_net(capsys, tmp_path):
    """A conv / BatchNorm / average-pooling classifier with 10 outputs, saved (lowered) and
    counted on the plane through three CSV rows: the CLI's JSON equals a direct count of the
    original model, decision boundary included."""
    from relu_regions.analysis.plane import count_regions_plane

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Unflatten(1, (1, 4, 4)), torch.nn.Conv2d(1, 3, 3, padding=1),
        torch.nn.BatchNorm2d(3), torch.nn.ReLU(), torch.nn.AvgPool2d(2), torch.nn.Flatten(),
        torch.nn.Linear(12, 10)).double()
    with torch.no_grad():  # running statistics that are not the identity
        model[2].running_mean.uniform_(-0.2, 0.2)
        model[2].running_var.uniform_(0.5, 2.0)
    model.eval()
    model.input_shape = (16,)
    x = 3 * torch.randn(200, 16, dtype=torch.float64)
    with torch.no_grad():
        winners = model(x).argmax(1).tolist()
    rows = [winners.index(c) for c in dict.fromkeys(winners)][:3]  # three different classes
    assert len(rows) == 3
    data = tmp_path / "points.csv"
    data.write_text("\n".join(",".join(map(repr, p)) + f",{w}"
                              for p, w in zip(x.tolist(), winners, strict=True)) + "\n")
    path = checkpoint.save(model, tmp_path / "cnn.pt")
    assert checkpoint.load(path)[1]["model"]["kind"] == "lowered"
    code, out, err = run(capsys, "count", "--checkpoint", str(path), "--data", str(data),
                         "--through", *map(str, rows), "--plot", str(tmp_path / "map.png"),
                         "--json")
    assert code == 0, err
    got = json.loads(out)
    want = count_regions_plane(model, *x[rows].numpy())
    assert got["outputs"] == 10
    assert got["activation_regions"] == want.activation_regions > 1
    assert got["linear_pieces"] == want.linear_pieces
    assert want.decision_length > 0
    assert got["decision_length"] == pytest.approx(want.decision_length, rel=1e-12)
    assert (tmp_path / "map.png").read_bytes()[:4] == b"\x89PNG"


def test_count_a_classifier_along_a_segment_reports_its_decision_points(capsys, tmp_path):
    torch.manual_seed(0)  # a net whose argmax changes twice along this segment
    clf = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    checkpoint.save(clf.double(), tmp_path / "clf.pt")
    argv = ["count", "--checkpoint", str(tmp_path / "clf.pt"), "--from=-3,-3", "--to", "3,3"]
    code, out, _ = run(capsys, *argv, "--json")
    direct = count_regions_segment(clf.double(), [-3, -3], [3, 3])
    d = json.loads(out)
    assert code == 0 and d["outputs"] == 3 and "convexity" not in d
    assert d["decision_points"] == direct.decision_points.size > 0
    code, out, _ = run(capsys, *argv)
    assert code == 0 and re.search(r"decision boundary  \d+ points? \(argmax of 3 outputs\)", out)
