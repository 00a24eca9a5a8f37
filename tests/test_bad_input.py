"""Bad input through the CLI, table-driven: exit code 2, one line, no traceback, nothing written."""

import pytest
import torch

from relu_regions.cli import main

T = ["train", "--depth", "2", "--seeds", "1", "--phase1", "lm:2", "--phase2", "lm:2"]

CASES = [
    # target expressions
    (T + ["--target", "__import__('os').system('touch PWNED')"], "target"),
    (T + ["--target", "x.__class__"], "target"),
    (T + ["--target", "x.real"], "target"),
    (T + ["--target", "z + 1"], "target"),
    (T + ["--target", "eval('x')"], "target"),
    (T + ["--target", "open('f')"], "target"),
    (T + ["--target", "lambda x: x"], "target"),
    (T + ["--target", "[x for x in x]"], "target"),
    (T + ["--target", "x[0]"], "target"),
    (T + ["--target", "'x'"], "target"),
    (T + ["--target", "sin(x, x)"], "target"),
    (T + ["--target", "sin(x=1)"], "target"),
    (T + ["--target", "x**10**10"], "target"),
    (T + ["--target", "x" + "+x" * 400], "target"),
    (T + ["--target", ""], "target"),
    (T + ["--target", "x +"], "target"),
    (T + ["--target", "log(x)", "--interval=-1,1"], "not finite"),
    # numeric options
    (T + ["--target", "x**3", "--interval", "1,0"], "LO < HI"),
    (T + ["--target", "x**3", "--interval", "1,1"], "LO < HI"),
    (T + ["--target", "x**3", "--interval", "0,inf"], "finite"),
    (T + ["--target", "x**3", "--interval", "a,b"], "comma-separated"),
    (T + ["--target", "x**3", "--depth", "0"], "depth"),
    (T + ["--target", "x**3", "--seeds", "0"], "seeds"),
    (T + ["--target", "x**3", "--seeds", "two"], "invalid int"),
    (T + ["--target", "x**3", "--points", "1"], "points"),
    (T + ["--target", "x**3", "--sparse", "1"], "sparse must be an integer >= 2"),
    (T + ["--target", "x**3", "--phase1", "sgd:10"], "OPTIMIZER"),
    (T + ["--target", "x**3", "--phase2", "lm:10:-1"], "OPTIMIZER"),
    (T + ["--target", "x**3", "--phase2", "lm:nan"], "OPTIMIZER"),
    (T + ["--target", "x**3", "--starts", "0"], "starts"),
    (T + ["--target", "x**3", "--grow-from", "9"], "--grow-from must be"),
    (T + ["--target", "x**3", "--sparse", "5", "--test-fraction", "0.2"], "drop --test-fraction"),
    (T + ["--target", "x**3", "--checkpoint-every", "5"], "--out"),
    (T + ["--target", "x**3", "--method", "adam"], "invalid choice"),
    (T + [], "exactly one of"),
    # data files
    (T + ["--data", "missing.csv"], "missing.csv"),
    (T + ["--data", "{nan}"], "nan"),
    (T + ["--data", "{text}"], "not 2 numbers"),
    (T + ["--data", "{empty}"], "empty"),
    (T + ["--data", "{cols}"], "column"),
    (T + ["--data", "{dup}"], "duplicate"),
    (T + ["--data", "{mixed}"], "like the first row"),
    # shapes
    (T + ["--target", "x**3", "--shape", "radial"], "2D inputs"),
    (T + ["--target", "x**2 + y**2", "--shape", "dc"], "1D inputs"),
    (T + ["--target", "x**3 - x", "--interval=-1,1", "--shape", "dc", "--grow-from", "1"],
     "this fit's shape is 'dc'"),
    (T + ["--target", "sin(6*x)", "--depth", "3", "--grow-from", "2"],
     "shape is 'dc' (chosen by shape='auto'"),
    (T + ["--target", "x**3", "--shape", "wavy"], "invalid choice"),
    # count
    (["count", "--depth", "3", "--a", "1.5"], "outside (0, 1)"),
    (["count", "--depth", "3", "--a", "0.5,x"], "comma-separated"),
    (["count", "--depth", "99"], "between 1 and"),
    (["count", "--checkpoint", "{text}"], "checkpoint"),
    (["count", "--checkpoint", "missing.pt"], "not found"),
    # other commands
    (["report", "."], "not a complete run folder"),
    (["report", "no-such-run"], "no run folder at no-such-run"),
    (["train", "--resume", "."], "no training state"),
    (["sweep", "missing.toml", "--out", "sweep-out"], "missing.toml"),
    # a misspelt required option is the typo, not a missing option
    (["track", "--checkpoints", "none/*.pt", "--data", "x.csv", "--lenght", "0.5"],
     "unrecognized arguments: --lenght 0.5 (did you mean --length?)"),
    (["track", "--checkpoints", "none/*.pt", "--data", "x.csv", "--length", "0.5"],
     "matches no files"),
    (["track", "--checkpoints", "none/*.pt", "--data", "x.csv", "--length", "0"],
     "--length must be a finite number > 0"),
    (["gmp", "banana", "--seeds", "0"], "--seeds"),
    (["demo", "--depth", "25"], "between 1 and 20"),
    # issue 15: expressions answer how to fix them
    (T + ["--target", "x^3"], "use ** for powers: x**3"),
    (T + ["--target", "3x"], "write 3*x"),
    (T + ["--target", "sin x"], "write sin(x)"),
    (T + ["--target", "max(x, 1)"], "did you mean maximum"),
    (T + ["--target", "ln(x)"], "did you mean log"),
    (T + ["--target", "x(x+1)"], "write x*(x+1)"),
    (T + ["--target", "sin(x)cos(x)"], "write sin(x)*cos(x)"),
    (T + ["--target", "y = x**2"], "right-hand side"),
    (T + ["--target", "|x|"], "abs("),
    (T + ["--target", "log(x)", "--interval", "-1,1"], "not finite"),  # the value joins
    # issue 15: negative numbers and constants in options
    (["count", "--depth", "3", "--interval", "-x,1"], "'-x' is not a number"),
    (["count", "--depth", "3", "--interval", "-pi,-pi"], "LO < HI"),
    (["count", "--depth", "3", "--interval", "0,1/0"], "finite"),
    (["count", "--depth", "3", "--interval", "-1"], "LO,HI"),
    (["count", "--depth", "3", "--interval", "--json"], "expected one argument"),
    (["count", "--depth", "3", "--from", "0", "--to", "1", "--interval=-1,1"], "segment"),
    (["count", "--depth", "3", "--sample", "2"], "samples"),
    (["count", "--depth", "3", "--sample", "0"], "samples"),  # not silently ignored
    (["count", "--depth", "3", "--from", "0,1", "--to", "1"], "--from must be 1 finite"),
    # issue 15: devices this torch build does not have
    *([(["gmp", "levy", "--device", "cuda"], "has no CUDA support; run on the CPU with "
        "--device cpu")] if not torch.backends.cuda.is_built() else []),
    *([(["demo", "--device", "mps", "--out", "d"], "--device cpu")]
      if not torch.backends.mps.is_available() else []),
    (["gmp", "levy", "--device", "gpu"], "not a torch device name"),
    *([(T + ["--target", "x**3", "--device", "cuda"], "has no CUDA support; run on the CPU "
        "with --device cpu")] if not torch.backends.cuda.is_built() else []),
    (T + ["--target", "x**3", "--device", "cuda:x"], "not a torch device name"),
    (["demo", "--device", "meta", "--out", "d"], "not supported"),
    (["demo", "--nets", "0", "--out", "d"], "--nets"),
    (["gmp", "levy", "--epochs", "0"], "--epochs"),
    # found trying it as a new user
    (["count", "--depth", "3", "--seed", "-1"], "--seed must be an integer >= 0"),
    (["demo", "--seed", "-1", "--out", "d"], "--seed must be an integer >= 0"),
    (["count", "--depth", "3", "--plot", "c.txt"], "not an image format"),
    (["count", "--depth", "3", "--pieces", "."], "is a folder"),
    (["count", "--Depth", "3"], "did you mean --depth"),
    (["count", "--depth", "3", "--jsn"], "did you mean --json"),
    (["count", "--depth", "3", "--from", "0,0", "--to", "1,1"], "1 finite number"),
    (["demo", "--no-train", "--nets", "1", "--depth", "2", "--out", "{text}/d"], "not a directory"),
]

FILES = {"nan": "x,y\n0,1\n0.5,nan\n1,2\n", "text": "x,y\n0,a\n1,b\n", "empty": "",
         "cols": "x,y,z,w\n0,1,2,3\n1,2,3,4\n", "dup": "x,y\n0,1\n0,2\n1,3\n",
         "mixed": "0,0,1\n1,2\n"}


@pytest.mark.parametrize("argv, fragment", CASES)
def test_bad_input(argv, fragment, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name, text in FILES.items():
        (tmp_path / f"{name}.csv").write_text(text)
    argv = [a.format(**{k: f"{k}.csv" for k in FILES}) if a.startswith("{") else a for a in argv]
    before = set(p.name for p in tmp_path.iterdir())
    try:
        with_out = argv[0] == "train" and not {"--resume", "--checkpoint-every"} & set(argv)
        code = main(argv + ["--out", "out"] if with_out else argv)
    except SystemExit as e:
        code = e.code
    _, err = capsys.readouterr()
    assert code == 2
    assert fragment.lower() in err.lower(), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert set(p.name for p in tmp_path.iterdir()) == before  # nothing created, nothing run


def test_there_are_at_least_40_cases():
    assert len(CASES) >= 40
