"""Benchmark: exact region maps on a plane (count_regions_2d / count_regions_plane) beside
regioncam.

Rows (each counter in its own spawned process, so each peak memory, ru_maxrss, is its own; both
first count a small net untimed, so the times are warm: for us that first count loads the numba
kernels from their on-disk cache, printed as "first call"):

  * default-init nets 2 -> w x L -> 1 (PyTorch's default nn.Linear init, Kaiming-uniform weights
    and uniform biases, torch.manual_seed(0)) on the box [-1, 1]^2;
  * the separable construction F(x) + G(y): two width-4 constructions (free scales 4^-(i+1),
    peaks uniform in [0.3, 0.7], seeded by d) side by side, exactly 4^d regions and 4^d pieces,
    read on [-1, 1]^2 through x = (u + 1) / 2;
  * a plane through three 8x8 digits (sklearn's digits, shipped with scikit-learn) in a
    64 -> 64 -> 64 -> 10 classifier trained here (seeded), on a square of side 3 x the points'
    spread around their centroid; the count is of the hidden partition (the output is the logit of
    the first digit's class; regioncam gets the same 2-input net on the plane).

    python benchmarks/bench_count2d.py                         # everything
    python benchmarks/bench_count2d.py --nets 64x3 128x4 --depths 5 9 --no-digits

regioncam (PyPI, float32) is optional: without it the script says so and times ours only.
Targets: exact where the answer is known; no slower than regioncam from 10^4 regions
up (warm), at least 2x faster at 10^6; 10^6 regions in under 10 s and 2 GB.
"""

import argparse
import importlib.util
import json
import resource
import sys
import time

import numpy as np
from bench_count import measure  # a fresh spawned process per measurement


def default_net(spec):
    import torch

    from relu_regions.nets.parametrize import linear_relu_stack
    from relu_regions.nets.reader import layer_stack

    width, depth = (int(v) for v in spec.split("x"))
    torch.manual_seed(0)
    return layer_stack(linear_relu_stack([2] + [width] * depth + [1]))[0]


def separable(depth):
    import torch

    from relu_regions.nets.composite import side_by_side
    from relu_regions.nets.construction import Construction

    g = torch.Generator().manual_seed(depth)
    nets = []
    for _ in range(2):
        peaks = 0.3 + 0.4 * torch.rand(depth, generator=g, dtype=torch.float64)
        c = Construction(depth, peaks=peaks, thm31=False)
        nets.append([(w.detach()[None], b.detach()[None]) for w, b in c.weights()])
    dirs = [torch.tensor(d, dtype=torch.float64) for d in ((1.0, 0.0), (0.0, 1.0))]
    layers = [(w[0].numpy(), b[0].numpy()) for w, b in side_by_side(nets, dirs)]
    w0, b0 = layers[0]
    layers[0] = (0.5 * w0, b0 + 0.5 * w0.sum(1))  # x = (u + 1) / 2 maps [-1, 1]^2 to [0, 1]^2
    return layers


