"""The depth-exponential construction (Milkert, Hyde, Laine, arXiv:2311.18022).

On the unit interval u = (x - lo) / (hi - lo) in [0, 1]:

    T_a(u) = relu(u) / a - relu(u - a) / (a (1 - a))        triangle with peak a
    W_0 = T_{a_0}(u),  W_i = T_{a_i}(W_{i-1})                 2^(i+1) linear pieces
    F(x) = c0 + c1 u - sign * sum_{i<d} s_i W_i(u)            2^d linear pieces

sign = +1 gives a convex F (for suitable s), sign = -1 a concave one. The ReLU form of T_a is used
everywhere (not just on [0, 1]), so the derived form equals the width-4 network for every x where
the network's "sum" neuron stays positive, i.e. on all of [lo, hi].

Derived parameters: peaks a_i in (margin, 1 - margin) through an unconstrained tensor, scales s_i
(free, s_i = exp(log_s_i), or coupled by Theorem 3.1 from s_0 and the peaks), and c0, c1.

Theorem 3.1 coupling: s_{i+1} = s_i (1 - a_{i+1}) a_{i+2}. The last scale s_{d-1} needs a_d, the
peak of a layer the net does not have. We keep it as one extra free "tail" peak: it is exactly the
next layer's peak in the infinite-depth limit the theorem is about, and it lets training choose the
last scale within the coupled family instead of fixing it by convention (a_d = 1/2 would be the
other reading; ``tail_peak=0.5`` with ``requires_grad_(False)`` reproduces it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ..errors import InputError
from ..validation import check_int, check_interval

DEFAULT_MARGIN = 0.05


def triangle(u: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """T_a(u) = relu(u)/a - relu(u - a)/(a(1 - a)): u/a on [0, a], (1 - u)/(1 - a) on [a, 1]."""
    return torch.relu(u) / a - torch.relu(u - a) / (a * (1 - a))


def thm31_scales(s0: torch.Tensor, peaks: torch.Tensor, depth: int) -> torch.Tensor:
    """Theorem 3.1: s_{i+1} = s_i (1 - a_{i+1}) a_{i+2}, for i = 0..d-2.

    ``peaks`` holds a_0..a_d (d + 1 values, the last one the tail peak) on its last axis;
    ``s0`` has the leading (batch) shape. Returns s_0..s_{d-1}.
    """
    ratios = (1 - peaks[..., 1:depth]) * peaks[..., 2 : depth + 1]
    ones = torch.ones_like(peaks[..., :1])
    return s0.unsqueeze(-1) * torch.cumprod(torch.cat([ones, ratios], dim=-1), dim=-1)


def derived_forward(x: torch.Tensor, peaks: torch.Tensor, scales: torch.Tensor,
                    c0: torch.Tensor, c1: torch.Tensor, lo: torch.Tensor | float,
                    hi: torch.Tensor | float, sign: torch.Tensor | float) -> torch.Tensor:
    """F(x) in derived form, by composing the triangle maps directly.

    Shapes: x (..., n); peaks (..., >=d); scales (..., d); c0, c1 (...). Leading dims batch.
    """
    u = (x - lo) / (hi - lo)
    w = u
    out = c0.unsqueeze(-1) + c1.unsqueeze(-1) * u
    for i in range(scales.shape[-1]):
        w = triangle(w, peaks[..., i : i + 1])
        out = out - sign * scales[..., i : i + 1] * w
    return out


def sum_offset(scales: torch.Tensor, c1: torch.Tensor) -> torch.Tensor:
    """C, the constant that keeps the "sum" neuron positive on [lo, hi].

    sum_k(u) = C + c1 u - sign * sum_{i<k} s_i W_i(u) >= C - |c1| - sum_i s_i, since u, W_i in
    [0, 1]; C = 1 + |c1| + sum_i s_i leaves a margin of 1. It cancels in the output bias, so it
    carries no gradient (detached).
    """
    return (1 + c1.abs() + scales.sum(-1)).detach()


def raw_weights(peaks: torch.Tensor, scales: torch.Tensor, c0: torch.Tensor, c1: torch.Tensor,
                lo: torch.Tensor | float, hi: torch.Tensor | float,
                sign: torch.Tensor | float) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The width-4 network's weights and biases (arXiv:2311.18022, the width-4 realization; README).

    Hidden neurons in order (sum, t1, t2, bias) with t1_k = relu(s_k W_{k-1}),
    t2_k = relu(s_k W_{k-1} - s_k a_k), bias_k = s_k, so s_k W_k = t1_k/a_k - t2_k/(a_k(1-a_k)).
    Returns a list of d + 1 pairs (W, b), W of shape (..., out, in), b (..., out); leading dims
    of the inputs are batch dims (many seeds at once). Hidden-to-hidden biases are zero.
    """
    depth = scales.shape[-1]
    dt = scales.dtype
    # A scale that underflowed to 0 (phase 1 can drive a useless term's log-scale to -inf) would
    # make the ratio S = 0/0; the smallest normal float contributes nothing and keeps S finite.
    scales = scales.clamp(min=torch.finfo(dt).tiny)
    batch = scales.shape[:-1]
    length = hi - lo
    s0, a0 = scales[..., 0], peaks[..., 0]
    C = sum_offset(scales, c1)
    zero = torch.zeros(batch, dtype=dt, device=scales.device)

    # Input layer: u = (x - lo)/length.
    w_in = torch.stack([c1, s0, s0, zero], -1) / length
    b_in = torch.stack([C - c1 * lo / length, -s0 * lo / length,
                        -s0 * lo / length - s0 * a0, s0], -1)
    layers = [(w_in.unsqueeze(-1), b_in)]

    if depth > 1:
        # All hidden layers in one batched call (one op per formula, not one per layer: a
        # count of a small net spent most of its time here); elementwise the same arithmetic.
        S = scales[..., 1:] / scales[..., :-1]
        hidden_sign = sign.unsqueeze(-1) if torch.is_tensor(sign) and sign.dim() else sign
        W = hidden_matrix(peaks[..., :depth - 1], peaks[..., 1:depth], S, hidden_sign)
        zeros = torch.zeros(batch + (depth - 1, 4), dtype=dt, device=scales.device)
        layers.extend(zip(W.unbind(-3), zeros.unbind(-2), strict=True))

    out_row = _sum_row(peaks[..., depth - 1], sign)
    layers.append((out_row.unsqueeze(-2), (c0 - C).unsqueeze(-1)))
    return layers


