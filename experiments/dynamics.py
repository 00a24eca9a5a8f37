"""Regions over training and around the data: the worked study of docs/dynamics.md.

An MLP ``64 -> W x D -> 10`` (ReLU, float32, PyTorch's default init; 64 -> 64 x 3 -> 10 by
default) on scikit-learn's 8x8 digits (pixels / 16, in [0, 1]; a stratified 75/25 split),
trained in a plain loop: Adam, cross-entropy, shuffled mini-batches, ``--epochs`` epochs. At
``--steps`` log-spaced steps (``log_steps``, step 0 = the initialization included):

- a :class:`~relu_regions.RegionTracker` counts ``--lines`` segments of length ``--length``
  centred at test digits in random directions (Hanin & Rolnick, arXiv:1901.09021 Sec. 4): regions,
  pieces, decision-boundary crossings, density, and the density against the distance from the
  digit;
- :func:`~relu_regions.local_complexity` counts, exactly, the neurons and regions in a disc of
  radius ``--radius`` around ``--lc-points`` train digits, test digits and random points (uniform
  in [0, 1]^64), one random plane each, beside the sampled measure of Humayun, Balestriero &
  Baraniuk (arXiv:2402.15555) on the same discs.

Training time is the optimizer loop alone; the tracker's and local complexity's times are
measured apart and printed as shares of it. The counters' compiled kernels are loaded once per
process before training (one tiny count of each kind); that one-time cost is printed apart.
Figures go to ``--figures`` (default docs/figures): ``dynamics_counts.png``,
``dynamics_density.png``, ``dynamics_local.png``; ``--json`` writes every figure's numbers.

    python experiments/dynamics.py                  # ~15 s on 2 cores
    python experiments/dynamics.py --epochs 3 --lines 10 --steps 5 --lc-points 10 --figures /tmp

Needs scikit-learn (``pip install -e '.[experiments]'``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from relu_regions import RegionTracker, local_complexity, log_steps, sampled_local_complexity
from relu_regions.atomic import atomic_write_text
from relu_regions.plots import plot_density_profile, plot_tracked_counts, save_figure, subplots

ROOT = Path(__file__).resolve().parent.parent
SETS = ("train", "test", "random")


def digits(seed: int):
    """Stratified 75/25 split of sklearn's digits, pixels / 16: float32 (xtr, ytr, xte, yte)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(x / 16.0, y, test_size=0.25, stratify=y,
                                          random_state=seed)
    return (torch.tensor(xtr, dtype=torch.float32), torch.tensor(ytr),
            torch.tensor(xte, dtype=torch.float32), torch.tensor(yte))


