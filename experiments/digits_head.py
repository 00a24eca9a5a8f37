"""Block-diagonal classifier head on scikit-learn's 8x8 digits (arXiv:2311.18022, an extension
the paper reports: a block-diagonal layer with blocks of 4, built from the construction, as a
replacement classifier head; the paper uses VGG-16 on CIFAR-10 / ImageNet, out of reach here).

Every head is  64 -> H (dense) -> ReLU -> [H -> H -> ReLU] x M -> H -> 10 (dense).
Only the M middle H -> H layers differ between the heads:

    dense              nn.Linear, PyTorch's default init (U(+-1/sqrt(fan_in)) for weight and bias)
    dense-kaiming      nn.Linear, W ~ N(0, 2/fan_in), b = 0  (relu_regions.nets.mlp.kaiming_)
    block-construction BlockDiagonalLinear(H, H, 4), a construction chain (construction_chain_init_)
    block-kaiming      BlockDiagonalLinear(H, H, 4), W ~ N(0, 2/4), b = 0 (ablation)
    no-middle          control: no middle layers at all (64 -> H -> 10), to see how much the
                       middle layers matter on this data set

The first (64 -> H) and last (H -> 10) layers are dense in every head, PyTorch's default init, and
*identical* across the heads of one seed (same generator seed), as are the data split and the
mini-batch order, so the heads are compared pairwise. Per seed: a stratified 75/25 train/test split
(``random_state=seed``), features standardized with the training mean/std. Hyperparameters are
fixed in advance (Adam with PyTorch's default lr 1e-3, batch 32, cross-entropy) and not tuned:
the table reports the test accuracy after the last epoch (no early stopping; the per-epoch test
curve is only drawn).

    .venv/bin/python experiments/digits_head.py                       # 5 seeds, 100 epochs
    .venv/bin/python experiments/digits_head.py --seeds 2 --epochs 5  # quick look

Needs scikit-learn (``pip install -e '.[experiments]'``).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from relu_regions.atomic import atomic_write_text
from relu_regions.errors import InputError
from relu_regions.nets.blockdiag import BlockDiagonalLinear, construction_chain_init_, kaiming_init_
from relu_regions.nets.mlp import kaiming_

HEADS = ("dense", "dense-kaiming", "block-construction", "block-kaiming", "no-middle")
DTYPE = torch.float64


# ---------------------------------------------------------------------------------------------
# Data

def digits_split(seed: int, test_size: float = 0.25):
    """Stratified split of sklearn's digits, standardized with the training statistics."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=test_size, stratify=y,
                                          random_state=seed)
    mean, std = xtr.mean(0), xtr.std(0)
    std[std == 0] = 1.0  # pixels that are constant in the training set (the digits' corners)

    def features(a):
        return torch.as_tensor((a - mean) / std, dtype=DTYPE)

    return features(xtr), torch.as_tensor(ytr), features(xte), torch.as_tensor(yte)


# ---------------------------------------------------------------------------------------------
# Heads

@torch.no_grad()
def default_init_(layer: nn.Linear, generator: torch.Generator) -> nn.Linear:
    """nn.Linear.reset_parameters, seeded: kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in))."""
    nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
    bound = 1 / math.sqrt(layer.in_features)
    layer.bias.uniform_(-bound, bound, generator=generator)
    return layer


def linear(n_in: int, n_out: int) -> nn.Linear:
    """An uninitialized float64 nn.Linear (built on the meta device: no global random draw)."""
    return nn.Linear(n_in, n_out, dtype=DTYPE, device="meta").to_empty(device="cpu")


