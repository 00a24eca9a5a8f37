"""ConstructionNet.build shows Construction's keywords and passes each one on."""

import inspect

import pytest
import torch

from relu_regions.nets.construction import Construction
from relu_regions.nets.parametrize import ConstructionNet


def test_build_has_the_constructions_signature():
    build = inspect.signature(ConstructionNet.build).parameters
    init = dict(inspect.signature(Construction.__init__).parameters)
    init.pop("self")
    assert list(build) == list(init)
    for name, p in init.items():  # same kinds and defaults: nothing hidden behind **kwargs
        assert (build[name].kind, build[name].default) == (p.kind, p.default), name
    assert all(p.kind is not p.VAR_KEYWORD for p in build.values())


def test_build_passes_every_argument_on():
    kwargs = dict(peaks=[0.3, 0.6, 0.4], thm31=False, scales=[0.5, 0.2, 0.05], c0=0.25,
                  c1=-1.5, interval=(-2.0, 3.0), concave=True, margin=0.1,
                  dtype=torch.float32)
    built, direct = ConstructionNet.build(3, **kwargs), Construction(3, **kwargs)
    assert built.construction.config() == direct.config()
    ours, theirs = built.construction.state_dict(), direct.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) and ours[k].dtype == torch.float32 for k in ours)
    thm31 = ConstructionNet.build(2, 0.3, s0=0.7).construction  # peaks also by position
    assert thm31.scales()[0].item() == pytest.approx(0.7, rel=1e-12)
    assert torch.allclose(thm31.peaks(), torch.full((3,), 0.3, dtype=torch.float64))