def digits_plane():
    """(2-input layers on the plane, half side, classes of the three digits) or None."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        return None
    import torch

    from relu_regions.analysis.plane import plane_basis

    data = load_digits()
    x = torch.tensor(data.data / 16.0)
    y = torch.tensor(data.target)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64),
                              torch.nn.ReLU(), torch.nn.Linear(64, 10)).double()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    accuracy = float((net(x).argmax(1) == y).double().mean())
    idx = [int(np.flatnonzero(data.target == k)[0]) for k in (0, 1, 7)]
    pts = data.data[idx] / 16.0
    origin, basis, coords = plane_basis(*pts)
    centre = coords.mean(0)
    half = 1.5 * (coords.max(0) - coords.min(0)).max()
    layers = [(m.weight.detach().numpy().copy(), m.bias.detach().numpy().copy())
              for m in net if isinstance(m, torch.nn.Linear)]
    w0, b0 = layers[0]
    # Plane coordinates s in [-half, half]^2 around the centroid: x = origin + basis (c + s).
    layers[0] = (w0 @ basis, b0 + w0 @ (origin + basis @ centre))
    w_out, b_out = layers[-1]
    layers[-1] = (w_out[data.target[idx[0]]][None], b_out[data.target[idx[0]]][None])
    return layers, half, accuracy


def make(kind, arg):
    if kind == "net":
        return default_net(arg), 1.0
    if kind == "separable":
        return separable(arg), 1.0
    layers, half, _ = digits_plane()
    return layers, half


def _ours(kind, arg, queue):
    from relu_regions.analysis.plane import count_regions_2d

    t = time.perf_counter()
    count_regions_2d(default_net("8x2"))  # loads the compiled kernels
    first_call = time.perf_counter() - t
    layers, half = make(kind, arg)
    t = time.perf_counter()
    r = count_regions_2d(layers, (-half, half, -half, half))
    seconds = time.perf_counter() - t
    queue.put(dict(regions=r.activation_regions, pieces=r.linear_pieces, vertices=r.vertices,
                   resolved=r.resolved, snapped=r.snapped, seconds=seconds,
                   first_call=first_call,
                   peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def _regioncam(kind, arg, queue):
    import regioncam

    def count(layers, half):
        rc = regioncam.Regioncam(size=half)  # the box [-half, half]^2
        for i, (w, b) in enumerate(layers):
            rc.linear(w.T.astype(np.float32), b.astype(np.float32))
            if i < len(layers) - 1:
                rc.relu()
        return rc.num_faces

    count(default_net("8x2"), 1.0)
    layers, half = make(kind, arg)
    t = time.perf_counter()
    faces = count(layers, half)
    seconds = time.perf_counter() - t
    queue.put(dict(regions=faces, seconds=seconds,
                   peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nets", nargs="*", default=["32x3", "64x3", "128x4", "192x4", "256x4"],
                    metavar="WxL", help="default-init nets: width x hidden layers")
    ap.add_argument("--depths", type=int, nargs="*", default=list(range(5, 11)),
                    help="separable construction depths (default 5..10)")
    ap.add_argument("--no-digits", action="store_true")
    ap.add_argument("--no-regioncam", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    have_rc = not args.no_regioncam
    if have_rc and importlib.util.find_spec("regioncam") is None:
        have_rc = False
        print("regioncam is not installed (pip install regioncam): timing ours only",
              file=sys.stderr)
    jobs = [("net", n, f"default {n}", None) for n in args.nets]
    jobs += [("separable", d, f"F(x)+G(y) d={d}", 4 ** d) for d in args.depths]
    if not args.no_digits:
        found = digits_plane()
        if found is None:
            print("scikit-learn is not installed: skipping the digits plane", file=sys.stderr)
        else:
            print(f"digits classifier: training accuracy {found[2]:.3f}", file=sys.stderr)
            jobs.append(("digits", None, "digits 0, 1, 7 plane", None))
    rows = []
    for kind, arg, name, expected in jobs:
        ours = measure(_ours, kind, arg)
        row = dict(name=name, expected=expected, ours=ours)
        if have_rc:
            rc = measure(_regioncam, kind, arg)
            rc["ratio"] = rc["seconds"] / ours["seconds"]
            row["regioncam"] = rc
        rows.append(row)
        if not args.json:
            line = (f"{name:22s} exact: {expected or '-':>8} | ours {ours['regions']:>8d} regions "
                    f"{ours['pieces']:>8d} pieces {ours['seconds']:8.3f} s "
                    f"peak {ours['peak_mb']:6.0f} MB resolved={ours['resolved']}")
            if have_rc:
                line += (f" | regioncam {rc['regions']:>8d} faces {rc['seconds']:8.3f} s "
                         f"peak {rc['peak_mb']:6.0f} MB | ours {rc['ratio']:.2f}x faster")
            print(line, flush=True)
    if args.json:
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