def build_head(kind: str, seed: int, in_features: int = 64, width: int = 32, middle: int = 2,
               classes: int = 10) -> nn.Sequential:
    """One head; the outer layers depend only on ``seed``, the middle ones on ``kind`` and seed."""
    outer = torch.Generator().manual_seed(10_000 + seed)
    inner = torch.Generator().manual_seed(20_000 + seed)
    first = default_init_(linear(in_features, width), outer)
    last = default_init_(linear(width, classes), outer)
    if kind in ("dense", "dense-kaiming"):
        mids = [default_init_(linear(width, width), inner) for _ in range(middle)]
        if kind == "dense-kaiming":
            for m in mids:
                kaiming_(m, generator=inner)
    elif kind in ("block-construction", "block-kaiming"):
        mids = [BlockDiagonalLinear(width, width, block=4, dtype=DTYPE, generator=inner)
                for _ in range(middle)]
        if kind == "block-construction":
            construction_chain_init_(mids, inner)
        else:
            for m in mids:
                kaiming_init_(m, inner)
    elif kind == "no-middle":
        mids = []
    else:
        raise InputError(f"unknown head {kind!r}; choose one of {', '.join(HEADS)}")
    layers: list[nn.Module] = [first, nn.ReLU()]
    for m in mids:
        layers += [m, nn.ReLU()]
    return nn.Sequential(*layers, last)


def cost(model: nn.Module) -> tuple[int, int, int, int]:
    """(params, multiply-adds per sample) of the whole head and of its middle layers alone.

    Multiply-adds: in*out for nn.Linear, one per stored block weight for BlockDiagonalLinear
    (bias adds, ReLUs and the softmax are not counted).
    """
    layers = [m for m in model if isinstance(m, (nn.Linear, BlockDiagonalLinear))]
    params = [sum(p.numel() for p in m.parameters()) for m in layers]
    macs = [m.flops(1) if isinstance(m, BlockDiagonalLinear) else m.in_features * m.out_features
            for m in layers]
    return sum(params), sum(macs), sum(params[1:-1]), sum(macs[1:-1])


# ---------------------------------------------------------------------------------------------
# Training

@torch.no_grad()
def evaluate(model, x, y) -> tuple[float, float]:
    logits = model(x)
    return (nn.functional.cross_entropy(logits, y).item(),
            (logits.argmax(1) == y).double().mean().item())


def train(model, data, seed: int, epochs: int, batch: int, lr: float):
    """Adam on cross-entropy; returns per-epoch (train loss, test accuracy), epoch 0 = at init."""
    xtr, ytr, xte, yte = data
    order = torch.Generator().manual_seed(30_000 + seed)  # same batch order for every head
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses, accs = [evaluate(model, xtr, ytr)[0]], [evaluate(model, xte, yte)[1]]
    for _ in range(epochs):
        perm = torch.randperm(len(ytr), generator=order)
        for i in range(0, len(perm), batch):
            idx = perm[i:i + batch]
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(xtr[idx]), ytr[idx]).backward()
            opt.step()
        losses.append(evaluate(model, xtr, ytr)[0])
        accs.append(evaluate(model, xte, yte)[1])
    return np.array(losses), np.array(accs)


@dataclass
class HeadResult:
    head: str
    params: int
    macs: int
    middle_params: int
    middle_macs: int
    test_acc: list[float] = field(default_factory=list)     # final epoch, one per seed
    train_acc: list[float] = field(default_factory=list)
    loss_curves: list[list[float]] = field(default_factory=list)   # (seeds, epochs + 1)
    acc_curves: list[list[float]] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return float(np.mean(self.test_acc))

    @property
    def std(self) -> float:  # sample std over seeds (ddof = 1)
        return float(np.std(self.test_acc, ddof=1)) if len(self.test_acc) > 1 else 0.0


def run(seeds: int, epochs: int, width: int, middle: int, batch: int, lr: float,
        progress: bool = True) -> dict[str, HeadResult]:
    results: dict[str, HeadResult] = {}
    for seed in range(seeds):
        data = digits_split(seed)
        for kind in HEADS:
            model = build_head(kind, seed, width=width, middle=middle)
            if kind not in results:
                results[kind] = HeadResult(kind, *cost(model))
            t0 = time.perf_counter()
            loss, acc = train(model, data, seed, epochs, batch, lr)
            r = results[kind]
            r.test_acc.append(float(acc[-1]))
            r.train_acc.append(evaluate(model, data[0], data[1])[1])
            r.loss_curves.append(loss.tolist())
            r.acc_curves.append(acc.tolist())
            if progress:
                print(f"seed {seed} {kind:>18}: test acc {acc[-1]:.4f}, train loss {loss[-1]:.2e} "
                      f"({time.perf_counter() - t0:.1f} s)", file=sys.stderr, flush=True)
    return results


# ---------------------------------------------------------------------------------------------
# Output

