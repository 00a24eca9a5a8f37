"""Plain ReLU MLPs and the baseline initializations (arXiv:2311.18022, Table 1 rows 1-2)."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..validation import check_int
from .construction import check_depth
from .parametrize import linear_relu_stack

RAAI_SIGMA = 0.6007  # Lu, Shin, Su & Karniadakis 2020 (arXiv:1903.06733), as we read it


def mlp(width: int, depth: int, in_features: int = 1, out_features: int = 1,
        dtype: torch.dtype = torch.float64,
        device: str | torch.device = "cpu") -> nn.Sequential:
    """Linear/ReLU stack with ``depth`` hidden layers of ``width`` units (PyTorch default init)."""
    depth = check_depth(depth)
    for name, v in (("width", width), ("in_features", in_features), ("out_features", out_features)):
        check_int(v, name, low=1)
    widths = [in_features] + [width] * depth + [out_features]
    return linear_relu_stack(widths, dtype, device)


def linears(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


@torch.no_grad()
def kaiming_(model: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """He et al. 2015 (arXiv:1502.01852): W ~ N(0, 2 / fan_in), b = 0 (Table 1's "kaiming")."""
    for layer in linears(model):
        nn.init.kaiming_normal_(layer.weight, nonlinearity="relu", generator=generator)
        if layer.bias is not None:
            layer.bias.zero_()
    return model


@torch.no_grad()
def raai_(model: nn.Module, generator: torch.Generator | None = None,
          sigma: float = RAAI_SIGMA) -> nn.Module:
    """Randomized asymmetric initialization (Lu, Shin, Su & Karniadakis 2020, arXiv:1903.06733),
    as we read it.

    V ~ N(0, sigma^2 / fan_in) of shape (fan_out, fan_in + 1); in every row one entry, chosen
    uniformly, is redrawn from Beta(2, 1) (inverse CDF: sqrt(U)); W = V[:, :-1], b = V[:, -1].
    """
    for layer in linears(model):
        fan_out, fan_in = layer.weight.shape
        opts = dict(dtype=layer.weight.dtype, device=layer.weight.device)
        v = (torch.randn(fan_out, fan_in + 1, generator=generator, **opts)
             * (sigma / math.sqrt(fan_in)))
        col = torch.randint(fan_in + 1, (fan_out,), generator=generator, device=opts["device"])
        v[torch.arange(fan_out), col] = torch.rand(fan_out, generator=generator, **opts).sqrt()
        layer.weight.copy_(v[:, :-1])
        if layer.bias is not None:
            layer.bias.copy_(v[:, -1])
    return model
