"""Table 1 of Milkert et al.: 5 methods x {x^3, x^11} x 30 seeds, width 4, depth 5, 500 points.

    python experiments/table1.py                 # the library's defaults (LM phases)
    python experiments/table1.py --paper         # the paper's protocol: Adam 1000 + 1000 steps,
                                                 # one start per seed

Prints our min/mean/median MSE beside the paper's (arXiv:2311.18022, Table 1), the 32-piece
optimum and the efficiency, and saves docs/figures/table1.png. Every method gets the same total
step budget.
"""

import argparse
import json
import time

import numpy as np

from relu_regions.atomic import atomic_write_text
from relu_regions.plots import save_figure, subplots
from relu_regions.training.auto import TWO_PHASE
from relu_regions.training.config import (
    DEFAULT_PHASE1,
    DEFAULT_PHASE2,
    METHODS,
    PAPER_PHASE1,
    PAPER_PHASE2,
)
from relu_regions.training.fitting import fit

PAPER = {  # (min, mean) from arXiv:2311.18022, Table 1
    ("kaiming", "x**3"): (2.11e-5, 7.20e-2), ("kaiming", "x**11"): (2.19e-5, 2.82e-2),
    ("raai", "x**3"): (2.14e-5, 3.97e-2), ("raai", "x**11"): (4.40e-5, 4.12e-2),
    ("skip", "x**3"): (7.63e-7, 3.89e-5), ("skip", "x**11"): (1.86e-5, 3.56e-4),
    ("pretrain", "x**3"): (1.64e-7, 1.02e-5), ("pretrain", "x**11"): (3.20e-6, 3.73e-5),
    ("pretrain-thm31", "x**3"): (7.86e-8, 5.27e-7), ("pretrain-thm31", "x**11"): (8.86e-7, 7.87e-6),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=30)
    ap.add_argument("--depth", type=int, default=5)
    ap.add_argument("--paper", action="store_true",
                    help="the paper's protocol: Adam 1000 + 1000 steps, lr 1e-3, one start")
    ap.add_argument("--starts", type=int, default=None,
                    help="starts per seed (default: 1 with --paper, else the library's 8)")
    ap.add_argument("--param", choices=("sp", "gmp"), default="sp",
                    help="raw-weight (phase 2) parameterization")
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--out", default=None,
                    help="figure (default docs/figures/table1.png, table1_paper.png with --paper)")
    ap.add_argument("--json", help="also write the rows to this JSON file")
    args = ap.parse_args()
    p1, p2 = (PAPER_PHASE1, PAPER_PHASE2) if args.paper else (DEFAULT_PHASE1, DEFAULT_PHASE2)
    starts = args.starts if args.starts is not None else 1 if args.paper else None
    if args.out is None:
        args.out = f"docs/figures/table1{'_paper' if args.paper else ''}.png"
    print(f"phase 1 {p1.optimizer}:{p1.steps} lr {p1.lr}, phase 2 {p2.optimizer}:{p2.steps} "
          f"lr {p2.lr} ({args.param}); one-phase methods: {p2.optimizer}:{p1.steps + p2.steps}; "
          f"{args.seeds} seeds, depth {args.depth}, 500 points, starts {starts or 'default'}")
    rows, start = [], time.perf_counter()
    print(f"{'method':15s} {'target':6s} | {'min':>9s} {'mean':>9s} {'median':>9s} | "
          f"{'paper min':>9s} {'paper mean':>10s} | {'pieces':>6s} {'effic.':>7s} {'sec':>5s}")
    for target in ("x**3", "x**11"):
        for method in args.methods:
            r = fit(target, depth=args.depth, seeds=args.seeds, method=method, phase1=p1, phase2=p2,
                    parameterization=args.param,
                    starts=starts if method in TWO_PHASE else None)  # baselines: one start
            s = r.summary()
            pmin, pmean = PAPER[(method, target)]
            rows.append({**s, "paper_min": pmin, "paper_mean": pmean})
            print(f"{method:15s} {target:6s} | {s['mse_min']:9.2e} {s['mse_mean']:9.2e} "
                  f"{s['mse_median']:9.2e} | {pmin:9.2e} {pmean:10.2e} | {s['pieces_mean']:6.1f} "
                  f"{s['efficiency_mean']:7.3f} {s['seconds']:5.1f}", flush=True)
        print(f"{'optimum, 32 free knots':22s} {target:6s} {r.optimal_mse:9.2e}")
    total = time.perf_counter() - start
    print(f"total {total:.0f} s")
    plot(rows, args.out)
    if args.json:
        atomic_write_text(args.json, json.dumps({"rows": rows, "seconds": total}, indent=2))


def plot(rows, path):
    fig, axes = subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, target in zip(axes, ("x**3", "x**11"), strict=True):
        sub = [r for r in rows if r["target"] == target]
        pos = np.arange(len(sub))
        ax.bar(pos - 0.2, [r["mse_mean"] for r in sub], 0.4, label="ours, mean", color="C0")
        ax.scatter(pos - 0.2, [r["mse_min"] for r in sub], color="k", zorder=3, s=12,
                   label="ours, min")
        ax.bar(pos + 0.2, [r["paper_mean"] for r in sub], 0.4, label="paper, mean", color="C1")
        ax.axhline(sub[0]["optimal_mse"], color="C2", ls="--", label="32-piece optimum")
        ax.set_xticks(pos, [r["method"] for r in sub], rotation=20)
        ax.set_yscale("log")
        ax.set_title(f"{target}, width 4, depth 5")
    axes[0].set_ylabel("MSE (30 seeds)")
    axes[0].legend(fontsize=8)
    save_figure(fig, path)


if __name__ == "__main__":
    main()
