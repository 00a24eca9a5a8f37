"""An independent, exact reference for the counters: rational arithmetic, slope + intercept form.

Deliberately a different algorithm from relu_regions.regions (which carries float values at
points): here every neuron on every interval is an exact affine map z = A p + B in Fractions, so no
tolerance is needed anywhere. Slow; for tiny networks only.
"""

from fractions import Fraction

from torch import nn


def exact_layers(model):
    layers = []
    for m in model:
        if isinstance(m, nn.Linear):
            w = [[Fraction(float(v)) for v in row] for row in m.weight.detach().double().tolist()]
            b = [Fraction(float(v)) for v in m.bias.detach().double().tolist()]
            layers.append((w, b))
    return layers


def exact_count(model, lo, hi):
    """(breakpoints, activation_regions, linear_pieces, slopes) of a 1D model on [lo, hi], exact."""
    layers = exact_layers(model)
    lo, hi = Fraction(float(lo)), Fraction(float(hi))
    # intervals: list of (left, right, maps, pattern); maps = list of (A, B) for the current units
    intervals = [(lo, hi, [(Fraction(1), Fraction(0))], ())]
    for w, b in layers[:-1]:
        refined = []
        for left, right, maps, pattern in intervals:
            pre = [(sum(wk[j] * maps[j][0] for j in range(len(maps))),
                    sum(wk[j] * maps[j][1] for j in range(len(maps))) + bk)
                   for wk, bk in zip(w, b, strict=True)]
            cuts = sorted({-B / A for A, B in pre if A != 0 and left < -B / A < right})
            edges = [left] + cuts + [right]
            for start, end in zip(edges[:-1], edges[1:], strict=True):
                mid = (start + end) / 2
                mask = tuple(A * mid + B > 0 for A, B in pre)
                new_maps = [(A, B) if on else (Fraction(0), Fraction(0))
                            for (A, B), on in zip(pre, mask, strict=True)]
                refined.append((start, end, new_maps, pattern + mask))
        intervals = refined
    w, b = layers[-1]
    outs = [(sum(w[0][j] * m[j][0] for j in range(len(m))),
             sum(w[0][j] * m[j][1] for j in range(len(m))) + b[0]) for _, _, m, _ in intervals]
    # consecutive pairs: each list zipped with its own tail, one shorter by design
    breakpoints = [iv[0] for prev, iv in zip(intervals, intervals[1:], strict=False)
                   if prev[3] != iv[3]]
    knots = [iv[0] for iv, o1, o2 in zip(intervals[1:], outs, outs[1:], strict=False) if o1 != o2]
    slopes = [outs[0][0]] + [o2[0] for o1, o2 in zip(outs, outs[1:], strict=False) if o1 != o2]
    return breakpoints, len(breakpoints) + 1, len(knots) + 1, knots, slopes
