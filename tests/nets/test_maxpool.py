"""Max-pooling and torch.maximum in the lowering: tournaments of b + relu(a - b), their tree
nodes, the region keys read from them, and lowered checkpoints that keep them."""

import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional

from relu_regions import InputError, checkpoint
from relu_regions.analysis.plane import count_regions_2d
from relu_regions.nets.reader import LoweredNet, forward, lower, region_keys


def built(model, shape):
    torch.manual_seed(0)
    with torch.no_grad():
        model(torch.zeros(1, *shape))  # lazy layers take their sizes
    return model.double().eval()


def conv_pool(pool, shape=(1, 6, 6)):
    return built(nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), pool, nn.Flatten(),
                               nn.LazyLinear(3)), shape)


@pytest.mark.parametrize("pool", [
    nn.MaxPool2d(2), nn.MaxPool2d(3, stride=2, padding=1), nn.MaxPool2d((2, 3), stride=1),
    nn.MaxPool2d(2, stride=1, dilation=2), nn.AdaptiveMaxPool2d((2, 4)),
], ids=["2x2", "3x3-s2-p1", "2x3-s1", "dilated", "adaptive"])
def test_max_pool_2d_lowers_to_the_models_function(pool):
    model = conv_pool(pool)
    lowered = lower(model, (1, 6, 6))
    x = torch.randn(64, 1, 6, 6, dtype=torch.float64)
    got = forward(lowered.layers, lowered.leaks, x.reshape(64, -1).numpy())
    np.testing.assert_allclose(got, model(x).detach().numpy(), rtol=0, atol=1e-12)
    nodes = lowered.max_nodes
    with torch.no_grad():
        pooled = pool(torch.zeros(1, 2, 6, 6))
    assert len(np.unique(nodes[:, 2])) == pooled.numel()  # a tree per window with 2+ members
    assert (np.bincount(nodes[:, 2]) >= 1).all() and (nodes[nodes[:, 3] < 0, 4] == -1).all()
    roots = nodes[nodes[:, 3] < 0]
    assert len(roots) == pooled.numel()  # one root per window


def test_a_window_of_n_members_has_n_minus_1_nodes_in_ceil_log2_n_layers():
    model = built(nn.Sequential(nn.Linear(2, 5), nn.Unflatten(1, (1, 5)), nn.MaxPool1d(5),
                                nn.Flatten(), nn.Linear(1, 1)), (2,))
    lowered = lower(model)
    assert lowered.max_nodes.shape == (4, 5) and len(lowered.layers) == 4  # 3 rounds + output
    assert sorted(np.bincount(lowered.max_nodes[:, 0])) == [1, 1, 2]


def test_max_pool_1d_with_padding_leaves_padded_positions_out():
    model = built(nn.Sequential(nn.Conv1d(1, 2, 3), nn.MaxPool1d(3, stride=2, padding=1),
                                nn.Flatten(), nn.LazyLinear(2)), (1, 9))
    lowered = lower(model, (1, 9))
    x = torch.randn(64, 1, 9, dtype=torch.float64) - 3  # all negative: a padded 0 would win
    got = forward(lowered.layers, lowered.leaks, x.reshape(64, -1).numpy())
    np.testing.assert_allclose(got, model(x).detach().numpy(), rtol=0, atol=1e-12)


class Maxes(nn.Module):
    """torch.maximum / torch.max / torch.minimum / F.max_pool1d in a user's forward."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.out = nn.Linear(3, 4), nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x):
        h = torch.maximum(self.a(x), self.b(x)) - torch.minimum(self.a(x), torch.zeros(4))
        h = h + torch.max(x.sum(1, keepdim=True), torch.tensor(0.3)) + x.max(x[:, [2, 0, 1]])[
            :, :1]
        h = functional.max_pool1d(h.unsqueeze(1), 2, padding=1).flatten(1)
        return self.out(torch.cat([h, h], 1)[:, :4])


def test_torch_maximum_in_a_custom_forward_lowers_to_its_function():
    model = built(Maxes(), (3,))
    lowered = lower(model, (3,))
    x = torch.randn(200, 3, dtype=torch.float64)
    got = forward(lowered.layers, lowered.leaks, x.numpy())
    np.testing.assert_allclose(got, model(x).detach().numpy(), rtol=0, atol=1e-12)
    assert lowered.max_nodes is not None and (lowered.max_nodes[:, 3] == -1).all()  # pairs


def test_region_keys_keep_only_the_winning_path():
    # one window of 4: nodes 0 = (a0, a1) and 1 = (a2, a3) in layer 0, root 2 in layer 1
    nodes = np.array([[0, 0, 0, 2, 0], [0, 1, 0, 2, 1], [1, 0, 0, -1, -1]])
    widths = [2, 1]
    on = np.array([[1, 0, 1], [1, 1, 1], [0, 1, 0], [0, 0, 0], [1, 1, 0]], dtype=bool)
    keys = region_keys(on, nodes, widths)
    # root on: the a side (node 0) counts, node 1 is two losers; root off: the reverse
    want = [[1, 0, 1], [1, 0, 1], [0, 1, 0], [0, 0, 0], [0, 1, 0]]
    assert keys.astype(int).tolist() == want
    assert on.astype(int).tolist()[1] == [1, 1, 1]  # a copy


def small_max_net(seed=2):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2, 5), nn.ReLU(), nn.Linear(5, 8), nn.Unflatten(1, (1, 8)),
                         nn.MaxPool1d(4, stride=2), nn.Flatten(), nn.ReLU(),
                         nn.Linear(3, 1)).double()


def test_a_lowered_checkpoint_keeps_the_merge(tmp_path):
    model = small_max_net()
    path = checkpoint.save(model, tmp_path / "m.pt")
    config = json.loads(torch.load(path, weights_only=True)["config"])["model"]
    assert config["kind"] == "lowered" and config["max_nodes"] == len(lower(model).max_nodes)
    loaded, _ = checkpoint.load(path)
    assert isinstance(loaded, LoweredNet)
    np.testing.assert_array_equal(lower(loaded).max_nodes, lower(model).max_nodes)
    want, got = count_regions_2d(model), count_regions_2d(loaded)
    assert got.activation_regions == want.activation_regions < got.cells == want.cells


def test_a_checkpoint_with_malformed_max_nodes_is_refused(tmp_path):
    path = checkpoint.save(small_max_net(), tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["max_nodes"][0, 3] = 10**6  # a parent out of range
    torch.save(payload, path)
    with pytest.raises(InputError, match="max nodes are malformed: a parent out of range"):
        checkpoint.load(path)
