"""A ConstructionNet survives pickle, torch.save / torch.load and deepcopy as the same function."""

import copy
import io
import pickle

import torch
from torch import nn

from relu_regions.nets.parametrize import ConstructionNet

X = torch.linspace(-0.25, 1.25, 301, dtype=torch.float64).unsqueeze(1)


def _net():
    net = ConstructionNet.build(5, peaks=[0.3, 0.42, 0.6, 0.7, 0.35, 0.55], c0=0.1, c1=-0.4)
    with torch.no_grad():  # away from the defaults, as after phase 1
        net.construction.log_s0 += 0.3
        net.construction.peak_logits[2] -= 0.5
    net.construction.c0.requires_grad_(False)
    return net


def _torch_round_trip(net):
    buffer = io.BytesIO()
    torch.save(net, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def test_pickle_and_torch_save_give_the_same_function_and_state():
    net = _net().eval()
    for loaded in (pickle.loads(pickle.dumps(net)), _torch_round_trip(net)):
        assert type(loaded) is ConstructionNet and not loaded.training
        assert (loaded(X) - net(X)).abs().max() < 1e-12
        assert (loaded.derived(X) - net(X)).abs().max() < 1e-12
        ours, theirs = net.state_dict(), loaded.state_dict()
        assert list(ours) == list(theirs)  # the frozen tensors under the parametrizations too
        assert all(torch.equal(ours[k], theirs[k]) for k in ours)
        assert [p.requires_grad for p in loaded.parameters()] == [
            p.requires_grad for p in net.parameters()]


def test_a_loaded_net_reads_its_own_construction():
    net = _net()
    loaded = pickle.loads(pickle.dumps(net))
    loaded(X).sum().backward()
    assert loaded.construction.c1.grad is not None and net.construction.c1.grad is None
    with torch.no_grad():
        loaded.construction.c1 += 1.0
    assert (loaded(X) - net(X)).abs().max() > 0.5  # the layers follow the loaded construction
    assert (loaded(X) - loaded.derived(X)).abs().max() < 1e-12


def test_a_net_inside_a_model_pickles_and_unpickling_leaves_the_rng_alone():
    model = nn.Sequential(_net(), nn.ReLU())
    data = pickle.dumps(model)
    state = torch.get_rng_state()
    loaded = pickle.loads(data)
    assert torch.equal(torch.get_rng_state(), state)
    assert (loaded(X) - model(X)).abs().max() < 1e-12


def test_deepcopy_is_an_independent_net():
    net = _net()
    twin = copy.deepcopy(net)
    assert (twin(X) - net(X)).abs().max() < 1e-12
    with torch.no_grad():
        twin.construction.c0 += 1.0
    assert (twin(X) - net(X) - 1.0).abs().max() < 1e-12