def _read_row(a: torch.Tensor) -> torch.Tensor:
    """[0, -1/a, 1/(a(1-a)), 0]: reads -s_k W_k from (sum, t1, t2, bias), since
    s_k W_k = t1_k/a_k - t2_k/(a_k(1 - a_k))."""
    zero = torch.zeros_like(a)
    return torch.stack([zero, -1 / a, 1 / (a * (1 - a)), zero], -1)


def _sum_row(a: torch.Tensor, sign) -> torch.Tensor:
    """[1, -sign/a, sign/(a(1-a)), 0]: the sum neuron (or the output) keeps the running sum and
    subtracts sign * s_k W_k. ``sign``: +1 / -1, a number or a tensor shaped like ``a``."""
    zero = torch.zeros_like(a)
    sign = sign.unsqueeze(-1) if torch.is_tensor(sign) and sign.dim() else sign
    return sign * _read_row(a) + torch.stack([torch.ones_like(a), zero, zero, zero], -1)


def hidden_matrix(a: torch.Tensor, a_next: torch.Tensor, S: torch.Tensor,
                  sign: torch.Tensor | float) -> torch.Tensor:
    """Hidden layer k -> k + 1 of the width-4 realization (arXiv:2311.18022, the width-4
    realization; README), rows and columns (sum, t1, t2, bias), for peaks a_k, a_{k+1} and
    S = s_{k+1} / s_k of one batch shape B; returns (*B, 4, 4):

        sum:  [1, -sign/a_k, sign/(a_k(1-a_k)), 0]
        t1:   [0, S/a_k, -S/(a_k(1-a_k)), 0]          (s_{k+1} W_k)
        t2:   t1 + [0, 0, 0, -S a_{k+1}]              (s_{k+1} W_k - s_{k+1} a_{k+1})
        bias: [0, 0, 0, S]                            (s_{k+1}, always active)
    """
    zero = torch.zeros_like(a)
    t1_row = -S.unsqueeze(-1) * _read_row(a)
    t2_row = t1_row + torch.stack([zero, zero, zero, -S * a_next], -1)
    bias_row = torch.stack([zero, zero, zero, S], -1)
    return torch.stack([_sum_row(a, sign), t1_row, t2_row, bias_row], -2)


def _logit(p: torch.Tensor) -> torch.Tensor:
    return torch.log(p) - torch.log1p(-p)


def peaks_from_logits(logits: torch.Tensor, margin: float) -> torch.Tensor:
    """a = margin + (1 - 2 margin) sigmoid(logit): always inside (margin, 1 - margin)."""
    return margin + (1 - 2 * margin) * torch.sigmoid(logits)


def logits_from_peaks(peaks: torch.Tensor, margin: float) -> torch.Tensor:
    """The inverse of :func:`peaks_from_logits`."""
    return _logit((peaks - margin) / (1 - 2 * margin))


def scales_from_log(log_s: torch.Tensor, peaks: torch.Tensor, depth: int,
                    thm31: bool) -> torch.Tensor:
    """s_0..s_{d-1} from log-scales (..., 1 or d): Theorem 3.1 from s_0, or each one free."""
    if thm31:
        return thm31_scales(log_s[..., 0].exp(), peaks, depth)
    return log_s.exp()


