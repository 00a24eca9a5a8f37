"""Benchmark: tiled plane counts (analysis/tiles.py) of a 10-class classifier against the untiled
count: equal counts, peak memory, seconds, 1 and 2 workers.

The net and the plane are bench_classifier.py's: the mlp 784 -> 256 x 3 -> 10 (PyTorch's
default init, torch.manual_seed(0)), the plane through three inputs drawn from [0, 1]^784
(numpy seed 0), the square of half-width h around their centroid (h = 3.9, 8.9, 44.5 give about
1e4, 5e4 and 2e5 regions; ``--half`` any other, e.g. one found with ``bench_classifier.py
--search 1e6``). ``--width``: the hidden layers' width (256 by default; the 256-wide net's
whole plane holds about 2.8e5 regions, so a 1e6-region square needs a wider one, e.g. 512).

Modes, each in its own spawned process after an untimed warm-up count that loads the numba
kernels: ``untiled`` (count_regions_plane as is), ``tiled`` (max_memory, one process),
``tiled-2`` (max_memory, workers=2; the workers are spawned inside the timed call, so their
start-up, importing torch and loading the kernels, is in its time) and ``dask-2`` (4 x 4 tiles
within max_memory on a dask.distributed LocalCluster of two worker processes, started before
the clock). Peak MB: the process's ``ru_maxrss``, and for ``tiled-2`` also the largest
worker's (RUSAGE_CHILDREN). The tiled
counts must equal the first mode's: regions, pieces, vertices, edges, and decision length to
1e-9 (relative). ``--repeats``: the modes interleaved; each row gives the load average (1, 5,
15 minutes) just before its count.

    python benchmarks/bench_tiles.py --sizes 1e4                    # the small size
    python benchmarks/bench_tiles.py --sizes 1e4 5e4 2e5 --max-memory 2GB --json
    python benchmarks/bench_tiles.py --half 120 --modes tiled tiled-2   # a large square
    python benchmarks/bench_tiles.py --sizes 2e5 --modes tiled tiled-2 --repeats 3
    python benchmarks/bench_tiles.py --sizes 1e4 --modes untiled dask-2  # a real Dask cluster
    python benchmarks/bench_tiles.py --sizes --width 512 --half 300 --modes tiled --regioncam
"""

import argparse
import json
import resource
import sys
import time

import bench_classifier
from bench_classifier import _regioncam, build, plane
from bench_count import measure  # a fresh spawned process per measurement

HALF = {"1e4": 3.9, "5e4": 8.9, "2e5": 44.5}
MODES = ("untiled", "tiled", "tiled-2", "dask-2")


def _load():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def _run(mode, half, max_memory, width, queue):
    bench_classifier.WIDTH = width  # this spawned process's net (build reads it)
    from relu_regions.analysis.plane import count_regions_2d, count_regions_plane
    from relu_regions.nets.parametrize import linear_relu_stack

    count_regions_2d(linear_relu_stack([2, 8, 8, 3]))  # loads the compiled kernels
    model = build("mlp")
    p0, p1, p2, _, _, extent = plane(half)
    options = {} if mode == "untiled" else {"max_memory": max_memory}
    if mode == "tiled-2":
        options["workers"] = 2
    cluster = None
    if mode == "dask-2":  # a real scheduler and two worker processes, started before the clock
        from dask.distributed import LocalCluster

        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        options["scheduler"] = cluster.scheduler_address
        options["tiles"] = (4, 4)  # (a budget alone gives one tile per worker at a time)
    load = _load()
    t = time.perf_counter()
    r = count_regions_plane(model, p0, p1, p2, extent=extent, **options)
    seconds = time.perf_counter() - t
    if cluster is not None:
        cluster.close()
    queue.put(dict(mode=mode, regions=r.activation_regions, pieces=r.linear_pieces,
                   vertices=r.vertices, edges=r.edges, decision_length=r.decision_length,
                   resolved=r.resolved, tiles=list(getattr(r, "tiles", (1, 1))),
                   seconds=round(seconds, 3), load=load,
                   peak_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                   worker_peak_mb=round(
                       resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)))


