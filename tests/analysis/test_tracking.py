"""RegionTracker and log_steps: counts equal the counters', densities on the construction,
saving and restoring, the data-point probes, the checkpoint runner on processes and Dask."""

import csv
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from relu_regions import checkpoint
from relu_regions.analysis.plane import count_regions_plane
from relu_regions.analysis.regions import count_regions_segment
from relu_regions.analysis.tracking import (
    ROW_COLUMNS,
    RegionTracker,
    log_steps,
    track_checkpoints,
)
from relu_regions.errors import InputError
from relu_regions.nets.parametrize import ConstructionNet


def mlp(n_in=3, n_out=2, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(n_in, 12), nn.ReLU(), nn.Linear(12, 12), nn.ReLU(),
                         nn.Linear(12, n_out))


def points(n=12, d=3, seed=1):
    return np.random.default_rng(seed).uniform(-1, 1, (n, d))


@pytest.mark.parametrize("n_out", [1, 3])
def test_counts_equal_direct_counter_calls(n_out):
    model = mlp(n_out=n_out)
    tracker = RegionTracker.through_points(points(), 1.5, n=6, planes=2, seed=4)
    tracker.record(model, 7)
    rows = tracker.rows()
    assert [r["kind"] for r in rows] == ["segment"] * 6 + ["plane"] * 2
    assert [r["probe"] for r in rows] == list(range(8))
    for row, (x0, x1) in zip(rows, tracker.segments, strict=False):
        r = count_regions_segment(model, x0, x1)
        assert (row["activation_regions"], row["linear_pieces"], row["decision"]) == \
            (r.activation_regions, r.linear_pieces, r.decision_points.size)
        assert row["size"] == pytest.approx(np.linalg.norm(x1 - x0)) == pytest.approx(1.5)
        assert row["density"] == pytest.approx(r.activation_regions / 1.5)
    for row, tri in zip(rows[6:], tracker.planes, strict=True):
        c = count_regions_plane(model, *tri, extent=(-0.75, 0.75, -0.75, 0.75))
        assert (row["activation_regions"], row["linear_pieces"]) == \
            (c.activation_regions, c.linear_pieces)
        assert row["decision"] == c.decision_length
        assert row["size"] == pytest.approx(1.5 ** 2)
        assert row["density"] == pytest.approx(c.activation_regions / 1.5 ** 2)
    assert sum(r["activation_regions"] for r in rows) > len(rows)  # the probes see regions


@pytest.mark.parametrize("depth", [2, 4, 6])
def test_construction_density_is_two_to_the_depth(depth):
    net = ConstructionNet.build(depth, peaks=0.5)
    tracker = RegionTracker(segments=[([0.0], [1.0]), ([0.25], [0.75])])
    tracker.record(net, 0)
    whole, half = tracker.rows()
    assert whole["activation_regions"] == whole["linear_pieces"] == 2 ** depth
    assert half["activation_regions"] == 2 ** (depth - 1)
    assert whole["density"] == half["density"] == 2 ** depth
    profile = tracker.density_profile(bins=1)
    # breakpoints inside: 2^d - 1 and 2^(d-1) - 1 (t = 0.25, 0.75 are ends of the second)
    assert profile.breakpoints.sum() == 2 ** depth - 1 + 2 ** (depth - 1) - 1
    assert profile.length.sum() == pytest.approx(1.5)
    fine = tracker.density_profile(bins=4)
    # the inner half of the distances is covered by both segments, the outer by the long one
    np.testing.assert_allclose(fine.length, [0.5, 0.5, 0.25, 0.25])
    assert np.all(np.abs(fine.density - 2 ** depth) <= 2 / 0.25)  # a bin edge on a breakpoint


def test_profile_distances_are_measured_from_the_centre():
    net = ConstructionNet.build(3, peaks=0.5)  # breakpoints at k/8
    tracker = RegionTracker(segments=[([0.0], [1.0])])
    tracker.record(net, 0)
    stored = tracker.to_dict()["records"][0]["counts"][0]["breakpoints"]
    np.testing.assert_allclose(stored, np.arange(1, 8) / 8 - 0.5)
    profile = tracker.density_profile(bins=2)  # [0, 0.25), [0.25, 0.5]
    assert profile.breakpoints.tolist() == [3, 4]  # 0, +-1/8 | +-1/4, +-3/8


