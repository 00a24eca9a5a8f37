"""A trained 2D net (tests/data/edge_subdivision: an equivalent of the nets of Berzins' edge
subdivision, arXiv:2306.07212) counted against the exact rational reference and against the
counts edge subdivision gives for it (benchmarks/bench_edge_subdivision.py)."""

import math
from pathlib import Path

import numpy as np
import torch
from exact_plane import _clip, exact_plane
from torch import nn

from relu_regions.analysis.plane import count_regions_2d
from relu_regions.nets.reader import layer_stack

DATA = Path(__file__).resolve().parent.parent / "data" / "edge_subdivision"


def load(name):
    """The float32 Linear/ReLU model stored as w0, b0, w1, b1, ... in ``name``."""
    with np.load(DATA / name, allow_pickle=False) as f:
        pairs = [(f[f"w{i}"], f[f"b{i}"]) for i in range(len(f.files) // 2)]
    mods = []
    for w, b in pairs:
        lin = nn.Linear(w.shape[1], w.shape[0], dtype=torch.float32)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w))
            lin.bias.copy_(torch.from_numpy(b))
        mods += [lin, nn.ReLU()]
    return nn.Sequential(*mods[:-1])


def test_trained_net_matches_the_exact_reference_and_its_level_set():
    """Near the rabbit's ear: regions, pieces and vertices equal the rational reference's; the
    level set f = 0 crosses exactly the cells whose exact output changes sign, one segment each,
    and its length is the sum of the exact chords."""
    model = load("rabbit_2x50.npz")
    box = (0.25, 0.5, 0.5, 0.75)
    layers, leaks = layer_stack(model)
    regions, pieces, vertices, cells = exact_plane(layers, box, leaks)
    r = count_regions_2d(model, box)
    assert r.resolved and regions > 40
    assert (r.activation_regions, r.linear_pieces, r.vertices) == (regions, pieces, vertices)
    crossed, length = 0, 0.0
    for poly, maps, _ in cells:
        a, b, c = maps[0]
        values = [a * x + b * y + c for x, y in poly]
        if min(values) < 0 < max(values):
            crossed += 1
            ends = [p for p in _clip(poly, maps[0], 1) if a * p[0] + b * p[1] + c == 0]
            assert len(ends) == 2
            length += math.dist(*(tuple(float(v) for v in p) for p in ends))
    assert crossed > 5 and r.decision_segments.shape[0] == crossed
    assert math.isclose(r.decision_length, length, rel_tol=1e-9)


def test_trained_net_counts_equal_edge_subdivisions():
    """On [-1, 1]^2 (edge subdivision's default box) edge subdivision found 1912 cells, 1982
    vertices and 3893 edges with the output's level set and 1778 / 1848 / 3625 without it: our
    regions, vertices, edges, and the level set's 134 segments (one per cell crossed: 1778 +
    134 = 1912)."""
    r = count_regions_2d(load("rabbit_2x50.npz"))
    assert r.resolved
    assert (r.activation_regions, r.vertices, r.edges) == (1778, 1848, 3625)
    assert r.decision_segments.shape[0] == 1912 - 1778
