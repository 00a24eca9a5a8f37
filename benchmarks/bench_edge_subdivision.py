"""Benchmark: the plane counter beside edge subdivision (Berzins, arXiv:2306.07212, ICML 2023) on
its trained 2D nets, both on the CPU, in one process, interleaved.

Edge subdivision (github.com/arturs-berzins/relu_edge_subdivision, PyTorch, float32) cuts the box
by every neuron in turn, the output neuron included: its complex is our activation regions further
cut by the output's level set f = 0. Taken out of its result: a vertex whose last sign is 0 lies on
the level set (N of them), an edge between two such vertices is a level-set chord (m), and
removing them leaves V - N vertices, E - m - N edges (each level-set vertex had split an edge in
two) and F - m cells (each chord had split a cell), F = E - V + 1 (Euler, box corners included).
Our count gives the same level set as ``decision_segments`` (m of them, one per cell crossed), so
both ways are printed: hidden cells / vertices / edges, and with the level set.

The repository ships no licence, so its weights are not copied here. Without ``--berzins`` the
script counts equivalents trained by ``--train`` (same architectures, 2 -> 50 x 2, 32 x 4,
100 x 2 -> 1, float32, on an implicit function of a cartoon rabbit: a union of five ellipses,
negative inside; shipped in tests/data/edge_subdivision/). With ``--berzins PATH`` (a checkout of
that repository; it is never imported otherwise) it also loads the nets in PATH/models and runs
edge subdivision beside our counter on every net: same box, medians of interleaved repeats, both
timed from the model (ours reads the float32 model as the float64 model with the same weights).

    python benchmarks/bench_edge_subdivision.py                     # ours, the equivalents
    python benchmarks/bench_edge_subdivision.py --berzins PATH      # both methods, all nets
    python benchmarks/bench_edge_subdivision.py --train tests/data/edge_subdivision

Their code needs torch and numpy only (their visualisation module, not used, needs matplotlib).
"""

import argparse
import importlib
import io
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "edge_subdivision"
ARCHS = [(2, 50), (4, 32), (2, 100)]  # (hidden layers, width): the 2D nets of the repository
# Cartoon rabbit facing right: (centre, radii, angle in degrees) of body, head, two ears, tail.
ELLIPSES = [((-0.05, -0.15), (0.45, 0.30), 0.0), ((0.35, 0.18), (0.20, 0.18), 0.0),
            ((0.28, 0.50), (0.07, 0.22), 15.0), ((0.45, 0.47), (0.07, 0.20), -30.0),
            ((-0.52, -0.05), (0.09, 0.09), 0.0)]


def rabbit(points):
    """Implicit function of the union of ELLIPSES, negative inside: min over the ellipses of
    (|A (p - c)| - 1) * (smaller radius), A the ellipse's normalising map."""
    values = []
    for (cx, cy), (a, b), degrees in ELLIPSES:
        t = np.radians(degrees)
        dx, dy = points[:, 0] - cx, points[:, 1] - cy
        u = np.cos(t) * dx + np.sin(t) * dy
        v = -np.sin(t) * dx + np.cos(t) * dy
        values.append((np.hypot(u / a, v / b) - 1.0) * min(a, b))
    return np.min(values, axis=0)


def train_equivalent(depth, width, seed=0, steps=3000, points=16384):
    """2 -> width x depth -> 1 (float32, PyTorch's default init, seeded) fitted by full-batch
    Adam to ``rabbit`` on uniform points of [-1, 1]^2; returns (model, RMS error)."""
    import torch

    from relu_regions.nets.parametrize import linear_relu_stack

    torch.manual_seed(seed)
    model = linear_relu_stack([2] + [width] * depth + [1], dtype=torch.float32)
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, (points, 2))
    x_t = torch.tensor(x, dtype=torch.float32)
    y_t = torch.tensor(rabbit(x), dtype=torch.float32)[:, None]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x_t), y_t)
        loss.backward()
        opt.step()
        schedule.step()
    with torch.no_grad():
        rms = float(torch.nn.functional.mse_loss(model(x_t), y_t).sqrt())
    return model, rms


def linears(model):
    import torch

    return [m for m in model if isinstance(m, torch.nn.Linear)]


