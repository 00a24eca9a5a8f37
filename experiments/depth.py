"""Depth benchmark that can see depth: the error of trained nets, measured exactly, against depth,
beside the 2^d-piece optimum and the parameter-matched optimum (docs/training.md, "Depth that
pays").

    python experiments/depth.py [--target 'x**3'] [--depths 4 5 ... 12] [--seeds 10]
                                [--width 4] [--methods default direct grow5 grow6]
                                [--out docs/figures/depth.png]

Training points grow with depth: max(4096, 4 * 2^d) evenly spaced points (4096 up to depth 10).
A continuous PL function with n pieces can interpolate at most about 2n samples of a convex
function (2n numbers), so with at least 4 samples per *possible* piece even a net that used all
2^d pieces could pass through at most half of them: the training set cannot be interpolated,
and the training MSE stays a fair proxy of the integral. (On the old 500-point benchmark 250
pieces interpolate the samples, and from depth 8 on its optimum read 0.)

Error: (1/L) integral over [0, 1] of (target - net)^2, computed exactly on the net's own linear
pieces (the exact counter's knots; Gauss-Legendre with 16 points per piece: exact to rounding
for polynomial targets of degree <= 15, ``analysis.limits.net_l2_mse``). Limits, in the same
integral sense (``limits.continuous_optimal_pwl``, free knots): the best fit with 2^d pieces
(what the net could reach if it placed its 2^d pieces freely), and the best fit with as many
numbers as the net has parameters P, i.e. floor(P / 2) pieces (``limits.matched_pieces``): below
that line depth buys something a shallow free-knot fit of the same size cannot.

Methods: ``default`` is ``fit(target, depth=d)`` with the library's defaults
(``training/auto.py``); ``direct`` forces training at depth d from the start (``grow_from=d``);
``grow5`` / ``grow6`` grow from depth 5 / 6 (``grow_from=5`` / ``6``; direct when shallower);
``kaiming`` is the random-init baseline, the one method that trains other widths (``--width``).
All seeds of a row are trained as one batch; s/seed = the fit's wall time / seeds.
The script ends with one line per goal: met or not.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from relu_regions.analysis.limits import continuous_optimal_pwl, matched_pieces, net_l2_mse
from relu_regions.atomic import atomic_write, atomic_write_text
from relu_regions.targets import parse_target
from relu_regions.training.fitting import fit

METHODS = {"default": lambda d: {}, "direct": lambda d: {"grow_from": d},
           "grow5": lambda d: {"grow_from": min(5, d)}, "grow6": lambda d: {"grow_from": min(6, d)},
           "kaiming": lambda d: {"method": "kaiming"}}
# The goals (x^3, width 4, library defaults, 10 seeds, exact error)
GOAL_D10 = 2e-10  # depth-10 mean at most this
GOAL_5_8, GOAL_8_10 = 10.0, 2.0  # the mean falls >= 10x from depth 5 to 8 and >= 2x more by 10
GOAL_X11 = 100.0  # x^11: >= 100x from depth 5 to 10
GOAL_COST = 4.0  # depth 10 at most 4x the time of depth 5 (s/seed, same run)


def training_points(depth: int) -> int:
    """max(4096, 4 * 2^depth): see the module docstring."""
    return max(4096, 4 * 2**depth)


def params(depth: int, width: int) -> int:
    """Weights and biases of a 1 -> width^depth -> 1 net."""
    return 2 * width + (depth - 1) * width * (width + 1) + width + 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="x**3")
    ap.add_argument("--depths", type=int, nargs="+", default=list(range(4, 13)))
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--first-seed", type=int, default=0, help="seeds FIRST .. FIRST + SEEDS - 1")
    ap.add_argument("--width", type=int, default=4)
    ap.add_argument("--methods", nargs="+", default=["default"], choices=sorted(METHODS))
    ap.add_argument("--points", type=int, default=None,
                    help="training points at every depth (default: max(4096, 4 * 2^depth))")
    ap.add_argument("--out", default="docs/figures/depth.png")
    ap.add_argument("--json", default=None, help="also write the table as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    f = parse_target(args.target)
    start = time.perf_counter()
    rows = []
    print(f"target {args.target}, width {args.width}, {args.seeds} seeds; error = (1/L) integral "
          "(f - net)^2 on the net's exact pieces")
    print(f"{'depth':>5s} {'points':>6s} {'opt 2^d':>9s} {'P':>4s} {'opt P/2':>9s} | method"
          f"{'':9s} {'mean':>9s} {'median':>9s} {'min':>9s} {'pieces':>7s} {'s/seed':>7s}")
    for d in args.depths:
        n_points = args.points or training_points(d)
        p = params(d, args.width)
        opt_full = continuous_optimal_pwl(f, 2**d).mse
        opt_matched = continuous_optimal_pwl(f, matched_pieces(p)).mse
        for m in args.methods:
            seeds = list(range(args.first_seed, args.first_seed + args.seeds))
            r = fit(args.target, depth=d, seeds=seeds, width=args.width, points=n_points,
                    count=False, optimum=False, **METHODS[m](d))
            errs, pieces = zip(*(net_l2_mse(net.double(), f, (0.0, 1.0)) for net in r.models),
                               strict=True)
            errs = np.array(errs)
            row = {"depth": d, "method": m, "points": n_points, "params": p,
                   "opt_2d": opt_full, "opt_matched": opt_matched,
                   "matched_pieces": matched_pieces(p), "mean": float(errs.mean()),
                   "median": float(np.median(errs)), "min": float(errs.min()),
                   "pieces": float(np.mean(pieces)), "s_per_seed": r.seconds / args.seeds,
                   "errors": errs.tolist(), "train_mse": r.train_mse.tolist()}
            rows.append(row)
            print(f"{d:5d} {n_points:6d} {opt_full:9.2e} {p:4d} {opt_matched:9.2e} | {m:14s} "
                  f"{row['mean']:9.2e} {row['median']:9.2e} {row['min']:9.2e} "
                  f"{row['pieces']:7.1f} {row['s_per_seed']:7.1f}", flush=True)
    print(f"total {time.perf_counter() - start:.0f} s")
    figure(rows, args)
    if args.json:
        atomic_write_text(args.json, json.dumps(rows, indent=1))
    for line in goals(rows, args):
        print(line)


def _mean(rows, method, depth):
    hit = [r for r in rows if r["method"] == method and r["depth"] == depth]
    return hit[0] if hit else None


def goals(rows, args):
    """One line per goal that this run can judge (target, width, method)."""

    def ok(met):
        return "MET" if met else "NOT MET"

    out = []
    m = "default"
    r5, r8, r10 = (_mean(rows, m, d) for d in (5, 8, 10))
    if args.target.replace(" ", "") == "x**3" and args.width == 4 and r10:
        out.append(f"goal x^3 depth-10 mean <= {GOAL_D10:g}: {r10['mean']:.3g} -> "
                   f"{ok(r10['mean'] <= GOAL_D10)}")
        if r5 and r8:
            a, b = r5["mean"] / r8["mean"], r8["mean"] / r10["mean"]
            out.append(f"goal x^3 mean falls >= {GOAL_5_8:g}x from depth 5 to 8 and "
                       f">= {GOAL_8_10:g}x more by 10: {a:.3g}x, {b:.3g}x -> "
                       f"{ok(a >= GOAL_5_8 and b >= GOAL_8_10)}")
        out.append(f"goal x^3 depth 10 below the parameter-matched optimum "
                   f"{r10['opt_matched']:.3g}: {r10['mean']:.3g} (min {r10['min']:.3g}) -> "
                   f"{ok(r10['mean'] < r10['opt_matched'])}")
    if args.target.replace(" ", "") == "x**11" and r5 and r10:
        a = r5["mean"] / r10["mean"]
        out.append(f"goal x^11 mean falls >= {GOAL_X11:g}x from depth 5 to 10: {a:.3g}x -> "
                   f"{ok(a >= GOAL_X11)}")
    elif r5 and r10 and args.target.replace(" ", "") != "x**3":
        out.append(f"{args.target}: mean falls {r5['mean'] / r10['mean']:.3g}x from depth 5 to 10 "
                   "(no goal for this target beyond being reported)")
    if r5 and r10:
        ratio = r10["s_per_seed"] / r5["s_per_seed"]
        out.append(f"goal cost: depth 10 at most {GOAL_COST:g}x the time of depth 5 "
                   f"({r10['points']} points, {args.seeds} seeds batched): {ratio:.3g}x "
                   f"({r10['s_per_seed']:.1f} vs {r5['s_per_seed']:.1f} s/seed) -> "
                   f"{ok(ratio <= GOAL_COST)}")
    out.append(f"figure: {args.out}")
    return out


def figure(rows, args):
    fig = Figure(figsize=(7.5, 4.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    depths = sorted({r["depth"] for r in rows})
    for i, m in enumerate(args.methods):
        mine = sorted((r for r in rows if r["method"] == m), key=lambda r: r["depth"])
        ax.plot([r["depth"] for r in mine], [r["mean"] for r in mine], "o-", color=f"C{i}",
                label=f"{m} (mean)")
        ax.plot([r["depth"] for r in mine], [r["min"] for r in mine], ".:", color=f"C{i}",
                alpha=0.6, label=f"{m} (min)")
    first = {r["depth"]: r for r in rows}
    ax.plot(depths, [first[d]["opt_2d"] for d in depths], "k--", label="optimum, 2^d free pieces")
    ax.plot(depths, [first[d]["opt_matched"] for d in depths], "k-.",
            label="optimum, as many numbers as parameters")
    ax.set_yscale("log")
    ax.set_xlabel(f"depth (hidden layers of width {args.width})")
    ax.set_ylabel("(1/L) integral (f - net)^2")
    ax.set_title(f"{args.target}: {args.seeds} seeds, error on the exact pieces")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    atomic_write(Path(args.out),
                 lambda fh: fig.savefig(fh, format="png", dpi=120, bbox_inches="tight"))


if __name__ == "__main__":
    main()