def test_round_trips_and_restore():
    tracker = RegionTracker.through_points(points(), 1.0, n=4, planes=1)
    model = mlp()
    tracker.record(model, 0, stage="phase1", seed=3)
    tracker.record(model, 10, stage="phase2", seed=3, lr=1e-3)
    text = json.dumps(tracker.to_dict())
    again = RegionTracker.from_dict(json.loads(text))
    assert again.to_dict() == tracker.to_dict() and again.rows() == tracker.rows()
    assert len(again) == 2 and again.steps == [0, 10]
    assert tracker.columns() == [*ROW_COLUMNS, "stage", "seed", "lr"]
    fresh = RegionTracker.through_points(points(), 1.0, n=4, planes=1)
    fresh.load_state_dict(tracker.state_dict())
    assert fresh.rows() == tracker.rows()
    other = RegionTracker.through_points(points(), 1.0, n=4, planes=1, seed=9)
    with pytest.raises(InputError, match="other probes"):
        other.load_state_dict(tracker.state_dict())
    with pytest.raises(InputError, match="format"):
        RegionTracker.from_dict({"segments": []})


def test_csv_and_json_files(tmp_path):
    tracker = RegionTracker.through_points(points(), 1.0, n=3)
    tracker.record(mlp(), 0, stage="a")
    tracker.record(mlp(seed=5), 4)
    tracker.to_csv(tmp_path / "t.csv")
    tracker.to_json(tmp_path / "t.json")
    with open(tmp_path / "t.csv") as f:
        read = list(csv.DictReader(f))
    rows = tracker.rows()
    assert len(read) == len(rows) == 6
    for got, want in zip(read, rows, strict=True):
        assert float(got["density"]) == want["density"]  # floats written exactly
        assert int(got["activation_regions"]) == want["activation_regions"]
        assert got["stage"] == want.get("stage", "")
    assert RegionTracker.from_dict(json.loads((tmp_path / "t.json").read_text())).rows() == rows
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv", "t.json"]  # no temporaries


def test_record_leaves_the_model_alone_and_adds_nothing_on_failure():
    model = mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tracker = RegionTracker.through_points(points(), 1.0, n=2)
    tracker.record(model, 0)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    with pytest.raises(InputError, match="probes are points of 3 inputs; the model takes 4"):
        tracker.record(mlp(n_in=4), 1)
    with pytest.raises(InputError, match="step must be"):
        tracker.record(model, -1)
    with pytest.raises(InputError, match="column of the rows"):
        tracker.record(model, 1, density=2)
    with pytest.raises(InputError, match="tag"):
        tracker.record(model, 1, when=[1])
    dropout = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.ReLU(), nn.Linear(4, 1))
    with pytest.raises(InputError, match="training mode"):
        tracker.record(dropout, 1)
    assert len(tracker) == 1


def test_through_points_geometry_and_seeding():
    pts = points(20, 4)
    a = RegionTracker.through_points(pts, 0.4, n=5, seed=2)
    b = RegionTracker.through_points(pts, 0.4, n=5, seed=2, planes=3)
    c = RegionTracker.through_points(pts, 0.4, n=5, seed=3)
    for (x0, x1), (y0, y1) in zip(a.segments, b.segments, strict=True):
        assert np.array_equal(x0, y0) and np.array_equal(x1, y1)  # planes do not move them
    assert not np.array_equal(a.segments[0][0], c.segments[0][0])
    centres = np.array([(x0 + x1) / 2 for x0, x1 in a.segments])
    assert all(np.isclose(np.abs(pts - m).sum(1), 0).any() for m in centres)  # at data points
    assert np.allclose([np.linalg.norm(x1 - x0) for x0, x1 in a.segments], 0.4)
    for p0, p1, p2 in b.planes:
        assert np.isclose(np.abs(pts - p0).sum(1), 0).any()
        assert np.isclose(np.linalg.norm(p1 - p0), 0.2) and np.isclose(np.linalg.norm(p2 - p0),
                                                                        0.2)
    assert b.extent == (-0.2, 0.2, -0.2, 0.2)
    everyone = RegionTracker.through_points(pts, 0.4)
    assert len(everyone.segments) == 20
    directions = np.array([x1 - x0 for x0, x1 in
                           RegionTracker.through_points(np.zeros((400, 2)), 2.0).segments]) / 2
    assert abs(np.arctan2(directions[:, 1], directions[:, 0]).mean()) < 0.3  # not one-sided


