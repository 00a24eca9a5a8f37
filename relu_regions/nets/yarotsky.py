"""A width-5 ReLU net for x^3 on [0, 1] whose error falls by a constant factor per layer
(Yarotsky 2017, arXiv:1610.01145, Propositions 2 and 3: squares by sawtooth layers, products
through squares).

Squares: f_m(t) = t - sum_{s=1..m} g_s(t) / 4^s with g_s the s-fold tent map g(t) = 2 relu(t) -
4 relu(t - 1/2) interpolates t^2 on the grid k / 2^m, |f_m(t) - t^2| <= 4^-(m+1) on [0, 1].
Product: x y = 2 ((x + y) / 2)^2 - x^2 / 2 - y^2 / 2 for x, y in [0, 1].

Here y = S = f_{m1}(x) ~ x^2 (stage 1, m1 layers: tent neurons relu(g), relu(g - 1/2), an
accumulator S + C, and a carry of x), then x^3 ~ x S ~ 2 f_{m2}((x + S) / 2) - S / 2 - f_{m2}(S) / 2
(stage 2, m2 layers: two tents and one accumulator; its linear part 2 (x + S) / 2 - S / 2 - S / 2
is x). Width 5, depth m1 + m2, |net - x^3| <= 4^-(m1+1) + 2.5 * 4^-(m2+1). The construction is
exact arithmetic on fixed weights, a starting point for phase 2 (raw-weight LM), like the width-4
construction of Milkert, Hyde & Laine is for convex targets.
"""

from __future__ import annotations

import torch

from ..validation import check_int
from .parametrize import linear_relu_stack

WIDTH = 5
OFFSET = 1.0  # C: keeps the accumulators positive (S >= 0, x S >= -small on [0, 1])


def cube_net(m1: int, m2: int) -> torch.nn.Sequential:
    """The width-5, depth m1 + m2 net approximating x^3 on [0, 1] (module docstring)."""
    m1, m2 = check_int(m1, "m1", low=1), check_int(m2, "m2", low=1)
    depth = m1 + m2
    net = linear_relu_stack([1] + [WIDTH] * depth + [1])
    linears = list(net[::2])
    z = lambda *shape: torch.zeros(*shape, dtype=torch.float64)  # noqa: E731
    # Every hidden state is described by linear read-outs (rows over the 5 units, and a constant):
    # tent(u) = 2 u1 - 4 u2 from a pair of units (relu(t), relu(t - 1/2)).
    C = OFFSET
    # stage 1, layer 1: units [carry x, relu(x), relu(x - 1/2), S + C = x + C, 0]
    W, b = z(WIDTH, 1), z(WIDTH)
    W[0, 0] = W[1, 0] = W[2, 0] = W[3, 0] = 1.0
    b[2], b[3] = -0.5, C
    layers = [(W, b)]
    for k in range(2, m1 + 1):  # g_{k-1} = 2 u1 - 4 u2; S_{k-1} = S_{k-2} - g_{k-1} / 4^(k-1)
        W, b = z(WIDTH, WIDTH), z(WIDTH)
        W[0, 0] = 1.0
        W[1, 1], W[1, 2] = 2.0, -4.0
        W[2, 1], W[2, 2], b[2] = 2.0, -4.0, -0.5
        W[3, 3], W[3, 1], W[3, 2] = 1.0, -2.0 / 4 ** (k - 1), 4.0 / 4 ** (k - 1)
        layers.append((W, b))
    # S = S_{m1} = u3 - C - g_{m1} / 4^m1 as a row over the units (and constant)
    s_row, s_const = z(WIDTH), -C
    s_row[3], s_row[1], s_row[2] = 1.0, -2.0 / 4**m1, 4.0 / 4**m1
    x_row = z(WIDTH)
    x_row[0] = 1.0
    # stage 2, first layer: [relu(A), relu(A - 1/2), relu(B), relu(B - 1/2), x + C]
    a_row, a_const = 0.5 * (x_row + s_row), 0.5 * s_const
    W, b = z(WIDTH, WIDTH), z(WIDTH)
    W[0], b[0] = a_row, a_const
    W[1], b[1] = a_row, a_const - 0.5
    W[2], b[2] = s_row, s_const
    W[3], b[3] = s_row, s_const - 0.5
    W[4], b[4] = x_row, C
    layers.append((W, b))
    for j in range(2, m2 + 1):  # level j - 1 of both tents enters the accumulator
        W, b = z(WIDTH, WIDTH), z(WIDTH)
        W[0, 0], W[0, 1] = 2.0, -4.0
        W[1, 0], W[1, 1], b[1] = 2.0, -4.0, -0.5
        W[2, 2], W[2, 3] = 2.0, -4.0
        W[3, 2], W[3, 3], b[3] = 2.0, -4.0, -0.5
        q = 4.0 ** (j - 1)
        W[4, 4] = 1.0
        W[4, 0], W[4, 1] = -2.0 * 2.0 / q, 2.0 * 4.0 / q  # -2 g(A) / 4^(j-1)
        W[4, 2], W[4, 3] = 0.5 * 2.0 / q, -0.5 * 4.0 / q  # + g(B) / (2 4^(j-1))
        layers.append((W, b))
    q = 4.0**m2
    W, b = z(1, WIDTH), z(1)
    W[0, 4] = 1.0
    W[0, 0], W[0, 1] = -4.0 / q, 8.0 / q
    W[0, 2], W[0, 3] = 1.0 / q, -2.0 / q
    b[0] = -C
    layers.append((W, b))
    with torch.no_grad():
        for lin, (W, b) in zip(linears, layers):
            lin.weight.copy_(W)
            lin.bias.copy_(b)
    return net


def cube_reference(x, m1: int, m2: int):
    """The same approximation computed directly from the formulas (numpy), for tests."""
    import numpy as np

    def tent(t):
        return 2 * np.maximum(t, 0) - 4 * np.maximum(t - 0.5, 0)

    def square(t, m):
        out, g = np.array(t, dtype=np.float64), np.array(t, dtype=np.float64)
        for s in range(1, m + 1):
            g = tent(g)
            out = out - g / 4**s
        return out

    x = np.asarray(x, dtype=np.float64)
    S = square(x, m1)
    return 2 * square((x + S) / 2, m2) - S / 2 - square(S, m2) / 2
