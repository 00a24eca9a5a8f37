"""The counters on models the reader lowers: points in the model's input shape, notes."""

import numpy as np
import pytest
import torch
from torch import nn

from relu_regions import InputError
from relu_regions.analysis.plane import count_regions_2d, count_regions_plane


def small_cnn(dtype=torch.float64):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                         nn.Linear(8, 3)).to(dtype).eval()


def test_points_in_the_models_input_shape_set_it():
    model = small_cnn()
    g = np.random.default_rng(0)
    images = [g.uniform(size=(1, 4, 4)) for _ in range(3)]
    shaped = count_regions_plane(model, *images)
    flat = count_regions_plane(model, *(im.reshape(-1) for im in images), input_shape=(1, 4, 4))
    assert shaped.activation_regions == flat.activation_regions > 1
    assert shaped.decision_length == flat.decision_length and shaped.outputs == 3
    with pytest.raises(InputError, match="input_shape"):  # flat points, no shape to read
        count_regions_plane(model, *(im.reshape(-1) for im in images))


def test_a_float32_model_is_counted_in_float64_and_the_result_says_so():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 1))
    r = count_regions_2d(model)
    assert any("float32" in note for note in r.notes) and r.to_dict()["notes"] == r.notes
    same = count_regions_2d(model.double())
    assert same.notes == [] and same.activation_regions == r.activation_regions


def test_the_line_counter_reads_the_same_models():
    from relu_regions.analysis.regions import count_regions, count_regions_segment

    model = small_cnn()
    g = np.random.default_rng(2)
    a, b = g.uniform(size=(1, 4, 4)), g.uniform(size=(1, 4, 4))
    shaped = count_regions_segment(model, a, b)
    flat = count_regions_segment(model, a.reshape(-1), b.reshape(-1), input_shape=(1, 4, 4))
    assert shaped.to_dict() == flat.to_dict() and shaped.outputs == 3
    torch.manual_seed(3)
    one = nn.Sequential(nn.Linear(1, 6), nn.ReLU(), nn.Linear(6, 1))
    r = count_regions(one, -1, 1)
    assert any("float32" in note for note in r.notes) and r.to_dict()["notes"] == r.notes
    assert count_regions(one.double(), -1, 1).notes == []
