"""Benchmark: a 10-class classifier's regions and argmax decision boundary on a plane, beside
regioncam.

Nets (PyTorch's default init, torch.manual_seed(0)), all with 10 outputs:

  * mlp: 784 -> 256 x 3 -> 10, an nn.Sequential of Linear / ReLU;
  * residual: 784 -> 256, ReLU, then two blocks x + W2 relu(W1 x + b1) (width 256), -> 10: a
    module whose forward we trace; regioncam gets the same blocks as ``regioncam.nn.Residual``;
  * maxpool: 784 -> 256 x 2 -> 32, then ``nn.MaxPool1d(32)``: one output, the max of the 32
    (regioncam's ``max_pool()`` layer, which takes the max of all its input's units). Its
    regions are cells of constant ReLU signs and argmax; its decision boundary is the level set
    f = 0 (regioncam: its sign classifier).

The plane goes through three inputs drawn uniformly from [0, 1]^784 (numpy seed 0). Both tools
cut the same square: plane coordinates s in [-h, h]^2 around the three points' centroid c, with
x = origin + basis (c + s) (origin and orthonormal basis from ``plane_basis``). Ours is the user's
call, ``count_regions_plane(model, p0, p1, p2, extent=...)`` on the 784-input model (reading the
model and projecting the plane are in its time); regioncam (float32) gets that projection folded
into a 2-input first layer, built outside its time. The half-widths h were found by a quick search
to give about 1e4, 5e4 and 2e5 regions, and are fixed below.

Timed, each count in its own spawned process after an untimed warm-up count of a small net (for
us that loads the numba kernels): ours with the decision boundary (computed for every k-output
model), on ``--threads`` worker threads (default: ours, one per usable core; several values give
one row each); regioncam's ``Regioncam(size=h)``, its layers and ``decision_boundary()``. Peak MB
is that process's ``ru_maxrss``. The tools alternate (ours at each thread count, regioncam, ours,
...) over the repeats, and the table gives medians.

Counts: regioncam's ``decision_boundary()`` splits its faces along the argmax boundary, so its
activation regions are its faces *before* that call; those must equal our regions. After it,
its faces minus those are the argmax boundary's splits, and the summed length of its decision
edges is compared with our ``decision_length`` (float32: to 1e-3 relative).

    python benchmarks/bench_classifier.py                  # both nets, three sizes
    python benchmarks/bench_classifier.py --sizes 1e4 5e4 --repeats 5 --nets mlp --json
    python benchmarks/bench_classifier.py --nets mlp --sizes 1e4 5e4 --threads 1 2

regioncam (PyPI, float32) is optional: without it the script says so and times ours only.
Target: equal counts; ours at least 2x faster from 5e4 regions, the decision boundary included.
"""

import argparse
import importlib.util
import json
import os
import resource
import statistics
import sys
import time

import numpy as np
from bench_count import measure  # a fresh spawned process per measurement

WIDTH = 256
# Half-widths of the square (plane units = input units) giving about 1e4, 5e4 and 2e5 regions,
# found with --search on the nets below (seed 0). Regions grow slower than h^2 here:
# h^2 near 1e4, about h^1.3 near 1e5 and h^0.5 near 2e5.
HALF = {
    "mlp": {"1e4": 3.9, "5e4": 8.9, "2e5": 44.5},
    "residual": {"1e4": 3.47, "5e4": 8.3, "2e5": 40.5},
    # the max-pool net grows slower still (86,532 regions at h = 40): no 2e5 square yet
    "maxpool": {"1e4": 5.49, "5e4": 15.8},
}
POOL = 32  # the max-pool net's window: its last layer's width


def build(kind):
    import torch
    from torch import nn

    class ResidualMLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Linear(784, WIDTH)
            self.blocks = nn.ModuleList(
                nn.ModuleList([nn.Linear(WIDTH, WIDTH), nn.Linear(WIDTH, WIDTH)])
                for _ in range(2))
            self.head = nn.Linear(WIDTH, 10)

        def forward(self, x):
            x = torch.relu(self.stem(x))
            for inner, outer in self.blocks:
                x = x + outer(torch.relu(inner(x)))
            return self.head(x)

    torch.manual_seed(0)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(784, WIDTH), nn.ReLU(), nn.Linear(WIDTH, WIDTH), nn.ReLU(),
                             nn.Linear(WIDTH, WIDTH), nn.ReLU(), nn.Linear(WIDTH, 10)).eval()
    if kind == "maxpool":
        return nn.Sequential(nn.Linear(784, WIDTH), nn.ReLU(), nn.Linear(WIDTH, WIDTH), nn.ReLU(),
                             nn.Linear(WIDTH, POOL), nn.Unflatten(1, (1, POOL)),
                             nn.MaxPool1d(POOL), nn.Flatten()).eval()
    return ResidualMLP().eval()


