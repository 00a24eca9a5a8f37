"""Benchmark: the region map of a CIFAR-size CNN on a square of the plane through three images,
its conv stages kept as operators (nets/operators.py), counted in tiles within a memory budget.

The net (PyTorch's default init, torch.manual_seed(0), eval mode, float64):

    Conv2d(3, 16, 3, padding=1) BatchNorm2d ReLU          16 x 32 x 32 = 16,384 units
    Conv2d(16, 16, 3, padding=1, stride=2) BatchNorm2d ReLU   16 x 16 x 16 = 4,096 units
    AvgPool2d(2) Flatten Linear(1024, 10)

Dense, its first two layers would be 16,384 x 3,072 (400 MB) and 4,096 x 16,384 (512 MB)
matrices; as operators they hold 3.5 KB of kernels. The plane passes through three inputs drawn
from [0, 1]^(3x32x32) (numpy seed 0); the square of half-width ``--half`` is centred on their
centroid. Each count runs in its own spawned process after an untimed warm-up count of a small
net (loading the compiled kernels); peak MB is that process's ``ru_maxrss``.

    python benchmarks/bench_cifar_cnn.py --half 0.02              # one square
    python benchmarks/bench_cifar_cnn.py --search 1e5 --start 0.01 # grow the square 1.5x per
                                                                  # step until 1e5 regions
    python benchmarks/bench_cifar_cnn.py --half 0.02 --max-memory 2GB --workers 2
"""

import argparse
import json
import resource
import time

import numpy as np
from bench_count import measure  # a fresh spawned process per measurement


def build():
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, stride=2), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(16 * 8 * 8, 10)).double().eval()


def points():
    return np.random.default_rng(0).uniform(0.0, 1.0, (3, 3, 32, 32))


def _run(half, max_memory, workers, queue):
    from relu_regions.analysis.plane import count_lowered_plane, count_regions_2d, plane_basis
    from relu_regions.nets.parametrize import linear_relu_stack
    from relu_regions.nets.reader import lower

    count_regions_2d(linear_relu_stack([2, 8, 8, 3]))  # loads the compiled kernels
    start = time.perf_counter()
    lowered = lower(build(), (3, 32, 32))
    pts = points()
    _, _, coords = plane_basis(*(p.reshape(-1) for p in pts))
    cu, cv = coords.mean(0)
    extent = (cu - half, cu + half, cv - half, cv + half)
    r = count_lowered_plane(lowered, *pts, extent, max_memory=max_memory, workers=workers)
    seconds = time.perf_counter() - start
    queue.put(dict(half=half, regions=r.activation_regions, pieces=r.linear_pieces,
                   vertices=r.vertices, decision_length=r.decision_length,
                   resolved=r.resolved, tiles=list(getattr(r, "tiles", (1, 1))),
                   operators=[type(w).__name__ for w, _ in lowered.layers],
                   seconds=seconds, max_memory=max_memory, workers=workers,
                   peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                   children_peak_mb=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
                   / 1024))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--half", type=float, default=0.02,
                        help="half-width of the square in input units (default 0.02)")
    parser.add_argument("--search", type=float, default=None,
                        help="grow the square from --start by 1.5x until it holds this many "
                             "regions")
    parser.add_argument("--start", type=float, default=0.01)
    parser.add_argument("--max-memory", default="2GB", help='a budget, or "none" (untiled)')
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    half = args.start if args.search else args.half
    if args.max_memory.lower() == "none":
        args.max_memory = None
    while True:
        row = measure(_run, half, args.max_memory, args.workers)
        if args.json:
            print(json.dumps(row))
        else:
            print(f"half {row['half']:.4g}: {row['regions']} regions, {row['pieces']} pieces, "
                  f"{row['vertices']} vertices, decision length {row['decision_length']:.6g}, "
                  f"resolved {row['resolved']}, tiles {row['tiles']}, {row['seconds']:.1f} s, "
                  f"peak {row['peak_mb']:.0f} MB (workers {row['children_peak_mb']:.0f} MB); "
                  f"layers {', '.join(row['operators'])}", flush=True)
        if not args.search or row["regions"] >= args.search:
            break
        half *= 1.5


if __name__ == "__main__":
    main()
