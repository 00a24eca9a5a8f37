"""A small CNN trained on scikit-learn's 8x8 digits, counted exactly on the plane through three
test digits: activation regions, linear pieces and the argmax decision boundary (docs/models.md,
"Worked example: a digits CNN"; the layers read as in its "Supported layers" table).

The model, float64, seeded (rows of 64 pixels in, unflattened to 1x8x8):

    Conv2d(1, C1, 3, padding=1) -> BatchNorm2d -> ReLU -> MaxPool2d(2)     8x8 -> 4x4
    Conv2d(C1, C2, 3, padding=1) -> BatchNorm2d -> ReLU -> MaxPool2d(2)    4x4 -> 2x2
    Flatten -> Linear(4 C2, 10)

(activation regions: cells of constant ReLU signs and max-pooling argmaxes). Inputs are the
pixels / 16, in [0, 1];
a stratified 75/25 train/test split (``random_state=seed``); Adam, cross-entropy, mini-batches, a
plain loop. The trained model (eval mode) is saved with ``relu_regions.checkpoint.save`` (its
lowered form), then a fresh spawned process loads it and counts the plane through the first test
digit of each of three classes with ``count_regions_plane`` (default extent: the three digits' box +
25 %), after one tiny warm-up count that loads the compiled kernels; peak memory is that process's
``ru_maxrss`` (Python, torch, numba and the model included). The region map with the decision
boundary is drawn to ``docs/figures/digits_cnn_map.png``.

    python experiments/digits_cnn.py                        # ~15 s (3 s of training), 2 cores
    python experiments/digits_cnn.py --checkpoint cnn.pt --data digits_test.csv --json out.json

With ``--checkpoint`` and ``--data`` the same count runs from the command line:

    relu-regions count --checkpoint cnn.pt --data digits_test.csv --through R0 R1 R2 \\
        --plot map.png --json

(R0 R1 R2: the digits' rows, printed). Needs scikit-learn (``pip install -e '.[experiments]'``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from relu_regions.atomic import atomic_write_text
from relu_regions.errors import InputError

DTYPE = torch.float64
INPUT_SHAPE = (1, 8, 8)


def digits_split(seed: int, test_size: float = 0.25):
    """Stratified split of sklearn's digits, pixels scaled to [0, 1]: (xtr, ytr, xte, yte)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(x / 16.0, y, test_size=test_size, stratify=y,
                                          random_state=seed)
    return (torch.as_tensor(xtr, dtype=DTYPE), torch.as_tensor(ytr),
            torch.as_tensor(xte, dtype=DTYPE), torch.as_tensor(yte))


def make_cnn(channels: tuple[int, int], seed: int) -> nn.Sequential:
    """The CNN above, on rows of 64 pixels; ``input_shape`` tells the reader the sample's shape."""
    torch.manual_seed(seed)
    c1, c2 = channels
    model = nn.Sequential(
        nn.Unflatten(1, INPUT_SHAPE),
        nn.Conv2d(1, c1, 3, padding=1), nn.BatchNorm2d(c1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 3, padding=1), nn.BatchNorm2d(c2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(4 * c2, 10)).to(DTYPE)
    model.input_shape = (64,)
    return model


def train(model: nn.Module, xtr, ytr, epochs: int, batch: int, lr: float, seed: int) -> float:
    """Adam on the cross-entropy, shuffled mini-batches; returns the seconds taken."""
    generator = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    start = time.perf_counter()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(xtr), generator=generator)
        for i in range(0, len(xtr), batch):
            idx = order[i:i + batch]
            opt.zero_grad()
            loss_fn(model(xtr[idx]), ytr[idx]).backward()
            opt.step()
    model.eval()
    return time.perf_counter() - start


def pick_digits(yte: torch.Tensor, classes: list[int]) -> list[int]:
    """The test row of the first digit of each class."""
    rows = []
    for c in classes:
        hits = torch.nonzero(yte == c).flatten()
        if not len(hits):
            raise InputError(f"--classes: no test digit of class {c}; use classes 0-9")
        rows.append(int(hits[0]))
    return rows