def table(results: dict[str, HeadResult]) -> str:
    dense = results["dense"]
    lines = ["| head (middle layers) | test accuracy mean ± std | vs dense [pp] | min / max "
             "| train accuracy (mean) | params (head) | params (middle) | MACs/sample (head) "
             "| MACs/sample (middle) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results.values():
        lines.append(
            f"| {r.head} | {100 * r.mean:.2f} ± {100 * r.std:.2f} % "
            f"| {100 * (r.mean - dense.mean):+.2f} "
            f"| {100 * min(r.test_acc):.2f} / {100 * max(r.test_acc):.2f} "
            f"| {100 * np.mean(r.train_acc):.2f} % | {r.params} | {r.middle_params} | {r.macs} "
            f"| {r.middle_macs} |")
    return "\n".join(lines)


def acceptance(results: dict[str, HeadResult]) -> str:
    d, b = results["dense"], results["block-construction"]
    gap = 100 * (d.mean - b.mean)
    ok = gap <= 1.0 and b.params < d.params
    return (f"acceptance (block-construction within 1 pp of dense, fewer params): "
            f"{'met' if ok else 'NOT met'} — gap {gap:+.2f} pp (dense minus block), "
            f"params {b.params} vs {d.params}")


def plot(results: dict[str, HeadResult], path) -> Path:
    from relu_regions.plots import save_figure, subplots

    fig, (ax_l, ax_a) = subplots(1, 2, figsize=(11, 4))
    for i, r in enumerate(results.values()):
        for ax, curves in ((ax_l, r.loss_curves), (ax_a, r.acc_curves)):
            c = np.asarray(curves)
            ep = np.arange(c.shape[1])
            m, s = c.mean(0), c.std(0)
            lo, hi = ((m - s).clip(min=c.min()), m + s)
            ax.plot(ep, m, color=f"C{i}", lw=1.5, label=f"{r.head} ({r.params} params)")
            ax.fill_between(ep, lo, hi, color=f"C{i}", alpha=0.2, lw=0)
    n = len(next(iter(results.values())).test_acc)
    ax_l.set(yscale="log", xlabel="epoch", ylabel="train cross-entropy (full train set)",
             title=f"training loss, mean ± std over {n} seeds")
    ax_a.set(xlabel="epoch", ylabel="test accuracy", ylim=(0.85, 1.0),
             title="test accuracy (drawn only; not used for selection)")
    ax_a.legend(fontsize=8, loc="lower right")
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--width", type=int, default=32, help="H, a multiple of 4 (default 32)")
    p.add_argument("--middle", type=int, default=2, help="number of H -> H layers (default 2)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--out", default="docs/figures", help="folder for digits_head.png")
    p.add_argument("--json", default=None, help="also write the results as JSON here")
    args = p.parse_args(argv)
    for name in ("seeds", "epochs", "middle", "batch"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    if args.width < 4 or args.width % 4:
        p.error(f"--width must be a positive multiple of 4 (the block size), got {args.width}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: extra threads only add synchronization
    try:
        t0 = time.perf_counter()
        results = run(args.seeds, args.epochs, args.width, args.middle, args.batch, args.lr)
        seconds = time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)
    print(f"### Digits head: 64 -> {args.width} -> [{args.width} -> {args.width}] x {args.middle} "
          f"-> 10, {args.seeds} seeds, {args.epochs} epochs, Adam lr {args.lr:g}, batch "
          f"{args.batch}, {seconds:.0f} s\n")
    print(table(results))
    print("\n" + acceptance(results))
    print("per-seed test accuracy:",
          {k: [round(v, 4) for v in r.test_acc] for k, r in results.items()})
    fig = plot(results, Path(args.out) / "digits_head.png")
    print("figure:", fig)
    if args.json:
        import sklearn
        given = argv if argv is not None else sys.argv[1:]
        doc = {"command": " ".join(["python experiments/digits_head.py", *given]),
               "args": vars(args), "seconds": seconds,
               "versions": {"python": platform.python_version(), "torch": torch.__version__,
                            "sklearn": sklearn.__version__},
               "heads": {k: {**asdict(r), "mean": r.mean, "std": r.std}
                         for k, r in results.items()}}
        atomic_write_text(args.json, json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