class Construction(nn.Module):
    """The derived parameters of one construction and its derived-form forward.

    Args:
        depth: number of hidden layers d (>= 1); the net has 2^d linear pieces.
        peaks: a_0..a_{d-1} (or a_0..a_d with Theorem 3.1: the last is the tail peak), each in
            (margin, 1 - margin). A float sets all of them. Default 1/2.
        thm31: couple the scales by Theorem 3.1 (only s_0 is a free scale) or keep d free scales.
        s0: first scale (Theorem 3.1), default 1/4 (Yarotsky: s_i = 4^-(i+1) with a = 1/2).
        scales: the d free scales when ``thm31=False``; default 4^-(i+1).
        c0, c1: output affine part F = c0 + c1 u - sign * sum s_i W_i(u).
        interval: (lo, hi), mapped to [0, 1].
        concave: sign = -1 instead of +1.
        margin: peaks stay in (margin, 1 - margin) through a scaled sigmoid.
    """

    def __init__(self, depth: int, peaks=0.5, *, thm31: bool = True, s0: float = 0.25,
                 scales=None, c0: float = 0.0, c1: float = 0.0, interval=(0.0, 1.0),
                 concave: bool = False, margin: float = DEFAULT_MARGIN,
                 dtype: torch.dtype = torch.float64, device="cpu"):
        super().__init__()
        depth = check_depth(depth)
        if not 0 < margin < 0.5:
            raise InputError(f"margin must be in (0, 0.5), got {margin}")
        lo, hi = check_interval(interval)
        self.depth, self.thm31, self.margin = depth, bool(thm31), float(margin)
        n_peaks = depth + 1 if thm31 else depth
        a = check_peaks(peaks, n_peaks, margin, allow=(depth,) if thm31 else ())
        opts = dict(dtype=dtype, device=device)
        a = torch.as_tensor(a, **opts).expand(n_peaks).clone()
        self.peak_logits = nn.Parameter(logits_from_peaks(a, margin))
        if thm31:
            if not s0 > 0 or not math.isfinite(s0):
                raise InputError(f"s0 must be a positive number, got {s0}")
            self.log_s0 = nn.Parameter(torch.tensor(math.log(s0), **opts))
        else:
            s = [4.0 ** -(i + 1) for i in range(depth)] if scales is None else list(scales)
            if len(s) != depth or not all(v > 0 and math.isfinite(v) for v in s):
                raise InputError(f"scales must be {depth} positive numbers, got {scales}")
            self.log_scales = nn.Parameter(torch.log(torch.tensor(s, **opts)))
        self.c0 = nn.Parameter(torch.tensor(float(c0), **opts))
        self.c1 = nn.Parameter(torch.tensor(float(c1), **opts))
        self.register_buffer("lo", torch.tensor(lo, **opts))
        self.register_buffer("hi", torch.tensor(hi, **opts))
        self.register_buffer("sign", torch.tensor(-1.0 if concave else 1.0, **opts))

    def peaks(self) -> torch.Tensor:
        """a_i = margin + (1 - 2 margin) sigmoid(logit_i): always inside (margin, 1 - margin)."""
        return peaks_from_logits(self.peak_logits, self.margin)

    def scales(self) -> torch.Tensor:
        """s_0..s_{d-1}: free (exp of log-scales) or coupled by Theorem 3.1."""
        log_s = self.log_s0.unsqueeze(-1) if self.thm31 else self.log_scales
        return scales_from_log(log_s, self.peaks(), self.depth, self.thm31)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Derived-form F(x) for x of shape (n, 1) or (n,); returns the same shape."""
        flat = x.reshape(-1)
        y = derived_forward(flat, self.peaks(), self.scales(), self.c0, self.c1,
                            self.lo, self.hi, self.sign)
        return y.reshape(x.shape)

    def weights(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The d + 1 (W, b) pairs of the width-4 network (differentiable in the derived params)."""
        return raw_weights(self.peaks(), self.scales(), self.c0, self.c1,
                           self.lo, self.hi, self.sign)

    def config(self) -> dict:
        """The constructor arguments that fix the parameter shapes (for checkpoints)."""
        return dict(depth=self.depth, thm31=self.thm31, margin=self.margin,
                    interval=[float(self.lo), float(self.hi)], concave=bool(self.sign < 0))

    def extra_repr(self) -> str:
        return (f"depth={self.depth}, thm31={self.thm31}, interval=({self.lo.item():g}, "
                f"{self.hi.item():g}), {'concave' if self.sign < 0 else 'convex'}")


def check_depth(depth: object) -> int:
    return check_int(depth, "depth", low=1)


def check_peaks(peaks: float | Sequence[float], n: int, margin: float,
                allow: Sequence[int] = ()) -> list[float]:
    """Peaks as a list of n floats in (margin, 1 - margin); a single value is broadcast.

    ``allow`` lists the lengths that may be given one short (the tail peak then defaults to 1/2).
    """
    values = [float(peaks)] if isinstance(peaks, (int, float)) else [float(v) for v in peaks]
    if len(values) == 1:
        values = values * n
    elif len(values) in allow and len(values) == n - 1:
        values = values + [0.5]
    if len(values) != n:
        raise InputError(f"expected 1 or {n if not allow else allow[0]} peak values, "
                         f"got {len(values)}")
    for v in values:
        if not 0 < v < 1 or not math.isfinite(v):
            raise InputError(f"peak a={v} is outside (0, 1)")
        if not margin < v < 1 - margin:
            raise InputError(f"peak a={v} is outside (margin, 1 - margin) = "
                             f"({margin}, {1 - margin}); lower the margin to use it")
    return values