def count_in_fresh_process(checkpoint: str, points: list[list[float]], figure: str | None,
                           labels: list[str], queue) -> None:
    """Spawned: load the checkpoint, warm up the kernels, count the plane, draw the map."""
    from relu_regions.analysis.plane import count_regions_plane
    from relu_regions.checkpoint import load

    model, _ = load(checkpoint)
    t = time.perf_counter()
    count_regions_plane(model, *points, extent=(0.0, 1e-3, 0.0, 1e-3))  # loads the kernels
    first_call = time.perf_counter() - t
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    r = count_regions_plane(model, *points)
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = dict(r.to_dict(), seconds=seconds, first_call=first_call, peak_mb=peak,
               before_mb=before)
    if figure:
        out["figure"] = str(draw_map(r, figure, labels))
    queue.put(out)


def draw_map(r, path: str, labels: list[str]) -> Path:
    """The region map with the decision boundary, the three digits marked and named."""
    from matplotlib.collections import LineCollection

    from relu_regions.plots import plot_region_map, save_figure, subplots

    fig, ax = subplots(figsize=(7.5, 6.6))
    pts = np.asarray(r.plane["points"])
    # a white halo under the map's red boundary, so it stands out from the cells' edges
    ax.add_collection(LineCollection(r.decision_segments, colors="white", linewidths=4.0,
                                     zorder=1.5))
    plot_region_map(r, None, points=pts, ax=ax,
                    title=f"digits CNN on the plane through three test digits: "
                          f"{r.activation_regions:,} regions,\n{r.linear_pieces:,} linear pieces,"
                          f" decision boundary (red) {r.decision_length:.2f} long")
    for (u, v), label in zip(pts, labels, strict=True):
        ax.plot([u], [v], "o", ms=9, mfc="white", mec="black", mew=1.5)
        ax.annotate(label, (u, v), xytext=(7, 7), textcoords="offset points", fontsize=11,
                    weight="bold", bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="black"))
    # each winning class named once, at the centroid of its largest cell
    winner = np.argmax(r.values, axis=1)
    for c in np.unique(winner):
        i = np.flatnonzero(winner == c)[np.argmax(r.areas[winner == c])]
        u, v = r.polygons[r.offsets[i]:r.offsets[i + 1]].mean(0)
        ax.text(u, v, f"class {c}", ha="center", va="center", fontsize=9, style="italic",
                bbox=dict(boxstyle="round,pad=0.15", fc=(1, 1, 1, 0.7), ec="none"))
    ax.legend(loc="lower right", fontsize=9)
    return save_figure(fig, path, dpi=110)