def plane(half):
    """(p0, p1, p2, origin, basis, extent): the three inputs and the square around them."""
    from relu_regions.analysis.plane import plane_basis

    p0, p1, p2 = np.random.default_rng(0).random((3, 784))
    origin, basis, coords = plane_basis(p0, p1, p2)
    c = coords.mean(0)
    return p0, p1, p2, origin, basis, (c[0] - half, c[0] + half, c[1] - half, c[1] + half)


def _ours(kind, half, threads, queue):
    from relu_regions.analysis.plane import MAX_THREADS, count_regions_2d, count_regions_plane
    from relu_regions.nets.parametrize import linear_relu_stack

    t = time.perf_counter()
    count_regions_2d(linear_relu_stack([2, 8, 8, 3]))  # loads the compiled kernels
    first_call = time.perf_counter() - t
    model = build(kind)
    p0, p1, p2, _, _, extent = plane(half)
    t = time.perf_counter()
    r = count_regions_plane(model, p0, p1, p2, extent=extent, threads=threads)
    seconds = time.perf_counter() - t
    used = threads or min(len(os.sched_getaffinity(0)), MAX_THREADS)
    queue.put(dict(regions=r.activation_regions, pieces=r.linear_pieces, threads=used,
                   decision_segments=int(r.decision_segments.shape[0]),
                   decision_length=r.decision_length, resolved=r.resolved, seconds=seconds,
                   first_call=first_call,
                   peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def regioncam_net(kind, half):
    """The model as regioncam layers, its first layer folded onto the square's plane."""
    import regioncam
    from torch import nn

    model = build(kind)
    _, _, _, origin, basis, extent = plane(half)
    centre = origin + basis @ np.array([(extent[0] + extent[1]) / 2, (extent[2] + extent[3]) / 2])

    def linear(m, fold=False):
        w = m.weight.detach().double().numpy()
        b = m.bias.detach().double().numpy()
        if fold:  # x = centre + basis s
            w, b = w @ basis, b + w @ centre
        return regioncam.nn.Linear(np.ascontiguousarray(w.T, np.float32), b.astype(np.float32))

    rnn = regioncam.nn
    if kind in ("mlp", "maxpool"):  # the max-pool net's max is added by _regioncam
        lins = [m for m in model if isinstance(m, nn.Linear)]
        layers = [linear(lins[0], True)]
        for m in lins[1:]:
            layers += [rnn.ReLU(), linear(m)]
        return rnn.Sequential(*layers)
    layers = [linear(model.stem, True), rnn.ReLU()]
    for inner, outer in model.blocks:
        layers.append(rnn.Residual(rnn.Sequential(linear(inner), rnn.ReLU(), linear(outer))))
    layers.append(linear(model.head))
    return rnn.Sequential(*layers)


def _regioncam(kind, half, queue):
    import regioncam

    def count(net, half, pool=False):
        rc = regioncam.Regioncam(size=half)  # the box [-half, half]^2
        rc.add(net)
        if pool:
            rc.max_pool()
        faces = rc.num_faces
        rc.decision_boundary()
        return rc, faces

    rng = np.random.default_rng(0)
    small = [rng.standard_normal(s).astype(np.float32) for s in ((2, 8), 8, (8, 3), 3)]
    count(regioncam.nn.Sequential(regioncam.nn.Linear(*small[:2]), regioncam.nn.ReLU(),
                                  regioncam.nn.Linear(*small[2:])), 1.0)
    net = regioncam_net(kind, half)
    t = time.perf_counter()
    rc, faces = count(net, half, kind == "maxpool")
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    length = sum(e.length for e in rc.edges if e.is_decision_boundary)  # checked, not timed
    queue.put(dict(regions=faces, faces_after=rc.num_faces, decision_length=length,
                   seconds=seconds, peak_mb=peak))


def search(kind, target):
    """Half-width giving about ``target`` regions (ours), by bisection on log h."""
    from relu_regions.analysis.plane import count_regions_plane

    model = build(kind)
    lo, hi = 0.5, 40.0
    for _ in range(8):
        h = (lo * hi) ** 0.5
        p0, p1, p2, _, _, extent = plane(h)
        n = count_regions_plane(model, p0, p1, p2, extent=extent).activation_regions
        print(f"{kind} h={h:.3f}: {n} regions", file=sys.stderr, flush=True)
        if abs(n / target - 1) < 0.05:
            return h
        lo, hi = (h, hi) if n < target else (lo, h)
    return h


def _median(runs, key):
    return statistics.median(r[key] for r in runs)


def _row(kind, size, half, repeats, ours, theirs, unequal):
    """A table row: the medians of our runs at one thread count beside regioncam's, and its
    printed line under "line"."""
    o = ours[0]
    row = dict(net=kind, size=size, half=half, repeats=repeats, threads=o["threads"],
               ours=dict(regions=o["regions"], pieces=o["pieces"],
                         decision_segments=o["decision_segments"],
                         decision_length=o["decision_length"], resolved=o["resolved"],
                         seconds=_median(ours, "seconds"),
                         peak_mb=_median(ours, "peak_mb"),
                         first_call=_median(ours, "first_call"),
                         all_seconds=[r["seconds"] for r in ours]))
    line = (f"{kind:8s} h={half:5.2f} threads={o['threads']} | ours {o['regions']:>7d} regions "
            f"{o['pieces']:>7d} pieces decision {o['decision_length']:8.3f} "
            f"{row['ours']['seconds']:7.3f} s peak {row['ours']['peak_mb']:5.0f} MB")
    if theirs:
        t = theirs[0]
        rc = dict(faces=t["regions"], faces_after=t["faces_after"],
                  decision_length=t["decision_length"],
                  seconds=_median(theirs, "seconds"),
                  peak_mb=_median(theirs, "peak_mb"),
                  all_seconds=[r["seconds"] for r in theirs])
        rc["ratio"] = rc["seconds"] / row["ours"]["seconds"]
        row["regioncam"] = rc
        equal = (t["regions"] == o["regions"] and abs(t["decision_length"]
                 - o["decision_length"]) <= 1e-3 * o["decision_length"])
        if not equal:
            unequal.append(f"{kind} {size}")
        line += (f" | regioncam {rc['faces']:>7d} faces (+{rc['faces_after'] - rc['faces']}"
                 f" by argmax) decision {rc['decision_length']:8.3f} "
                 f"{rc['seconds']:7.3f} s peak {rc['peak_mb']:5.0f} MB"
                 f" | ours {rc['ratio']:.2f}x faster{'' if equal else ' UNEQUAL'}")
    row["line"] = line
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nets", nargs="*", choices=sorted(HALF), default=sorted(HALF))
    ap.add_argument("--sizes", nargs="*", choices=["1e4", "5e4", "2e5"],
                    default=["1e4", "5e4", "2e5"], help="target region counts")
    ap.add_argument("--repeats", type=int, default=3,
                    help="interleaved runs per tool below 2e5 regions (default 3)")
    ap.add_argument("--repeats-large", type=int, default=1,
                    help="runs per tool at 2e5 regions (default 1)")
    ap.add_argument("--threads", nargs="*", type=int, default=[None],
                    help="our worker threads, one row each (default: one per usable core)")
    ap.add_argument("--no-regioncam", action="store_true")
    ap.add_argument("--search", type=float, metavar="REGIONS",
                    help="only find the half-width giving about this many regions, per net")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.search:
        for kind in args.nets:
            print(f"{kind}: h = {search(kind, args.search):.3f}")
        return
    have_rc = not args.no_regioncam
    if have_rc and importlib.util.find_spec("regioncam") is None:
        have_rc = False
        print("regioncam is not installed (pip install regioncam): timing ours only",
              file=sys.stderr)
    rows, unequal = [], []
    for kind in args.nets:
        for size in args.sizes:
            if size not in HALF[kind]:
                print(f"{kind} {size}: no square for this size yet (find one with --search)",
                      file=sys.stderr)
                continue
            half = HALF[kind][size]
            repeats = args.repeats_large if size == "2e5" else args.repeats
            ours, theirs = {t: [] for t in args.threads}, []
            for _ in range(repeats):
                for threads in args.threads:
                    ours[threads].append(measure(_ours, kind, half, threads))
                if have_rc:
                    theirs.append(measure(_regioncam, kind, half))
            for threads in args.threads:
                row = _row(kind, size, half, repeats, ours[threads], theirs, unequal)
                line = row.pop("line")
                rows.append(row)
                if not args.json:
                    print(line, flush=True)
    if args.json:
        print(json.dumps(rows, indent=2))
    if unequal:
        sys.exit(f"counts or decision lengths differ from regioncam's: {', '.join(unequal)}")


if __name__ == "__main__":
    main()
