"""Linear maps kept as the ops that compute them (conv, BatchNorm, average pooling, padding,
reshapes), for layers whose dense matrix would not fit: a 16-channel 3x3 conv on a 3x32x32 input
is a 16,384 x 3,072 matrix (400 MB), the next conv's 16,384 x 16,384 (2 GB).

An :class:`AffineOperator` is the weight W of a lowered layer ``(W, b)``: the bias stays ``b``,
as for a dense layer. It maps rows of carried values through torch's own ops in float64,
batched (``apply``: rows of H W^T), and through the same chain with every kernel and scale
replaced by its absolute value (``apply_abs``), which bounds |W| |h| entry by entry: for a chain
W = W_k ... W_1, |W| <= |W_k| ... |W_1| (the triangle inequality), so ``apply_abs(|H|)`` is an
upper bound of |W| |H| and may exceed it where the chain's terms cancel. The counters' zero-snap
(|z| <= zero_tol (|W| |h| + |b|), docs/regions2d.md) needs only such a bound.

The steps are plain data (numpy arrays, ints, tuples), so an operator pickles to worker
processes as it is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch.nn import functional

from ..errors import InputError

# Dense entries above which the lowering keeps a stage as an operator (lower(operators=None)):
# 2^22 float64 entries are 32 MB.
DENSE_ENTRIES = 1 << 22
# Floats per batch of rows pushed through an operator (the widest of its steps): 8 MB. A tiled
# count reserves five such arrays per tile (tiles.MemoryModel), so a smaller batch leaves more of
# the budget to cells; 32 MB batches were no faster on a CIFAR-size conv (docs/benchmarks.md).
BATCH_FLOATS = 1 << 20

_CONV = {1: functional.conv1d, 2: functional.conv2d, 3: functional.conv3d}
_AVG = {1: functional.avg_pool1d, 2: functional.avg_pool2d, 3: functional.avg_pool3d}
_ADAPTIVE = {1: functional.adaptive_avg_pool1d, 2: functional.adaptive_avg_pool2d,
             3: functional.adaptive_avg_pool3d}


class AffineOperator:
    """The linear part W (out, in) of a lowered layer, as a chain of ops on one sample's shape.

    ``steps``: a list of dicts, each with an ``"op"`` and its fields:

    * ``conv``: ``weight`` (float64 array), ``stride``, ``padding`` (ints or "same"/"valid"),
      ``dilation``, ``groups``, and for a padding mode other than zeros ``pad`` and
      ``pad_mode`` (applied first, as torch does); no bias (biases are in the layer's ``b``);
    * ``scale``: ``scale`` (C,), per channel (a BatchNorm in eval mode without its shift);
    * ``avg_pool``: ``dims``, ``kernel``, ``stride``, ``padding``, ``ceil_mode``,
      ``count_include_pad``, ``divisor_override`` (torch's ``avg_poolNd``);
    * ``adaptive_avg_pool``: ``output_size``;
    * ``pad``: ``pad`` (torch's order), ``mode`` ("constant" pads zeros; "reflect",
      "replicate", "circular" copy entries);
    * ``linear``: ``weight`` (out, in) on the flattened value;
    * ``reshape``: ``shape`` (one sample's).

    ``in_shape``: one sample's input shape (rows of H are its C-order flattening); ``out_shape``
    follows from the steps.
    """

    def __init__(self, steps: Sequence[dict], in_shape: Sequence[int]):
        self.steps = _fuse(steps)
        self.in_shape = tuple(int(s) for s in in_shape)
        with torch.no_grad():
            out = self._run(torch.zeros(1, *self.in_shape, dtype=torch.float64), False)
        self.out_shape = tuple(out.shape[1:])
        self.shape = (math.prod(self.out_shape), math.prod(self.in_shape))
        self._row_abs = None
        widest = max([math.prod(self.in_shape), *self._widths()])
        self.batch_rows = max(1, BATCH_FLOATS // widest)

    def _widths(self) -> list[int]:
        x = torch.zeros(1, *self.in_shape, dtype=torch.float64)
        sizes = []
        with torch.no_grad():
            for step in self.steps:
                x = _step(x, step, False)
                sizes.append(x[0].numel())
        return sizes

    def __repr__(self) -> str:
        ops = ", ".join(s["op"] for s in self.steps)
        return f"AffineOperator({self.shape[0]} x {self.shape[1]}: {ops})"

    def __getstate__(self) -> dict:
        return {"steps": self.steps, "in_shape": self.in_shape}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["steps"], state["in_shape"])

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays the steps hold (kernels, scales)."""
        return int(sum(v.nbytes for s in self.steps for v in s.values()
                       if isinstance(v, np.ndarray)))

    @property
    def work_bytes(self) -> int:
        """Bytes a batch of rows takes through the chain: input, output, their absolute values
        and a step's intermediate, BATCH_FLOATS floats each at most."""
        return 5 * 8 * BATCH_FLOATS

    def parameters(self) -> list[np.ndarray]:
        """The steps' arrays (kernels, scales, dense weights)."""
        return [v for s in self.steps for v in s.values() if isinstance(v, np.ndarray)]

    def _run(self, x: torch.Tensor, absolute: bool) -> torch.Tensor:
        for step in self.steps:
            x = _step(x, step, absolute)
        return x

    def _rows(self, h, absolute: bool) -> np.ndarray:
        h = np.ascontiguousarray(h, dtype=np.float64)
        if h.ndim != 2 or h.shape[1] != self.shape[1]:
            raise ValueError(f"rows of {self.shape[1]} values expected, got {h.shape}")
        out = np.empty((h.shape[0], self.shape[0]))
        with torch.no_grad():
            for s in range(0, h.shape[0], self.batch_rows):
                part = torch.from_numpy(h[s:s + self.batch_rows])
                if absolute:
                    part = part.abs()
                y = self._run(part.reshape(-1, *self.in_shape), absolute)
                out[s:s + part.shape[0]] = y.reshape(part.shape[0], -1).numpy()
        return out

    def apply(self, h) -> np.ndarray:
        """Rows of ``h`` (m, in) mapped to rows of h W^T (m, out), float64, in batches."""
        return self._rows(h, False)

    def linear(self, h) -> np.ndarray:
        """The bias-free map of rows, for gradients: :meth:`apply` (the bias is the layer's b)."""
        return self._rows(h, False)

    def apply_abs(self, h) -> np.ndarray:
        """Rows of |h| through the chain of absolute kernels and scales: an upper bound of
        |W| |h| per entry (equal to it for a single conv, scale, pooling or reshape)."""
        return self._rows(h, True)

    def row_abs_sum(self) -> np.ndarray:
        """(out,) upper bounds of the row sums of |W|: :meth:`apply_abs` of a row of ones."""
        if self._row_abs is None:
            self._row_abs = self.apply_abs(np.ones((1, self.shape[1])))[0]
        return self._row_abs

    def dense(self) -> np.ndarray:
        """W as a dense (out, in) float64 array: for small operators and tests."""
        if self.shape[0] * self.shape[1] > 1 << 26:
            raise InputError(f"{self!r} is too large to make dense "
                             f"({self.shape[0] * self.shape[1]} entries)")
        return np.ascontiguousarray(self.apply(np.eye(self.shape[1])).T)


def _fuse(steps: Sequence[dict]) -> list[dict]:
    """The steps with each per-channel scale that follows a conv folded into its kernel (one
    pass less per batch; |s W| = |s| |W|, so the absolute chain is unchanged)."""
    out = []
    for step in steps:
        step = dict(step)
        if step["op"] == "scale" and out and out[-1]["op"] == "conv":
            conv = dict(out[-1])
            w = conv["weight"]
            conv["weight"] = w * step["scale"].reshape(-1, *[1] * (w.ndim - 1))
            out[-1] = conv
            continue
        out.append(step)
    return out


def _step(x: torch.Tensor, step: dict, absolute: bool) -> torch.Tensor:
    """One step on a batch ``x`` (m, *shape); ``absolute``: with |kernel| and |scale|."""
    op = step["op"]
    if op == "conv":
        w = torch.from_numpy(step["weight"])
        if "pad" in step:  # a conv of padding_mode reflect / replicate / circular
            x = functional.pad(x, step["pad"], mode=step["pad_mode"])
        return _CONV[w.dim() - 2](x, w.abs() if absolute else w, None, step["stride"],
                                  step["padding"], step["dilation"], step["groups"])
    if op == "scale":
        s = torch.from_numpy(step["scale"])
        s = (s.abs() if absolute else s).reshape(-1, *[1] * (x.dim() - 2))
        return x * s
    if op == "avg_pool":
        return _AVG[step["dims"]](x, step["kernel"], step["stride"], step["padding"],
                                  step["ceil_mode"], step["count_include_pad"],
                                  *([step["divisor_override"]] if step["dims"] > 1 else []))
    if op == "adaptive_avg_pool":
        return _ADAPTIVE[len(step["output_size"])](x, step["output_size"])
    if op == "pad":
        return functional.pad(x, step["pad"], mode=step["mode"])
    if op == "linear":
        w = torch.from_numpy(step["weight"])
        return functional.linear(x, w.abs() if absolute else w)
    if op == "reshape":
        return x.reshape(x.shape[0], *step["shape"])
    raise InputError(f"an operator step of unknown kind {op!r}")


def is_operator(w) -> bool:
    """Whether a lowered layer's weight is an :class:`AffineOperator` (not a dense array)."""
    return isinstance(w, AffineOperator)


def check_dense(layers, what: str, fix: str | None = None) -> None:
    """InputError when some layer of ``layers`` is an operator, which ``what`` cannot read;
    ``fix`` says what to do instead (by default: count on a plane, or lower densely)."""
    if any(isinstance(w, AffineOperator) for w, _ in layers):
        fix = fix or ("count it on a plane (count_regions_plane), or lower it with "
                      "operators=False if its dense matrices fit in memory")
        raise InputError(f"{what} needs dense layers, and this model keeps its large conv "
                         f"stages as operators: {fix}")
