"""Tiled plane counts (analysis/tiles.py) against the untiled count: random nets, hand-built
nets whose cells straddle tile borders and corners, the memory budget, workers and Dask."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from random_nets import random_net
from torch import nn

from relu_regions import InputError
from relu_regions.analysis import tiles
from relu_regions.analysis.plane import (
    TiledPlaneCount,
    _kernel,
    count_regions_2d,
    count_regions_plane,
)
from relu_regions.analysis.tiles import parse_memory

EXACT = ("activation_regions", "cells", "linear_pieces", "vertices", "edges", "unmatched_edges",
         "resolved", "outputs", "hidden_neurons")



def hand_net(rows, out):
    """One hidden layer: rows (a, b, c) are units relu(a x + b y + c); ``out`` the output
    weights, one list per output."""
    w = torch.tensor([r[:2] for r in rows], dtype=torch.float64)
    b = torch.tensor([r[2] for r in rows], dtype=torch.float64)
    hidden = nn.Linear(2, len(rows), dtype=torch.float64)
    head = nn.Linear(len(rows), len(out), dtype=torch.float64)
    with torch.no_grad():
        hidden.weight.copy_(w)
        hidden.bias.copy_(b)
        head.weight.copy_(torch.tensor(out, dtype=torch.float64))
        head.bias.zero_()
    return nn.Sequential(hidden, nn.ReLU(), head)


def assert_same(tiled, whole):
    """Tiled equals untiled: the exact fields exactly, the rest to rounding."""
    assert isinstance(tiled, TiledPlaneCount)
    for name in EXACT:
        assert getattr(tiled, name) == getattr(whole, name), name
    if whole.pieces_per_output is not None:
        assert tiled.pieces_per_output.tolist() == whole.pieces_per_output.tolist()
    assert tiled.decision_length == pytest.approx(whole.decision_length, rel=1e-9, abs=1e-12)
    assert tiled.min_cell_area == pytest.approx(whole.min_cell_area, rel=1e-9)
    assert tiled.min_cell_width == pytest.approx(whole.min_cell_width, rel=1e-9)
    # The pieces tile the box, and each merged region's area is an untiled cell's.
    assert tiled.areas.sum() == pytest.approx(whole.areas.sum(), rel=1e-12)
    merged = np.sort(np.bincount(tiled.regions, tiled.areas))
    assert merged == pytest.approx(np.sort(whole.areas), rel=1e-9, abs=1e-15)
    assert tiled.regions.max() + 1 == tiled.activation_regions
    assert tiled.pieces.max() + 1 == tiled.linear_pieces
    # Every piece of a region has that region's pattern.
    for reg in range(tiled.activation_regions):
        pats = tiled.patterns[tiled.regions == reg]
        assert (pats == pats[0]).all()


# ---------------------------------------------------------------------------------------------
# Random nets

@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10**6), width=st.integers(3, 6), depth=st.integers(1, 3),
       k=st.sampled_from([1, 3]), nx=st.integers(1, 4), ny=st.integers(1, 4))
def test_tiled_equals_untiled_on_random_nets(seed, width, depth, k, nx, ny):
    net = random_net([width] * depth, seed, outputs=k)
    box = (-1.5, 1.0, -1.0, 1.25)
    whole = count_regions_2d(net, box, per_output=True)
    assert_same(count_regions_2d(net, box, per_output=True, tiles=(nx, ny)), whole)


@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 10**6), nx=st.integers(2, 3), ny=st.integers(1, 3))
def test_tiled_equals_untiled_on_a_plane(seed, nx, ny):
    net = random_net([8, 8], seed, n_in=5, outputs=4)
    p0, p1, p2 = np.random.default_rng(seed).normal(size=(3, 5))
    whole = count_regions_plane(net, p0, p1, p2, per_output=True)
    tiled = count_regions_plane(net, p0, p1, p2, per_output=True, tiles=(nx, ny))
    assert_same(tiled, whole)
    assert tiled.plane is not None and np.array_equal(tiled.plane["basis"], whole.plane["basis"])


# ---------------------------------------------------------------------------------------------
# Hand-built nets: cells across borders and corners

def test_lines_through_the_tile_corner():
    """Four lines through (0, 0), the corner of a 2 x 2 grid: eight sectors, one vertex at the
    corner (degree 8), the rest on the box boundary."""
    net = hand_net([(1, 0, 0), (0, 1, 0), (1, 1, 0), (1, -1, 0)], [[1.0, 2.0, 3.0, 5.0]])
    whole = count_regions_2d(net)
    assert whole.activation_regions == 8
    tiled = count_regions_2d(net, tiles=(2, 2))
    assert_same(tiled, whole)
    assert tiled.offsets.size - 1 == 8  # every sector lies in one tile: nothing to merge


def test_a_cell_covering_all_four_tiles():
    """Lines away from the centre: the middle cell is cut into four pieces, one per tile."""
    net = hand_net([(1, 0, -0.7), (0, 1, -0.6), (1, 1, 1.2), (1, -0.3, 0.9)],
                   [[1.0, -2.0, 0.5, 1.5], [0.3, 1.0, -1.0, 2.0]])
    whole = count_regions_2d(net, per_output=True)
    tiled = count_regions_2d(net, per_output=True, tiles=(2, 2))
    assert_same(tiled, whole)
    centre = np.flatnonzero(np.bincount(tiled.regions) == 4)
    assert centre.size == 1  # the cell holding the corner: four pieces merged
    assert sorted(tiled.tile_of[tiled.regions == centre[0]]) == [0, 1, 2, 3]


@pytest.mark.parametrize("grid", [(2, 2), (2, 1), (4, 4)])
def test_a_tile_border_on_a_neurons_line(grid):
    """Units relu(x) and relu(y) have their lines on the borders x = 0 and y = 0: the pieces on
    the two sides are different regions (the line is an edge of the map)."""
    net = hand_net([(1, 0, 0), (0, 1, 0), (1, 1, -0.3)], [[1.0, 2.0, -1.0]])
    whole = count_regions_2d(net)
    tiled = count_regions_2d(net, tiles=grid)
    assert_same(tiled, whole)


def test_a_linear_piece_across_a_border_line_of_different_patterns():
    """relu(x) has output weight 0: its line x = 0 (a tile border) separates regions but not
    linear pieces, so the pieces join across the border by the slope rule."""
    net = hand_net([(1, 0, 0), (0, 1, -0.3), (1, 1, -0.9)], [[0.0, 1.0, 2.0], [0.0, 1.0, 0.0]])
    whole = count_regions_2d(net, per_output=True)
    assert whole.linear_pieces < whole.activation_regions
    assert whole.pieces_per_output.tolist() != [whole.linear_pieces] * 2
    assert_same(count_regions_2d(net, per_output=True, tiles=(2, 2)), whole)
    assert_same(count_regions_2d(net, per_output=True, tiles=(4, 3)), whole)


def test_a_linear_piece_spanning_cells_and_tiles():
    """A dead second output and an output reading two units: one output's pieces span many
    cells; the per-output counts still match across a 3 x 3 grid."""
    net = random_net([5, 5], 7, outputs=2)
    with torch.no_grad():
        net[-1].weight[1] = 0.0
    whole = count_regions_2d(net, per_output=True)
    assert whole.pieces_per_output[1] == 1
    assert_same(count_regions_2d(net, per_output=True, tiles=(3, 3)), whole)


def test_fields_and_to_dict():
    net = random_net([4, 4], 3)
    r = count_regions_2d(net, tiles=(2, 3))
    d = r.to_dict()
    assert d["tiles"] == [2, 3] and d["tile_pieces"] == r.offsets.size - 1
    assert len(r.to_dict(arrays=True)["regions"]) == r.offsets.size - 1
    assert set(np.unique(r.tile_of)) == set(range(6))


# ---------------------------------------------------------------------------------------------
# Memory budget

def test_parse_memory():
    assert parse_memory("2GB") == 2 * 10**9
    assert parse_memory("500MB") == 500 * 10**6
    assert parse_memory("1.5 GiB") == 3 * 2**29
    assert parse_memory(4096) == 4096
    for bad in ("lots", "-1GB", "2 GBs", 0, -5, True, "0.1B"):
        with pytest.raises(InputError, match="max_memory"):
            parse_memory(bad)


def test_a_budget_too_small_for_one_tile_is_one_input_error():
    net = random_net([16, 16], 0)
    with pytest.raises(InputError, match="too small for one tile") as err:
        count_regions_2d(net, max_memory="1MB")
    assert "\n" not in str(err.value) and "give at least" in str(err.value)
    with pytest.raises(InputError, match="too small for one tile"):
        count_regions_2d(net, max_memory=1000, tiles=(2, 2))


def test_the_budget_chooses_the_grid():
    """A wide first layer: a small budget needs more tiles than a large one, and both count
    what the untiled counter counts."""
    net = random_net([48, 6], 1)
    box = (-3.0, 3.0, -3.0, 3.0)
    whole = count_regions_2d(net, box)
    layers = [(m.weight.detach().numpy(), m.bias.detach().numpy())
              for m in net if isinstance(m, nn.Linear)]
    model = tiles.MemoryModel.of(layers, _kernel())
    big = count_regions_2d(net, box, max_memory="4GB")
    cells = tiles.first_layer_cells(layers, [np.zeros(48)], np.zeros(2), np.eye(2),
                                    np.array([-3.0, 3.0]), np.array([-3.0, 3.0]))[0, 0]
    tight = 2 * (model.fixed + cells * model.first_cell / 3)  # a third of one tile's work
    small = count_regions_2d(net, box, max_memory=int(tight))
    assert big.tiles == (1, 1) and small.tiles[0] >= 2
    assert_same(big, whole)
    assert_same(small, whole)


def test_first_layer_cells_counts_the_arrangement():
    """Three lines in general position crossing the box: 7 cells; the lines x = -0.1 and
    y = 0.2 on a 2 x 2 grid: 1 + lines crossing + crossings inside, per tile."""
    w = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    b = np.array([0.1, -0.2, 0.05])
    edges = np.array([-1.0, 1.0])
    cells = tiles.first_layer_cells([(w, b), (np.ones((1, 3)), np.zeros(1))], [np.zeros(3)],
                                    np.zeros(2), np.eye(2), edges, edges)
    assert cells[0, 0] == 7
    # Units on one line (equal rows, or scaled by a positive or negative factor) cut it once.
    same = tiles.first_layer_cells([(np.vstack([w, w, 2 * w[:1], -w[1:2]]),
                                     np.r_[b, b, 2 * b[:1], -b[1:2]]),
                                    (np.ones((1, 8)), np.zeros(1))], [np.zeros(8)],
                                   np.zeros(2), np.eye(2), edges, edges)
    assert same[0, 0] == 7
    four = np.array([-1.0, 0.1 + 1e-9, 1.0])
    per_tile = tiles.first_layer_cells([(w[:2], b[:2]), (np.ones((1, 2)), np.zeros(1))],
                                       [np.zeros(2)], np.zeros(2), np.eye(2), four,
                                       np.array([-1.0, 0.2 - 1e-9, 1.0]))
    assert per_tile.tolist() == [[2.0, 4.0], [1.0, 2.0]]  # [ix][iy]


def _dense_layers(net):
    return [(m.weight.detach().numpy(), m.bias.detach().numpy())
            for m in net if isinstance(m, nn.Linear)]


WIDE_BOX = (2.92, 3.08, 2.92, 3.08)  # far from the origin: a few dozen of 4,096 lines cross it


def test_first_layer_cells_of_a_wide_layer_are_its_regions_per_tile():
    """A first layer of 4,096 units (far more than one could intersect pair by pair in one
    array): on each tile of a 2 x 2 grid the planner's cells are the regions that layer alone
    has there, as counted."""
    net = random_net([4096], 3)
    layers = _dense_layers(net)
    xs, ys = tiles._edges(*WIDE_BOX[:2], 2), tiles._edges(*WIDE_BOX[2:], 2)
    plan = tiles.FirstLayerPlan(layers, [np.zeros(4096)], np.zeros(2), np.eye(2), WIDE_BOX)
    cells = plan.cells(xs, ys)
    assert 10 < plan.a.shape[0] < 200  # lines crossing the box, a real arrangement
    for ix in range(2):
        for iy in range(2):
            tile = (xs[ix], xs[ix + 1], ys[iy], ys[iy + 1])
            assert cells[ix, iy] == count_regions_2d(net, tile).activation_regions
    whole = plan.cells(xs[[0, -1]], ys[[0, -1]])
    assert whole[0, 0] == count_regions_2d(net, WIDE_BOX).activation_regions
    # Over MAX_PLAN_PAIRS pairs, a tile's crossings are bounded by its lines' pairs: never less.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tiles, "MAX_PLAN_PAIRS", 0)
        bound = tiles.FirstLayerPlan(layers, [np.zeros(4096)], np.zeros(2), np.eye(2),
                                     WIDE_BOX).cells(xs, ys)
    assert (bound >= cells).all() and (bound > cells).any()


def test_lines_per_tile_are_the_lines_whose_corners_differ_in_sign():
    rng = np.random.default_rng(5)
    a, c = rng.normal(size=(300, 2)), rng.uniform(-1, 1, 300)
    a[:20, 1] = 0.0  # vertical lines, and horizontal ones
    a[20:40, 0] = 0.0
    xs, ys = np.linspace(-1, 1, 6), np.linspace(-0.5, 1, 8)
    z = a[:, 0, None, None] * xs[None, :, None] + a[:, 1, None, None] * ys[None, None, :] \
        + c[:, None, None]
    corners = np.stack([z[:, :-1, :-1], z[:, 1:, :-1], z[:, :-1, 1:], z[:, 1:, 1:]])
    crossing = ((corners.min(0) < 0) & (corners.max(0) > 0)).sum(0)
    assert tiles._lines_per_tile(a, c, xs, ys).tolist() == crossing.tolist()


def test_the_planner_keeps_a_wide_first_layer_to_its_budget():
    """A budget that one tile of the box's first-layer cells exceeds: the planner cuts the
    coarsest grid whose every tile fits, and the count equals the untiled one."""
    net = random_net([4096, 8], 3, outputs=3)
    layers, leaks = _dense_layers(net), [np.zeros(4096), np.zeros(8)]
    model = tiles.MemoryModel.of(layers, _kernel())
    plan = tiles.FirstLayerPlan(layers, leaks, np.zeros(2), np.eye(2), WIDE_BOX)

    def need(nx, ny):
        cells = plan.cells(tiles._edges(*WIDE_BOX[:2], nx), tiles._edges(*WIDE_BOX[2:], ny))
        return model.fixed + cells.max() * model.first_cell

    budget = int(need(1, 1) + need(2, 2))  # half of it: more than a 2 x 2 tile, less than 1 x 1
    grid = tiles.plan_grid(layers, leaks, WIDE_BOX, np.zeros(2), np.eye(2), budget, 1,
                           _kernel())
    assert grid in ((2, 1), (2, 2))
    assert need(*grid) <= budget / 2 and (grid == (2, 1) or need(2, 1) > budget / 2)
    assert need(1, 1) > budget / 2
    tiled, whole = count_regions_2d(net, WIDE_BOX, max_memory=budget), \
        count_regions_2d(net, WIDE_BOX)
    assert tiled.tiles == grid
    for name in EXACT:  # (the widths of cells 1e-6 wide, far from the origin: to 1e-5 only)
        assert getattr(tiled, name) == getattr(whole, name), name


def test_a_budget_whose_map_cannot_hold_the_tiles_pieces_is_refused_before_counting(
        monkeypatch):
    """Tiles that fit, but more first-layer cells in all than the merged map's half holds: one
    InputError from the planner (not after counting every tile)."""
    net = random_net([8], 0)
    layers = _dense_layers(net)
    plan = tiles.FirstLayerPlan(layers, [np.zeros(8)], np.zeros(2), np.eye(2), (-1, 1, -1, 1))
    cells = plan.cells(np.array([-1.0, 1.0]), np.array([-1.0, 1.0]))[0, 0]
    piece = 10**6
    monkeypatch.setattr(tiles.MemoryModel, "of",
                        classmethod(lambda cls, layers, kernel: cls(1, 1, piece, 0)))
    budget = int(2 * piece * (cells - 1))  # the pieces of the first layer's cells: one too many
    with pytest.raises(InputError, match="region map of their pieces needs at least"):
        count_regions_2d(net, max_memory=budget)
    assert count_regions_2d(net, max_memory=int(2 * piece * cells)).tiles == (1, 1)


def test_bad_tiling_options():
    net = random_net([4], 0)
    for kwargs, match in (({"tiles": (0, 2)}, "tiles nx"), ({"tiles": 3}, "two integers"),
                          ({"workers": 0}, "workers"), ({"workers": 2.5}, "workers"),
                          ({"workers": 2, "scheduler": "tcp://127.0.0.1:1"}, "not both"),
                          ({"tiles": (2, 2), "scheduler": 42}, "scheduler must be")):
        with pytest.raises(InputError, match=match):
            count_regions_2d(net, **kwargs)
    with pytest.raises(InputError, match="cannot be cut so finely"):
        count_regions_2d(net, (1.0, 1.0 + 256 * 2.0**-52, 0.0, 1.0), tiles=(1024, 1))


# ---------------------------------------------------------------------------------------------
# Workers and Dask

def test_two_workers_equal_serial():
    net = random_net([8, 8], 11, outputs=3)
    serial = count_regions_2d(net, per_output=True, tiles=(3, 2))
    par = count_regions_2d(net, per_output=True, tiles=(3, 2), workers=2)
    assert_same(par, count_regions_2d(net, per_output=True))
    for name in ("polygons", "offsets", "patterns", "pieces", "regions", "tile_of",
                 "decision_segments"):
        assert np.array_equal(getattr(par, name), getattr(serial, name)), name


class _Work:
    """A FirstLayerPlan stand-in: ``dense`` cells in the tile at the box's lower-left corner
    (of any grid) and one in every other tile."""

    def __init__(self, dense):
        self.dense = dense

    def cells(self, xs, ys):
        out = np.ones((xs.size - 1, ys.size - 1))
        out[0, 0] = self.dense
        return out


@pytest.mark.parametrize("dense, start, want", [
    (1, (2, 2), (4, 2)),  # even work: at least BALANCE_SHARE tiles per worker
    (1, (8, 8), (8, 8)),
    (30, (2, 2), (16, 16)),  # 30 x 4 x 2 <= 29 + tiles first at 256 tiles
    (10**6, (2, 2), (tiles.BALANCE_SIDE, tiles.BALANCE_SIDE // 2)),  # refined up to the cap
    (10**6, (128, 128), (128, 128)),  # a finer grid is kept
])
def test_parallel_grids_are_refined_until_no_tile_dominates(dense, start, want):
    nx, ny, cells = tiles._balanced(_Work(dense), (0.0, 1.0, 0.0, 1.0), *start, 2)
    assert (nx, ny) == want
    assert cells.shape == want and cells[0, 0] == dense  # the chosen grid's cells, for the order


def test_the_planner_doubles_the_tiles_one_side_at_a_time():
    grids = [(1, 1)]
    while len(grids) < 6:
        grids.append(tiles._finer(*grids[-1]))
    assert grids == [(1, 1), (2, 1), (2, 2), (4, 2), (4, 4), (8, 4)]


def test_dask_local_cluster_equals_serial():
    distributed = pytest.importorskip("dask.distributed")
    net = random_net([6, 6], 5, outputs=2)
    serial = count_regions_2d(net, tiles=(2, 2))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        par = count_regions_2d(net, tiles=(2, 2), scheduler=cluster.scheduler_address)
    assert_same(par, count_regions_2d(net))
    assert np.array_equal(par.polygons, serial.polygons)
    assert np.array_equal(par.regions, serial.regions)


CRASHY = '''
import multiprocessing
import os
from relu_regions.analysis import tiles


def dies(shared, task):
    if task[0] == 1:
        # A spawned worker dying like a segfault or the OOM killer: no exception. In the
        # counting process itself it would take pytest down: fail instead.
        assert multiprocessing.parent_process() is not None, "tile 1 ran in the parent"
        os._exit(3)
    return tiles.count_tile(shared, task)


def raises(shared, task):
    if task[0] == 2:
        raise ValueError("a bad tile")
    return tiles.count_tile(shared, task)
'''


# workers=3: two spawned workers take all four tiles (QUEUED_PER_WORKER each), so tile 1 dies in
# one of them; workers=2: the counting process takes tiles too, and a bad tile raises wherever
# it runs.
@pytest.mark.parametrize("kind, workers, match",
                         [("dies", 3, r"tile \(1, 0\) .* worker process died"),
                          ("raises", 2, r"tile \(0, 1\) .*ValueError: a bad tile")])
def test_a_failing_worker_is_reported_with_its_tile(tmp_path, monkeypatch, kind, workers,
                                                    match):
    (tmp_path / "tiles_crashy.py").write_text(CRASHY)
    monkeypatch.syspath_prepend(str(tmp_path))  # spawned workers get the parent's sys.path
    import tiles_crashy

    monkeypatch.setattr(tiles, "count_tile", getattr(tiles_crashy, kind))
    with pytest.raises(RuntimeError, match=match):
        count_regions_2d(random_net([4], 0), tiles=(2, 2), workers=workers)
