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
    python benchmarks/bench_cifar_cnn.py --half 0.15 --compare    # untiled against 2GB tiles
    python benchmarks/bench_cifar_cnn.py --trained --half 0.5     # trained briefly on digits

``--trained``: the net trained for 3 epochs (Adam, float32, seeded) on sklearn's 8 x 8 digits,
each pixel a 4 x 4 block in all three channels (1,797 images of 3 x 32 x 32, 10 classes), then
counted in float64 on the plane through the first 0, 1 and 2 of the digits.
"""

import argparse
import json
import os
import resource
import sys
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


def digits():
    """sklearn's 8 x 8 digits (1,797 images, 10 classes) as 3 x 32 x 32 images in [0, 1]: each
    pixel a 4 x 4 block, the same in the three channels; (images, labels)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = np.kron(data.images / 16.0, np.ones((4, 4)))  # (n, 32, 32)
    return np.repeat(images[:, None], 3, axis=1), data.target


def train(path, epochs=3):
    """The net trained briefly on digits() (Adam, lr 1e-3, batches of 64, float32, seeded),
    saved as a state dict at ``path``; (seconds, training accuracy)."""
    import torch

    start = time.perf_counter()
    torch.manual_seed(0)
    model = build().float().train()
    images, labels = digits()
    x = torch.tensor(images, dtype=torch.float32)
    y = torch.tensor(labels)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for batch in torch.randperm(len(x), generator=gen).split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(x).argmax(1) == y).float().mean())
    torch.save(model.state_dict(), path)
    return time.perf_counter() - start, accuracy


def digit_points():
    """The first image of the digits 0, 1 and 2."""
    images, labels = digits()
    return np.stack([images[np.flatnonzero(labels == d)[0]] for d in (0, 1, 2)])


def _model_and_points(weights):
    import torch

    model = build()
    if weights is None:
        return model, points()
    model.load_state_dict(torch.load(weights, weights_only=True))
    return model.double().eval(), digit_points()


def _run(half, max_memory, workers, weights, arrays, progress, threads, batch_floats, queue):
    if threads is not None:  # torch's intra-op threads in this process (its conv operators)
        import torch

        torch.set_num_threads(threads)
    if batch_floats is not None:  # before the model is lowered: its operators read it
        from relu_regions.nets import operators

        operators.BATCH_FLOATS = batch_floats
    from relu_regions.analysis.plane import count_lowered_plane, count_regions_2d, plane_basis
    from relu_regions.nets.parametrize import linear_relu_stack
    from relu_regions.nets.reader import lower

    count_regions_2d(linear_relu_stack([2, 8, 8, 3]))  # loads the compiled kernels
    start = time.perf_counter()
    model, pts = _model_and_points(weights)
    lowered = lower(model, (3, 32, 32))
    _, _, coords = plane_basis(*(p.reshape(-1) for p in pts))
    cu, cv = coords.mean(0)
    extent = (cu - half, cu + half, cv - half, cv + half)
    r = count_lowered_plane(lowered, *pts, extent, max_memory=max_memory, workers=workers,
                            progress=progress and max_memory is not None)
    seconds = time.perf_counter() - start
    extra = {}
    if arrays:  # each region's and each piece's area, sorted (a tiled count's from its pieces)
        regions = getattr(r, "regions", np.arange(r.areas.size))
        extra = dict(region_areas=np.sort(np.bincount(regions, r.areas)),
                     piece_areas=np.sort(np.bincount(r.pieces, r.areas)))
    queue.put(dict(half=half, regions=r.activation_regions, pieces=r.linear_pieces,
                   vertices=r.vertices, edges=r.edges, decision_length=r.decision_length,
                   resolved=r.resolved, unmatched_edges=r.unmatched_edges,
                   min_cell_width=r.min_cell_width, snapped=r.snapped,
                   tiles=list(getattr(r, "tiles", (1, 1))),
                   operators=[type(w).__name__ for w, _ in lowered.layers],
                   batch_floats=batch_floats,
                   seconds=seconds, max_memory=max_memory, workers=workers, threads=threads,
                   peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                   children_peak_mb=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
                   / 1024, **extra))


