"""A block-diagonal sparse linear layer initialized from the construction (arXiv:2311.18022,
"Extensions the paper reports": a sparse, block-diagonal layer with blocks of 4 as a drop-in for a
dense layer, used as a replacement classifier head).

``BlockDiagonalLinear(in, out, block=4)`` behaves like ``nn.Linear(in, out)`` whose weight matrix
is zero outside ``n_blocks = in / block`` diagonal blocks, each of shape
``(out / n_blocks, block)``. Only the blocks are stored and trained, so the off-block entries stay
zero (structurally: they are not parameters, and no gradient reaches them).

How we read "built from the construction" (the paper's text on this extension is one sentence; the
reading is ours). The width-4 realization (arXiv:2311.18022, the width-4 realization; README) maps
the hidden neurons (sum, t1, t2, bias) of layer k to those of layer k + 1 with one 4x4 matrix that
depends on the peaks a_k, a_{k+1} and the scale ratio S = s_{k+1} / s_k, and zero biases:

    sum:  [1, -sign/a_k, sign/(a_k(1-a_k)), 0]
    t1:   [0, S/a_k, -S/(a_k(1-a_k)), 0]
    t2:   [0, S/a_k, -S/(a_k(1-a_k)), -S a_{k+1}]
    bias: [0, 0, 0, S]

Every 4x4 block of a construction-initialized layer is such a matrix, with its own peaks per
block. A chain of L such layers (ReLU between) whose peaks are passed on (block j of layer l+1
reads with the peak that block j of layer l thresholded with) is, per block, L consecutive hidden
layers of one width-4 construction: if block j's four inputs are the construction's first hidden
layer on a scalar u_j in [0, 1] (sum = C + c1 u_j, t1 = s_0 u_j, t2 = relu(s_0 u_j - s_0 a_0),
bias = s_0), block j's four outputs after the chain are hidden layer L of that construction, and
``construction.raw_weights`` reads F_j(u_j) off them (tested to 1e-12 against ``derived_forward``).
The ratios follow Theorem 3.1 (S_k = (1 - a_{k+1}) a_{k+2}), so a chain of L layers uses L + 2
peaks per block. On any other inputs the blocks are simply an initialization whose rows are those
of a construction layer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ..errors import InputError
from ..nets import construction
from ..validation import check_int
from .reader import Affine
from .shapes import PEAK_RANGE


def _check_size(name: str, value) -> int:
    return check_int(value, name, low=1)


def block_shape(in_features: int, out_features: int, block: int) -> tuple[int, int, int]:
    """(n_blocks, block_out, block_in) for a layer, or InputError when the sizes do not divide."""
    in_features = _check_size("in_features", in_features)
    out_features = _check_size("out_features", out_features)
    block = _check_size("block", block)
    if in_features % block:
        raise InputError(f"in_features={in_features} is not divisible by block={block}; "
                         f"in_features must be a multiple of the block size")
    n_blocks = in_features // block
    if out_features % n_blocks:
        raise InputError(f"out_features={out_features} is not divisible by the number of blocks "
                         f"{n_blocks} (= in_features / block = {in_features} / {block}); "
                         f"out_features must be a multiple of {n_blocks}")
    return n_blocks, out_features // n_blocks, block


class BlockDiagonalLinear(nn.Module):
    """Drop-in for ``nn.Linear(in_features, out_features)`` with a block-diagonal weight.

    The inputs are split into ``n_blocks = in_features / block`` consecutive groups of ``block``
    features; group j feeds only outputs ``j*block_out .. (j+1)*block_out - 1`` with
    ``block_out = out_features / n_blocks`` (both divisions must be exact). With
    ``in_features == out_features`` the blocks are square, ``block x block``.

    Parameters: ``weight`` of shape ``(n_blocks, block_out, block)``, ``bias`` of shape
    ``(out_features,)`` (or None). Default initialization is PyTorch's ``nn.Linear`` rule with the
    true fan-in of every unit, ``block``: weight and bias ~ U(-1/sqrt(block), 1/sqrt(block)).
    ``generator`` seeds it (a ``torch.Generator``; None uses PyTorch's global stream like
    ``nn.Linear``).
    """

    def __init__(self, in_features: int, out_features: int, block: int = 4, bias: bool = True,
                 device=None, dtype=None, *, generator: torch.Generator | None = None):
        super().__init__()
        n_blocks, block_out, block_in = block_shape(in_features, out_features, block)
        self.in_features, self.out_features = in_features, out_features
        self.n_blocks, self.block_out, self.block_in = n_blocks, block_out, block_in
        opts = dict(device=device, dtype=dtype)
        self.weight = nn.Parameter(torch.empty(n_blocks, block_out, block_in, **opts))
        self.bias = nn.Parameter(torch.empty(out_features, **opts)) if bias else None
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """nn.Linear's default (U(-1/sqrt(fan_in), 1/sqrt(fan_in))) with fan_in = block."""
        bound = 1 / math.sqrt(self.block_in)
        self.weight.uniform_(-bound, bound, generator=generator)
        if self.bias is not None:
            self.bias.uniform_(-bound, bound, generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1:] != (self.in_features,):
            raise InputError(f"expected input of shape (..., {self.in_features}), "
                             f"got {tuple(x.shape)}")
        xb = x.reshape(*x.shape[:-1], self.n_blocks, self.block_in)
        y = torch.einsum("...ni,noi->...no", xb, self.weight).reshape(*x.shape[:-1],
                                                                    self.out_features)
        return y if self.bias is None else y + self.bias

    # -- conversions ------------------------------------------------------------------------
    def dense_weight(self) -> torch.Tensor:
        """The full (out_features, in_features) matrix: the blocks on the diagonal, zeros elsewhere.

        Differentiable in ``weight`` (built with ``torch.block_diag``).
        """
        return torch.block_diag(*self.weight.unbind(0))

    def region_ops(self) -> list[Affine]:
        """Its dense map, as the region counters read it."""
        return [Affine(self.dense_weight().detach(), self.bias)]

    @torch.no_grad()
    def to_dense(self) -> nn.Linear:
        """An ``nn.Linear`` computing the same function (a copy; it does not share storage)."""
        w = self.weight
        # Built on the meta device, then allocated: no draw from PyTorch's global random stream.
        lin = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                        device="meta", dtype=w.dtype).to_empty(device=w.device)
        lin.weight.copy_(self.dense_weight())
        if self.bias is not None:
            lin.bias.copy_(self.bias)
        return lin

    @classmethod
    @torch.no_grad()
    def from_dense(cls, linear: nn.Linear, block: int = 4) -> BlockDiagonalLinear:
        """Keep the diagonal blocks of ``linear``'s weight (and its bias); drop the rest.

        Exact inverse of :meth:`to_dense` for a weight that is already block-diagonal.
        """
        if not isinstance(linear, nn.Linear):
            raise InputError(f"from_dense needs an nn.Linear, got {type(linear).__name__}")
        w = linear.weight
        layer = cls(linear.in_features, linear.out_features, block=block,
                    bias=linear.bias is not None, device="meta", dtype=w.dtype
                    ).to_empty(device=w.device)
        n, bo, bi = layer.n_blocks, layer.block_out, layer.block_in
        # (out, in) -> (n, bo, n, bi); the diagonal pairs (j, j) are the blocks.
        layer.weight.copy_(w.reshape(n, bo, n, bi).diagonal(dim1=0, dim2=2).permute(2, 0, 1))
        if linear.bias is not None:
            layer.bias.copy_(linear.bias)
        return layer

    # -- cost ---------------------------------------------------------------------------------
    @property
    def n_params(self) -> int:
        """Trainable numbers: n_blocks * block_out * block (+ out_features for the bias)."""
        return self.weight.numel() + (self.bias.numel() if self.bias is not None else 0)

    @property
    def dense_n_params(self) -> int:
        """The same for ``nn.Linear(in_features, out_features)``."""
        return self.in_features * self.out_features + (self.out_features if self.bias is not None
                                                       else 0)

    def flops(self, batch: int = 1) -> int:
        """Multiply-adds of a forward pass on ``batch`` rows: one per stored weight per row.

        Counted as multiply-accumulates (a multiply and an add = 1); the bias add (out_features
        per row, the same for the dense layer) is not counted, nor are reshapes.
        """
        return _check_size("batch", batch) * self.weight.numel()

    def dense_flops(self, batch: int = 1) -> int:
        """The same count for ``nn.Linear(in_features, out_features)``: batch * in * out."""
        return _check_size("batch", batch) * self.in_features * self.out_features

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"n_blocks={self.n_blocks}, block=({self.block_out}, {self.block_in}), "
                f"bias={self.bias is not None}")


