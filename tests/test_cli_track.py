"""``relu-regions track`` end to end on checkpoints saved here: files, steps, the same numbers
on two processes, and bad input (one error line, exit 2, nothing written)."""

import csv
import json

import numpy as np
import pytest
import torch
from torch import nn

from relu_regions import checkpoint
from relu_regions.analysis.regions import count_regions_segment
from relu_regions.analysis.tracking import RegionTracker
from relu_regions.cli import main


def mlp(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 10), nn.ReLU(), nn.Linear(10, 10), nn.ReLU(),
                         nn.Linear(10, 1))


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ckpts").mkdir()
    for step in (0, 3, 20):  # file names sort 0, 20, 3: the steps must not
        checkpoint.save(mlp(step), tmp_path / "ckpts" / f"step-{step}.pt")
    pts = np.random.default_rng(0).uniform(0, 1, (15, 3))
    rows = "".join(",".join(map(repr, map(float, p))) + f",{i % 2}\n" for i, p in enumerate(pts))
    (tmp_path / "test.csv").write_text("a,b,c,label\n" + rows)
    return tmp_path, pts


def test_track_writes_the_table_the_record_and_the_figures(run, capsys):
    folder, pts = run
    code = main(["track", "--checkpoints", "ckpts/*.pt", "--data", "test.csv", "--lines", "6",
                 "--length", "0.5", "--planes", "2", "--seed", "1", "--out", "t", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert sorted(p.name for p in (folder / "t").iterdir()) == [
        "counts.png", "density.png", "track.csv", "track.json"]
    assert out["steps"] == [0, 3, 20] and out["checkpoints"] == 3 and out["mode"] == "inline"
    with open(folder / "t" / "track.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * 8
    assert [r["checkpoint"] for r in rows[::8]] == ["step-0.pt", "step-3.pt", "step-20.pt"]
    tracker = RegionTracker.from_dict(json.loads((folder / "t" / "track.json").read_text()))
    assert tracker.to_dict() == RegionTracker.through_points(
        pts, 0.5, n=6, seed=1, planes=2).to_dict() | {"records": tracker.to_dict()["records"]}
    model, _ = checkpoint.load(folder / "ckpts" / "step-3.pt")
    x0, x1 = tracker.segments[4]
    assert int(rows[8 + 4]["activation_regions"]) == \
        count_regions_segment(model, x0, x1).activation_regions
    assert (folder / "t" / "counts.png").read_bytes()[:4] == b"\x89PNG"


def test_track_steps_from_metadata_then_names_then_order(run, capsys):
    folder, _ = run
    checkpoint.save(mlp(1), folder / "ckpts" / "step-3.pt", extra={"step": 7})
    main(["track", "--checkpoints", "ckpts/*.pt", "--data", "test.csv", "--lines", "2",
          "--length", "0.5", "--out", "a", "--json"])
    assert json.loads(capsys.readouterr().out)["steps"] == [0, 7, 20]
    checkpoint.save(mlp(1), folder / "ckpts" / "last.pt")
    main(["track", "--checkpoints", "ckpts/*.pt", "--data", "test.csv", "--lines", "2",
          "--length", "0.5", "--out", "b", "--json"])
    assert json.loads(capsys.readouterr().out)["steps"] == [0, 1, 2, 3]  # name order


def test_track_on_two_processes_writes_the_same_files(run, capsys):
    folder, _ = run
    args = ["track", "--checkpoints", "ckpts/*.pt", "--data", "test.csv", "--lines", "5",
            "--length", "0.8", "--planes", "1", "--quiet"]
    assert main(args + ["--out", "serial"]) == 0
    assert main(args + ["--out", "two", "--workers", "2"]) == 0
    assert "2 local process(es)" in capsys.readouterr().out
    for name in ("track.csv", "track.json"):
        assert (folder / "serial" / name).read_bytes() == (folder / "two" / name).read_bytes()


BAD = [
    (["--length", "0"], "--length must be a finite number > 0"),
    (["--length", "-0.5"], "--length must be"),
    (["--length", "nan"], "--length must be"),
    (["--checkpoints", "nothing/*.pt"], "matches no files"),
    (["--data", "wide.csv"], "has 5 columns; the model takes 3 inputs"),
    (["--data", "narrow.csv"], "has 2 columns"),
    (["--data", "ragged.csv"], "line 3"),
    (["--data", "missing.csv"], "missing.csv"),
    (["--lines", "16"], "--lines 16 is more than the 15 points"),
    (["--lines", "0"], "count nothing"),
    (["--planes", "-1"], "--planes must be"),
    (["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "drop --workers"),
    (["--checkpoints", "test.csv"], "not a readable"),
]


@pytest.mark.parametrize("change, fragment", BAD)
def test_track_bad_input(run, capsys, change, fragment):
    folder, _ = run
    (folder / "wide.csv").write_text("1,2,3,4,5\n1,2,3,4,5\n")
    (folder / "narrow.csv").write_text("1,2\n3,4\n")
    (folder / "ragged.csv").write_text("1,2,3\n1,2,3\n1,2\n")
    args = {"--checkpoints": "ckpts/*.pt", "--data": "test.csv", "--lines": "4",
            "--length": "0.5", "--out": "out"}
    extra = []
    for i in range(0, len(change), 2):
        if change[i] in args:
            args[change[i]] = change[i + 1]
        else:
            extra += change[i:i + 2]
    argv = ["track"] + [x for kv in args.items() for x in kv] + extra
    before = sorted(p.name for p in folder.iterdir())
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    _, err = capsys.readouterr()
    assert code == 2
    assert fragment.lower() in err.lower(), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing written
