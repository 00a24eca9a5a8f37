"""Seeded random Linear/ReLU nets for the counters' tests."""

import torch
from torch import nn


def random_net(widths, seed, n_in=2, outputs=1, leak=0.0):
    """Hidden layers of ``widths``, ``outputs`` outputs; Gaussian weights (variance 2 / fan-in),
    uniform biases in [-0.8, 0.8] (nonzero: lines in general position), float64, from a seeded
    generator; ``leak`` > 0: LeakyReLU."""
    g = torch.Generator().manual_seed(seed)
    mods, prev = [], n_in
    for i, w in enumerate(list(widths) + [outputs]):
        lin = nn.Linear(prev, w, dtype=torch.float64)
        with torch.no_grad():
            lin.weight.copy_(torch.randn(w, prev, generator=g, dtype=torch.float64)
                             * (2.0 / prev) ** 0.5)
            lin.bias.copy_(torch.rand(w, generator=g, dtype=torch.float64) * 1.6 - 0.8)
        mods.append(lin)
        if i < len(widths):
            mods.append(nn.LeakyReLU(leak) if leak else nn.ReLU())
        prev = w
    return nn.Sequential(*mods)
