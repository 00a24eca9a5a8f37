"""The batched functional MLP: all seeds' Linear/ReLU stacks as one flat matrix Theta (N, P).

Every phase trains Theta of shape (seeds, P): one flat parameter vector per seed, mapped to
predictions by batched tensor operations over all seeds at once (stacked weights, ``bmm``). Here:
the flat layout, the forward pass, the per-point Jacobian by back-propagation, the plain
``nn.Sequential`` of one row, and the random (Kaiming / RAAI) rows of the baselines.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from ..nets.mlp import kaiming_, raai_
from ..nets.parametrize import linear_relu_stack

if TYPE_CHECKING:
    from ..nets.composite import RawLayers

# [(W shape (o, i), b shape (o,))] per Linear layer
LayerShapes = list[tuple[tuple[int, int], tuple[int]]]


def raw_shapes(depth: int, width: int = 4) -> LayerShapes:
    return shapes_of([1] + [width] * depth + [1])


def shapes_of(widths: Sequence[int]) -> LayerShapes:
    """[(W shape, b shape)] of the Linear layers of an MLP with these widths."""
    return [((o, i), (o,)) for i, o in zip(widths[:-1], widths[1:], strict=True)]


def flatten_layers(layers: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """[(W (N,o,i), b (N,o)), ...] -> Theta (N, P)."""
    n = layers[0][0].shape[0]
    return torch.cat([t.reshape(n, -1) for wb in layers for t in wb], dim=1)


def unflatten_layers(theta: torch.Tensor, shapes: LayerShapes) -> RawLayers:
    """Theta (..., P) -> [(W (..., o, i), b (..., o)), ...]."""
    out, at = [], 0
    lead = theta.shape[:-1]
    for ws, bs in shapes:
        nw, nb = math.prod(ws), math.prod(bs)
        w = theta[..., at:at + nw].reshape(*lead, *ws)
        b = theta[..., at + nw:at + nw + nb].reshape(*lead, *bs)
        out.append((w, b))
        at += nw + nb
    return out


def mlp_forward(layers: RawLayers, x: torch.Tensor, masks: list | None = None) -> torch.Tensor:
    """All seeds' Linear/ReLU stacks on points x (n,) or (n, k): layers [(W (N,o,i), b (N,o))]
    -> (N, n); ``masks``, a list, receives every hidden layer's z > 0 (N, width, n).

    Points run along the last axis (activations (N, width, n)), so each hidden layer is one
    batched (o x i) @ (i x n) product: several times faster than (n x i) @ (i x o) for width 4.
    """
    h = _first_layer(layers[0], x)
    for w, b in layers[1:]:
        if masks is not None:
            masks.append(h > 0)
        h.relu_()  # in place: h is this pass's own
        if w.shape[1] == 1 and w.shape[2] > 4:
            # MKL's batched kernel for one output row of more than 4 inputs rounds a row by the
            # batch around it (width 8: in about 1 in 5 rows of odd point counts; width 4 and
            # square layers: never, in thousands of trials), so a fixed-order sum there.
            h = b.unsqueeze(-1) + _small_matmul(w, h)
        else:
            h = torch.baddbmm(b.unsqueeze(-1), w, h)
    return h.squeeze(1)


def _inputs(x):
    """Points x (n,) or (n, k) as (1, k, n): inputs along the second axis, points last."""
    return x.reshape(x.shape[0], -1).T.unsqueeze(0)


def _first_layer(layer, x):
    """z_1 = W_1 x + b_1 (N, o, n), elementwise per input (a product with the input broadcast
    over seeds would be folded into one matrix product across seeds, and a seed's gradient would
    then depend on its batch neighbours)."""
    w, b = layer
    inputs = _inputs(x)
    z = b.unsqueeze(-1) + w[:, :, :1] * inputs[:, :1]
    for m in range(1, inputs.shape[1]):
        z = z + w[:, :, m:m + 1] * inputs[:, m:m + 1]
    return z


def _small_matmul(w, h):
    """w @ h for (N, o, i) @ (N, i, m) as a sum of i elementwise products, in a fixed order: a
    batched matrix product of few columns picks its kernel by size, so a seed's result would
    depend on how many columns (runs) its batch neighbours need."""
    out = w[:, :, :1] * h[:, :1]
    for m in range(1, w.shape[2]):
        out = out + w[:, :, m:m + 1] * h[:, m:m + 1]
    return out


def _hidden_masks(layers, x):
    """Activations (N, width, n) of the input and every hidden layer, and the masks z > 0."""
    hs = [_inputs(x).expand(layers[0][0].shape[0], -1, -1)]
    masks = []
    for k, (w, b) in enumerate(layers[:-1]):
        z = _first_layer(layers[0], x) if k == 0 else torch.baddbmm(b.unsqueeze(-1), w, hs[-1])
        masks.append(z > 0)
        hs.append(z.relu_())
    return hs, masks


def _deltas(layers, masks, matmul=torch.bmm):
    """delta_k = d out / d z_k (N, o, n) per layer: delta_L = 1, (W_{k+1}' delta_{k+1}) * mask_k.

    ``matmul``: :func:`_small_matmul` where n counts runs, not points (its docstring says why)."""
    w_last = layers[-1][0]
    delta = torch.ones(w_last.shape[0], 1, masks[0].shape[-1] if masks else 1,
                       dtype=w_last.dtype, device=w_last.device)
    out = [delta]
    for k in range(len(layers) - 1, 0, -1):
        delta = matmul(layers[k][0].transpose(1, 2), delta) * masks[k - 1]
        out.append(delta)
    return out[::-1]


def _jacobian_rows(layers, hs, deltas, bias_factor):
    """Rows [delta_k (x) h_{k-1}, bias_factor * delta_k] over all layers, as (N, P, m).

    ``hs``/``deltas``: per point (or per run row) inputs (N, i, m) and deltas (N, o, m) of each
    layer; ``bias_factor`` (N or 1, 1, m). Elementwise only: a seed's rows do not depend on m.
    """
    n_seeds, m = hs[0].shape[0], hs[-1].shape[-1]
    sizes = [w.shape[1] * (w.shape[2] + 1) for w, _ in layers]
    out = hs[-1].new_empty(n_seeds, sum(sizes), m)
    at = 0
    for (w, _), h, delta, size in zip(layers, hs, deltas, sizes, strict=True):
        o, i = w.shape[1:]
        block = out[:, at:at + o * i].view(n_seeds, o, i, m)
        torch.mul(delta.unsqueeze(2), h.unsqueeze(1), out=block)
        torch.mul(delta, bias_factor, out=out[:, at + o * i:at + size])
        at += size
    return out


def mlp_jacobian(layers: RawLayers, x: torch.Tensor) -> torch.Tensor:
    """d output / d Theta, (N, n, P), in ``flatten_layers`` order, by back-propagation per point.

    With h_k the activations and delta_k = d out / d z_k: d out / d W_k = delta_k h_{k-1}^T and
    d out / d b_k = delta_k, where delta_L = 1 and delta_k = (W_{k+1}^T delta_{k+1}) * [z_k > 0].
    """
    hs, masks = _hidden_masks(layers, x)
    ones = torch.ones(1, 1, x.shape[0], dtype=x.dtype, device=x.device)
    return _jacobian_rows(layers, hs, _deltas(layers, masks), ones).transpose(1, 2)


def to_module(theta: torch.Tensor, shapes: LayerShapes,
              widths: Sequence[int]) -> torch.nn.Sequential:
    """One row of Theta as the plain nn.Sequential of ``widths`` (float64)."""
    # built on the meta device: nn.Linear's own initialization would cost more than the copy
    net = linear_relu_stack(widths, device="meta").to_empty(device="cpu")
    with torch.no_grad():
        for (w, b), layer in zip(unflatten_layers(theta, shapes), net[::2], strict=True):
            layer.weight.copy_(w)
            layer.bias.copy_(b)
    return net


def random_theta(method: str, seeds: Sequence[int], widths: Sequence[int],
                 box: Sequence[Sequence[float]]) -> torch.Tensor:
    """Kaiming / RAAI raw weights per seed (torch.Generator per seed). Each input is mapped to
    [0, 1] by folding (x_m - lo_m)/(hi_m - lo_m) into the first layer, as the construction does."""
    init = kaiming_ if method == "kaiming" else raai_
    lo = torch.tensor([b[0] for b in box], dtype=torch.float64)
    length = torch.tensor([b[1] - b[0] for b in box], dtype=torch.float64)
    rows = []
    for s in seeds:
        net = init(linear_relu_stack(widths), torch.Generator().manual_seed(int(s)))
        with torch.no_grad():
            w0, b0 = net[0].weight, net[0].bias
            b0 -= w0 @ (lo / length)
            w0 /= length
        rows.append(torch.cat([p.detach().reshape(-1) for p in net.parameters()]))
    return torch.stack(rows)
