"""GmP coordinates for raw-weight training (Chen & Ge, arXiv:2305.15912, Section 3)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..gmp.layers import from_hyperspherical, to_hyperspherical
from .functional import flatten_layers, unflatten_layers


@dataclass
class GmPLayout:
    """Raw training on GmP coordinates (Chen & Ge, Section 3): per unit w = r u(angles),
    b = r lambda.

    Flat per layer: [angles (o, i-1), r (o), lambda (o)]. With one input the direction is the
    sign, which lives in r (``gmp.to_hyperspherical``). A unit with zero weights (the
    construction's constant "bias" neuron) has no direction and lambda = b / r is undefined: it
    keeps its bias as a constant offset b0, so b = r lambda + b0 (b0 = 0 for every other unit).
    """

    shapes: list

    def from_raw(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        parts, offsets = [], []
        for w, b in unflatten_layers(theta, self.shapes):
            r, angles = to_hyperspherical(w)
            dead = r == 0
            safe_r = torch.where(dead, torch.ones_like(r), r)
            lam = torch.where(dead, torch.zeros_like(b), b / safe_r)
            offsets.append(torch.where(dead, b, torch.zeros_like(b)))
            parts += [angles.flatten(1), r, lam]
        return torch.cat(parts, dim=1), torch.cat(offsets, dim=1)

    def to_raw(self, theta: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        layers, at, at_b = [], 0, 0
        for (o, i), _ in self.shapes:
            n_ang = o * (i - 1)
            angles = theta[:, at:at + n_ang].reshape(theta.shape[0], o, i - 1)
            r = theta[:, at + n_ang:at + n_ang + o]
            lam = theta[:, at + n_ang + o:at + n_ang + 2 * o]
            w = r.unsqueeze(-1) if i == 1 else from_hyperspherical(r, angles)
            layers.append((w, r * lam + offsets[:, at_b:at_b + o]))
            at, at_b = at + n_ang + 2 * o, at_b + o
        return flatten_layers(layers)