def compare(half, budget, workers, weights, batch_floats=None):
    """The count untiled and tiled on one square: equal regions, pieces, vertices, edges, each
    region's and each piece's area (sorted; to 1e-9 relative) and decision length (1e-9)."""
    rows = [measure(_run, half, None, 1, weights, True, False, None, batch_floats),
            measure(_run, half, budget, workers, weights, True, False, None, batch_floats)]
    whole, tiled = rows
    same = {k: whole[k] == tiled[k] for k in ("regions", "pieces", "vertices", "edges")}
    for k in ("region_areas", "piece_areas"):
        a, b = whole[k], tiled[k]
        same[k] = a.shape == b.shape and bool(np.allclose(a, b, rtol=1e-9, atol=1e-12 * a.sum()))
    same["decision_length"] = abs(whole["decision_length"] - tiled["decision_length"]) \
        <= 1e-9 * max(whole["decision_length"], 1e-300)
    return rows, same


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--half", type=float, default=0.02,
                        help="half-width of the square in input units (default 0.02)")
    parser.add_argument("--search", type=float, default=None,
                        help="grow the square from --start by 1.5x until it holds this many "
                             "regions")
    parser.add_argument("--start", type=float, default=0.01)
    parser.add_argument("--max-memory", default="2GB", help='a budget, or "none" (untiled)')
    parser.add_argument("--workers", type=int, nargs="+", default=[1],
                        help="local tile workers; several values are run in turn (--repeats "
                             "rounds) and compared to the first")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads of the counting process (its conv operators; tile "
                             "workers always use one); default: torch's own")
    parser.add_argument("--batch-floats", type=int, default=None,
                        help="floats per batch of rows through a conv operator "
                             "(nets.operators.BATCH_FLOATS; default: the library's)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="rounds of the --workers values, alternating (default 1)")
    parser.add_argument("--trained", action="store_true",
                        help="train the net briefly on sklearn's digits (as 3 x 32 x 32 "
                             "images) first; the plane then goes through the digits 0, 1, 2")
    parser.add_argument("--compare", action="store_true",
                        help="count the square untiled and with --max-memory; check they agree")
    parser.add_argument("--progress", action="store_true",
                        help="the tiles' progress on stderr (a line every ~10 s when piped)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    half = args.start if args.search else args.half
    if args.max_memory.lower() == "none":
        args.max_memory = None
    weights = None
    if args.trained:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            weights = os.path.join(tmp, "trained.pt")
            seconds, accuracy = train(weights)
            print(f"trained on digits: {seconds:.1f} s, training accuracy {accuracy:.3f}",
                  flush=True)
            _count(args, half, weights)
        return
    _count(args, half, None)


def _count(args, half, weights):
    """The counts main() asks for, of the net with ``weights`` (None: default init)."""
    if len(args.workers) > 1 or args.repeats > 1:
        _workers(args, half, weights)
        return
    if args.compare:
        rows, same = compare(half, args.max_memory or "2GB", args.workers[0], weights,
                             args.batch_floats)
        for row in rows:
            print(f"half {half:.4g} {'tiled' if row['max_memory'] else 'untiled'}: tiles "
                  f"{row['tiles']}, {row['regions']} regions, {row['pieces']} pieces, "
                  f"{row['vertices']} vertices, {row['edges']} edges, decision length "
                  f"{row['decision_length']:.10g}, {row['seconds']:.1f} s, peak "
                  f"{row['peak_mb']:.0f} MB", flush=True)
        print("equal: " + ", ".join(f"{k} {v}" for k, v in same.items()))
        if not all(same.values()):
            sys.exit("the tiled count differs from the untiled one")
        return
    while True:
        row = measure(_run, half, args.max_memory, args.workers[0], weights, False,
                      args.progress, args.threads, args.batch_floats)
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


def _spin(n, queue):
    """A CPU-bound loop of n steps (pure Python: no BLAS, no memory traffic); its seconds."""
    start = time.perf_counter()
    x = 0
    for i in range(n):
        x += i
    queue.put(time.perf_counter() - start)


def ceiling(workers, n=20_000_000):
    """What ``workers`` processes can gain on this machine: ``workers`` copies of one CPU-bound
    loop run at once, against one alone, as a throughput ratio (workers x alone / together; 2.0
    on two free cores). Other jobs, or virtual cores that share a physical one, lower it."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")

    def run(k):
        queue = ctx.Queue()
        procs = [ctx.Process(target=_spin, args=(n, queue)) for _ in range(k)]
        for p in procs:
            p.start()
        out = [queue.get() for _ in procs]
        for p in procs:
            p.join()
        return max(out)

    alone = run(1)
    return workers * alone / run(workers)


def _workers(args, half, weights):
    """The --workers values in turn, --repeats rounds, each count in a fresh process; the median
    seconds of each and its speed-up over the first value's; exits non-zero if counts differ."""
    runs = {w: [] for w in args.workers}
    top = max(args.workers)
    limits = [ceiling(top)]
    for _ in range(args.repeats):
        for w in args.workers:
            row = measure(_run, half, args.max_memory, w, weights, False, args.progress,
                          args.threads, args.batch_floats)
            runs[w].append(row)
            print(json.dumps(row) if args.json else
                  f"workers {w}: {row['regions']} regions, {row['pieces']} pieces, tiles "
                  f"{row['tiles']}, {row['seconds']:.1f} s, peak {row['peak_mb']:.0f} MB "
                  f"(workers {row['children_peak_mb']:.0f} MB)", flush=True)
    limits.append(ceiling(top))
    keys = ("regions", "pieces", "vertices", "edges")
    first = runs[args.workers[0]][0]
    same = all(r[k] == first[k] for rows in runs.values() for r in rows for k in keys)
    base = np.median([r["seconds"] for r in runs[args.workers[0]]])
    for w, rows in runs.items():
        s = np.median([r["seconds"] for r in rows])
        print(f"workers {w}: median {s:.1f} s over {len(rows)} run(s), {base / s:.2f}x the "
              f"speed of workers {args.workers[0]} (threads {args.threads or 'default'})")
    print(f"the machine's ceiling for {top} processes (bench_cifar_cnn.ceiling: {top} copies "
          f"of a CPU-bound loop at once against one alone), before and after: "
          f"{limits[0]:.2f}x, {limits[1]:.2f}x")
    if not same:
        sys.exit("counts differ between runs")


if __name__ == "__main__":
    main()