def save_npz(model, path):
    from relu_regions.atomic import atomic_write

    arrays = {}
    for i, m in enumerate(linears(model)):
        arrays[f"w{i}"] = m.weight.detach().numpy()
        arrays[f"b{i}"] = m.bias.detach().numpy()
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))


def from_arrays(pairs):
    """float32 nn.Sequential Linear/ReLU from (W, b) pairs, the weights as given."""
    import torch

    from relu_regions.nets.parametrize import linear_relu_stack

    widths = [pairs[0][0].shape[1]] + [w.shape[0] for w, _ in pairs]
    model = linear_relu_stack(widths, dtype=torch.float32)
    with torch.no_grad():
        for m, (w, b) in zip(linears(model), pairs, strict=True):
            m.weight.copy_(torch.as_tensor(w))
            m.bias.copy_(torch.as_tensor(b))
    return model


def load_npz(path):
    with np.load(path, allow_pickle=False) as f:
        n = len(f.files) // 2
        return from_arrays([(f[f"w{i}"], f[f"b{i}"]) for i in range(n)])


def load_berzins_net(path):
    """A state dict of the repository's ``Net`` (fcs.i.weight / fcs.i.bias) as nn.Sequential."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    n = len(state) // 2
    return from_arrays([(state[f"fcs.{i}.weight"], state[f"fcs.{i}.bias"]) for i in range(n)])


def import_berzins(path):
    """(Net class, skeletal_subdivision) from a checkout of the repository."""
    path = str(Path(path).resolve())
    sys.path.insert(0, path)
    try:
        net_module = importlib.import_module("NN")
        subdivision = importlib.import_module("edge_subdivision")
    finally:
        sys.path.remove(path)
    return net_module.Net, subdivision.skeletal_subdivision


def their_net(net_class, model):
    import torch

    layers = linears(model)
    net = net_class([2] + [m.out_features for m in layers])
    with torch.no_grad():
        for theirs, ours in zip(net.fcs, layers, strict=True):
            theirs.weight.copy_(ours.weight)
            theirs.bias.copy_(ours.bias)
    return net


def run_theirs(net_class, subdivide, model, half):
    """Edge subdivision of ``model`` on [-half, half]^2; (seconds, counts with the level set,
    counts without it), counts as (cells, vertices, edges)."""
    import torch

    net = their_net(net_class, model)
    with torch.no_grad():
        t = time.perf_counter()
        vs, edges, v_sv = subdivide(net, bbox=(-half, half), device=torch.device("cpu"),
                                    verbose=False)
        seconds = time.perf_counter() - t
    n_v, n_e = len(vs), len(edges)
    on_level = (v_sv[:, -1] == 0).numpy()  # vertices the output neuron made
    e = edges.numpy()
    n_level = int(on_level.sum())
    chords = int((on_level[e[:, 0]] & on_level[e[:, 1]]).sum())
    full = (n_e - n_v + 1, n_v, n_e)
    hidden = (full[0] - chords, n_v - n_level, n_e - chords - n_level)
    return seconds, full, hidden


def theirs_before_output(net_class, subdivide, model, half):
    """(cells, vertices, edges) of edge subdivision's complex before the output neuron cuts it
    (its intermediate result after the last hidden layer): a second way to take the level set
    out."""
    import torch

    with torch.no_grad():
        steps = subdivide(their_net(net_class, model), bbox=(-half, half),
                          device=torch.device("cpu"), verbose=False, return_intermediate=True)
    vs, edges, _ = steps[max(steps) - 1]
    return (len(edges) - len(vs) + 1, len(vs), len(edges))


def run_ours(model, half):
    """count_regions_2d on [-half, half]^2; (seconds, counts with the level set, counts without
    it): the level set's m segments (one per cell it crosses) add m cells, and their distinct
    ends (m + half the ends on the box's boundary) add as many vertices and split as many edges."""
    from relu_regions.analysis.plane import count_regions_2d

    t = time.perf_counter()
    r = count_regions_2d(model, (-half, half, -half, half))
    seconds = time.perf_counter() - t
    if not r.resolved:
        raise RuntimeError(f"our count is not resolved on [-{half}, {half}]^2")
    ends = r.decision_segments.reshape(-1, 2)
    on_box = int(np.sum(np.any(np.abs(ends) == half, axis=1)))
    m = r.decision_segments.shape[0]
    hidden = (r.activation_regions, r.vertices, r.edges)
    full = (hidden[0] + m, hidden[1] + m + on_box // 2, hidden[2] + 2 * m + on_box // 2)
    return seconds, full, hidden


def train_all(folder):
    folder = Path(folder)
    for depth, width in ARCHS:
        t = time.perf_counter()
        model, rms = train_equivalent(depth, width)
        path = folder / f"rabbit_{depth}x{width}.npz"
        save_npz(model, path)
        print(f"{path.name}: RMS error {rms:.4f} on the training points, "
              f"{time.perf_counter() - t:.1f} s", flush=True)


def nets(berzins):
    """(name, float32 model) of every net counted."""
    found = []
    if berzins is not None:
        for depth, width in ARCHS:
            path = Path(berzins) / "models" / f"2,{depth}x{width},relu,bunny"
            found.append((f"Berzins {depth}x{width}", load_berzins_net(path)))
    for depth, width in ARCHS:
        path = DATA / f"rabbit_{depth}x{width}.npz"
        found.append((f"equivalent {depth}x{width}", load_npz(path)))
    return found


def _describe(who, hidden, full, seconds):
    return (f"{who} {hidden[0]:>7d} cells {hidden[1]:>7d} V {hidden[2]:>7d} E (with level set "
            f"{'/'.join(str(v) for v in full)}) {seconds:.4f} s")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--berzins", metavar="PATH",
                    help="a checkout of arturs-berzins/relu_edge_subdivision: run its edge "
                         "subdivision beside ours and count its nets too")
    ap.add_argument("--halves", type=float, nargs="+", default=[1.0, 4.0],
                    help="half sides of the boxes [-h, h]^2 (default 1, edge subdivision's "
                         "default box, and 4)")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved repeats (median)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--train", metavar="FOLDER",
                    help="train the equivalents into FOLDER and exit")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.train:
        train_all(args.train)
        return
    if args.berzins and not (Path(args.berzins) / "edge_subdivision.py").is_file():
        sys.exit(f"--berzins {args.berzins}: no edge_subdivision.py there; give a checkout of "
                 f"github.com/arturs-berzins/relu_edge_subdivision")
    theirs = import_berzins(args.berzins) if args.berzins else None
    models = nets(args.berzins)
    # Warm up both: our first count loads the numba kernels, theirs PyTorch's.
    run_ours(models[0][1], 0.1)
    if theirs:
        run_theirs(*theirs, models[0][1], 0.1)
    rows = []
    for name, model in models:
        for half in args.halves:
            ours_s, theirs_s = [], []
            for rep in range(args.repeats):
                # alternate who goes first, so neither always runs on a warmer cache
                order = (0, 1) if rep % 2 == 0 else (1, 0)
                for who in order:
                    if who == 0:
                        s, ours_full, ours_hidden = run_ours(model, half)
                        ours_s.append(s)
                    elif theirs:
                        s, their_full, their_hidden = run_theirs(*theirs, model, half)
                        theirs_s.append(s)
            row = dict(net=name, box=[-half, half], ours_seconds=statistics.median(ours_s),
                       ours_cells=ours_hidden[0], ours_vertices=ours_hidden[1],
                       ours_edges=ours_hidden[2], ours_with_level_set=list(ours_full))
            if theirs:
                row.update(theirs_seconds=statistics.median(theirs_s),
                           theirs_cells=their_hidden[0], theirs_vertices=their_hidden[1],
                           theirs_edges=their_hidden[2], theirs_with_level_set=list(their_full),
                           equal=(ours_hidden == their_hidden == theirs_before_output(
                               *theirs, model, half) and ours_full == their_full))
                row["ratio"] = row["theirs_seconds"] / row["ours_seconds"]
            rows.append(row)
            if not args.json:
                line = f"{name:16s} [-{half:g}, {half:g}]^2 | " + _describe(
                    "ours", ours_hidden, ours_full, row["ours_seconds"])
                if theirs:
                    line += " | " + _describe("edge subdivision", their_hidden, their_full,
                                              row["theirs_seconds"])
                    line += f" | equal={row['equal']} | ours {row['ratio']:.1f}x faster"
                print(line, flush=True)
    if args.json:
        print(json.dumps(rows, indent=2))
    if theirs and not all(r["equal"] for r in rows):
        sys.exit("the counts differ on some net")


if __name__ == "__main__":
    main()
