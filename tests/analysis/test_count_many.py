"""count_lowered_segments: many segments of one model in one compiled call, each result equal
bit for bit to count_lowered_segment's."""

import numpy as np
import pytest
import torch
from torch import nn

from relu_regions import InputError
from relu_regions.analysis.regions import count_lowered_segment, count_lowered_segments
from relu_regions.nets.reader import lower


def _same(a, b):
    assert a.to_dict(arrays=True) == b.to_dict(arrays=True)
    for name in ("breakpoints", "knots", "slopes", "decision_points"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


@pytest.mark.parametrize("outputs, level, leaky", [(1, 0.0, False), (1, 0.3, True),
                                                    (3, None, False)])
def test_each_segment_equals_its_own_count(outputs, level, leaky):
    torch.manual_seed(outputs)
    act = nn.LeakyReLU(0.1) if leaky else nn.ReLU()
    model = nn.Sequential(nn.Linear(20, 24), act, nn.Linear(24, 24), act,
                          nn.Linear(24, outputs)).double()
    lowered = lower(model)
    rng = np.random.default_rng(0)
    starts = rng.standard_normal((30, 20))
    ends = starts + rng.standard_normal((30, 20)) * rng.uniform(0.01, 5, (30, 1))
    many = count_lowered_segments(lowered, starts, ends, level=level, per_output=True)
    assert len(many) == 30
    for r, x0, x1 in zip(many, starts, ends, strict=True):
        _same(r, count_lowered_segment(lowered, x0, x1, level=level, per_output=True))
    assert len({r.activation_regions for r in many}) > 5  # the segments differ


def test_a_max_pool_model_merges_as_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Unflatten(1, (1, 8)), nn.MaxPool1d(4),
                          nn.Flatten(), nn.Linear(2, 1)).double()
    lowered = lower(model)
    assert lowered.max_nodes is not None
    rng = np.random.default_rng(1)
    starts, ends = rng.standard_normal((10, 3)) * 3, rng.standard_normal((10, 3)) * 3
    for r, x0, x1 in zip(count_lowered_segments(lowered, starts, ends), starts, ends,
                         strict=True):
        _same(r, count_lowered_segment(lowered, x0, x1))


def test_bad_segments_are_refused_in_one_line():
    lowered = lower(nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)).double())
    with pytest.raises(InputError, match=r"same shape \(segments, 2\)"):
        count_lowered_segments(lowered, np.zeros((2, 3)), np.ones((2, 3)))
    with pytest.raises(InputError, match="is empty"):
        count_lowered_segments(lowered, np.zeros((2, 2)), np.array([[1.0, 0], [0, 0]]))
    with pytest.raises(InputError, match="finite"):
        count_lowered_segments(lowered, np.zeros((1, 2)), np.array([[np.nan, 0]]))