@pytest.mark.parametrize("kwargs, message", [
    ({"length": 0.0}, "length must be a finite number > 0"),
    ({"length": -1.0}, "length must be"),
    ({"length": float("nan")}, "length must be"),
    ({"length": 1.0, "n": 99}, "there are 12 points"),
    ({"length": 1.0, "planes": 13}, "planes must be"),
    ({"length": 1.0, "seed": -1}, "seed must be"),
])
def test_through_points_refuses_bad_values(kwargs, message):
    with pytest.raises(InputError, match=message):
        RegionTracker.through_points(points(), **kwargs)


def test_bad_probes_are_refused():
    with pytest.raises(InputError, match="at least one probe"):
        RegionTracker()
    with pytest.raises(InputError, match="different sizes"):
        RegionTracker(segments=[([0, 0], [1, 1]), ([0], [1])])
    with pytest.raises(InputError, match="x0 equals x1"):
        RegionTracker(segments=[([0, 0], [0, 0])])
    with pytest.raises(InputError, match="3 points"):
        RegionTracker(planes=[([0, 0], [1, 1])])
    with pytest.raises(InputError, match="extent"):
        RegionTracker(planes=[([0, 0], [1, 0], [0, 1])], extent=(1, 0, 0, 1))
    with pytest.raises(InputError, match="at least 2 inputs"):
        RegionTracker.through_points([0.1, 0.5], 0.2, planes=1)
    with pytest.raises(InputError, match="nothing recorded"):
        RegionTracker(segments=[([0], [1])]).density_profile()


@settings(max_examples=200, deadline=None)
@given(first=st.integers(0, 10_000), span=st.integers(0, 10**7), n=st.integers(2, 60))
def test_log_steps_properties(first, span, n):
    last = first + span
    steps = log_steps(last, n=n, first=first)
    assert steps == sorted(set(steps)) and all(type(s) is int for s in steps)
    assert steps[0] == first and steps[-1] == last
    assert len(steps) <= n
    if (last + 1) >= 2.0 ** (n - 1) * (first + 1):  # (step + 1) doubles or more: n distinct
        assert len(steps) == n
    if len(steps) > 2:  # log-spaced: the gaps grow
        gaps = np.diff(steps)
        assert gaps[-1] >= gaps[0]


def test_log_steps_refuses_bad_values():
    assert log_steps(5, n=1, first=5) == [5]
    with pytest.raises(InputError, match="n must be"):
        log_steps(10, n=1)
    with pytest.raises(InputError, match="last must be"):
        log_steps(3, first=4)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpts")
    tasks = []
    for step in (0, 5, 50):
        path = checkpoint.save(mlp(seed=step), folder / f"c{step}.pt")
        tasks.append({"path": path, "step": step, "tags": {"checkpoint": path.name}})
    return tasks


def _tracked(tasks, **kwargs):
    tracker = RegionTracker.through_points(points(), 1.0, n=5, planes=1)
    mode, _ = track_checkpoints(tracker, tasks, **kwargs)
    return tracker, mode


def test_checkpoints_on_local_processes_equal_a_serial_run(saved):
    serial, mode = _tracked(saved)
    assert mode == "inline" and serial.steps == [0, 5, 50]
    direct = RegionTracker.through_points(points(), 1.0, n=5, planes=1)
    for task in saved:
        model, _ = checkpoint.load(task["path"])
        direct.record(model, task["step"], **task["tags"])
    assert serial.to_dict() == direct.to_dict()
    parallel, mode = _tracked(saved, workers=2)
    assert mode == "local" and parallel.to_dict() == serial.to_dict()


def test_checkpoints_on_a_dask_cluster_equal_a_serial_run(saved):
    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        on_dask, mode = _tracked(saved, workers=None, scheduler=cluster.scheduler_address)
    assert mode == "dask" and on_dask.to_dict() == _tracked(saved)[0].to_dict()


def test_a_failing_checkpoint_is_an_input_error(saved, tmp_path):
    broken = tmp_path / "broken.pt"
    broken.write_text("not a checkpoint")
    tasks = [*saved, {"path": broken, "step": 99}]
    tracker = RegionTracker.through_points(points(), 1.0, n=2)
    with pytest.raises(InputError, match="broken.pt failed"):
        track_checkpoints(tracker, tasks)
    assert len(tracker) == 0
