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


def exact_stack(layers, leaks, lo, hi, level=0.0):
    """The exact count of (W, b) float layers with per-unit negative slopes ``leaks`` (one array
    per hidden layer; 1 = a unit passed on, never a switch) and any number of outputs k, on
    [lo, hi]. Returns a dict: breakpoints, knots, slopes (one k-tuple per piece),
    pieces_per_output and decision_points (where argmax of the outputs changes; for k = 1, of
    (f, level)), all Fractions.
    """
    frac = [([[Fraction(float(v)) for v in row] for row in w], [Fraction(float(v)) for v in b])
            for w, b in layers]
    lo, hi = Fraction(float(lo)), Fraction(float(hi))
    intervals = [(lo, hi, [(Fraction(1), Fraction(0))], ())]
    for (w, b), leak in zip(frac[:-1], leaks, strict=True):
        leak = [Fraction(float(a)) for a in leak]
        refined = []
        for left, right, maps, pattern in intervals:
            pre = [(sum(wk[j] * maps[j][0] for j in range(len(maps))),
                    sum(wk[j] * maps[j][1] for j in range(len(maps))) + bk)
                   for wk, bk in zip(w, b, strict=True)]
            cuts = sorted({-B / A for (A, B), a in zip(pre, leak, strict=True)
                           if a != 1 and A != 0 and left < -B / A < right})
            edges = [left] + cuts + [right]
            for start, end in zip(edges[:-1], edges[1:], strict=True):
                mid = (start + end) / 2
                on = [A * mid + B > 0 for A, B in pre]
                new_maps = [(A, B) if o else (a * A, a * B)
                            for (A, B), o, a in zip(pre, on, leak, strict=True)]
                mask = tuple(o for o, a in zip(on, leak, strict=True) if a != 1)
                refined.append((start, end, new_maps, pattern + mask))
        intervals = refined
    w, b = frac[-1]
    outs = [[(sum(wo[j] * m[j][0] for j in range(len(m))),
              sum(wo[j] * m[j][1] for j in range(len(m))) + bo)
             for wo, bo in zip(w, b, strict=True)] for _, _, m, _ in intervals]
    pairs = list(zip(intervals, intervals[1:], outs, outs[1:], strict=False))
    breakpoints = [iv[0] for prev, iv, _, _ in pairs if prev[3] != iv[3]]
    knots = [iv[0] for _, iv, o1, o2 in pairs if o1 != o2]
    slopes = [tuple(a for a, _ in outs[0])] + [tuple(a for a, _ in o2) for _, _, o1, o2 in pairs
                                               if o1 != o2]
    per_output = [1 + sum(o1[q] != o2[q] for _, _, o1, o2 in pairs) for q in range(len(w))]
    if len(w) == 1:
        outs = [o + [(Fraction(0), Fraction(float(level)))] for o in outs]
    # Decision points: every interval cut at all pairwise crossings; the winner (largest value,
    # lowest index among equals) on each open sub-interval, compared left to right.
    winners = []  # (start, winner) of each sub-interval
    for (left, right, _, _), o in zip(intervals, outs, strict=True):
        cuts = {left, right}
        for p, (a1, b1) in enumerate(o):
            for a2, b2 in o[p + 1:]:
                if a1 != a2 and left < (b2 - b1) / (a1 - a2) < right:
                    cuts.add((b2 - b1) / (a1 - a2))
        cuts = sorted(cuts)
        for start, end in zip(cuts[:-1], cuts[1:], strict=True):
            mid = (start + end) / 2
            vals = [a * mid + c for a, c in o]
            winners.append((start, vals.index(max(vals))))
    decisions = [s for (_, w1), (s, w2) in zip(winners, winners[1:], strict=False) if w1 != w2]
    return {"breakpoints": breakpoints, "knots": knots, "slopes": slopes,
            "pieces_per_output": per_output, "decision_points": decisions}
