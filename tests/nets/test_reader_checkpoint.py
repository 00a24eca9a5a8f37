"""Checkpoints of lowered models: any model the reader reads is saved as its chain of (W, b)
layers and per-unit slopes, loaded with weights_only=True as a countable LoweredNet."""

import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional

from relu_regions import InputError, checkpoint
from relu_regions.analysis.regions import count_regions_segment
from relu_regions.nets.reader import LoweredNet, forward, lower


class Classifier(nn.Module):
    """A user's own class with a skip connection, 10 outputs."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.bn = nn.BatchNorm2d(2)
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        h = functional.leaky_relu(self.bn(self.conv(x)), 0.1) + x
        return self.head(h.flatten(1))


def test_a_user_class_round_trips_as_its_lowered_form(tmp_path):
    model = Classifier().eval()
    model.input_shape = (1, 4, 4)
    path = checkpoint.save(model, tmp_path / "clf.pt", {"note": "digits"})
    payload = torch.load(path, weights_only=True)  # no code in the file
    config = json.loads(payload["config"])
    assert config["model"]["kind"] == "lowered" and config["note"] == "digits"
    assert config["model"]["input_shape"] == [1, 4, 4] and config["model"]["widths"][-1] == 10
    assert any("float32" in note for note in config["model"]["notes"])
    loaded, _ = checkpoint.load(path)
    assert isinstance(loaded, LoweredNet)
    want, got = lower(model), lower(loaded)
    assert got.input_shape == (1, 4, 4)
    for (w1, b1), (w2, b2) in zip(want.layers, got.layers, strict=True):
        assert np.array_equal(w1, w2) and np.array_equal(b1, b2)
    for l1, l2 in zip(want.leaks, got.leaks, strict=True):
        assert np.array_equal(l1, l2)
    x = torch.randn(20, 1, 4, 4, dtype=torch.float64)
    with torch.no_grad():
        theirs = model.double()(x).numpy()
        np.testing.assert_allclose(loaded(x).numpy(), theirs, atol=1e-12)  # shaped input
        np.testing.assert_allclose(loaded(x.reshape(20, -1)).numpy(), theirs, atol=1e-12)
    np.testing.assert_allclose(forward(got.layers, got.leaks, x.reshape(20, -1).numpy()),
                               theirs, atol=1e-12)


def test_a_one_output_conv_model_loads_and_counts_the_same(tmp_path):
    torch.manual_seed(0)  # unseeded, some draws gave a segment of one region
    model = nn.Sequential(nn.Conv2d(1, 2, 2), nn.ReLU(), nn.Flatten(), nn.Linear(8, 1)).double()
    model.input_shape = (1, 3, 3)
    loaded, config = checkpoint.load(checkpoint.save(model, tmp_path / "c.pt"))
    assert config["model"]["kind"] == "lowered"
    x0, x1 = np.full(9, -2.0), np.linspace(1, 3, 9)
    a, b = count_regions_segment(model, x0, x1), count_regions_segment(loaded, x0, x1)
    assert a.activation_regions == b.activation_regions > 1
    assert np.array_equal(a.breakpoints, b.breakpoints)


def test_plain_stacks_keep_their_kinds(tmp_path):
    mlp = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 4))
    _, config = checkpoint.load(checkpoint.save(mlp, tmp_path / "m.pt"))
    assert config["model"] == {"kind": "mlp", "widths": [2, 3, 4]}  # k outputs allowed


@pytest.mark.parametrize("change, fragment", [
    ({"input_shape": [2, 2]}, "input_shape"),
    ({"widths": [9, "x"]}, "widths"),
])
def test_a_malformed_lowered_config_is_refused(tmp_path, change, fragment):
    model = nn.Sequential(nn.Linear(9, 2), nn.LeakyReLU(0.1), nn.Linear(2, 1))
    path = checkpoint.save(model, tmp_path / "l.pt")
    payload = torch.load(path, weights_only=True)
    config = json.loads(payload["config"])
    assert config["model"]["kind"] == "lowered"
    config["model"].update(change)
    payload["config"] = json.dumps(config)
    torch.save(payload, path)
    with pytest.raises(InputError, match=fragment):
        checkpoint.load(path)


def test_an_unreadable_model_is_refused_by_save(tmp_path):
    with pytest.raises(InputError, match="Tanh is not piecewise linear"):
        checkpoint.save(nn.Sequential(nn.Linear(2, 2), nn.Tanh(), nn.Linear(2, 1)),
                        tmp_path / "t.pt")
    assert not (tmp_path / "t.pt").exists()