# ---------------------------------------------------------------------------------------------
# Initializations

def construction_blocks(peaks: torch.Tensor, next_peaks: torch.Tensor, ratio: torch.Tensor,
                        sign: torch.Tensor | float = 1.0) -> torch.Tensor:
    """The construction's hidden-to-hidden 4x4 matrices (arXiv:2311.18022, the width-4
    realization; README).

    Rows and columns are ordered (sum, t1, t2, bias). ``peaks`` a_k, ``next_peaks`` a_{k+1},
    ``ratio`` S = s_{k+1}/s_k and ``sign`` (+1: the sum neuron subtracts s_k W_k, convex; -1 adds
    it) broadcast to one shape B (numbers are fine; float64 unless a tensor is given);
    returns (*B, 4, 4): ``construction.hidden_matrix``, the rows ``construction.raw_weights`` uses.
    """
    like = next((v for v in (peaks, next_peaks, ratio) if torch.is_tensor(v)), None)
    opts = (dict(dtype=like.dtype, device=like.device) if like is not None
            else dict(dtype=torch.float64))
    a, a_next, S = torch.broadcast_tensors(*(torch.as_tensor(v, **opts)
                                             for v in (peaks, next_peaks, ratio)))
    sign = torch.as_tensor(sign, dtype=a.dtype, device=a.device).expand_as(a)
    return construction.hidden_matrix(a, a_next, S, sign)


