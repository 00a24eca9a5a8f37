"""The plane counter on worker threads: the same count, bit for bit, for every thread count."""

import numpy as np
import pytest
import torch
from torch import nn

from relu_regions import InputError
from relu_regions.analysis import plane
from relu_regions.analysis.plane import count_regions_2d, count_regions_plane

ARRAYS = ("polygons", "offsets", "patterns", "areas", "gradients", "values", "pieces", "regions",
          "decision_segments")
# What the partition into tasks cannot change (no BLAS product enters them).
GEOMETRY = ("polygons", "offsets", "patterns", "areas", "values", "decision_segments")


def mlp(widths, seed, n_in=2, outputs=1):
    torch.manual_seed(seed)
    layers, prev = [], n_in
    for w in widths:
        layers += [nn.Linear(prev, w), nn.ReLU()]
        prev = w
    return nn.Sequential(*layers, nn.Linear(prev, outputs)).double()


def max_pool_net(seed):
    """2 -> 12 -> ReLU -> 16 -> MaxPool1d(4, 2) -> ReLU -> 1."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2, 12), nn.ReLU(), nn.Linear(12, 16), nn.Unflatten(1, (1, 16)),
                         nn.MaxPool1d(4, 2), nn.Flatten(), nn.ReLU(), nn.Linear(7, 1)).double()


@pytest.fixture
def small_forks(monkeypatch):
    """Fork chunks of these small nets into tasks (the defaults fork only large counts); returns
    a list that gets one entry per forked task run."""
    monkeypatch.setattr(plane, "FORK_FLOATS", 64)
    monkeypatch.setattr(plane, "FORK_PARTS", 5)
    runs = []
    rest = plane._rest_task

    def counted(*args):
        runs.append(1)
        return rest(*args)

    monkeypatch.setattr(plane, "_rest_task", counted)
    return runs


def counts(threads_list, count):
    return [count(threads) for threads in threads_list]


@pytest.mark.parametrize("case", ["mlp", "k_outputs", "max_pool", "plane"])
def test_threads_give_the_serial_count_bit_for_bit(case, small_forks, monkeypatch):
    if case == "mlp":
        model, level = mlp([8, 8, 8], 0), None
    elif case == "k_outputs":
        model, level = mlp([10, 10], 1, outputs=3), None
    elif case == "max_pool":
        model, level = max_pool_net(2), 0.0
    else:
        model = mlp([12, 12, 12], 3, n_in=5, outputs=4)
    if case == "plane":
        pts = np.random.default_rng(3).standard_normal((3, 5))

        def count(threads):
            return count_regions_plane(model, *pts, threads=threads, per_output=True)
    else:
        def count(threads):
            return count_regions_2d(model, (-2, 2, -2, 2), level=level, threads=threads)

    serial, *threaded = counts([1, 2, 3], count)
    assert len(small_forks) > 0  # a pool ran tasks (threads=1 runs none)
    assert serial.cells > 20
    for other in threaded:
        for name in ARRAYS:
            assert np.array_equal(getattr(serial, name), getattr(other, name)), name
        assert other.snapped == serial.snapped
        assert other.to_dict() == serial.to_dict()
        if serial.pieces_per_output is not None:
            assert np.array_equal(serial.pieces_per_output, other.pieces_per_output)
    # Forking changes only which rows share a W J product: the geometry is the unforked one's.
    monkeypatch.setattr(plane, "FORK_FLOATS", 1 << 60)
    whole = count(1)
    for name in GEOMETRY:
        assert np.array_equal(getattr(serial, name), getattr(whole, name)), name
    assert np.allclose(serial.gradients, whole.gradients, rtol=1e-12, atol=1e-12)
    assert (serial.activation_regions, serial.linear_pieces) == (whole.activation_regions,
                                                                 whole.linear_pieces)


def test_small_counts_start_no_pool(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a pool was started for a small count")

    monkeypatch.setattr(plane, "ThreadPoolExecutor", refuse)
    assert count_regions_2d(mlp([6, 6], 4), threads=4).cells > 1


@pytest.mark.parametrize("threads", [0, -1, "x", 1.5, True])
def test_bad_threads_is_one_input_error(threads):
    with pytest.raises(InputError, match="threads") as info:
        count_regions_2d(mlp([3], 0), threads=threads)
    assert len(str(info.value).splitlines()) == 1
    with pytest.raises(InputError, match="threads"):
        count_regions_plane(mlp([3], 0, n_in=3), [0, 0, 0], [1, 0, 0], [0, 1, 0],
                            threads=threads)


def test_threads_with_tiles_is_refused_and_one_thread_is_the_tiled_default():
    with pytest.raises(InputError, match="threads is for an untiled count"):
        count_regions_2d(mlp([3], 0), tiles=(2, 2), threads=2)
    tiled = count_regions_2d(mlp([4, 4], 1), tiles=(2, 2), threads=1)
    assert tiled.activation_regions == count_regions_2d(mlp([4, 4], 1)).activation_regions
