"""Benchmark: exact local complexity of many points (local_complexity) beside its sampled proxy.

The net: 64 -> 256 x 3 -> 10 with PyTorch's default nn.Linear init (torch.manual_seed(0)),
float64; the points uniform in [0, 1]^64 (numpy seed 0); radius 0.1, one random plane per point
(seed 0). Rows, all in this process after one untimed call that loads the compiled kernels:

  * the exact count, batched (local_complexity as shipped: BATCH squares per kernel call, one
    thread per core), and the same on one thread;
  * the same with one square per kernel call (BATCH = 1, one thread), on the first --alone
    points;
  * count_regions_plane on each square (the public per-point route, cells filtered to the
    disc afterwards), on the first --alone points;
  * the sampled proxy (2D cross-polytope, the same planes), and with dims=25 (50 samples, as the
    paper's MNIST runs; not bounded by the exact count).

Wall and CPU seconds (process time, all threads) are printed with the load average: the machine
may be shared, so compare rows of one run.

    python benchmarks/bench_local_complexity.py
    python benchmarks/bench_local_complexity.py --points 200 --alone 20 --json

Target: 1,000 points in at most 10 s on 2 cores.
"""

import argparse
import json
import os
import time

import numpy as np


def timed(fn, *args, **kwargs):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--points", type=int, default=1000)
    ap.add_argument("--alone", type=int, default=100,
                    help="points for the one-square-per-call rows (0: skip them)")
    ap.add_argument("--radius", type=float, default=0.1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import torch

    from relu_regions.analysis import local
    from relu_regions.analysis.plane import count_regions_plane
    from relu_regions.nets.parametrize import linear_relu_stack

    torch.manual_seed(0)
    net = linear_relu_stack([64, 256, 256, 256, 10])
    pts = np.random.default_rng(0).random((args.points, 64))
    r = args.radius
    _, first, _ = timed(local.local_complexity, net, pts[:2], r)  # loads the kernels
    rows = {"first_call": first, "load_before": os.getloadavg()}

    exact, wall, cpu = timed(local.local_complexity, net, pts, r)
    rows["exact"] = dict(points=len(pts), wall=wall, cpu=cpu, batch=local.BATCH,
                         workers=os.cpu_count(),
                         mean_regions=exact.mean_activation_regions,
                         mean_neurons=exact.mean_neurons,
                         max_regions=int(exact.activation_regions.max()))
    one, wall, cpu = timed(local.local_complexity, net, pts, r, workers=1)
    assert np.array_equal(one.neurons, exact.neurons)
    rows["exact_one_thread"] = dict(points=len(pts), wall=wall, cpu=cpu)
    if args.alone:
        sub = pts[:args.alone]
        batch, local.BATCH = local.BATCH, 1
        try:
            alone, wall, cpu = timed(local.local_complexity, net, sub, r, workers=1)
        finally:
            local.BATCH = batch
        assert np.array_equal(alone.activation_regions, exact.activation_regions[:len(sub)])
        assert np.array_equal(alone.neurons, exact.neurons[:len(sub)])
        rows["one_square_per_call"] = dict(points=len(sub), wall=wall, cpu=cpu)

        def per_point():
            out = []
            for x, (u, v) in zip(sub, exact.planes[:len(sub), 0], strict=True):
                c = count_regions_plane(net, x, x + u, x + v, extent=(-r, r, -r, r))
                out.append(int(local.meets_disc(c.offsets, c.polygons, r).sum()))
            return out

        regions, wall, cpu = timed(per_point)
        assert regions == exact.activation_regions[:len(sub), 0].tolist()
        rows["count_regions_plane_per_point"] = dict(points=len(sub), wall=wall, cpu=cpu)
    for dims in (2, 25):
        s, wall, cpu = timed(local.sampled_local_complexity, net, pts, r, dims=dims)
        rows[f"sampled_dims{dims}"] = dict(points=len(pts), wall=wall, cpu=cpu,
                                           mean_regions=s.mean_activation_regions,
                                           mean_neurons=s.mean_neurons)
    rows["load_after"] = os.getloadavg()
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"first call (loads the kernels): {first:.2f} s; load average before "
          f"{rows['load_before'][0]:.2f}, after {rows['load_after'][0]:.2f}")
    for name, row in rows.items():
        if not isinstance(row, dict):
            continue
        per = 1e3 * row["wall"] / row["points"]
        extra = "".join(f" {k}={row[k]:.2f}" for k in ("mean_regions", "mean_neurons")
                        if k in row)
        print(f"{name:30s} {row['points']:5d} points  wall {row['wall']:7.3f} s  cpu "
              f"{row['cpu']:7.3f} s  {per:7.2f} ms/point{extra}")


if __name__ == "__main__":
    main()
