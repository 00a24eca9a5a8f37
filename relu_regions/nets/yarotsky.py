"""Fixed-weight ReLU nets for x^3 on [0, 1] whose error falls by a constant factor per layer
(Yarotsky 2017, arXiv:1610.01145, Propositions 2 and 3: squares by sawtooth layers, products
through squares): ``cube_net`` and ``cube_net_diff`` (width 5) and ``cube_net4`` (width 4).
:func:`relu_regions.analysis.refit.refit_accumulator` refits the weights they sum their
corrections with, exactly in L2 (docs/training.md, "The width question").

Squares: f_m(t) = t - sum_{s=1..m} g_s(t) / 4^s with g_s the s-fold tent map g(t) = 2 relu(t) -
4 relu(t - 1/2) interpolates t^2 on the grid k / 2^m, |f_m(t) - t^2| <= 4^-(m+1) on [0, 1].
Product: x y = 2 ((x + y) / 2)^2 - x^2 / 2 - y^2 / 2 for x, y in [0, 1].

``cube_net``: y = S = f_{m1}(x) ~ x^2 (stage 1, m1 layers: tent neurons relu(g), relu(g - 1/2), an
accumulator S + C, and a carry of x), then x^3 ~ x S ~ 2 f_{m2}((x + S) / 2) - S / 2 - f_{m2}(S) / 2
(stage 2, m2 layers: two tents and one accumulator; its linear part 2 (x + S) / 2 - S / 2 - S / 2
is x). Width 5, depth m1 + m2, |net - x^3| <= 4^-(m1+1) + 2.5 * 4^-(m2+1). The construction is
exact arithmetic on fixed weights, a starting point for phase 2 (raw-weight LM), like the width-4
construction of Milkert, Hyde & Laine is for convex targets.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import ArrayLike

from ..validation import check_int
from .parametrize import linear_relu_stack

WIDTH = 5
OFFSET = 1.0  # C: keeps the accumulators positive (S >= 0, x S >= -small on [0, 1])


def cube_net(m1: int, m2: int) -> torch.nn.Sequential:
    """The width-5, depth m1 + m2 net approximating x^3 on [0, 1] (module docstring)."""
    m1, m2 = check_int(m1, "m1", low=1), check_int(m2, "m2", low=1)
    C = OFFSET
    # stage 1: [carry x, relu(g), relu(g - 1/2), S + C, 0], tent(u) = 2 u1 - 4 u2
    hidden, x, S = _square_stage(0, 3, m1)
    # stage 2, first layer: [relu(A), relu(A - 1/2), relu(B), relu(B - 1/2), x + C], B = S
    A = 0.5 * (x + S)
    hidden.append([A, A - 0.5, S, S - 0.5, x + C])
    for j in range(2, m2 + 1):  # level j - 1 of both tents enters the accumulator
        tA, tB = _tent(0), _tent(2)
        q = 4.0 ** (j - 1)
        hidden.append([tA, tA - 0.5, tB, tB - 0.5, _unit(4) - 2.0 * tA / q + 0.5 * tB / q])
    q = 4.0**m2
    return _build(WIDTH, hidden, _unit(4) - C - 2.0 * _tent(0) / q + 0.5 * _tent(2) / q)


def _square_reference(t, m: int):
    """f_m(t) = t - sum_{s=1..m} g_s(t) / 4^s (numpy), for tests."""
    out, g = np.array(t, dtype=np.float64), np.array(t, dtype=np.float64)
    for s in range(1, m + 1):
        g = 2 * np.maximum(g, 0) - 4 * np.maximum(g - 0.5, 0)
        out = out - g / 4**s
    return out


def cube_reference(x: ArrayLike, m1: int, m2: int) -> np.ndarray:
    """The same approximation computed directly from the formulas (numpy), for tests."""
    x = np.asarray(x, dtype=np.float64)
    S = _square_reference(x, m1)
    return 2 * _square_reference((x + S) / 2, m2) - S / 2 - _square_reference(S, m2) / 2


# --------------------------------------------------------------------------------------------
# Products as a difference of squares, and a width-4 net with the squares one after the other
#
# x S = A^2 - D^2 with A = (x + S) / 2 in [0, 1] and D = (x - S) / 2 in [0, 1/8] (S = f_m1(x)
# interpolates x^2 from above and below the chord x, so x^2 <= S <= x): with E = 8 D = 4 (x - S)
# in [0, 1], x^3 ~ f_m2(A) - f_m3(E) / 64. Against 2 f(A) - S/2 - f(S)/2 the squares' errors
# enter with weights 1 and 1/64 instead of 2 and 1/2, so the E chain needs 3 levels fewer
# (4^3 = 64), and |net - x^3| <= 4^-(m1+1) + 4^-(m2+1) + 4^-(m3+4).


class _Expr:
    """An affine read-out of the previous layer: {unit: coefficient} and a constant."""

    def __init__(self, terms=None, const: float = 0.0):
        self.terms, self.const = dict(terms or {}), float(const)

    def __add__(self, other):
        other = other if isinstance(other, _Expr) else _Expr(const=other)
        terms = dict(self.terms)
        for k, v in other.terms.items():
            terms[k] = terms.get(k, 0.0) + v
        return _Expr(terms, self.const + other.const)

    __radd__ = __add__

    def __mul__(self, s: float):
        return _Expr({k: v * s for k, v in self.terms.items()}, self.const * s)

    __rmul__ = __mul__

    def __truediv__(self, s: float):
        return self * (1.0 / s)

    def __neg__(self):
        return self * -1.0

    def __sub__(self, other):
        return self + (-other if isinstance(other, _Expr) else -float(other))


def _unit(i: int) -> _Expr:
    return _Expr({i: 1.0})


def _tent(i: int) -> _Expr:
    """g(t) = 2 relu(t) - 4 relu(t - 1/2) from the pair (relu(t), relu(t - 1/2)) at units i, i+1."""
    return 2.0 * _unit(i) - 4.0 * _unit(i + 1)


def _build(width: int, hidden: list, output: _Expr) -> torch.nn.Sequential:
    """The Linear/ReLU stack whose hidden layer k has the units ``hidden[k]`` (affine read-outs of
    layer k - 1, or of the input x = unit 0 for k = 0; missing units are 0)."""
    net = linear_relu_stack([1] + [width] * len(hidden) + [1])
    rows_of = list(hidden) + [[output]]
    with torch.no_grad():
        for lin, rows in zip(net[::2], rows_of, strict=True):
            lin.weight.zero_()
            lin.bias.zero_()
            for i, e in enumerate(rows):
                for k, v in e.terms.items():
                    lin.weight[i, k] += v
                lin.bias[i] = e.const
    return net


def _square_stage(x_unit: int, acc: int, levels: int):
    """Layers 2..levels of stage 1 (units: carry x, a tent pair, the accumulator S + C) and S as a
    read-out of the last of them; layer 1 is [x, x, x - 1/2, x + C]."""
    C = OFFSET
    x = _unit(0)
    first = [None] * (acc + 1)
    first[x_unit], first[x_unit + 1], first[x_unit + 2], first[acc] = x, x, x - 0.5, x + C
    first = [e if e is not None else _Expr() for e in first]
    layers = [first]
    for k in range(2, levels + 1):  # the pair holds g_{k-2}; its tent is g_{k-1}
        t = _tent(x_unit + 1)
        row = [_Expr()] * (acc + 1)
        row[x_unit], row[x_unit + 1], row[x_unit + 2] = _unit(x_unit), t, t - 0.5
        row[acc] = _unit(acc) - t / 4.0 ** (k - 1)
        layers.append(row)
    S = _unit(acc) - C - _tent(x_unit + 1) / 4.0**levels
    return layers, _unit(x_unit), S


def cube_net_diff(m1: int, m2: int) -> torch.nn.Sequential:
    """Width 5, depth m1 + m2: S = f_m1(x) (stage 1, width 4), then the squares of A and E side by
    side (two tent pairs and one accumulator): x^3 ~ f_m2(A) - f_m2(E) / 64 (section comment).
    |net - x^3| <= 4^-(m1+1) + 4^-(m2+1) + 4^-(m2+4)."""
    m1, m2 = check_int(m1, "m1", low=1), check_int(m2, "m2", low=1)
    C = OFFSET
    hidden, x, S = _square_stage(0, 3, m1)
    A, E = 0.5 * (x + S), 4.0 * (x - S)
    hidden.append([A, A - 0.5, E, E - 0.5, A - E / 64.0 + C])
    for j in range(2, m2 + 1):  # the pairs hold level j - 2; their tents are level j - 1
        tA, tE = _tent(0), _tent(2)
        q = 4.0 ** (j - 1)
        hidden.append([tA, tA - 0.5, tE, tE - 0.5, _unit(4) - tA / q + tE / (64.0 * q)])
    q = 4.0**m2
    return _build(WIDTH, hidden, _unit(4) - C - _tent(0) / q + _tent(2) / (64.0 * q))


def cube_net4(m1: int, m2: int, m3: int) -> torch.nn.Sequential:
    """Width 4, depth m1 + m2 + m3: the same product with the two squares one after the other.

    Stage 1 (m1 layers): [x, tent pair, S + C]. Stage 2 (m2 layers): [tent pair on A, accumulator,
    E + C carried]. Stage 3 (m3 layers): [tent pair on E, accumulator, 0]. Each stage's error
    falls 16x in MSE per layer added to it, so the net's falls 16^(1/3) ~ 2.5x per layer when the
    three grow together. |net - x^3| <= 4^-(m1+1) + 4^-(m2+1) + 4^-(m3+4)."""
    m1, m2, m3 = (check_int(m, n, low=1) for m, n in ((m1, "m1"), (m2, "m2"), (m3, "m3")))
    C = OFFSET
    hidden, x, S = _square_stage(0, 3, m1)
    A, E = 0.5 * (x + S), 4.0 * (x - S)
    hidden.append([A, A - 0.5, A - E / 64.0 + C, E + C])
    for j in range(2, m2 + 1):
        t = _tent(0)
        hidden.append([t, t - 0.5, _unit(2) - t / 4.0 ** (j - 1), _unit(3)])
    E = _unit(3) - C
    hidden.append([E, E - 0.5, _unit(2) - _tent(0) / 4.0**m2, _Expr()])
    for j in range(2, m3 + 1):
        t = _tent(0)
        hidden.append([t, t - 0.5, _unit(2) + t / (64.0 * 4.0 ** (j - 1)), _Expr()])
    return _build(4, hidden, _unit(2) - C + _tent(0) / (64.0 * 4.0**m3))


def diff_reference(x: ArrayLike, m1: int, m2: int, m3: int) -> np.ndarray:
    """f_m2(A) - f_m3(E) / 64, S = f_m1(x), A = (x + S) / 2, E = 4 (x - S) (numpy), for tests."""
    x = np.asarray(x, dtype=np.float64)
    S = _square_reference(x, m1)
    return _square_reference((x + S) / 2, m2) - _square_reference(4 * (x - S), m3) / 64


# --------------------------------------------------------------------------------------------
# The best read-out of an accumulator, exactly in L2