def _random_peaks(shape, generator, like: torch.Tensor, low: float, high: float) -> torch.Tensor:
    if not 0 < low <= high < 1:
        raise InputError(f"peak range must satisfy 0 < low <= high < 1, got ({low}, {high})")
    u = torch.rand(shape, generator=generator, dtype=like.dtype, device=like.device)
    return low + (high - low) * u


def _check_square4(layer) -> None:
    if not isinstance(layer, BlockDiagonalLinear):
        raise InputError(f"expected a BlockDiagonalLinear, got {type(layer).__name__}")
    if (layer.block_out, layer.block_in) != (4, 4):
        raise InputError(f"construction init needs 4x4 blocks (the width-4 construction), got "
                         f"blocks of {layer.block_out}x{layer.block_in}; use block=4 and "
                         f"in_features == out_features")


def _as_peaks(value, n_blocks: int, n: int, like: torch.Tensor, name: str) -> torch.Tensor:
    """User peaks -> (n_blocks, n) tensor, each strictly inside (0, 1)."""
    t = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    try:
        t = t.expand(n_blocks, n) if t.dim() < 2 else t
    except RuntimeError:
        t = None
    if t is None or t.shape != (n_blocks, n):
        raise InputError(f"{name} must broadcast to (n_blocks, {n}) = ({n_blocks}, {n}), "
                         f"got shape {tuple(torch.as_tensor(value).shape)}")
    if not torch.all((t > 0) & (t < 1)):
        raise InputError(f"{name} must lie strictly inside (0, 1), got values in "
                         f"[{t.min().item():g}, {t.max().item():g}]")
    return t.clone()