def measure(*args):
    """count_in_fresh_process(*args) in a spawned process; what it returns."""
    import queue as queues

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    p = ctx.Process(target=count_in_fresh_process, args=(*args, queue))
    p.start()
    while True:
        try:
            result = queue.get(timeout=5)
            break
        except queues.Empty:
            if not p.is_alive():
                raise RuntimeError(f"the counting process exited with code {p.exitcode}") from None
    p.join()
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0, help="data split, init and batches (default 0)")
    p.add_argument("--epochs", type=int, default=40, help="default 40")
    p.add_argument("--batch", type=int, default=32, help="default 32")
    p.add_argument("--lr", type=float, default=3e-3, help="Adam's learning rate (default 3e-3)")
    p.add_argument("--channels", type=int, nargs=2, default=(4, 8), metavar=("C1", "C2"),
                   help="channels of the two conv layers (default 4 8)")
    p.add_argument("--classes", type=int, nargs=3, default=(0, 4, 7), metavar="K",
                   help="the three digits' classes; the first test digit of each (default 0 4 7)")
    p.add_argument("--out", default="docs/figures",
                   help="folder for digits_cnn_map.png ('' for no figure)")
    p.add_argument("--checkpoint", default=None,
                   help="keep the saved model here (default: a temporary file)")
    p.add_argument("--data", default=None,
                   help="also write the test digits here as CSV (64 pixels, label), for "
                        "`relu-regions count --data`")
    p.add_argument("--json", default=None, help="also write the results as JSON here")
    args = p.parse_args(argv)
    if len(set(args.classes)) != 3 or not all(0 <= c <= 9 for c in args.classes):
        p.error(f"--classes needs three different classes 0-9, got {list(args.classes)}")
    if args.epochs < 0 or args.batch < 1 or min(args.channels) < 1:
        p.error("--epochs >= 0, --batch >= 1 and --channels >= 1")

    from relu_regions.checkpoint import load, save
    from relu_regions.nets.reader import layer_stack

    torch.set_num_threads(1)  # two threads were several times slower here on 2 shared cores
    xtr, ytr, xte, yte = digits_split(args.seed)
    model = make_cnn(tuple(args.channels), args.seed)
    train_s = train(model, xtr, ytr, args.epochs, args.batch, args.lr, args.seed)
    with torch.no_grad():
        accuracy = float((model(xte).argmax(1) == yte).double().mean())
    rows = pick_digits(yte, list(args.classes))
    points = xte[rows].tolist()
    labels = [f"{c} (row {r})" for c, r in zip(args.classes, rows, strict=True)]
    print(f"trained {args.epochs} epochs in {train_s:.1f} s; test accuracy {accuracy:.4f} "
          f"({len(yte)} digits); plane through test rows {rows} (classes {list(args.classes)})")

    with tempfile.TemporaryDirectory() as tmp:
        path = args.checkpoint or str(Path(tmp) / "digits_cnn.pt")
        save(model, path, extra={"experiment": "digits_cnn", "seed": args.seed,
                                 "test_accuracy": accuracy})
        loaded, config = load(path)
        # the saved layers are the model's own lowering, and compute its logits
        for (w, b), (w2, b2) in zip(layer_stack(model)[0], layer_stack(loaded)[0], strict=True):
            assert np.array_equal(w, w2) and np.array_equal(b, b2)
        with torch.no_grad():
            gap = float((loaded(xte) - model(xte)).abs().max())
        figure = str(Path(args.out) / "digits_cnn_map.png") if args.out else None
        r = measure(path, points, figure, labels)
    if args.data:
        lines = ["# 64 pixels in [0, 1] (row-major 8x8), label"] + [
            ",".join(f"{v:.10g}" for v in x) + f",{int(y)}"
            for x, y in zip(xte.tolist(), yte, strict=True)]
        atomic_write_text(args.data, "\n".join(lines) + "\n")

    print(f"saved: kind {config['model']['kind']!r}, widths {config['model']['widths']}; "
          f"loaded logits within {gap:.1e} of the model's")
    print(f"activation regions {r['activation_regions']:,}")
    print(f"linear pieces      {r['linear_pieces']:,}")
    print(f"decision boundary  {r['decision_length']:.4f} (input units), "
          f"{r['decision_segment_count']:,} segments")
    print(f"count              {r['seconds']:.3f} s (kernels loaded first: {r['first_call']:.2f} "
          f"s, not included)")
    print(f"peak memory        {r['peak_mb']:.0f} MB ru_maxrss of the fresh counting process "
          f"({r['before_mb']:.0f} MB before the count)")
    print(f"resolved           {r['resolved']}")
    if figure:
        print(f"figure             {r['figure']}")
    if args.checkpoint and args.data:
        print(f"same count:        relu-regions count --checkpoint {args.checkpoint} --data "
              f"{args.data} --through {' '.join(map(str, rows))} --plot map.png --json")
    if args.json:
        doc = dict(seed=args.seed, epochs=args.epochs, batch=args.batch, lr=args.lr,
                   channels=list(args.channels), classes=list(args.classes), rows=rows,
                   test_accuracy=accuracy, train_seconds=train_s, widths=config["model"]["widths"],
                   count=r, machine=dict(cpus=mp.cpu_count(), python=platform.python_version(),
                                         torch=torch.__version__))
        atomic_write_text(args.json, json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
