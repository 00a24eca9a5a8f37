"""Benchmark: exact counting of the construction for large depths, and regioncam beside it.

Each measurement runs in a fresh subprocess so its peak memory (ru_maxrss) is its own; the RSS of
the same process right before counting (Python + torch + the model) is printed too. Both counters
first count a depth-2 construction, untimed for the comparison: our kernels are numba-compiled and
a process's first count loads them from the on-disk cache (~0.5-1 s, once per process; printed as
"first call"). The ratio is between the timed counts; "cold" adds that one-time load to ours.

Like for like: each counter is timed from the model (ours: ``count_regions(net)``; regioncam:
reading the (W, b) layers with ``relu_layers`` plus its count) and from the (W, b) layers already
read (ours: ``count_regions(layers)``). A count faster than 0.2 s is repeated (up to 200 times,
0.2 s in all) and the fastest run is reported, for both counters alike: single sub-millisecond
timings are mostly noise. Small nets (d = 4..12) show the fixed cost per count:

    python benchmarks/bench_count.py --depths 4 8 12

    python benchmarks/bench_count.py                 # d = 16..24, a = 1/2 and random a
    python benchmarks/bench_count.py --depths 20 24 --json

Targets: a = 1/2 at d = 24 gives exactly 2^24 pieces in < 10 s and < 2 GB peak; where
regioncam (PyPI, float32) is installed, at least 10x faster than it at d = 20 and exact where it
is not.
"""

import argparse
import importlib.util
import json
import multiprocessing as mp
import resource
import time

import numpy as np


def _rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _peaks(depth, kind):
    if kind == "half":
        return 0.5
    return np.random.default_rng(depth).uniform(0.25, 0.75, depth + 1).tolist()


def _fastest(count, budget=0.2, most=200):
    """(result, seconds): one run, then more while they fit in ``budget`` s; the fastest."""
    t = time.perf_counter()
    result = count()
    best = spent = time.perf_counter() - t
    for _ in range(most - 1):
        if spent + best > budget:
            break
        t = time.perf_counter()
        count()
        took = time.perf_counter() - t
        best, spent = min(best, took), spent + took
    return result, best


def _ours(depth, kind, queue):
    from relu_regions.analysis.regions import count_regions
    from relu_regions.nets.parametrize import ConstructionNet
    from relu_regions.nets.reader import relu_layers

    t = time.perf_counter()
    count_regions(ConstructionNet.build(2, peaks=0.5), 0.0, 1.0)  # loads the compiled kernels
    first_call = time.perf_counter() - t
    net = ConstructionNet.build(depth, peaks=_peaks(depth, kind), thm31=True)
    before = _rss_mb()
    r, seconds = _fastest(lambda: count_regions(net, 0.0, 1.0))
    layers = relu_layers(net)
    _, from_layers = _fastest(lambda: count_regions(layers, 0.0, 1.0))
    queue.put(dict(pieces=r.linear_pieces, regions=r.activation_regions, seconds=seconds,
                   from_layers=from_layers,
                   peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                   before_mb=before, min_width=r.min_piece_width, first_call=first_call))


def _regioncam(depth, kind, queue):
    from relu_regions.nets.parametrize import ConstructionNet
    from relu_regions.nets.reader import relu_layers

    _regioncam_count(relu_layers(ConstructionNet.build(2, peaks=0.5)))  # same warm-up as ours
    net = ConstructionNet.build(depth, peaks=_peaks(depth, kind), thm31=True)
    pieces, seconds = _fastest(lambda: _regioncam_count(relu_layers(net)))
    layers = relu_layers(net)
    _, from_layers = _fastest(lambda: _regioncam_count(layers))
    queue.put(dict(pieces=pieces, seconds=seconds, from_layers=from_layers,
                   peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def _regioncam_count(layers):
    import regioncam

    rc = regioncam.Regioncam1D(1.0)  # inputs u in [-1/2, 1/2]; x = u + 1/2 via the first bias
    for i, (w, b) in enumerate(layers):
        if i == 0:
            b = b + 0.5 * w[:, 0]
        rc.linear(w.T.astype(np.float32), b.astype(np.float32))
        if i < len(layers) - 1:
            rc.relu()
    return rc.num_edges


def measure(target, *args):
    """``target(*args, queue)`` in a fresh spawned process; what it put in the queue."""
    import queue as queues

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, queue))
    p.start()
    while True:
        try:
            result = queue.get(timeout=5)
            break
        except queues.Empty:
            if not p.is_alive():  # it died (an exception, or killed for memory) without a result
                raise RuntimeError(
                    f"{target.__name__}{args} exited with code {p.exitcode}") from None
    p.join()
    return result


def _ms(seconds):
    return f"{seconds * 1e3:9.3f} ms"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--depths", type=int, nargs="+", default=list(range(16, 25)))
    ap.add_argument("--regioncam-max-depth", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    have_rc = importlib.util.find_spec("regioncam") is not None
    rows = []
    for kind in ("half", "random"):
        for d in args.depths:
            ours = measure(_ours, d, kind)
            row = dict(peaks=kind, depth=d, expected=2**d, ours=ours)
            if have_rc and d <= args.regioncam_max_depth:
                rc = measure(_regioncam, d, kind)
                rc["ratio"] = rc["seconds"] / ours["seconds"]
                rc["ratio_layers"] = rc["from_layers"] / ours["from_layers"]
                rc["ratio_cold"] = rc["seconds"] / (ours["seconds"] + ours["first_call"])
                row["regioncam"] = rc
            rows.append(row)
            if not args.json:
                line = (f"a={kind:6s} d={d:2d}  2^d={2**d:>9d}  ours: {ours['pieces']:>9d} pieces "
                        f"{_ms(ours['seconds'])} (layers {_ms(ours['from_layers'])})  "
                        f"peak {ours['peak_mb']:6.0f} MB "
                        f"(before counting {ours['before_mb']:4.0f} MB, "
                        f"first call {ours['first_call']:.2f} s)")
                if "regioncam" in row:
                    rc = row["regioncam"]
                    line += (f" | regioncam: {rc['pieces']:>9d} {_ms(rc['seconds'])} (layers "
                             f"{_ms(rc['from_layers'])}); ours {rc['ratio']:.1f}x faster "
                             f"(layers {rc['ratio_layers']:.1f}x, cold {rc['ratio_cold']:.2f}x)")
                print(line, flush=True)
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not have_rc:
        print("regioncam is not installed: pip install regioncam to compare")


if __name__ == "__main__":
    main()