def make_mlp(width: int, depth: int, seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    layers, n_in = [], 64
    for _ in range(depth):
        layers += [nn.Linear(n_in, width), nn.ReLU()]
        n_in = width
    return nn.Sequential(*layers, nn.Linear(n_in, 10))


def probe_points(xtr, xte, n: int, seed: int) -> dict:
    """n train digits, n test digits and n uniform points of [0, 1]^64, float64."""
    rng = np.random.default_rng(seed)
    return {"train": xtr.double().numpy()[rng.choice(len(xtr), n, replace=False)],
            "test": xte.double().numpy()[rng.choice(len(xte), n, replace=False)],
            "random": rng.uniform(0.0, 1.0, (n, 64))}


def run(args) -> dict:
    xtr, ytr, xte, yte = digits(args.seed)
    model = make_mlp(args.width, args.depth, args.seed)
    per_epoch = -(-len(xtr) // args.batch)
    total = args.epochs * per_epoch
    record_at = set(log_steps(total, n=args.steps))
    tracker = RegionTracker.through_points(xte.double().numpy(), args.length, n=args.lines,
                                           seed=args.seed)
    points = probe_points(xtr, xte, args.lc_points, args.seed)
    local: list[dict] = []
    seconds = {"training": 0.0, "tracker": 0.0, "local": 0.0}

    def record(step: int) -> None:
        model.eval()
        t = time.perf_counter()
        tracker.record(model, step)
        seconds["tracker"] += time.perf_counter() - t
        t = time.perf_counter()
        for name in SETS:
            exact = local_complexity(model, points[name], args.radius, seed=args.seed)
            sampled = sampled_local_complexity(model, points[name], args.radius,
                                               seed=args.seed)
            local.append({"step": step, "set": name,
                          "neurons": float(exact.neurons.mean()),
                          "regions": float(exact.activation_regions.mean()),
                          "sampled_neurons": float(sampled.neurons.mean())})
        seconds["local"] += time.perf_counter() - t
        model.train()

    generator = torch.Generator().manual_seed(args.seed)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    loss_fn = nn.CrossEntropyLoss()
    step = 0
    record(step)
    for _ in range(args.epochs):
        order = torch.randperm(len(xtr), generator=generator)
        for i in range(0, len(xtr), args.batch):
            t = time.perf_counter()
            idx = order[i:i + args.batch]
            opt.zero_grad()
            loss_fn(model(xtr[idx]), ytr[idx]).backward()
            opt.step()
            seconds["training"] += time.perf_counter() - t
            step += 1
            if step in record_at:
                record(step)
    model.eval()
    with torch.no_grad():
        accuracy = float((model(xte).argmax(1) == yte).float().mean())
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    return {"settings": settings, "steps": total, "accuracy": accuracy,
            "seconds": seconds, "tracker": tracker.to_dict(), "local": local,
            "tracker_share": seconds["tracker"] / seconds["training"],
            "local_share": seconds["local"] / seconds["training"]}, tracker


def warm_up() -> float:
    """Load the counters' compiled kernels (one tiny count of each kind); returns the seconds."""
    start = time.perf_counter()
    tiny = make_mlp(4, 1, 0)
    RegionTracker.through_points(np.zeros((1, 64)), 0.1, seed=0).record(tiny, 0)
    local_complexity(tiny, np.zeros((1, 64)), 0.1)
    sampled_local_complexity(tiny, np.zeros((1, 64)), 0.1)
    return time.perf_counter() - start


def plot_local(local: list[dict], path: Path) -> Path:
    """Mean neurons (exact and sampled) and regions in the discs against the step, per set."""
    fig, (left, right) = subplots(1, 2, figsize=(11, 4))
    for k, name in enumerate(SETS):
        rows = [r for r in local if r["set"] == name]
        steps = [max(r["step"], 0.5) for r in rows]  # step 0 drawn at 0.5 on the log axis
        left.plot(steps, [r["neurons"] for r in rows], "o-", color=f"C{k}", label=f"{name}")
        left.plot(steps, [r["sampled_neurons"] for r in rows], "x--", color=f"C{k}",
                  label=f"{name}, sampled")
        right.plot(steps, [r["regions"] for r in rows], "o-", color=f"C{k}", label=name)
    for ax, what in ((left, "neurons meeting the disc"), (right, "regions meeting the disc")):
        ax.set_xscale("log")
        ax.set_xlabel("step (0 drawn at 0.5)")
        ax.set_ylabel(f"mean {what}")
        ax.legend(fontsize=8)
    fig.suptitle("local complexity around digits and random points")
    return save_figure(fig, path)


def table(out: dict) -> str:
    """The local complexity rows as a markdown table (first, middle and last recorded steps)."""
    steps = sorted({r["step"] for r in out["local"]})
    keep = [steps[0], steps[len(steps) // 2], steps[-1]]
    lines = ["| step | set | neurons (exact) | neurons (sampled) | regions (exact) |",
             "|---|---|---|---|---|"]
    for r in out["local"]:
        if r["step"] in keep:
            lines.append(f"| {r['step']} | {r['set']} | {r['neurons']:.1f} | "
                         f"{r['sampled_neurons']:.1f} | {r['regions']:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--depth", type=int, default=3, help="hidden layers")
    p.add_argument("--lines", type=int, default=100, help="segments through test digits")
    p.add_argument("--length", type=float, default=1.0, help="each segment's length")
    p.add_argument("--steps", type=int, default=20, help="log-spaced recording steps")
    p.add_argument("--lc-points", type=int, default=100,
                   help="points of each set (train, test, random) for local complexity")
    p.add_argument("--radius", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--figures", type=Path, default=ROOT / "docs" / "figures")
    p.add_argument("--json", type=Path, default=None, help="write every number here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # the counters run in this process too; timings side by side
    load = warm_up()
    out, tracker = run(args)
    out["seconds"]["kernel_load"] = load
    args.figures.mkdir(parents=True, exist_ok=True)
    plot_tracked_counts(tracker, args.figures / "dynamics_counts.png")
    plot_density_profile(tracker, args.figures / "dynamics_density.png")
    plot_local(out["local"], args.figures / "dynamics_local.png")
    s = out["seconds"]
    first, last = (tracker.rows()[0]["step"], tracker.rows()[-1]["step"])
    regions = {step: np.mean([r["activation_regions"] for r in tracker.rows()
                              if r["step"] == step]) for step in (first, last)}
    print(f"{args.epochs} epochs, {out['steps']} steps, test accuracy {out['accuracy']:.3f}")
    print(f"regions per segment (mean of {args.lines}): step {first} {regions[first]:.1f}, "
          f"step {last} {regions[last]:.1f}")
    print(f"training {s['training']:.2f} s; tracker {s['tracker']:.2f} s "
          f"({out['tracker_share']:.1%} of training); local complexity {s['local']:.2f} s "
          f"({out['local_share']:.1%}); kernels loaded once before training in "
          f"{s['kernel_load']:.2f} s")
    print(table(out))
    if args.json is not None:
        atomic_write_text(args.json, json.dumps(out, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