def _check_sign(sign) -> float:
    if sign not in (1, -1, 1.0, -1.0) or isinstance(sign, bool):
        raise InputError(f"sign must be +1 (convex) or -1 (concave), got {sign!r}")
    return float(sign)


@torch.no_grad()
def construction_chain_init_(layers: Sequence[BlockDiagonalLinear],
                             generator: torch.Generator | None = None, *,
                             peaks: torch.Tensor | float | None = None, sign: float = 1.0,
                             peak_range: tuple[float, float] = PEAK_RANGE) -> torch.Tensor:
    """Initialize a chain of 4x4-block layers as consecutive construction layers per block.

    Layer k's block j gets ``construction_blocks(a_k, a_{k+1}, S_k)`` with block j's own peaks and
    the Theorem 3.1 ratio S_k = (1 - a_{k+1}) a_{k+2}; biases are zero (all hidden-to-hidden biases
    of the width-4 realization are). ``peaks`` is (n_blocks, len(layers) + 2) or broadcastable to
    it; by default peaks are drawn uniform on ``peak_range`` from ``generator``. Returns the peaks
    used, so the chain can be compared with (or continued as) a construction.
    """
    layers = list(layers)
    if not layers:
        raise InputError("construction_chain_init_ needs at least one layer")
    for layer in layers:
        _check_square4(layer)
    n_blocks = layers[0].n_blocks
    if any(layer.n_blocks != n_blocks for layer in layers):
        raise InputError(f"all layers of a chain need the same number of blocks, got "
                         f"{[layer.n_blocks for layer in layers]}")
    sign = _check_sign(sign)
    like = layers[0].weight
    n = len(layers) + 2
    if peaks is None:
        low, high = peak_range
        a = _random_peaks((n_blocks, n), generator, like, low, high)
    else:
        a = _as_peaks(peaks, n_blocks, n, like, "peaks")
    for k, layer in enumerate(layers):
        ratio = (1 - a[:, k + 1]) * a[:, k + 2]  # Theorem 3.1
        layer.weight.copy_(construction_blocks(a[:, k], a[:, k + 1], ratio, sign))
        if layer.bias is not None:
            layer.bias.zero_()
    return a


def construction_init_(layer: BlockDiagonalLinear, generator: torch.Generator | None = None, *,
                       peaks: torch.Tensor | float | None = None, sign: float = 1.0,
                       peak_range: tuple[float, float] = PEAK_RANGE) -> torch.Tensor:
    """One layer: every 4x4 block = a construction hidden-to-hidden matrix with random peaks.

    Block j uses peaks (a_j, a'_j) and the Theorem 3.1 ratio S_j = (1 - a'_j) a''_j, i.e. three
    peaks per block (``peaks`` of shape (n_blocks, 3), drawn uniform on ``peak_range`` when None).
    Same as :func:`construction_chain_init_` with a chain of one layer; returns the peaks.
    """
    return construction_chain_init_([layer], generator, peaks=peaks, sign=sign,
                                    peak_range=peak_range)


@torch.no_grad()
def kaiming_init_(layer: BlockDiagonalLinear, generator: torch.Generator | None = None
                  ) -> BlockDiagonalLinear:
    """He et al. 2015 (arXiv:1502.01852) with the unit's true fan-in: W ~ N(0, 2 / block), b = 0
    (as mlp.kaiming_)."""
    if not isinstance(layer, BlockDiagonalLinear):
        raise InputError(f"expected a BlockDiagonalLinear, got {type(layer).__name__}")
    std = math.sqrt(2.0 / layer.block_in)
    layer.weight.normal_(0.0, std, generator=generator)
    if layer.bias is not None:
        layer.bias.zero_()
    return layer