def _regioncam_limited(half, limit_gb, width, queue):
    """bench_classifier's regioncam count of the mlp on the square, under an address-space limit
    of ``limit_gb`` GB (0: none), so that a map too large for the machine fails alone."""
    bench_classifier.WIDTH = width
    if limit_gb:
        limit = int(limit_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    _regioncam("mlp", half, queue)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="*", choices=sorted(HALF), default=["1e4"])
    ap.add_argument("--half", type=float, nargs="*", default=[], help="other half-widths")
    ap.add_argument("--modes", nargs="*", choices=MODES, default=list(MODES))
    ap.add_argument("--max-memory", default="2GB")
    ap.add_argument("--repeats", type=int, default=1,
                    help="run the modes this many times, interleaved (a, b, a, b, ...)")
    ap.add_argument("--regioncam", action="store_true",
                    help="also count each square with regioncam (bench_classifier.py's way)")
    ap.add_argument("--regioncam-limit", type=float, default=16.0, metavar="GB",
                    help="regioncam's address-space limit (default 16 GB; 0: none)")
    ap.add_argument("--width", type=int, default=bench_classifier.WIDTH,
                    help="the hidden layers' width (default %(default)s; the --sizes' h values "
                         "are for that width)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows, unequal = [], []
    for half in [HALF[s] for s in args.sizes] + args.half:
        runs = [measure(_run, mode, half, args.max_memory, args.width)
                for _ in range(args.repeats) for mode in args.modes]
        ref = runs[0]
        for r in runs:
            r["half"] = half
            same = all(r[k] == ref[k] for k in ("regions", "pieces", "vertices", "edges")) \
                and abs(r["decision_length"] - ref["decision_length"]) \
                <= 1e-9 * ref["decision_length"]
            if not same:
                unequal.append(f"h={half} {r['mode']}")
            rows.append(r)
            if not args.json:
                workers = f" workers {r['worker_peak_mb']:5d} MB" if r["mode"] == "tiled-2" else ""
                print(f"h={half:6.2f} {r['mode']:8s} {r['tiles'][0]:>3d}x{r['tiles'][1]:<3d} "
                      f"{r['regions']:>8d} regions {r['pieces']:>8d} pieces "
                      f"{r['vertices']:>8d} vertices decision {r['decision_length']:10.4f} "
                      f"{r['seconds']:8.2f} s peak {r['peak_mb']:5d} MB{workers} "
                      f"load {r['load']}{'' if same else ' UNEQUAL'}", flush=True)
        if args.regioncam:
            try:
                rc = measure(_regioncam_limited, half, args.regioncam_limit, args.width)
            except RuntimeError as err:
                rc = dict(failed=str(err))
            rc.update(mode="regioncam", half=half)
            rows.append(rc)
            if "failed" in rc:
                print(f"h={half:6.2f} regioncam failed under a {args.regioncam_limit:g} GB "
                      f"address-space limit: {rc['failed']}", flush=True)
            else:
                best = min(r["seconds"] for r in runs if r["mode"] != "untiled") \
                    if any(r["mode"] != "untiled" for r in runs) else ref["seconds"]
                same = rc["regions"] == ref["regions"] and abs(
                    rc["decision_length"] - ref["decision_length"]) \
                    <= 1e-3 * max(ref["decision_length"], 1e-300)
                if not same:
                    unequal.append(f"h={half} regioncam")
                print(f"h={half:6.2f} regioncam {rc['regions']:>8d} faces "
                      f"({rc['faces_after']} after the argmax split), decision "
                      f"{rc['decision_length']:10.4f} {rc['seconds']:8.2f} s peak "
                      f"{rc['peak_mb']:5.0f} MB; ours (fastest tiled) "
                      f"{rc['seconds'] / best:.2f}x faster{'' if same else ' UNEQUAL'}",
                      flush=True)
        if "tiled" in args.modes and "tiled-2" in args.modes and not args.json:
            one = sorted(r["seconds"] for r in runs if r["mode"] == "tiled")
            two = sorted(r["seconds"] for r in runs if r["mode"] == "tiled-2")
            pairs = [f"{r1['seconds'] / r2['seconds']:.2f}x" for r1, r2 in zip(
                [r for r in runs if r["mode"] == "tiled"],
                [r for r in runs if r["mode"] == "tiled-2"], strict=True)]
            print(f"h={half:6.2f} 2 workers against 1: median {one[len(one) // 2]:.2f} s / "
                  f"{two[len(two) // 2]:.2f} s = {one[len(one) // 2] / two[len(two) // 2]:.2f}x "
                  f"(each pair: {', '.join(pairs)})", flush=True)
    if args.json:
        print(json.dumps(rows, indent=2))
    if unequal:
        sys.exit(f"tiled counts differ from the first mode's: {', '.join(unequal)}")


if __name__ == "__main__":
    main()
