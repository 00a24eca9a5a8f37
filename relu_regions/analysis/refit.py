"""The exact L2 refit of the weights a fixed-weight net sums its corrections with: the
accumulator unit of the Yarotsky-style nets of :mod:`relu_regions.nets.yarotsky`
(arXiv:1610.01145), a linear least-squares problem integrated exactly over the net's pieces."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike

from ..errors import InputError
from ..nets.yarotsky import OFFSET
from ..validation import check_int, check_interval
from .limits import gauss_points, net_l2_mse
from .regions import count_regions


@dataclass
class Refit:
    """``net`` with the refit accumulator (or the input net if the refit was not better);
    ``mse_before`` / ``mse_after``: (1/L) integral (f - net)^2, exact on the net's pieces."""

    net: torch.nn.Sequential
    mse_before: float
    mse_after: float
    features: int


def refit_accumulator(net: torch.nn.Sequential, f: Callable[[np.ndarray], ArrayLike], *,
                      unit: int, first: int, interval: Sequence[float] = (0.0, 1.0),
                      order: int = 8) -> Refit:
    """Refit every weight that feeds an accumulator, by least squares in L2 over ``interval``.

    The constructions above sum their corrections in one unit ``unit`` that carries itself
    (weight 1) from hidden layer ``first`` (0-based) to the output, and stays positive, so its
    ReLU is the identity. The output is then *linear* in the weights into that unit (the whole
    row at layer ``first``, the other units' weights at later layers, the output row) and in the
    output bias: a linear least-squares problem over the activations that feed it. Every unit
    is affine between the net's breakpoints (the exact counter's switch points of every neuron),
    so ``order`` Gauss-Legendre points per piece integrate (f - net)^2 exactly when f is a
    polynomial of degree <= order - 1. The carried weights stay 1, the accumulator's offset is
    chosen so that every partial sum stays positive on the interval (checked at the
    breakpoints, where the partial sums' minima are), and the refit is kept only if its exact
    error is not above the input's: the input weights are one point of the family, so only
    rounding could make it worse.
    """
    lo, hi = check_interval(interval)
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    depth = len(linears) - 1
    first = check_int(first, "first", low=0, high=depth - 1)
    width = linears[first].out_features
    unit = check_int(unit, "unit", low=0, high=width - 1)
    order = check_int(order, "order", low=1)
    if linears[-1].out_features != 1 or linears[0].in_features != 1:
        raise InputError("refit_accumulator needs a net with one input and one output")
    if any(lin.out_features != width for lin in linears[first:-1]):
        raise InputError(f"the hidden layers from {first} on must all have {width} units")
    mse_before = net_l2_mse(net, f, (lo, hi))[0]
    nodes = np.concatenate([[lo], count_regions(net, lo, hi).breakpoints, [hi]])
    gx, gw = (a.ravel() for a in gauss_points(nodes, order)[:2])
    others = [k for k in range(width) if k != unit]

    def features(points):
        """[activations feeding the accumulator at layer first, first+1, ..., the output]."""
        blocks = []
        hid = torch.tensor(points, dtype=torch.float64).unsqueeze(-1)
        with torch.no_grad():
            for layer, lin in enumerate(linears):
                if layer == first:
                    blocks.append(hid)
                elif layer > first:
                    blocks.append(hid[:, others])
                if layer < depth:
                    hid = torch.relu(lin(hid.to(lin.weight.dtype)).double())
        return [b.numpy() for b in blocks]

    blocks = features(gx)
    phi = np.concatenate(blocks + [np.ones((gx.size, 1))], axis=1)
    target = np.asarray(f(gx), dtype=np.float64)
    sw = np.sqrt(gw)
    scale = np.sqrt(np.sum(gw[:, None] * phi**2, axis=0))
    scale[scale == 0] = 1.0
    coef = np.linalg.lstsq(phi * sw[:, None] / scale, sw * target, rcond=None)[0]
    coef = coef / scale
    sizes = [b.shape[1] for b in blocks]
    cuts = np.cumsum(sizes)[:-1]
    parts, const = np.split(coef[:-1], cuts), float(coef[-1])
    # the offset: every partial sum (hidden layers first..depth-1) >= 0 at the breakpoints
    node_blocks = features(nodes)
    partial = np.zeros(nodes.size)
    low = 0.0
    for block, c in zip(node_blocks[:-1], parts[:-1], strict=True):
        partial = partial + block @ c
        low = min(low, float(partial.min()))
    offset = OFFSET - low
    out = copy.deepcopy(net)
    out_linears = [m for m in out if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for layer, c in zip(range(first, depth + 1), parts, strict=True):
            lin = out_linears[layer]
            row = 0 if layer == depth else unit
            if layer == first:
                lin.weight[row] = torch.tensor(c)
                lin.bias[row] = offset
            else:
                lin.weight[row, others] = torch.tensor(c, dtype=lin.weight.dtype)
                lin.weight[row, unit] = 1.0
                lin.bias[row] = const - offset if layer == depth else 0.0
    mse_after = net_l2_mse(out, f, (lo, hi))[0]
    if not mse_after <= mse_before:
        return Refit(net, mse_before, mse_before, phi.shape[1])
    return Refit(out, mse_before, mse_after, phi.shape[1])
