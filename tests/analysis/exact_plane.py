"""An independent, exact reference for the plane counter: rational arithmetic, affine-map form.

A different algorithm from relu_regions.analysis.plane (which carries float values at vertices):
every neuron on every cell is an exact affine map z = A u + B v + C in Fractions, and a cell is
clipped by each neuron's line with exact convex-polygon clipping, so no tolerance is needed.
Vertices are the distinct exact points of all cells; linear pieces join cells sharing an edge
whose output maps are equal. Slow; for tiny networks only.
"""

from fractions import Fraction

import numpy as np


def _frac_layers(layers):
    return [([[Fraction(float(v)) for v in row] for row in np.asarray(w)],
             [Fraction(float(v)) for v in np.asarray(b)]) for w, b in layers]


def _clip(poly, maps, sign):
    """The part of convex polygon ``poly`` where sign * z >= 0, z = maps (A, B, C)."""
    A, B, C = maps
    vals = [sign * (A * x + B * y + C) for x, y in poly]
    out = []
    for i, (p, zp) in enumerate(zip(poly, vals, strict=True)):
        q, zq = poly[(i + 1) % len(poly)], vals[(i + 1) % len(poly)]
        if zp >= 0:
            out.append(p)
        if (zp > 0 and zq < 0) or (zp < 0 and zq > 0):
            t = zp / (zp - zq)
            out.append((p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1])))
    dedup = []
    for p in out:
        if not dedup or dedup[-1] != p:
            dedup.append(p)
    if len(dedup) > 1 and dedup[0] == dedup[-1]:
        dedup.pop()
    return dedup


def _area2(poly):
    return sum(p[0] * q[1] - q[0] * p[1] for p, q in zip(poly, poly[1:] + poly[:1], strict=True))


def exact_plane(layers, box, leaks=None):
    """(regions, pieces, vertices, cells) of a 2-input model given as (W, b) pairs on the box.

    cells: list of (polygon, output maps ((A, B, C) per output), pattern tuple). A unit with
    negative-side slope 1 is affine: it never splits a cell. With k outputs two neighbours are
    one piece when all k maps are equal (:func:`pieces` counts by any part of the maps).
    """
    flayers = _frac_layers(layers)
    # one negative-side slope per unit of each hidden layer (a number: every unit's)
    leaks = [[Fraction(float(v)) for v in np.broadcast_to(np.asarray(leak, float), (len(w),))]
             for leak, (w, _) in zip(leaks or [0.0] * (len(layers) - 1), layers, strict=False)]
    x0, x1, y0, y1 = (Fraction(float(v)) for v in box)
    poly = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    one, zero = Fraction(1), Fraction(0)
    cells = [(poly, [(one, zero, zero), (zero, one, zero)], ())]
    for (w, b), leak in zip(flayers[:-1], leaks, strict=True):
        refined = []
        for poly, maps, pattern in cells:
            pre = [(sum(wk[j] * maps[j][0] for j in range(len(maps))),
                    sum(wk[j] * maps[j][1] for j in range(len(maps))),
                    sum(wk[j] * maps[j][2] for j in range(len(maps))) + bk)
                   for wk, bk in zip(w, b, strict=True)]
            parts = [(poly, ())]
            for m, slope in zip(pre, leak, strict=True):
                nxt = []
                for part, signs in parts:
                    vals = [m[0] * x + m[1] * y + m[2] for x, y in part]
                    if slope == 1:  # affine: no split, pattern bit 1
                        nxt.append((part, signs + (True,)))
                    elif any(v > 0 for v in vals) and any(v < 0 for v in vals):
                        for s in (1, -1):
                            piece = _clip(part, m, s)
                            if len(piece) >= 3 and _area2(piece) != 0:
                                nxt.append((piece, signs + (s > 0,)))
                    else:
                        nxt.append((part, signs + (any(v > 0 for v in vals),)))
                parts = nxt
            for part, signs in parts:
                new_maps = [m if on else tuple(slope * v for v in m)
                            for m, on, slope in zip(pre, signs, leak, strict=True)]
                refined.append((part, new_maps, pattern + signs))
        cells = refined
    w, b = flayers[-1]
    out = []
    for poly, maps, pattern in cells:
        o = tuple((sum(wk[j] * maps[j][0] for j in range(len(maps))),
                   sum(wk[j] * maps[j][1] for j in range(len(maps))),
                   sum(wk[j] * maps[j][2] for j in range(len(maps))) + bk)
                  for wk, bk in zip(w, b, strict=True))
        out.append((poly, o, pattern))
    vertices = {p for poly, _, _ in out for p in poly}
    return len(out), pieces(out), len(vertices), out


def pieces(out, output=None):
    """Linear pieces of the cells ``out`` (exact_plane's): all outputs' maps, or one output's."""
    # Edges: the cells' sides, matched between neighbours (no T-junctions in exact arithmetic).
    side_owner = {}
    parent = list(range(len(out)))

    def root(i):
        while parent[i] != i:
            i = parent[i]
        return i

    for ci, (poly, o, _) in enumerate(out):
        for p, q in zip(poly, poly[1:] + poly[:1], strict=True):
            key = frozenset((p, q))
            if key in side_owner:
                cj = side_owner[key]
                if (out[cj][1] == o if output is None
                        else out[cj][1][output] == o[output]):
                    ri, rj = root(ci), root(cj)
                    parent[max(ri, rj)] = min(ri, rj)
            else:
                side_owner[key] = ci
    return len({root(i) for i in range(len(out))})
